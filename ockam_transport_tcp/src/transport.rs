//! `TcpTransport`: the application's handle on the node's TCP transport.

use crate::listener::TcpListenWorker;
use crate::options::TcpOptions;
use crate::peers::{TcpRouting, TcpShared};
use ockam_core::{Address, Error, ErrorKind, Result, TCP};
use ockam_node::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tracing::warn;

/// The node's TCP transport: messages whose next hop is a TCP address
/// (`(TCP, "host:port")`, `"1#host:port"`) go over a connection to that
/// peer, made on first use if needed; messages from a peer come in with the
/// connection prepended to their return route, so replies go back over it.
///
/// ```no_run
/// use ockam_core::{route, Result, TCP};
/// use ockam_node::Context;
/// use ockam_transport_tcp::TcpTransport;
///
/// async fn run(ctx: &Context) -> Result<()> {
///     let tcp = TcpTransport::create(ctx).await?;
///     tcp.listen("127.0.0.1:4000").await?;
///     tcp.connect("127.0.0.1:4001").await?;
///     ctx.send(route![(TCP, "127.0.0.1:4001"), "echoer"], "hi".to_string()).await
/// }
/// ```
pub struct TcpTransport {
    ctx: Context,
    shared: Arc<TcpShared>,
}

impl TcpTransport {
    /// Creates (or returns) the node's TCP transport with default options.
    ///
    /// # Errors
    /// As [`TcpTransport::create_with_options`]'s.
    ///
    /// # Cancel safety
    /// As [`TcpTransport::create_with_options`]'s.
    pub async fn create(ctx: &Context) -> Result<TcpTransport> {
        Self::create_with_options(ctx, TcpOptions::default()).await
    }

    /// Creates the node's TCP transport with `options`. A node has one TCP
    /// transport: if it exists already, this returns a handle on it and
    /// `options` are ignored (with a log line when they differ).
    ///
    /// # Errors
    /// [`ErrorKind::AlreadyExists`] when another router already took
    /// transport type [`TCP`] on this node; [`ErrorKind::Shutdown`] once the
    /// node has stopped (no context can be made for the handle).
    ///
    /// # Cancel safety
    /// Cancel safe: it only suspends waiting for a concurrent `create`, and
    /// dropped there it has done nothing.
    pub async fn create_with_options(ctx: &Context, options: TcpOptions) -> Result<TcpTransport> {
        let shared = ctx.node_extension(|| TcpShared::new(options.clone(), ctx.node_handle()));
        {
            let mut started = shared.started.lock().await;
            if !*started {
                ctx.register_transport(TCP, Arc::new(TcpRouting(shared.clone())))?;
                *started = true;
            } else if shared.options != options {
                warn!("the node's TCP transport exists already; the new options are ignored");
            }
        }
        let ctx = ctx.new_context(Address::random_local()).await?;
        Ok(TcpTransport { ctx, shared })
    }

    /// The transport's options.
    pub fn options(&self) -> &TcpOptions {
        &self.shared.options
    }

    /// Connects to `peer` (`"host:port"`) unless already connected (or
    /// connecting: concurrent calls share one connection), and returns its
    /// TCP address (`1#host:port`) for routes once the connection is up.
    /// Messages for that address then use this connection. Unlike a send,
    /// this tries at once even when the peer is in its backoff after a
    /// failure, or had connected to this node and left.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when `peer` is not `host:port`;
    /// [`ErrorKind::Unavailable`] (refused, unreachable) or
    /// [`ErrorKind::Timeout`] ([`TcpOptions::connect_timeout`]) when the
    /// connection cannot be made; [`ErrorKind::Io`] when its socket options
    /// cannot be set; [`ErrorKind::Shutdown`] once the node has stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future only stops waiting. A connection
    /// attempt already started goes on in the background, and sends to the
    /// peer use the connection once it is up.
    pub async fn connect(&self, peer: impl AsRef<str>) -> Result<Address> {
        let peer = peer.as_ref();
        validate_peer(peer)?;
        let (_, conn) = self.shared.open(peer, true)?;
        conn.established().await?;
        Ok(Address::new(TCP, peer))
    }

    /// The local worker that carries messages for `peer`, if connected.
    pub fn connection_worker(&self, peer: impl AsRef<str>) -> Option<Address> {
        self.shared.worker(peer.as_ref())
    }

    /// Number of open (or opening) connections.
    pub fn connection_count(&self) -> usize {
        self.shared.connections()
    }

    /// Listens on `bind` (`"host:port"`; port 0 picks a free one) and
    /// returns the address actually bound.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when `bind` cannot be bound (in use, not an address
    /// of this host, not `host:port`); [`ErrorKind::Shutdown`] once the node
    /// has stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: dropped before it returns, it leaves nothing listening.
    pub async fn listen(&self, bind: impl AsRef<str>) -> Result<SocketAddr> {
        let bind = bind.as_ref();
        let listener = TcpListener::bind(bind).await.map_err(|e| {
            Error::with_source(ErrorKind::Io, format!("cannot listen on {bind}"), e)
        })?;
        let local = listener.local_addr()?;
        self.ctx
            .start_worker(
                Address::random_local(),
                TcpListenWorker::new(listener, self.shared.clone()),
            )
            .await?;
        Ok(local)
    }
}

fn validate_peer(peer: &str) -> Result<()> {
    let ok = peer
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!("TCP peer {peer:?} is not of the form host:port"),
        ))
    }
}

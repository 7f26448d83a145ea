//! `TcpTransport`: the application's handle on the node's TCP transport.

use crate::connection::{connect, TcpSendWorker};
use crate::listener::TcpListenWorker;
use crate::options::TcpOptions;
use crate::peers::TcpShared;
use crate::router::TcpRouterWorker;
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
    pub async fn create(ctx: &Context) -> Result<TcpTransport> {
        Self::create_with_options(ctx, TcpOptions::default()).await
    }

    /// Creates the node's TCP transport with `options`. A node has one TCP
    /// transport: if it exists already, this returns a handle on it and
    /// `options` are ignored (with a log line when they differ).
    pub async fn create_with_options(ctx: &Context, options: TcpOptions) -> Result<TcpTransport> {
        let shared = ctx.node_extension(|| TcpShared::new(options.clone()));
        {
            let mut started = shared.started.lock().await;
            if !*started {
                ctx.start_worker(
                    shared.router_address.clone(),
                    TcpRouterWorker {
                        shared: shared.clone(),
                    },
                )
                .await?;
                ctx.register_transport(TCP, shared.clone())?;
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

    /// Connects to `peer` (`"host:port"`) unless already connected, and
    /// returns its TCP address (`1#host:port`) for routes. Messages for that
    /// address then use this connection.
    pub async fn connect(&self, peer: impl AsRef<str>) -> Result<Address> {
        let peer = peer.as_ref();
        validate_peer(peer)?;
        if self.shared.worker(peer).is_none() {
            let stream = connect(peer, &self.shared).await?;
            self.start_connection(peer.to_string(), stream).await?;
        }
        Ok(Address::new(TCP, peer))
    }

    pub(crate) async fn start_connection(
        &self,
        peer: String,
        stream: tokio::net::TcpStream,
    ) -> Result<Address> {
        let worker = Address::random_local();
        let (hold, outbox) = self.shared.set_up(&peer, &worker);
        let w = TcpSendWorker::new(peer.clone(), Some(stream), outbox, self.shared.clone());
        let started = self.ctx.start_worker(worker.clone(), w).await;
        if started.is_err() {
            self.shared.closed(&peer, &worker);
        }
        hold.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        started.map(|()| worker)
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

//! The transport API of mid-2021 guides (seed 002): `TcpRouter::bind`,
//! `TcpRouter::register`, `start_tcp_worker` and routes written as
//! `"1#ip:port"`. A thin layer over [`TcpTransport`].

use crate::transport::TcpTransport;
use ockam_core::{Address, Result, TCP};
use ockam_node::Context;
use std::net::SocketAddr;

/// The older entry point of the TCP transport.
pub struct TcpRouter;

impl TcpRouter {
    /// Creates the node's TCP transport and listens on `addr`.
    ///
    /// # Errors
    /// The errors of [`TcpTransport::create`] and [`TcpTransport::listen`].
    ///
    /// # Cancel safety
    /// Dropped after the transport is created, the transport stays (a later
    /// call gets a handle on it) but may not listen on `addr`.
    pub async fn bind(ctx: &Context, addr: SocketAddr) -> Result<TcpRouterHandle> {
        let transport = TcpTransport::create(ctx).await?;
        transport.listen(addr.to_string()).await?;
        Ok(TcpRouterHandle { transport })
    }

    /// Creates the node's TCP transport (the router for TCP addresses).
    ///
    /// # Errors
    /// The errors of [`TcpTransport::create`].
    pub async fn register(ctx: &Context) -> Result<TcpRouterHandle> {
        Ok(TcpRouterHandle {
            transport: TcpTransport::create(ctx).await?,
        })
    }
}

/// Handle returned by [`TcpRouter::bind`] and [`TcpRouter::register`].
pub struct TcpRouterHandle {
    transport: TcpTransport,
}

impl TcpRouterHandle {
    /// Makes the connection `pair` carry messages for its peer's address.
    /// ([`start_tcp_worker`] already does; this is kept for older code.)
    ///
    /// # Errors
    /// When `pair`'s peer has no connection: the errors of
    /// [`TcpTransport::connect`].
    pub async fn register(&self, pair: &WorkerPair) -> Result<()> {
        if self
            .transport
            .connection_worker(pair.peer.to_string())
            .is_none()
        {
            self.transport.connect(pair.peer.to_string()).await?;
        }
        Ok(())
    }

    /// The transport behind this handle.
    pub fn transport(&self) -> &TcpTransport {
        &self.transport
    }
}

/// A connection started by [`start_tcp_worker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPair {
    /// The peer's socket address.
    pub peer: SocketAddr,
    /// The peer's TCP address for routes (`1#ip:port`).
    pub address: Address,
}

/// Connects to `peer`, creating the node's TCP transport if needed.
///
/// # Errors
/// The errors of [`TcpTransport::create`] and [`TcpTransport::connect`].
///
/// # Cancel safety
/// As [`TcpTransport::connect`]'s: a connection attempt already started
/// goes on in the background.
pub async fn start_tcp_worker(ctx: &Context, peer: SocketAddr) -> Result<WorkerPair> {
    let transport = TcpTransport::create(ctx).await?;
    let address = transport.connect(peer.to_string()).await?;
    debug_assert_eq!(address.transport_type(), TCP);
    Ok(WorkerPair { peer, address })
}

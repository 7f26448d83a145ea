//! The listener: accepts connections and gives each its connection worker.

use crate::connection::TcpSendWorker;
use crate::peers::TcpShared;
use ockam_core::{async_trait, Address, Any, Result, Worker};
use ockam_node::Context;
use ockam_node::HelperTask;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Owns the accept loop of one listening socket; stopping it closes the socket.
pub(crate) struct TcpListenWorker {
    listener: Option<TcpListener>,
    shared: Arc<TcpShared>,
    accept: Option<HelperTask>,
}

impl TcpListenWorker {
    pub(crate) fn new(listener: TcpListener, shared: Arc<TcpShared>) -> Self {
        TcpListenWorker {
            listener: Some(listener),
            shared,
            accept: None,
        }
    }
}

#[async_trait]
impl Worker for TcpListenWorker {
    type Message = Any;
    type Context = Context;

    async fn initialize(&mut self, ctx: &mut Context) -> Result<()> {
        if let Some(listener) = self.listener.take() {
            // Workers for accepted connections are started through the
            // node's handle: the loop has no address of its own.
            self.accept = Some(ctx.spawn_helper(accept_loop(listener, self.shared.clone())));
        }
        Ok(())
    }

    async fn shutdown(&mut self, _ctx: &mut Context) -> Result<()> {
        self.accept = None; // aborts it
        Ok(())
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<TcpShared>) {
    let local = listener.local_addr().ok();
    info!(listen = ?local, "TCP listener up");
    // Refusals not logged yet, and when the last line about them went out.
    let mut refused = 0u64;
    let mut refusal_logged: Option<std::time::Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, peer_addr)) if shared.connections() >= shared.options.max_connections => {
                // Over the cap: closed at once (the peer reads its end).
                drop(stream);
                refused += 1;
                if refusal_logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    warn!(
                        listen = ?local,
                        last_peer = %peer_addr,
                        refused,
                        limit = shared.options.max_connections,
                        "refused connections: this node has TcpOptions::max_connections open"
                    );
                    refused = 0;
                    refusal_logged = Some(std::time::Instant::now());
                }
            }
            Ok((stream, peer_addr)) => {
                if let Err(e) = crate::connection::configure(&stream, &shared.options) {
                    warn!(peer = %peer_addr, error = %e, "could not set the socket options of an accepted connection");
                }
                let peer = peer_addr.to_string();
                let worker = Address::random_local();
                let opening = shared.accepted(&peer, &worker);
                let outbox = opening.outbox.clone();
                let w = TcpSendWorker::new(
                    peer.clone(),
                    Some(stream),
                    opening.outbox,
                    opening.conn,
                    shared.clone(),
                )
                .accepted();
                if let Err(e) = shared.start_transport_worker(worker.clone(), w) {
                    shared.closed(&peer, &worker, true);
                    let dropped = outbox.close();
                    warn!(%peer, error = %e, dropped, "could not start a worker for an accepted connection");
                }
            }
            Err(e) => {
                // Typically out of file descriptors: wait instead of spinning.
                warn!(listen = ?local, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

//! The on-demand router: takes messages for TCP peers that have no
//! connection yet, and starts one.

use crate::connection::TcpSendWorker;
use crate::peers::{PeerState, TcpShared};
use ockam_core::{async_trait, Address, Any, Result, Routed, Worker, TCP};
use ockam_node::Context;
use std::sync::Arc;
use tracing::warn;

pub(crate) struct TcpRouterWorker {
    pub(crate) shared: Arc<TcpShared>,
}

#[async_trait]
impl Worker for TcpRouterWorker {
    type Message = Any;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let local = msg.into_local_message();
        let next = local.transport().onward_route.next()?.clone();
        let peer = next.address().to_string();
        match self.shared.state(&peer) {
            PeerState::Up => {}
            PeerState::Down(reason) => {
                warn!(%peer, %reason, "dropped a message for an unreachable TCP peer");
                return Ok(());
            }
            PeerState::Unknown { failures } => {
                let from_remote = local
                    .transport()
                    .return_route
                    .next()
                    .is_ok_and(|a| a.transport_type() == TCP);
                if from_remote && !self.shared.options.connect_for_remote_senders {
                    warn!(
                        %peer,
                        from = %local.transport().return_route,
                        "dropped a message from a TCP peer to a peer this node is not connected to \
                         (TcpOptions::connect_for_remote_senders is off)"
                    );
                    return Ok(());
                }
                let worker = Address::random_local();
                self.shared.set_up(&peer, &worker, failures);
                let w = TcpSendWorker::new(peer.clone(), None, self.shared.clone());
                if let Err(e) = ctx.start_worker(worker.clone(), w).await {
                    self.shared.closed(&peer, &worker);
                    return Err(e);
                }
            }
        }
        // The peer table now names the connection's worker.
        ctx.forward(local).await
    }
}

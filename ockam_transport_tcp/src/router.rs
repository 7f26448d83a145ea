//! The on-demand router: takes the messages for TCP peers that have no
//! running connection worker yet, starts that worker (which connects), and
//! passes the messages on in the order they came.

use crate::connection::TcpSendWorker;
use crate::peers::{RouterAction, TcpShared};
use ockam_core::{async_trait, Any, Result, Routed, Worker};
use ockam_node::Context;
use std::sync::atomic::Ordering;
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
        let peer = local.transport().onward_route.next()?.address().to_string();
        let (worker, via_router) = match self.shared.router_action(&peer) {
            RouterAction::Drop(reason) => {
                warn!(%peer, %reason, "dropped a message for an unreachable TCP peer");
                return Ok(());
            }
            RouterAction::Forward { worker, via_router } => (worker, via_router),
            RouterAction::Start { worker, via_router } => {
                let w = TcpSendWorker::new(peer.clone(), None, self.shared.clone());
                if let Err(e) = ctx.start_worker(worker.clone(), w).await {
                    self.shared.closed(&peer, &worker);
                    via_router.fetch_sub(1, Ordering::AcqRel);
                    return Err(e);
                }
                (worker, via_router)
            }
        };
        let sent = ctx.forward_to(&worker, local).await;
        // Only now may later messages go straight to the connection.
        via_router.fetch_sub(1, Ordering::AcqRel);
        if let Err(e) = sent {
            warn!(%peer, error = %e, "dropped a message: the TCP connection is gone");
        }
        Ok(())
    }
}

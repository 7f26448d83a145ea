//! The on-demand router: takes the messages for TCP peers that have no
//! running connection worker yet, starts that worker (which connects), and
//! passes the messages on in the order they came.

use crate::connection::{report, TcpSendWorker};
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
        let (outbox, via_router) = match self.shared.router_action(&peer) {
            RouterAction::Drop(reason) => {
                warn!(%peer, %reason, "dropped a message for an unreachable TCP peer");
                return Ok(());
            }
            RouterAction::Forward { outbox, via_router } => (outbox, via_router),
            RouterAction::Start {
                worker,
                outbox,
                via_router,
            } => {
                let w = TcpSendWorker::new(peer.clone(), None, outbox.clone(), self.shared.clone());
                if let Err(e) = ctx.start_worker(worker.clone(), w).await {
                    outbox.close();
                    self.shared.closed(&peer, &worker);
                    via_router.fetch_sub(1, Ordering::AcqRel);
                    return Err(e);
                }
                (outbox, via_router)
            }
        };
        let mut local = local;
        local.transport_mut().onward_route.step()?;
        // No waiting here for a full outbox: this one worker serves every
        // new peer (the outbox's hard limit still bounds what it queues).
        report(&peer, outbox.push(local.transport()));
        // Only now may later messages go straight to the connection.
        via_router.fetch_sub(1, Ordering::AcqRel);
        Ok(())
    }
}

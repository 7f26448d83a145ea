//! The on-demand router: takes the messages for TCP peers that have no
//! running connection worker yet, starts that worker (which connects), and
//! passes the messages on in the order they came.

use crate::connection::{report, TcpSendWorker};
use crate::outbox::Push;
use crate::peers::{RouterAction, TcpShared};
use ockam_core::{async_trait, Any, Result, Routed, Worker};
use ockam_node::Backpressure;
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
        let (worker, outbox, via_router) = match self.shared.router_action(&peer) {
            RouterAction::Drop(reason) => {
                warn!(%peer, %reason, "dropped a message for an unreachable TCP peer");
                return Ok(());
            }
            RouterAction::Forward {
                worker,
                outbox,
                via_router,
            } => (worker, outbox, via_router),
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
                (worker, outbox, via_router)
            }
        };
        let mut local = local;
        let hop = local.transport_mut().onward_route.step()?;
        let backlog = match outbox.push(local.transport()) {
            Push::Deferred => {
                local.transport_mut().onward_route.modify().prepend(hop);
                if let Err(e) = ctx.forward_to(&worker, local).await {
                    warn!(%peer, error = %e, "dropped a message: the TCP connection is gone");
                }
                false
            }
            Push::Backlog => true,
            other => {
                report(&peer, other);
                false
            }
        };
        // Only now may later messages go straight to the connection.
        via_router.fetch_sub(1, Ordering::AcqRel);
        if backlog {
            outbox.wait().await;
        }
        Ok(())
    }
}

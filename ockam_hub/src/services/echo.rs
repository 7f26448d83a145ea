//! `echo_service`: replies to any message with the same payload.

use crate::access::{Access, Operation};
use ockam_core::{async_trait, Any, LocalMessage, Result, Routed, TransportMessage, Worker};
use ockam_node::Context;

/// Replies to any message with the same payload (on a closed hub, to
/// identities its access file names, through a secure channel; others get
/// an `access_denied` refusal).
pub(crate) struct EchoService {
    pub(crate) access: Access,
}

#[async_trait]
impl Worker for EchoService {
    type Message = Any;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let back = msg.return_route();
        if super::denied(ctx, &self.access, &back, "echo", Operation::Connect).await? {
            return Ok(());
        }
        let payload = msg.into_transport_message().payload;
        ctx.forward(LocalMessage::new(TransportMessage::v1(
            back,
            ctx.address(),
            payload,
        )))
        .await
    }
}

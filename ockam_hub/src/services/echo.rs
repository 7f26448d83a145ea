//! `echo_service`: replies to any message with the same payload.

use ockam_core::{async_trait, Any, LocalMessage, Result, Routed, TransportMessage, Worker};
use ockam_node::Context;

/// Replies to any message with the same payload.
pub(crate) struct EchoService;

#[async_trait]
impl Worker for EchoService {
    type Message = Any;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let back = msg.return_route();
        let payload = msg.into_transport_message().payload;
        ctx.forward(LocalMessage::new(TransportMessage::v1(
            back,
            ctx.address(),
            payload,
        )))
        .await
    }
}

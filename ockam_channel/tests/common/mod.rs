//! What the channel tests share.

use ockam_core::{async_trait, Result, Routed, Worker};
use ockam_node::Context;

/// Sends every string it gets back where it came from.
pub struct Echoer;

#[async_trait]
impl Worker for Echoer {
    type Message = String;
    type Context = Context;
    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
        ctx.send(msg.return_route(), msg.body()).await
    }
}

// The older spelling, through the node crate alone.
use ockam_core::{Result, Routed, Worker};
use ockam_node::{async_worker, Context};

struct Responder;

#[async_worker]
impl Worker for Responder {
    type Message = String;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
        ctx.send(msg.return_route(), msg.take()).await
    }
}

#[ockam_node::node]
async fn main(ctx: Context) -> Result<()> {
    ctx.start_worker("responder", Responder).await?;
    ctx.stop().await
}

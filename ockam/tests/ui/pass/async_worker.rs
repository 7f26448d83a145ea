// Seed 002's server worker, with the older attribute and `info!` unimported.
use ockam::{async_worker, Context, Result, Routed, Worker};

struct Responder;

#[async_worker]
impl Worker for Responder {
    type Message = String;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
        info!("Responder: {}", msg);
        ctx.send_message(msg.reply(), msg.take()).await?;
        Ok(())
    }
}

#[ockam::node]
async fn main(ctx: Context) -> Result<()> {
    ctx.start_worker("echo_service", Responder).await?;
    ctx.stop().await
}

// The node crate alone (package `ockam-rs-node`, no `ockam` facade): its
// re-exported attribute macros expand to `::ockam_node` paths.
use ockam_core::{Result, Routed, Worker};
use ockam_node::Context;

struct Echoer;

#[ockam_node::worker]
impl Worker for Echoer {
    type Message = String;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
        info!("echoing {}", msg);
        ctx.send(msg.return_route(), msg.body()).await
    }
}

#[ockam_node::node]
async fn main(mut ctx: Context) -> Result<()> {
    ctx.start_worker("echoer", Echoer).await?;
    ctx.send(route!["echoer"], "hello".to_string()).await?;
    let reply = ctx.receive::<String>().await?;
    assert_eq!(*reply, "hello");
    ctx.stop().await
}

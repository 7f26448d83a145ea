// The facade under another name (`my_ockam = { package = "ockam-rs", .. }`
// in Cargo.toml): the expansion must use `::my_ockam`, as no `ockam` crate
// is there.
use my_ockam::{Context, Result, Routed, Worker};

struct Echoer;

#[my_ockam::worker]
impl Worker for Echoer {
    type Message = String;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
        info!("echoing {}", msg);
        ctx.send(msg.return_route(), msg.body()).await
    }
}

#[my_ockam::node]
async fn main(mut ctx: Context) -> Result<()> {
    ctx.start_worker("echoer", Echoer).await?;
    ctx.send(route!["echoer"], "hello".to_string()).await?;
    let reply = ctx.receive::<String>().await?;
    assert_eq!(*reply, "hello");
    ctx.stop().await
}

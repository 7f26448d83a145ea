// Seed 001 uses `route!` without importing it.
use ockam::{Context, Result, Route};

#[ockam::node]
async fn main(mut ctx: Context) -> Result<()> {
    let r: Route = route!["app"];
    ctx.send(r, "hi".to_string()).await?;
    let msg = ctx.receive::<String>().await?;
    info!("received {}", msg);
    ctx.stop().await
}

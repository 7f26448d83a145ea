// Seed 000 imports `route` itself; that must still work (and stay used).
#![deny(unused_imports)]
use ockam::{route, Context, Result};

#[ockam::node]
async fn main(ctx: Context) -> Result<()> {
    ctx.send(route!["app"], 1u8).await?;
    ctx.stop().await
}

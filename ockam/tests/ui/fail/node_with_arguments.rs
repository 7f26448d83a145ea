use ockam::{Context, Result};

#[ockam::node(threads = 4)]
async fn main(ctx: Context) -> Result<()> {
    ctx.stop().await
}

use ockam::{Context, Result};

#[ockam::node]
async fn main(ctx: Context, other: u32) -> Result<()> {
    Ok(())
}

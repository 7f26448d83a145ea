use ockam::{Context, Result};

#[ockam::node]
fn main(ctx: Context) -> Result<()> {
    Ok(())
}

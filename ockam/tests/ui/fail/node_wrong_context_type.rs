use ockam::Result;

#[ockam::node]
async fn main(ctx: String) -> Result<()> {
    Ok(())
}

use ockam::Result;

#[ockam::node]
async fn main() -> Result<()> {
    Ok(())
}

//! A node whose main returns without stopping it: the node (and the process)
//! keeps running, as a server would, until Ctrl-C or SIGTERM stops it
//! gracefully.

use ockam::{Context, Result};
use ockam_get_started::Echoer;

#[ockam::node]
async fn main(ctx: Context) -> Result<()> {
    ctx.start_worker("echoer", Echoer).await?;
    println!("Node is up with an echoer; press Ctrl-C to stop it.");
    // Don't call ctx.stop() here so this node runs forever.
    Ok(())
}

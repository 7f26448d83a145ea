//! A node that starts and stops.

use ockam::{Context, Result};

#[ockam::node]
async fn main(ctx: Context) -> Result<()> {
    println!("Node started; stopping it.");
    // Stop the node as soon as it starts.
    ctx.stop().await
}

//! Routing over a transport, responder: listens for TCP connections and runs
//! an echoer. Run: cargo run --example 04-routing-over-transport-responder [listen ip:port]

use ockam::{Context, Result, TcpTransport};
use ockam_get_started::Echoer;

#[ockam::node]
async fn main(ctx: Context) -> Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4000".into());

    // Initialize the TCP Transport.
    let tcp = TcpTransport::create(&ctx).await?;

    // Create a TCP listener and wait for incoming connections.
    let bound = tcp.listen(&listen).await?;

    // Create an echoer worker
    ctx.start_worker("echoer", Echoer).await?;
    println!("Responder listening on {bound}");

    // Don't call ctx.stop() here so this node runs forever.
    Ok(())
}

//! Two TCP hops, middle node: connects onward to the responder and listens
//! for the initiator.
//! Run: cargo run --example 05-routing-over-transport-two-hops-middle [listen ip:port] [responder ip:port]

use ockam::{Context, Result, TcpTransport};

#[ockam::node]
async fn main(ctx: Context) -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut args = args.into_iter();
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:4000".into());
    let responder = args.next().unwrap_or_else(|| "127.0.0.1:6000".into());

    // Initialize the TCP Transport.
    let tcp = TcpTransport::create(&ctx).await?;

    // Create a TCP connection to the responder node.
    tcp.connect(&responder).await?;

    // Create a TCP listener and wait for incoming connections.
    let bound = tcp.listen(&listen).await?;
    println!("Middle node listening on {bound}, connected to {responder}");

    // Don't call ctx.stop() here so this node runs forever.
    Ok(())
}

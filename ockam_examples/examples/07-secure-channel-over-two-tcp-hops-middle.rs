//! Secure channel over two TCP hops, middle node: forwards between the
//! initiator and the responder; it only ever sees ciphertext.
//! Run: cargo run --example 07-secure-channel-over-two-tcp-hops-middle [listen ip:port] [responder ip:port]

use ockam::{Context, Result, TcpTransport};

#[ockam::node]
async fn main(ctx: Context) -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let listen = args
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:4000".into());
    let responder = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:6000".into());

    let tcp = TcpTransport::create(&ctx).await?;
    tcp.connect(&responder).await?;
    let bound = tcp.listen(&listen).await?;
    println!("Middle node listening on {bound}, connected to {responder}");

    // Don't call ctx.stop() here so this node runs forever.
    Ok(())
}

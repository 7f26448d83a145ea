//! Forwarding through the hub, initiator: sends to the responder's echoer
//! through its forwarder on the hub, then does the same inside a secure
//! channel created through the listener's forwarder.
//! Run: cargo run --example 16-forwarding-initiator <echoer forwarder> <listener forwarder> [hub ip:port]

use ockam::{route, Context, Result, SecureChannel, TcpTransport, Vault, TCP};

#[ockam::node]
async fn main(mut ctx: Context) -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(echoer_fwd), Some(listener_fwd)) = (args.first(), args.get(1)) else {
        eprintln!(
            "usage: 16-forwarding-initiator <echoer forwarder> <listener forwarder> [hub ip:port]"
        );
        std::process::exit(2);
    };
    let hub = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:4000".into());
    let _tcp = TcpTransport::create(&ctx).await?;

    // Plain: hub => forwarder => responder's echoer.
    ctx.send(
        route![(TCP, hub.as_str()), echoer_fwd.as_str()],
        "Hello through the hub!".to_string(),
    )
    .await?;
    let reply = ctx.receive::<String>().await?;
    println!("Reply through the forwarder: {}", reply);

    // Encrypted end to end: the hub only sees ciphertext.
    let vault = Vault::create(&ctx)?;
    let channel = SecureChannel::create(
        &ctx,
        route![(TCP, hub.as_str()), listener_fwd.as_str()],
        &vault,
    )
    .await?;
    ctx.send(
        route![channel.address(), "echoer"],
        "Hello, secretly!".to_string(),
    )
    .await?;
    let reply = ctx.receive::<String>().await?;
    println!(
        "Reply through a secure channel over the forwarder: {}",
        reply
    );

    ctx.stop().await
}

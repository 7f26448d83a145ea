//! Secure channel over two TCP hops, initiator: creates a channel through
//! the middle node to the responder's listener, sends to the echoer at the
//! other end through it and prints the reply.
//! Run: cargo run --example 07-secure-channel-over-two-tcp-hops-initiator [middle ip:port] [responder ip:port]

use ockam::{route, Context, Result, SecureChannel, TcpTransport, Vault, TCP};

#[ockam::node]
async fn main(mut ctx: Context) -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let middle = args
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:4000".into());
    let responder = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:6000".into());

    let _tcp = TcpTransport::create(&ctx).await?;
    let vault = Vault::create(&ctx)?;

    // A secure channel to the listener, two TCP hops away.
    let channel = SecureChannel::create(
        &ctx,
        route![
            (TCP, middle.as_str()),
            (TCP, responder.as_str()),
            "secure_channel_listener"
        ],
        &vault,
    )
    .await?;
    println!(
        "Channel up; responder's static key {}",
        channel.remote_static()
    );

    // Send a message to the echoer at the other end, through the channel.
    ctx.send(
        route![channel.address(), "echoer"],
        "Hello Ockam!".to_string(),
    )
    .await?;

    // Wait to receive a reply and print it.
    let reply = ctx.receive::<String>().await?;
    println!("App Received: {}", reply); // should print "Hello Ockam!"

    ctx.stop().await
}

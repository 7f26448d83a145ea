//! Secure channel over two TCP hops, responder: a TCP listener, a secure
//! channel listener and an echoer.
//! Run: cargo run --example 07-secure-channel-over-two-tcp-hops-responder [listen ip:port]

use ockam::{Context, Result, SecureChannel, TcpTransport, Vault};
use ockam_get_started::Echoer;

#[ockam::node]
async fn main(ctx: Context) -> Result<()> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:6000".into());

    let tcp = TcpTransport::create(&ctx).await?;
    let bound = tcp.listen(&listen).await?;

    let vault = Vault::create(&ctx)?;
    let key = SecureChannel::create_listener(&ctx, "secure_channel_listener", &vault).await?;

    ctx.start_worker("echoer", Echoer).await?;
    println!("Responder listening on {bound} with static key {key}");

    // Don't call ctx.stop() here so this node runs forever.
    Ok(())
}

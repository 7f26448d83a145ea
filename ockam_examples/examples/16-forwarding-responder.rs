//! Forwarding through the hub, responder: registers a forwarder on the hub
//! that delivers to its "echoer", and a secure channel listener, so that
//! an initiator that cannot reach this node directly can still talk to it.
//! Run a hub first: cargo run --release -p ockam-rs-hub
//! Run: cargo run --example 16-forwarding-responder [hub ip:port]

use ockam::{Context, RemoteForwarder, Result, SecureChannel, TcpTransport, Vault};
use ockam_get_started::Echoer;

#[ockam::node]
async fn main(ctx: Context) -> Result<()> {
    let hub = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4000".into());
    let _tcp = TcpTransport::create(&ctx).await?;

    ctx.start_worker("echoer", Echoer).await?;
    let vault = Vault::create(&ctx)?;
    SecureChannel::create_listener(&ctx, "secure_channel_listener", &vault).await?;

    let forwarder = RemoteForwarder::create(&ctx, &hub, "echoer").await?;
    println!(
        "Forwarding address of echoer on the hub: {}",
        forwarder.remote_address()
    );
    let channel_forwarder = RemoteForwarder::create(&ctx, &hub, "secure_channel_listener").await?;
    println!(
        "Forwarding address of secure_channel_listener on the hub: {}",
        channel_forwarder.remote_address()
    );

    // Don't call ctx.stop() here so this node runs forever.
    Ok(())
}

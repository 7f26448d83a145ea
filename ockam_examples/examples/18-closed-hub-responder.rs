// Seed 000's responder through a closed hub (issue 16); see
// 18-closed-hub-initiator.rs. Its identity file: `OCKAM_IDENTITY_FILE`,
// default `responder.key`.

use ockam::{
    route, stream::Stream, Context, Result, SecureChannel, SecureChannelOptions, TcpTransport,
    Vault, TCP,
};
use ockam_get_started::Echoer;

#[ockam::node]
async fn main(ctx: Context) -> Result<()> {
    let _tcp = TcpTransport::create(&ctx).await?;
    let hub_node_tcp_address = "127.0.0.1:4000";

    let vault = Vault::create(&ctx)?;
    let file = std::env::var("OCKAM_IDENTITY_FILE").unwrap_or_else(|_| "responder.key".into());
    let (identity, _) = vault.load_or_create_x25519(file.as_ref())?;
    println!("responder identity: {}", vault.public_key(&identity)?);

    let trusted_peer = match std::env::var("OCKAM_HUB_IDENTITY") {
        Ok(key) => Some(key.parse()?),
        Err(_) => None,
    };
    let channel = SecureChannel::create_with_options(
        &ctx,
        route![(TCP, hub_node_tcp_address), "secure_channel_listener"],
        &vault,
        SecureChannelOptions {
            static_key: Some(identity),
            trusted_peer,
            ..Default::default()
        },
    )
    .await?;

    Stream::new(&ctx)?
        .stream_service("stream")
        .index_service("stream_index")
        .client_id("stream-over-cloud-node-responder")
        .connect(
            route![channel.address()], // route to hub
            "responder-to-initiator",  // outgoing stream
            "initiator-to-responder",  // incoming stream
        )
        .await?;

    ctx.start_worker("echoer", Echoer).await?;

    // Don't call ctx.stop() here so this node runs forever.
    Ok(())
}

// Seed 000's exchange ("Reliable message delivery with Streams") through a
// closed hub (issue 16): the same `Stream` code, over a secure channel to
// the hub's listener. The hub admits this node by its identity, a key
// kept in a file (`OCKAM_IDENTITY_FILE`, default `initiator.key`) that the
// hub's access file names; `OCKAM_HUB_IDENTITY` (the hub's key, which it
// logs at start) pins the hub. README, "A closed hub", shows the setup.

use ockam::{
    route, stream::Stream, Context, Result, SecureChannel, SecureChannelOptions, TcpTransport,
    Vault, TCP,
};

#[ockam::node]
async fn main(mut ctx: Context) -> Result<()> {
    let _tcp = TcpTransport::create(&ctx).await?;
    let hub_node_tcp_address = "127.0.0.1:4000";

    // This node's identity, made on first run.
    let vault = Vault::create(&ctx)?;
    let file = std::env::var("OCKAM_IDENTITY_FILE").unwrap_or_else(|_| "initiator.key".into());
    let (identity, _) = vault.load_or_create_x25519(file.as_ref())?;
    println!("initiator identity: {}", vault.public_key(&identity)?);

    // A secure channel to the hub, pinned to its identity if given.
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

    // Seed 000's code, with the channel as the route to the hub.
    let (sender, _receiver) = Stream::new(&ctx)?
        .stream_service("stream")
        .index_service("stream_index")
        .client_id("stream-over-cloud-node-initiator")
        .connect(
            route![channel.address()], // route to hub
            "initiator-to-responder",  // outgoing stream
            "responder-to-initiator",  // incoming stream
        )
        .await?;

    ctx.send(route![sender.clone(), "echoer"], "Hello World!".to_string())
        .await?;

    let reply = ctx.receive_block::<String>().await?;
    println!("Reply via stream: {}", reply);

    ctx.stop().await
}

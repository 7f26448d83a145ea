//! Seed 000's exchange ("Reliable message delivery with Streams") through a
//! closed hub (issue 16): the same `Stream` code, over a secure channel to
//! the hub's listener. The hub admits this node by its identity, a key
//! kept in a file (`OCKAM_IDENTITY_FILE`, default `initiator.key`) that the
//! hub's access file names; `OCKAM_HUB_IDENTITY` (the hub's key, which it
//! logs at start) pins the hub. README, "A closed hub", shows the setup.

use ockam::{route, stream::Stream, Context, Result, TcpTransport};
use ockam_get_started::channel_to_closed_hub;

#[ockam::node]
async fn main(mut ctx: Context) -> Result<()> {
    let _tcp = TcpTransport::create(&ctx).await?;
    let hub_node_tcp_address = "127.0.0.1:4000";

    // A secure channel to the hub, as this node's identity (made on first
    // run, in `initiator.key` unless OCKAM_IDENTITY_FILE says otherwise).
    let channel = channel_to_closed_hub(&ctx, hub_node_tcp_address, "initiator.key").await?;

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

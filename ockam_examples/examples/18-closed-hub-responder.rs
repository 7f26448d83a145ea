//! Seed 000's responder through a closed hub (issue 16); see
//! 18-closed-hub-initiator.rs. Its identity file: `OCKAM_IDENTITY_FILE`,
//! default `responder.key`.

use ockam::{route, stream::Stream, Context, Result, TcpTransport};
use ockam_get_started::{channel_to_closed_hub, Echoer};

#[ockam::node]
async fn main(ctx: Context) -> Result<()> {
    let _tcp = TcpTransport::create(&ctx).await?;
    let hub_node_tcp_address = "127.0.0.1:4000";

    let channel = channel_to_closed_hub(&ctx, hub_node_tcp_address, "responder.key").await?;

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

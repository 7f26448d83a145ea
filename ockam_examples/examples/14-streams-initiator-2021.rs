//! Seed 000's initiator as the mid-2021 draft guides wrote it: the route into
//! the stream is built with `sender.to_route().append("echoer")` (there,
//! `to_route()` gave a route builder). Same hub and streams as
//! 14-streams-initiator; it sends "Hello from 2021!".

use ockam::{route, stream::Stream, Context, Result, TcpTransport, TCP};

#[ockam::node]
async fn main(mut ctx: Context) -> Result<()> {
    let _tcp = TcpTransport::create(&ctx).await?;

    let hub_node_tcp_address = "127.0.0.1:4000";

    let (tx, _rx) = Stream::new(&ctx)?
        .stream_service("stream")
        .index_service("stream_index")
        .client_id("stream-over-cloud-node-initiator")
        .connect(
            route![(TCP, hub_node_tcp_address)],
            "initiator-to-responder",
            "responder-to-initiator",
        )
        .await?;

    ctx.send(
        tx.to_route().append("echoer"),
        "Hello from 2021!".to_string(),
    )
    .await?;

    let reply = ctx.receive_block::<String>().await?;
    println!("Reply via stream: {}", reply);

    ctx.stop().await
}

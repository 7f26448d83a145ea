//! Routing over a transport, initiator: sends a message to the responder's
//! echoer over TCP and prints the reply.
//! Run: cargo run --example 04-routing-over-transport-initiator [responder ip:port]

use ockam::{route, Context, Result, TcpTransport, TCP};

#[ockam::node]
async fn main(mut ctx: Context) -> Result<()> {
    let responder = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4000".into());

    // Initialize the TCP Transport.
    let _tcp = TcpTransport::create(&ctx).await?;

    // Send a message to the "echoer" worker, on a different node, over a tcp transport.
    let r = route![(TCP, responder.as_str()), "echoer"];
    ctx.send(r, "Hello Ockam!".to_string()).await?;

    // Wait to receive a reply and print it.
    let reply = ctx.receive::<String>().await?;
    println!("App Received: {}", reply); // should print "Hello Ockam!"

    // Stop all workers, stop the node, cleanup and return.
    ctx.stop().await
}

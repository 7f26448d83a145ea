//! Two TCP hops, initiator: sends through the middle node to the responder's
//! echoer and prints the reply, which comes back the same way.
//! Run: cargo run --example 05-routing-over-transport-two-hops-initiator [middle ip:port] [responder ip:port]

use ockam::{route, Context, Result, TcpTransport, TCP};

#[ockam::node]
async fn main(mut ctx: Context) -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut args = args.into_iter();
    let middle = args.next().unwrap_or_else(|| "127.0.0.1:4000".into());
    let responder = args.next().unwrap_or_else(|| "127.0.0.1:6000".into());

    // Initialize the TCP Transport.
    let _tcp = TcpTransport::create(&ctx).await?;

    // Send a message to the "echoer" worker, on a different node, over two tcp hops.
    let r = route![(TCP, middle.as_str()), (TCP, responder.as_str()), "echoer"];
    ctx.send(r, "Hello Ockam!".to_string()).await?;

    // Wait to receive a reply and print it.
    let reply = ctx.receive::<String>().await?;
    println!("App Received: {}", reply); // should print "Hello Ockam!"
    println!("Return route: {}", reply.return_route());

    // Stop all workers, stop the node, cleanup and return.
    ctx.stop().await
}

//! Send a message to the hub's echo service and print the reply.
//! Run a hub first: cargo run --release -p ockam-rs-hub
//! Run: cargo run --example 15-hub-echo [hub ip:port]

use ockam::{route, Context, Result, TcpTransport, TCP};

#[ockam::node]
async fn main(mut ctx: Context) -> Result<()> {
    let hub = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4000".into());
    let _tcp = TcpTransport::create(&ctx).await?;

    ctx.send(
        route![(TCP, hub.as_str()), "echo_service"],
        "Hello Hub!".to_string(),
    )
    .await?;
    let reply = ctx.receive::<String>().await?;
    println!("Hub echoed: {}", reply);

    ctx.stop().await
}

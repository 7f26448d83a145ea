//! Seed 002 ("Networking between Ockam Nodes"), server side, assembled from
//! the guide's fragments unchanged. Run: cargo run --example server [ip:port]
#![allow(unused_mut, clippy::useless_format)]

use ockam::{async_worker, Context, Result, Routed, Worker};
use ockam_transport_tcp::TcpRouter;
use std::net::SocketAddr;

struct Responder;

#[async_worker]
impl Worker for Responder {
    type Message = String;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
        info!("Responder: {}", msg);
        ctx.send_message(msg.reply(), msg.take()).await?;
        Ok(())
    }
}

fn get_bind_addr() -> SocketAddr {
    std::env::args()
        .skip(1)
        .take(1)
        .next()
        .unwrap_or(format!("127.0.0.1:10222"))
        .parse()
        .ok()
        .unwrap_or_else(|| {
            error!("Failed to parse socket address!");
            eprintln!("Usage: network_echo_server <ip>:<port>");
            std::process::exit(1);
        })
}

#[ockam::node]
async fn main(mut ctx: Context) -> Result<()> {
    // Get either the default socket address, or a user-input
    let bind_addr = get_bind_addr();
    debug!("Binding to: {}", bind_addr);

    // Create a new _binding_ TcpRouter
    let _r = TcpRouter::bind(&ctx, bind_addr).await?;

    // Create the Responder worker
    ctx.start_worker("echo_service", Responder).await?;

    // The server never shuts down
    Ok(())
}

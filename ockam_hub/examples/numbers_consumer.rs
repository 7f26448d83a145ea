//! Consumes the "numbers" stream from a hub and checks that the numbers
//! arrive in order: prints `FIRST n` for the first one, then `NEXT n` for
//! each new one; repeats of earlier numbers are allowed (at-least-once), a
//! jump ahead prints `GAP` and exits 1. Used by the hub's crash tests.
//! Run: cargo run -p ockam-rs-hub --example numbers_consumer -- <hub ip:port> <client id>

use ockam_core::{async_trait, route, Result, Routed, Worker, TCP};
use ockam_node::Context;
use ockam_stream_client::Stream;
use ockam_transport_tcp::TcpTransport;

struct Checker {
    next: Option<u64>,
}

#[async_trait]
impl Worker for Checker {
    type Message = u64;
    type Context = Context;
    async fn handle_message(&mut self, _ctx: &mut Context, msg: Routed<u64>) -> Result<()> {
        let n = *msg;
        match self.next {
            None => {
                println!("FIRST {n}");
                println!("NEXT {n}");
                self.next = Some(n + 1);
            }
            Some(next) if n == next => {
                println!("NEXT {n}");
                self.next = Some(n + 1);
            }
            Some(next) if n > next => {
                println!("GAP got {n} expected {next}");
                std::process::exit(1);
            }
            Some(_) => {} // a redelivered one
        }
        Ok(())
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let hub = args
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:4000".into());
    let client_id = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "numbers-consumer".into());
    ockam_node::setup_tracing();
    let (ctx, mut executor) = ockam_node::start_node();
    executor.execute(async move {
        let _tcp = TcpTransport::create(&ctx).await?;
        ctx.start_worker("checker", Checker { next: None }).await?;
        Stream::new(&ctx)?
            .client_id(client_id)
            .connect(route![(TCP, hub.as_str())], "numbers-back", "numbers")
            .await?;
        Ok(())
    })
}

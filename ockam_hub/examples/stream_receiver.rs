//! Reads one stream from a hub as an application does, with
//! `ReceiverAddress::next()`, and prints `GOT <message>` for each (text
//! messages); after `take` messages it stops asking for more (and sleeps),
//! as a slow or stuck application would. Used by the hub's tests of the
//! at-least-once promise (kill -9 of a consumer, a hub that restarts empty).
//! Run: cargo run -p ockam-rs-hub --example stream_receiver -- \
//!        <hub ip:port> <client id> <stream> [take (default: all)] [stream service (default: stream)]

use ockam_core::{route, Result, TCP};
use ockam_stream_client::Stream;
use ockam_transport_tcp::TcpTransport;
use std::io::Write;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!(
            "usage: stream_receiver <hub ip:port> <client id> <stream> [take] [stream service]"
        );
        std::process::exit(2);
    }
    let (hub, client_id, stream) = (args[0].clone(), args[1].clone(), args[2].clone());
    let take: u64 = args
        .get(3)
        .map_or(u64::MAX, |t| t.parse().unwrap_or(u64::MAX));
    let service = args.get(4).cloned().unwrap_or_else(|| "stream".into());
    let index = format!("{service}_index");
    ockam_node::setup_tracing();
    let (ctx, mut executor) = ockam_node::start_node();
    executor.execute(async move {
        let _tcp = TcpTransport::create(&ctx).await?;
        let (_tx, mut rx) = Stream::new(&ctx)?
            .stream_service(service)
            .index_service(index)
            .client_id(client_id)
            .connect(route![(TCP, hub.as_str())], "stream-receiver-out", stream)
            .await?;
        for _ in 0..take {
            let msg = rx.next::<String>().await?;
            println!("GOT {}", msg.body());
            let _ = std::io::stdout().flush();
        }
        // Stuck: never asks for the next one.
        std::future::pending::<()>().await;
        Ok(())
    })
}

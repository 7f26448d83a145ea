// Seed 004's client with typed streams: sends a MessageRequest every
// second while it reads the server's MessageResponse stream.
// Run: cargo run --example 17-bidi-stream-client [-- 127.0.0.1:4100 [rounds]]
// (rounds: stop cleanly after that many responses; default: run on)

use ockam::rpc::{call, make_sink, Sink, Source};
use ockam::{route, Context, Result, TcpTransport, TCP};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Serialize, Deserialize)]
pub struct MessageRequest {
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MessageResponse {
    pub message: String,
}

#[ockam::node]
async fn main(ctx: Context) -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let server = args
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:4100".into());
    let rounds: u64 = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(u64::MAX);
    let _tcp = TcpTransport::create(&ctx).await?;

    let requests: Sink<MessageRequest> = make_sink(&ctx).await?;
    let mut responses: Source<MessageResponse> = call(
        &ctx,
        route![(TCP, server.as_str()), "message_service"],
        "stream_messages",
        (),
        &requests,
    )
    .await?
    .expect("the service answers with a stream");

    let mut tx = requests.clone();
    let sender = tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_secs(1));
        loop {
            interval.tick().await;
            let message = MessageRequest {
                name: "Hello, world!".into(),
            };
            if let Err(e) = tx.send(message).await {
                println!("Failed to send message: {e}");
                break;
            }
        }
    });

    let mut seen = 0;
    while seen < rounds {
        match responses.recv().await? {
            Some(message) => println!("Received message: {message:?}"),
            None => break,
        }
        seen += 1;
    }
    sender.abort();
    requests.close().await?;
    println!("Done after {seen} messages");
    ctx.stop().await
}

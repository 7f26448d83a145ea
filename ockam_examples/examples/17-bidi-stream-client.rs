//! Seed 004's client with typed streams: sends a MessageRequest every
//! second while it reads the server's MessageResponse stream.
//! Run: cargo run --example 17-bidi-stream-client [-- 127.0.0.1:4100] [--rounds N] [--secure] [--hub 127.0.0.1:4000]
//! (--rounds: stop cleanly after that many responses; default: run on;
//! --secure, --hub: as the server was started, see 17-bidi-stream-server)
//! The exchange is the same code whichever route leads to the service.

use ockam::rpc::{call, make_sink, Sink, Source};
use ockam::stream::Stream;
use ockam::{route, Context, Result, Route, SecureChannel, TcpTransport, Vault, TCP};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Seed 004's request: the client's name.
#[derive(Debug, Serialize, Deserialize)]
pub struct MessageRequest {
    /// Who is asking.
    pub name: String,
}

/// Seed 004's response: a greeting.
#[derive(Debug, Serialize, Deserialize)]
pub struct MessageResponse {
    /// The server's message.
    pub message: String,
}

#[ockam::node]
async fn main(ctx: Context) -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let secure = take_flag(&mut args, "--secure");
    let hub = take_value(&mut args, "--hub");
    let rounds: u64 = take_value(&mut args, "--rounds")
        .map(|r| {
            r.parse()
                .unwrap_or_else(|_| usage("--rounds takes a number"))
        })
        .unwrap_or(u64::MAX);
    let server = args
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:4100".into());
    let _tcp = TcpTransport::create(&ctx).await?;

    // The way to the server's node: straight over TCP, or through a pair
    // of streams on a hub; then, if asked, a secure channel over that.
    let mut to_node: Route = match &hub {
        Some(hub) => {
            let (to_server, _) = Stream::new(&ctx)?
                .client_id("bidi-stream-client")
                .connect(
                    route![(TCP, hub.as_str())],
                    "bidi-to-server",
                    "bidi-to-client",
                )
                .await?;
            to_server.to_route().into_route()
        }
        None => route![(TCP, server.as_str())],
    };
    if secure {
        let vault = Vault::create(&ctx)?;
        let channel =
            SecureChannel::create(&ctx, via(&to_node, "secure_channel_listener"), &vault).await?;
        to_node = route![channel.address()];
    }

    let requests: Sink<MessageRequest> = make_sink(&ctx).await?;
    let mut responses: Source<MessageResponse> = call(
        &ctx,
        via(&to_node, "message_service"),
        "stream_messages",
        (),
        &requests,
    )
    .await?
    .ok_or_else(|| {
        ockam::Error::new(
            ockam::ErrorKind::Protocol,
            "message_service answered without a stream",
        )
    })?;

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

/// `to_node`, then `worker` on that node.
fn via(to_node: &Route, worker: &str) -> Route {
    Route::new()
        .append_route(to_node.clone())
        .append(worker)
        .into_route()
}

/// Whether `flag` is among `args` (taken out).
fn take_flag(args: &mut Vec<String>, flag: &str) -> bool {
    let before = args.len();
    args.retain(|a| a != flag);
    args.len() != before
}

/// The value after `flag` in `args` (both taken out).
fn take_value(args: &mut Vec<String>, flag: &str) -> Option<String> {
    let i = args.iter().position(|a| a == flag)?;
    let value = args.get(i + 1).cloned();
    assert!(value.is_some(), "{flag} needs a value");
    args.drain(i..i + 2);
    value
}

/// A bad command line: says why and exits with code 2.
fn usage(why: &str) -> ! {
    eprintln!("{why}");
    std::process::exit(2)
}

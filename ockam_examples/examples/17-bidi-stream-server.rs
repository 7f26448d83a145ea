//! Seed 004 ("Bi-directional streaming with gRPC") with typed streams: a
//! MessageService whose `stream_messages` handler reads the client's stream
//! of MessageRequest and answers with a stream of MessageResponse, "Hello,
//! world!" every second, through a buffer of 4 (the credit window).
//! Run: cargo run --example 17-bidi-stream-server [-- 127.0.0.1:4100] [--secure] [--hub 127.0.0.1:4000]
//!   --secure: clients reach the service through a secure channel (a
//!             listener at "secure_channel_listener");
//!   --hub H:  instead of listening, the server is reached through a pair of
//!             streams on the hub at H ("bidi-to-server", "bidi-to-client").

use ockam::rpc::{RpcServer, Sink, Source, Window};
use ockam::stream::Stream;
use ockam::{route, Context, Result, SecureChannel, TcpTransport, Vault, TCP};
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let secure = args.iter().any(|a| a == "--secure");
    let hub = args.iter().position(|a| a == "--hub").map(|i| {
        args.get(i + 1)
            .cloned()
            .unwrap_or_else(|| usage("--hub needs an address"))
    });
    let listen = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:4100".into());
    let tcp = TcpTransport::create(&ctx).await?;
    RpcServer::new()
        .with_window(Window {
            messages: 4,
            bytes: 64 * 1024,
        })
        .handler(
            "stream_messages",
            |_: (), mut requests: Source<MessageRequest>| async move {
                let responses: Sink<MessageResponse> = requests.make_sink().await?;
                let mut tx = responses.clone();
                // Our messages, one a second.
                tokio::spawn(async move {
                    let mut interval = tokio::time::interval(Duration::from_secs(1));
                    loop {
                        interval.tick().await;
                        let message = MessageResponse {
                            message: "Hello, world!".into(),
                        };
                        if let Err(e) = tx.send(message).await {
                            println!("Stream ended: {e}");
                            break;
                        }
                    }
                });
                // Theirs, as they come.
                tokio::spawn(async move {
                    loop {
                        match requests.recv().await {
                            Ok(Some(r)) => println!("Received request: {r:?}"),
                            Ok(None) => {
                                println!("The client closed its stream");
                                break;
                            }
                            Err(e) => {
                                println!("The client's stream ended: {e}");
                                break;
                            }
                        }
                    }
                });
                Ok(Some(responses))
            },
        )
        .start(&ctx, "message_service")
        .await?;
    if secure {
        let vault = Vault::create(&ctx)?;
        SecureChannel::create_listener(&ctx, "secure_channel_listener", &vault).await?;
    }
    let at = match hub {
        // Messages pushed to "bidi-to-server" come to this node's workers.
        Some(hub) => {
            Stream::new(&ctx)?
                .client_id("bidi-stream-server")
                .connect(
                    route![(TCP, hub.as_str())],
                    "bidi-to-client",
                    "bidi-to-server",
                )
                .await?;
            format!("hub {hub}")
        }
        None => tcp.listen(&listen).await?.to_string(),
    };
    let how = if secure { ", secure channel" } else { "" };
    println!("MessageService on {at}{how}");
    Ok(())
}

/// A bad command line: says why and exits with code 2.
fn usage(why: &str) -> ! {
    eprintln!("{why}");
    std::process::exit(2)
}

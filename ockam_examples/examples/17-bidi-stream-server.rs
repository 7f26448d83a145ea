// Seed 004 ("Bi-directional streaming with gRPC") with typed streams: a
// MessageService whose `stream_messages` handler reads the client's stream
// of MessageRequest and answers with a stream of MessageResponse, "Hello,
// world!" every second, through a buffer of 4 (the credit window).
// Run: cargo run --example 17-bidi-stream-server [-- 127.0.0.1:4100]

use ockam::rpc::{RpcServer, Sink, Source, Window};
use ockam::{Context, Result, TcpTransport};
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
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4100".into());
    let tcp = TcpTransport::create(&ctx).await?;
    let addr = tcp.listen(&listen).await?;
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
    println!("MessageService on {addr}");
    Ok(())
}

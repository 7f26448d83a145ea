//! A typed stream over a secure channel over two TCP hops (client → middle
//! node → server), three nodes with real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use ockam_channel::SecureChannel;
use ockam_core::{route, TCP};
use ockam_node::start_node;
mod common;

use common::server_thread;
use ockam_rpc::{call, make_sink, RpcError, Sink, Source};
use ockam_transport_tcp::TcpTransport;
use ockam_vault::Vault;
use std::sync::mpsc;

/// A node in a thread running `f` (its result: a value sent back), until
/// `stop` is dropped.
fn node_thread<F, Fut>(f: F) -> (String, mpsc::Sender<()>, std::thread::JoinHandle<()>)
where
    F: FnOnce(ockam_node::Context) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ockam_core::Result<(ockam_node::Context, String)>>
        + Send
        + 'static,
{
    let (up, up_rx) = mpsc::channel();
    let (stop, stop_rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let (ctx, mut executor) = start_node();
        executor
            .execute(async move {
                let (ctx, what) = f(ctx).await?;
                up.send(what).unwrap();
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                ctx.stop().await
            })
            .expect("node");
    });
    (up_rx.recv().unwrap(), stop, t)
}

/// Sends back each number doubled.
async fn double(_: u8, mut source: Source<u64>) -> Result<Option<Sink<u64>>, RpcError> {
    let sink: Sink<u64> = source.make_sink().await?;
    let mut out = sink.clone();
    tokio::spawn(async move {
        while let Ok(Some(n)) = source.recv().await {
            if out.send(n * 2).await.is_err() {
                return;
            }
        }
        let _ = out.close().await;
    });
    Ok(Some(sink))
}

#[test]
fn a_typed_stream_over_a_secure_channel_over_two_tcp_hops() {
    let (server, stop_server, t1) = server_thread(
        |s| s.handler("double", double),
        |ctx| async move {
            let vault = Vault::create(&ctx)?;
            SecureChannel::create_listener(&ctx, "secure_channel_listener", &vault).await?;
            Ok(())
        },
    );
    let server_for_middle = server.clone();
    let (middle, stop_middle, t2) = node_thread(move |ctx| async move {
        let tcp = TcpTransport::create(&ctx).await?;
        tcp.connect(&server_for_middle).await?;
        let addr = tcp.listen("127.0.0.1:0").await?;
        Ok((ctx, addr.to_string()))
    });

    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let vault = Vault::create(&ctx)?;
            let channel = SecureChannel::create(
                &ctx,
                route![
                    (TCP, middle.as_str()),
                    (TCP, server.as_str()),
                    "secure_channel_listener"
                ],
                &vault,
            )
            .await?;
            let rpc = route![channel.address(), "rpc"];
            let mut sink: Sink<u64> = make_sink(&ctx).await?;
            let mut back: Source<u64> = call(&ctx, rpc, "double", 0u8, &sink).await?.unwrap();
            let writer = tokio::spawn(async move {
                for n in 0..10_000u64 {
                    sink.send(n).await?;
                }
                sink.close().await
            });
            for n in 0..10_000u64 {
                assert_eq!(back.recv().await?, Some(n * 2));
            }
            writer.await.unwrap()?;
            assert_eq!(back.recv().await?, None);
            ctx.stop().await
        })
        .unwrap();
    drop(stop_middle);
    drop(stop_server);
    t2.join().unwrap();
    t1.join().unwrap();
}

/// Forwards every message on its onward route (a hop in the middle of the
/// route, as `Hop` of the guides); counts the payload bytes it passes on
/// toward `toward` (one direction of the stream).
struct CountingHop {
    toward: ockam_core::Address,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    frames: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

#[ockam_core::async_trait]
impl ockam_core::Worker for CountingHop {
    type Message = ockam_core::Any;
    type Context = ockam_node::Context;

    async fn handle_message(
        &mut self,
        ctx: &mut ockam_node::Context,
        msg: ockam_core::Routed<ockam_core::Any>,
    ) -> ockam_core::Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut message = msg.into_local_message();
        let transport = message.transport_mut();
        transport.onward_route.step()?;
        if transport.onward_route.next().ok() == Some(&self.toward) {
            self.bytes
                .fetch_add(transport.payload.len() as u64, Relaxed);
            self.frames.fetch_add(1, Relaxed);
        }
        transport.return_route.modify().prepend(ctx.address());
        ctx.forward(message).await
    }
}

#[test]
fn a_stalled_consumer_two_hops_away_holds_at_most_a_window_in_flight() {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;
    use std::time::Duration;
    const WINDOW: ockam_rpc::Window = ockam_rpc::Window {
        messages: 32,
        bytes: 32 * 1024,
    };
    const BODY: usize = 1000;
    let (server, stop_server, t1) = server_thread(
        |s| {
            s.with_window(WINDOW)
                .handler("stall", common::stall::stall::<Vec<u8>>)
        },
        common::nothing,
    );
    let (bytes, frames) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (server_for_middle, b, f) = (server.clone(), bytes.clone(), frames.clone());
    let (middle, stop_middle, t2) = node_thread(move |ctx| async move {
        let tcp = TcpTransport::create(&ctx).await?;
        tcp.connect(&server_for_middle).await?;
        let addr = tcp.listen("127.0.0.1:0").await?;
        let toward = ockam_core::Address::from((TCP, server_for_middle.as_str()));
        let hop = CountingHop {
            toward,
            bytes: b,
            frames: f,
        };
        ctx.start_worker("counter", hop).await?;
        Ok((ctx, addr.to_string()))
    });

    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let rpc = route![
                (TCP, middle.as_str()),
                "counter",
                (TCP, server.as_str()),
                "rpc"
            ];
            let sink: Sink<Vec<u8>> = make_sink(&ctx).await?;
            call::<u8, Vec<u8>, u8>(&ctx, rpc, "stall", 0, &sink).await?;
            // The producer tries to send 1,000 messages (about 1 MB), until
            // it has made no progress for a second.
            let (sent, producer) =
                common::stall::offer_until_held(sink, 1000, BODY, Duration::from_secs(1)).await;
            let (held, frames) = (bytes.load(Relaxed), frames.load(Relaxed));
            eprintln!(
                "stalled: the producer got {sent} of 1000 sends through; the middle hop passed {frames} frames, {held} payload bytes, toward the consumer (window {} messages / {} bytes)",
                WINDOW.messages, WINDOW.bytes
            );
            assert!(!producer.is_finished(), "the producer was not held");
            // Whatever is past the middle hop and not taken by the
            // consumer's application: at most a window, plus each frame's
            // header and sequence numbers (a few dozen bytes each).
            // Exactly a window went through (no more, and not nothing: a
            // producer that never got credit would pass a bound alone).
            let window_messages = WINDOW.bytes / (BODY as u64 + 8);
            assert_eq!(sent, window_messages.min(WINDOW.messages), "{sent}");
            assert!(held <= WINDOW.bytes + 64 * frames, "{held} bytes in {frames} frames");
            producer.abort();
            ctx.stop().await
        })
        .unwrap();
    drop(stop_middle);
    drop(stop_server);
    t2.join().unwrap();
    t1.join().unwrap();
}

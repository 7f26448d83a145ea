//! Issue 15: a typed stream over hub streams (a hub process, two nodes
//! whose only way to each other is a pair of streams through it): in
//! order, each message once, and a clean end. Hub streams redeliver after
//! a reconnect; the typed stream drops the duplicates.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;
#[path = "../../ockam_rpc/tests/common/stall.rs"]
mod stall;

use common::{free_address, HubProcess};
use ockam_core::{route, TCP};
use ockam_node::start_node;
use ockam_rpc::{call, make_sink, RpcServer, Sink, Source, Timing};
use ockam_stream_client::Stream;
use ockam_transport_tcp::TcpTransport;
use std::sync::mpsc;

/// A server node in a thread: an "echo" handler that answers each number
/// plus `offset` and a "stall" handler that never reads, reached through
/// hub streams (`[client id, outgoing,
/// incoming]`); returns once its streams are open. Drop the sender to stop
/// it.
fn server_node(
    hub: &str,
    [client_id, outgoing, incoming]: [&'static str; 3],
    offset: u64,
    timing: Timing,
) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (stop, stop_rx) = mpsc::channel::<()>();
    let (up, up_rx) = mpsc::channel::<()>();
    let hub = hub.to_string();
    let server = std::thread::spawn(move || {
        let (ctx, mut executor) = start_node();
        executor
            .execute(async move {
                let _tcp = TcpTransport::create(&ctx).await?;
                RpcServer::new()
                    .with_timing(timing)
                    .handler("echo", move |_: u8, mut source: Source<u64>| async move {
                        let sink: Sink<u64> = source.make_sink().await?;
                        let mut out = sink.clone();
                        tokio::spawn(async move {
                            while let Ok(Some(n)) = source.recv().await {
                                if out.send(n + offset).await.is_err() {
                                    return;
                                }
                            }
                            let _ = out.close().await;
                        });
                        Ok(Some(sink))
                    })
                    .handler("stall", stall::stall::<Vec<u8>>)
                    .start(&ctx, "rpc")
                    .await?;
                let _conn = Stream::new(&ctx)?
                    .client_id(client_id)
                    .connect(route![(TCP, hub.as_str())], outgoing, incoming)
                    .await?;
                up.send(()).unwrap();
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                ctx.stop().await
            })
            .expect("server node");
    });
    up_rx.recv().unwrap();
    (stop, server)
}

#[test]
fn a_typed_stream_over_a_pair_of_hub_streams() {
    let hub = free_address();
    let dir = tempfile::tempdir().unwrap();
    let _hub = HubProcess::start(&hub, &["--data-dir", dir.path().to_str().unwrap()]);

    // The server node: reads stream "to-server", answers through "to-client".
    let (stop, server) = server_node(
        &hub,
        ["typed-server", "to-client", "to-server"],
        1,
        Timing::default(),
    );

    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let (tx, _rx) = Stream::new(&ctx)?
                .client_id("typed-client")
                .connect(route![(TCP, hub.as_str())], "to-server", "to-client")
                .await?;
            let mut sink: Sink<u64> = make_sink(&ctx).await?;
            let rpc = route![tx.clone(), "rpc"];
            let mut back: Source<u64> = call(&ctx, rpc, "echo", 0u8, &sink).await?.unwrap();
            let writer = tokio::spawn(async move {
                for n in 0..2_000u64 {
                    sink.send(n).await?;
                }
                sink.close().await
            });
            for n in 0..2_000u64 {
                assert_eq!(back.recv().await?, Some(n + 1));
            }
            writer.await.unwrap()?;
            assert_eq!(back.recv().await?, None);
            ctx.stop().await
        })
        .unwrap();
    drop(stop);
    server.join().unwrap();
}

/// The same, with the hub killed (`kill -9`) and restarted on its data in
/// the middle: nothing missing, nothing twice, and a clean end (the
/// streams' liveness is set above the outage).
#[test]
fn a_typed_stream_over_hub_streams_survives_a_hub_kill_9() {
    use ockam_rpc::{call_with, make_sink_with, CallOptions};
    use std::time::Duration;
    let timing = Timing {
        ping_every: Duration::from_secs(2),
        liveness: Duration::from_secs(60),
    };
    let hub = free_address();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let mut hub_process = HubProcess::start(&hub, &["--data-dir", &data]);

    let (stop, server) = server_node(
        &hub,
        ["typed-server-2", "to-client-2", "to-server-2"],
        0,
        timing,
    );

    const N: u64 = 3000;
    let (progress, progress_rx) = mpsc::channel::<u64>();
    let client_hub = hub.clone();
    let client = std::thread::spawn(move || {
        let (ctx, mut executor) = start_node();
        executor
            .execute(async move {
                let _tcp = TcpTransport::create(&ctx).await?;
                let (tx, _rx) = Stream::new(&ctx)?
                    .client_id("typed-client-2")
                    .connect(
                        route![(TCP, client_hub.as_str())],
                        "to-server-2",
                        "to-client-2",
                    )
                    .await?;
                let mut sink: Sink<u64> = make_sink_with(&ctx, timing).await?;
                let options = CallOptions {
                    timing,
                    ..CallOptions::default()
                };
                let rpc = route![tx.clone(), "rpc"];
                let mut back: Source<u64> = call_with(&ctx, rpc, "echo", 0u8, &sink, options)
                    .await?
                    .unwrap();
                let writer = tokio::spawn(async move {
                    for n in 0..N {
                        sink.send(n).await?;
                        if n % 100 == 0 {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    sink.close().await
                });
                for n in 0..N {
                    assert_eq!(back.recv().await?, Some(n), "in order, each once");
                    let _ = progress.send(n);
                }
                writer.await.unwrap()?;
                assert_eq!(back.recv().await?, None);
                ctx.stop().await
            })
            .expect("client node");
    });
    // Mid-stream: kill -9 the hub, then bring it back on the same data.
    while progress_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("progress")
        < 1000
    {}
    hub_process.kill9();
    std::thread::sleep(Duration::from_millis(500));
    let _hub_process = HubProcess::start(&hub, &["--data-dir", &data]);
    client
        .join()
        .expect("the client saw every message once, in order, then the end");
    drop(stop);
    server.join().unwrap();
}

/// Issue 15: a consumer that stalls behind a hub. The producer is held at
/// the window, and what reaches the hub's stream meanwhile (read back from
/// the hub) is at most a window: the hub holds no more for the stream than
/// the consumer granted.
#[test]
fn a_stalled_consumer_behind_a_hub_lets_at_most_a_window_into_the_hub() {
    use ockam_stream_client::protocol::Uint;
    use ockam_stream_client::protocol::*;
    use std::time::Duration;
    const BODY: usize = 1000;
    let window = ockam_rpc::Window::default();
    let hub = free_address();
    let dir = tempfile::tempdir().unwrap();
    let _hub = HubProcess::start(&hub, &["--data-dir", dir.path().to_str().unwrap()]);
    let (stop, server) = server_node(
        &hub,
        ["typed-server-3", "to-client-3", "to-server-3"],
        0,
        Timing::default(),
    );

    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let (tx, _rx) = Stream::new(&ctx)?
                .client_id("typed-client-3")
                .connect(route![(TCP, hub.as_str())], "to-server-3", "to-client-3")
                .await?;
            let sink: Sink<Vec<u8>> = make_sink(&ctx).await?;
            call::<u8, Vec<u8>, u8>(&ctx, route![tx.clone(), "rpc"], "stall", 0, &sink).await?;
            // The producer tries to send 1,000 messages of 1,000 bytes,
            // until it has made no progress for two seconds (the stream
            // clients push and pull every 10 ms or so).
            let (sent, producer) =
                stall::offer_until_held(sink, 1000, BODY, Duration::from_secs(2)).await;
            assert!(!producer.is_finished(), "the producer was not held");

            // Everything in the hub's stream toward the server, read back.
            let stream =
                common::open_stream(&mut ctx, route![(TCP, hub.as_str()), "stream"], "to-server-3")
                    .await?;
            let (mut stored, mut bytes, mut index) = (0u64, 0u64, 0u64);
            loop {
                let pull = PullRequest {
                    request_id: Uint(index),
                    index: Uint(index),
                    limit: Uint(100),
                };
                let r: PullResponse = common::request(&mut ctx, stream.clone(), STREAM_PULL, &pull)
                    .await?
                    .decode_data(STREAM_PULL)?;
                if r.messages.is_empty() {
                    break;
                }
                for m in &r.messages {
                    stored += 1;
                    bytes += m.data.len() as u64;
                    index = m.index.0 + 1;
                }
            }
            eprintln!(
                "stalled behind a hub: {sent} of 1000 sends went through; the hub's stream holds {stored} messages, {bytes} bytes (window {} messages / {} bytes, {} messages of {BODY} bytes)",
                window.messages,
                window.bytes,
                window.messages.min(window.bytes / BODY as u64)
            );
            // Exactly a window went through (not nothing: a producer that
            // never got credit would pass a bound alone).
            assert_eq!(sent, window.messages.min(window.bytes / BODY as u64), "{sent}");
            // A window of bodies, plus each stored message's routing and
            // frame header (the call, pings, the data frames: a few hundred
            // bytes each).
            assert!(
                bytes <= sent * BODY as u64 + 512 * stored,
                "{bytes} bytes in {stored} messages"
            );
            producer.abort();
            ctx.stop().await
        })
        .unwrap();
    drop(stop);
    server.join().unwrap();
}

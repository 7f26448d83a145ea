//! Lifetime (one test, alone in its process, so that the count of live
//! stream ends is this test's): 1,000 concurrent streams between two
//! nodes over TCP end and leave nothing behind; garbage and forged frames
//! are dropped and the stream goes on; when the peer node goes away, the
//! stream is lost in time and its ends are gone.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use ockam_core::{route, Address, TCP};
use ockam_node::start_node;
use ockam_rpc::internal::proto::Frame;
mod common;

use common::{echo, nothing, server_thread};
use ockam_rpc::{call, live_ends, make_sink, RpcError, Sink, Source};
use ockam_transport_tcp::TcpTransport;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn echo_server() -> (String, mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    server_thread(|s| s.handler("echo", echo::<String>), nothing)
}

async fn settle_to(want: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    while live_ends() != want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    live_ends()
}

#[test]
fn streams_end_cleanly_and_leave_nothing_behind() {
    let (hub, stop, t) = echo_server();
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let rpc = route![(TCP, hub.as_str()), "rpc"];

            // 1,000 streams at once, each five messages there and back.
            let mut streams = Vec::new();
            for _ in 0..1000 {
                let sink: Sink<String> = make_sink(&ctx).await?;
                let source: Source<String> =
                    call(&ctx, rpc.clone(), "echo", 0u8, &sink).await?.unwrap();
                streams.push((sink, source));
            }
            // Four ends a stream: ours and the server's, each way.
            assert_eq!(live_ends(), 4000);
            let mut tasks = Vec::new();
            for (i, (mut sink, mut source)) in streams.into_iter().enumerate() {
                tasks.push(tokio::spawn(async move {
                    for k in 0..5 {
                        sink.send(format!("{i}-{k}")).await?;
                    }
                    sink.close().await?;
                    for k in 0..5 {
                        assert_eq!(source.recv().await?, Some(format!("{i}-{k}")));
                    }
                    assert_eq!(source.recv().await?, None);
                    Ok::<_, RpcError>(())
                }));
            }
            for t in tasks {
                t.await.unwrap()?;
            }
            assert_eq!(settle_to(0, Duration::from_secs(10)).await, 0, "ends left");

            // Calls that fail (no such handler; an answer that never comes)
            // leave no end behind once their sink is dropped: an end that
            // never learnt where its other end is exits when it finishes.
            for to in [rpc.clone(), route![(TCP, hub.as_str()), "nobody"]] {
                let sink: Sink<String> = make_sink(&ctx).await?;
                let options = ockam_rpc::CallOptions {
                    timeout: Duration::from_millis(500),
                    ..Default::default()
                };
                let failed =
                    ockam_rpc::call_with::<u8, String, String>(&ctx, to, "nope", 0, &sink, options)
                        .await;
                assert!(failed.is_err());
                drop(sink);
            }
            assert_eq!(
                settle_to(0, Duration::from_secs(10)).await,
                0,
                "ends left after failed calls"
            );

            // Garbage and forged frames to an end: dropped, the stream goes on.
            let mut sink: Sink<String> = make_sink(&ctx).await?;
            let mut source: Source<String> =
                call(&ctx, rpc.clone(), "echo", 0u8, &sink).await?.unwrap();
            let to_source: Address = source.address().clone();
            ctx.send(to_source.clone(), vec![0xffu8; 40]).await?;
            let forged = Frame::Data {
                first: 1_000_000,
                bodies: [b"x"].into_iter().collect(),
            };
            ctx.send(to_source.clone(), forged).await?;
            let replayed_close = Frame::Close { total: 0 };
            ctx.send(sink.address().clone(), replayed_close).await?;
            sink.send("still here".into()).await?;
            assert_eq!(source.recv().await?.as_deref(), Some("still here"));

            // The peer node goes away: lost in time, nothing left.
            drop(stop);
            let started = Instant::now();
            let outcome = source.recv().await;
            assert!(
                matches!(outcome, Err(RpcError::Lost(_)) | Err(RpcError::Aborted(_))),
                "{outcome:?}"
            );
            assert!(started.elapsed() < Duration::from_secs(15));
            let sent = sink.send("after".into()).await;
            assert!(sent.is_err() || started.elapsed() < Duration::from_secs(15));
            drop((sink, source));
            assert_eq!(settle_to(0, Duration::from_secs(15)).await, 0, "ends left");
            ctx.stop().await
        })
        .unwrap();
    t.join().unwrap();
}

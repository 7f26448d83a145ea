//! Typed streams between two nodes over TCP (two nodes in this process,
//! each with its own runtime, talking through real sockets).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::{echo, nothing, server_thread};
use ockam_core::{route, TCP};
use ockam_node::{start_node, Context};
use ockam_rpc::{call, make_sink, RpcError, Sink, Source, Window};
use ockam_transport_tcp::TcpTransport;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A server node in a thread: handlers "count" (reads u64s, answers the
/// count when the stream ends cleanly, or the error), "echo" (sends back
/// what it reads), "stall" (never reads). Returns its address and a stop.
fn server(window: Window) -> (String, mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    server_thread(
        move |s| {
            s.with_window(window)
                .handler("count", |_: u8, mut source: Source<u64>| async move {
                    let sink: Sink<String> = source.make_sink().await?;
                    let mut out = sink.clone();
                    tokio::spawn(async move {
                        let mut n = 0u64;
                        let verdict = loop {
                            match source.recv().await {
                                Ok(Some(x)) => {
                                    if x != n {
                                        break format!("out of order: {x} after {n}");
                                    }
                                    n += 1;
                                }
                                Ok(None) => break format!("end after {n}"),
                                Err(e) => break format!("error after {n}: {e:?}"),
                            }
                        };
                        let _ = out.send(verdict).await;
                        let _ = out.close().await;
                    });
                    Ok(Some(sink))
                })
                .handler("echo", echo::<String>)
                .handler("stall", common::stall::stall::<u64>)
        },
        nothing,
    )
}

fn client<F, Fut>(f: F)
where
    F: FnOnce(Context) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ockam_core::Result<()>> + Send + 'static,
{
    let (ctx, mut executor) = start_node();
    executor.execute(async move { f(ctx).await }).unwrap();
}

#[test]
fn a_hundred_thousand_messages_in_order_then_a_clean_end() {
    let (hub, stop, t) = server(Window::default());
    client(move |ctx| async move {
        let _tcp = TcpTransport::create(&ctx).await?;
        let mut sink: Sink<u64> = make_sink(&ctx).await?;
        let mut verdict: Source<String> = call(
            &ctx,
            route![(TCP, hub.as_str()), "rpc"],
            "count",
            0u8,
            &sink,
        )
        .await?
        .expect("a reverse stream");
        let started = Instant::now();
        for n in 0..100_000u64 {
            sink.send(n).await?;
        }
        // close() returns once the server has everything.
        sink.close().await?;
        assert_eq!(verdict.recv().await?.as_deref(), Some("end after 100000"));
        assert_eq!(verdict.recv().await?, None);
        eprintln!("100,000 messages in {:?}", started.elapsed());
        ctx.stop().await
    });
    drop(stop);
    t.join().unwrap();
}

/// Small frames are handled on the connection's reader, large ones by the
/// end's task (`endpoint::Inline`): messages of both kinds mixed, in
/// bursts and one at a time, come back through an echo in order, each
/// once.
#[test]
fn small_and_large_messages_mixed_come_back_in_order() {
    let (hub, stop, t) = server(Window::default());
    client(move |ctx| async move {
        let _tcp = TcpTransport::create(&ctx).await?;
        let mut sink: Sink<String> = make_sink(&ctx).await?;
        let mut back: Source<String> =
            call(&ctx, route![(TCP, hub.as_str()), "rpc"], "echo", 0u8, &sink)
                .await?
                .expect("a reverse stream");
        let message = |i: usize| {
            if i % 7 == 3 {
                format!("{i}:{}", "x".repeat(20_000))
            } else {
                i.to_string()
            }
        };
        let n = 3000;
        let reader = tokio::spawn(async move {
            for i in 0..n {
                match back.recv().await {
                    Ok(Some(m)) if m == message(i) => {}
                    other => return Err(format!("message {i}: {other:?}")),
                }
            }
            match back.recv().await {
                Ok(None) => Ok(()),
                other => Err(format!("after the last: {other:?}")),
            }
        });
        for i in 0..n {
            sink.send(message(i)).await?;
            // Now and then one at a time: each small frame alone.
            if i % 500 > 450 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        sink.close().await?;
        reader.await.unwrap().unwrap();
        ctx.stop().await
    });
    drop(stop);
    t.join().unwrap();
}

#[test]
fn every_ending_is_told_apart_on_both_sides() {
    let (hub, stop, t) = server(Window::default());
    client(move |ctx| async move {
        let _tcp = TcpTransport::create(&ctx).await?;
        let rpc = route![(TCP, hub.as_str()), "rpc"];
        // Drop without close: the server's source sees an abort.
        let mut sink: Sink<u64> = make_sink(&ctx).await?;
        let mut verdict: Source<String> =
            call(&ctx, rpc.clone(), "count", 0u8, &sink).await?.unwrap();
        sink.send(0).await?;
        sink.send(1).await?;
        drop(sink);
        let v = verdict.recv().await?.unwrap();
        assert!(v.starts_with("error after 2: Aborted"), "{v}");

        // Explicit abort, with a reason.
        let mut sink: Sink<String> = make_sink(&ctx).await?;
        let mut echo: Source<String> = call(&ctx, rpc.clone(), "echo", 0u8, &sink).await?.unwrap();
        sink.send("a".into()).await?;
        assert_eq!(echo.recv().await?.as_deref(), Some("a"));
        sink.abort("changed my mind");
        match echo.recv().await {
            Err(RpcError::Aborted(why)) => assert!(why.contains("changed my mind"), "{why}"),
            other => panic!("{other:?}"),
        }

        // The receiver cancels: the sender's send fails with Cancelled.
        let mut sink: Sink<String> = make_sink(&ctx).await?;
        let echo: Source<String> = call(&ctx, rpc.clone(), "echo", 0u8, &sink).await?.unwrap();
        echo.cancel("enough");
        // The server's echo sink gets Cancelled, aborts its source's ... the
        // client's sink sees its stream aborted or cancelled in time.
        let deadline = Instant::now() + Duration::from_secs(10);
        let outcome = loop {
            match sink.send("x".into()).await {
                Ok(()) => {
                    assert!(Instant::now() < deadline, "still sending");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => break e,
            }
        };
        assert!(matches!(outcome, RpcError::Cancelled(_)), "{outcome:?}");

        // A message of the wrong type: a decode error, not an end.
        let mut sink: Sink<String> = make_sink(&ctx).await?;
        let mut verdict: Source<String> =
            call(&ctx, rpc.clone(), "count", 0u8, &sink).await?.unwrap();
        sink.send("not a number".into()).await?;
        let v = verdict.recv().await?.unwrap();
        assert!(v.starts_with("error after 0: Decode"), "{v}");

        // No such handler.
        let sink: Sink<u64> = make_sink(&ctx).await?;
        let refused = call::<u8, u64, String>(&ctx, rpc.clone(), "nope", 0, &sink).await;
        assert!(
            matches!(refused, Err(RpcError::Refused(_))),
            "{:?}",
            refused.err()
        );
        sink.abort("unused");
        ctx.stop().await
    });
    drop(stop);
    t.join().unwrap();
}

#[test]
fn a_stalled_consumer_holds_its_producer_and_not_the_other_streams() {
    let window = Window {
        messages: 4,
        bytes: 4096,
    };
    let (hub, stop, t) = server(window);
    client(move |ctx| async move {
        let _tcp = TcpTransport::create(&ctx).await?;
        let rpc = route![(TCP, hub.as_str()), "rpc"];
        let mut stalled: Sink<u64> = make_sink(&ctx).await?;
        let none = call::<u8, u64, String>(&ctx, rpc.clone(), "stall", 0, &stalled).await?;
        assert!(none.is_none());
        // Four messages fit the window; the fifth waits.
        for n in 0..4 {
            stalled.send(n).await?;
        }
        let fifth = tokio::time::timeout(Duration::from_millis(500), stalled.send(4)).await;
        assert!(fifth.is_err(), "a send beyond the window must wait");
        // Meanwhile another stream on the same connection flows.
        let mut sink: Sink<String> = make_sink(&ctx).await?;
        let mut echo: Source<String> = call(&ctx, rpc.clone(), "echo", 0u8, &sink).await?.unwrap();
        for i in 0..1000 {
            sink.send(format!("m{i}")).await?;
            assert_eq!(echo.recv().await?, Some(format!("m{i}")));
        }
        sink.close().await?;
        assert_eq!(echo.recv().await?, None);
        stalled.abort("done");
        ctx.stop().await
    });
    drop(stop);
    t.join().unwrap();
}

#[test]
fn a_peer_that_goes_away_is_lost_in_time() {
    let (hub, stop_tx, t) = server(Window::default());
    client(move |ctx| async move {
        let _tcp = TcpTransport::create(&ctx).await?;
        let rpc = route![(TCP, hub.as_str()), "rpc"];
        let mut sink: Sink<String> = make_sink(&ctx).await?;
        let mut echo: Source<String> = call(&ctx, rpc, "echo", 0u8, &sink).await?.unwrap();
        sink.send("a".into()).await?;
        assert_eq!(echo.recv().await?.as_deref(), Some("a"));
        // The server node stops.
        drop(stop_tx);
        let started = Instant::now();
        let outcome = echo.recv().await;
        let waited = started.elapsed();
        assert!(
            matches!(outcome, Err(RpcError::Lost(_)) | Err(RpcError::Aborted(_))),
            "{outcome:?}"
        );
        assert!(waited < Duration::from_secs(15), "{waited:?}");
        ctx.stop().await
    });
    t.join().unwrap();
}

#[test]
fn streams_beyond_the_per_peer_limit_are_refused_until_one_ends() {
    let (hub, stop, t) = server_thread(
        |s| {
            s.with_max_streams(2)
                .handler("hold", |_: u8, mut source: Source<u64>| async move {
                    tokio::spawn(async move { while let Ok(Some(_)) = source.recv().await {} });
                    Ok(None::<Sink<u64>>)
                })
        },
        nothing,
    );
    client(move |ctx| async move {
        let _tcp = TcpTransport::create(&ctx).await?;
        let rpc = route![(TCP, hub.as_str()), "rpc"];
        let a: Sink<u64> = make_sink(&ctx).await?;
        let b: Sink<u64> = make_sink(&ctx).await?;
        let c: Sink<u64> = make_sink(&ctx).await?;
        call::<u8, u64, u8>(&ctx, rpc.clone(), "hold", 0, &a).await?;
        call::<u8, u64, u8>(&ctx, rpc.clone(), "hold", 0, &b).await?;
        match call::<u8, u64, u8>(&ctx, rpc.clone(), "hold", 0, &c).await {
            Err(RpcError::Limit { what, limit }) => {
                assert_eq!((what.as_str(), limit), ("streams per peer", 2))
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        a.close().await?;
        // A stream ended: room again.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match call::<u8, u64, u8>(&ctx, rpc.clone(), "hold", 0, &c).await {
                Ok(_) => break,
                Err(RpcError::Limit { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
        b.abort("done");
        c.abort("done");
        ctx.stop().await
    });
    drop(stop);
    t.join().unwrap();
}

#[test]
fn a_thousand_streams_at_once_between_two_nodes() {
    let (hub, stop, t) = server(Window::default());
    client(move |ctx| async move {
        let _tcp = TcpTransport::create(&ctx).await?;
        let rpc = route![(TCP, hub.as_str()), "rpc"];
        const STREAMS: usize = 1000;
        let mut open = Vec::with_capacity(STREAMS);
        for _ in 0..STREAMS {
            let sink: Sink<String> = make_sink(&ctx).await?;
            let echo: Source<String> = call(&ctx, rpc.clone(), "echo", 0u8, &sink).await?.unwrap();
            open.push((sink, echo));
        }
        // All open at once, on the one TCP connection: each carries its
        // own messages, in order, and ends cleanly.
        let ends = open
            .into_iter()
            .enumerate()
            .map(|(i, (mut sink, mut echo))| async move {
                for k in 0..3 {
                    sink.send(format!("{i}/{k}")).await?;
                }
                for k in 0..3 {
                    assert_eq!(echo.recv().await?, Some(format!("{i}/{k}")));
                }
                sink.close().await?;
                assert_eq!(echo.recv().await?, None);
                Ok::<(), RpcError>(())
            });
        for outcome in futures_util::future::join_all(ends).await {
            outcome?;
        }
        ctx.stop().await
    });
    drop(stop);
    t.join().unwrap();
}

#[test]
fn forged_and_garbage_frames_are_dropped_and_the_stream_goes_on() {
    use ockam_rpc::internal::proto::Frame;
    let (hub, stop, t) = server(Window::default());
    client(move |ctx| async move {
        let _tcp = TcpTransport::create(&ctx).await?;
        let rpc = route![(TCP, hub.as_str()), "rpc"];
        let mut sink: Sink<String> = make_sink(&ctx).await?;
        let mut echo: Source<String> = call(&ctx, rpc.clone(), "echo", 0u8, &sink).await?.unwrap();
        sink.send("m0".into()).await?;
        assert_eq!(echo.recv().await?.as_deref(), Some("m0"));

        // Someone else on the node knows the source's address: bytes that
        // are no frame, and frames that would end the stream, skip or
        // replay messages. None of it is from the stream's peer.
        let forger = ctx.new_context(ockam_core::Address::random_local()).await?;
        let at = route![echo.address().clone()];
        forger.send(at.clone(), vec![0xffu8; 7]).await?;
        forger.send(at.clone(), String::from("hello")).await?;
        forger.send(at.clone(), Frame::Close { total: 1 }).await?;
        forger
            .send(
                at.clone(),
                Frame::Abort {
                    reason: "forged".into(),
                    total: 1,
                },
            )
            .await?;
        let bodies: ockam_rpc::internal::proto::Bodies =
            [ockam_core::Message::encode(&"forged".to_string())?]
                .into_iter()
                .collect();
        for first in [0, 1, 2, u64::MAX] {
            let data = Frame::Data {
                first,
                bodies: bodies.clone(),
            };
            forger.send(at.clone(), data).await?;
        }
        // The same to the sink (its peer is the server's source).
        let at_sink = route![sink.address().clone()];
        forger.send(at_sink.clone(), vec![0u8; 3]).await?;
        forger
            .send(
                at_sink.clone(),
                Frame::Cancel {
                    reason: "forged".into(),
                },
            )
            .await?;
        forger
            .send(
                at_sink,
                Frame::Credit {
                    next: 0,
                    credit_messages: u64::MAX,
                    credit_bytes: u64::MAX,
                },
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;

        // The stream goes on: in order, each message once, a clean end.
        for i in 1..20 {
            sink.send(format!("m{i}")).await?;
        }
        for i in 1..20 {
            assert_eq!(echo.recv().await?, Some(format!("m{i}")));
        }
        sink.close().await?;
        assert_eq!(echo.recv().await?, None);

        // A frame to a new sink before its call: it does not make the
        // forger the sink's peer (the call's answer says who is).
        let mut sink: Sink<u64> = make_sink(&ctx).await?;
        forger
            .send(
                route![sink.address().clone()],
                Frame::Credit {
                    next: 0,
                    credit_messages: 1 << 20,
                    credit_bytes: 1 << 30,
                },
            )
            .await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut verdict: Source<String> =
            call(&ctx, rpc.clone(), "count", 0u8, &sink).await?.unwrap();
        for n in 0..100u64 {
            sink.send(n).await?;
        }
        sink.close().await?;
        assert_eq!(verdict.recv().await?.as_deref(), Some("end after 100"));

        // And the node: another stream works.
        let mut sink: Sink<String> = make_sink(&ctx).await?;
        let mut echo: Source<String> = call(&ctx, rpc, "echo", 0u8, &sink).await?.unwrap();
        sink.send("again".into()).await?;
        assert_eq!(echo.recv().await?.as_deref(), Some("again"));
        sink.close().await?;
        assert_eq!(echo.recv().await?, None);
        ctx.stop().await
    });
    drop(stop);
    t.join().unwrap();
}

#[test]
fn plain_requests_are_answered_on_the_same_server() {
    let (hub, stop, t) = server_thread(
        |s| {
            s.with_max_requests(2)
                .handler("echo", echo::<String>)
                .request_handler("add", |(a, b): (u64, u64)| async move {
                    a.checked_add(b)
                        .ok_or_else(|| RpcError::Refused(format!("{a} + {b} overflows")))
                })
                .request_handler("slow", |ms: u64| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(ms)
                })
        },
        nothing,
    );
    client(move |ctx| async move {
        use ockam_rpc::{request, request_with};
        let _tcp = TcpTransport::create(&ctx).await?;
        let rpc = route![(TCP, hub.as_str()), "rpc"];
        let sum: u64 = request(&ctx, rpc.clone(), "add", (2u64, 3u64)).await?;
        assert_eq!(sum, 5);
        // The handler's own error, as a refusal with its text.
        match request::<_, u64>(&ctx, rpc.clone(), "add", (u64::MAX, 1u64)).await {
            Err(RpcError::Refused(why)) => assert!(why.contains("overflows"), "{why}"),
            other => panic!("{other:?}"),
        }
        // No such handler; a handler that takes a stream; a request that
        // does not decode; an answer that does not decode.
        for (name, what) in [("nope", "no handler"), ("echo", "takes a stream")] {
            match request::<_, u64>(&ctx, rpc.clone(), name, 1u64).await {
                Err(RpcError::Refused(why)) => assert!(why.contains(what), "{why}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        match request::<_, u64>(&ctx, rpc.clone(), "add", "two".to_string()).await {
            Err(RpcError::Refused(why)) => assert!(why.contains("does not decode"), "{why}"),
            other => panic!("{other:?}"),
        }
        match request::<_, String>(&ctx, rpc.clone(), "add", (1u64, 1u64)).await {
            Err(RpcError::Decode(_)) => {}
            other => panic!("{other:?}"),
        }
        // A call to a plain handler is refused too.
        let sink: Sink<u64> = make_sink(&ctx).await?;
        match call::<u8, u64, u64>(&ctx, rpc.clone(), "add", 0, &sink).await {
            Err(RpcError::Refused(why)) => assert!(why.contains("takes no stream"), "{why}"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        sink.abort("unused");
        // A slow request does not hold a quick one up; a request not
        // answered in time is Lost.
        let slow = request::<_, u64>(&ctx, rpc.clone(), "slow", 2000u64);
        let quick = request::<_, u64>(&ctx, rpc.clone(), "slow", 1u64);
        tokio::pin!(slow);
        tokio::select! {
            v = quick => assert_eq!(v?, 1),
            v = &mut slow => panic!("the slow request was answered first: {v:?}"),
        }
        assert_eq!(slow.await?, 2000);
        match request_with::<_, u64>(
            &ctx,
            rpc.clone(),
            "slow",
            3000u64,
            Duration::from_millis(300),
        )
        .await
        {
            Err(RpcError::Lost(_)) => {}
            other => panic!("{other:?}"),
        }
        // That one is still in progress: with one more, the server is at
        // its limit of 2, and a third is refused, naming the limit.
        let held = request::<_, u64>(&ctx, rpc.clone(), "slow", 1000u64);
        let refused = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            request::<_, u64>(&ctx, rpc.clone(), "slow", 1u64).await
        };
        let (held, refused) = futures_util::future::join(held, refused).await;
        assert_eq!(held?, 1000);
        match refused {
            Err(RpcError::Limit { what, limit }) => {
                assert_eq!((what.as_str(), limit), ("requests in progress", 2))
            }
            other => panic!("{other:?}"),
        }
        // Once answered, there is room again.
        tokio::time::sleep(Duration::from_millis(3000)).await;
        assert_eq!(request::<_, u64>(&ctx, rpc, "slow", 1u64).await?, 1);
        ctx.stop().await
    });
    drop(stop);
    t.join().unwrap();
}

#[test]
fn a_handler_slower_than_the_liveness_timeout_still_gets_a_live_stream() {
    use ockam_rpc::{call_with, make_sink_with, CallOptions, Timing};
    let timing = Timing {
        ping_every: Duration::from_millis(200),
        liveness: Duration::from_secs(1),
    };
    let (hub, stop, t) = server_thread(
        move |s| {
            s.with_timing(timing)
                .handler("slow-echo", |_: u8, source: Source<String>| async move {
                    // Longer than the liveness, before the handler answers.
                    tokio::time::sleep(Duration::from_millis(2500)).await;
                    echo(0, source).await
                })
        },
        nothing,
    );
    client(move |ctx| async move {
        let _tcp = TcpTransport::create(&ctx).await?;
        let rpc = route![(TCP, hub.as_str()), "rpc"];
        let sink: Sink<String> = make_sink_with(&ctx, timing).await?;
        // The sink sends while the handler still runs.
        let mut early = sink.clone();
        let sender = tokio::spawn(async move {
            for i in 0..3 {
                early.send(format!("m{i}")).await?;
            }
            Ok::<_, RpcError>(early)
        });
        let options = CallOptions {
            timing,
            ..CallOptions::default()
        };
        let mut back: Source<String> = call_with(&ctx, rpc, "slow-echo", 0u8, &sink, options)
            .await?
            .expect("a reverse stream");
        let early = sender.await.unwrap()?;
        drop(early);
        for i in 0..3 {
            assert_eq!(back.recv().await?, Some(format!("m{i}")));
        }
        sink.close().await?;
        assert_eq!(back.recv().await?, None);
        ctx.stop().await
    });
    drop(stop);
    t.join().unwrap();
}

//! Typed streams between two nodes over TCP (two nodes in this process,
//! each with its own runtime, talking through real sockets).

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
                .handler("stall", |_: u8, source: Source<u64>| async move {
                    // Holds the source, never reads.
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        drop(source);
                    });
                    Ok(None::<Sink<u64>>)
                })
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

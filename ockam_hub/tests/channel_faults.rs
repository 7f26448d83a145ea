//! Issue 18's network faults, for secure channels and the typed streams
//! over them: a client node reaches a server node through the
//! fault-injecting proxy (stalls, a 10 s partition, connections cut
//! mid-frame). A channel keeps working or ends saying so; a typed stream
//! over it delivers everything in order and ends cleanly, or reports the
//! stream lost: never a gap, a reorder or a silent end.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

#[path = "common/faults.rs"]
mod faults;

use faults::{Fault, FaultProxy};
use ockam_channel::SecureChannel;
use ockam_core::{route, Result, TCP};
use ockam_get_started::Echoer;
use ockam_node::{start_node, Context};
use ockam_rpc::{call, make_sink, RpcError, RpcServer, Sink, Source};
use ockam_transport_tcp::TcpTransport;
use ockam_vault::Vault;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Numbers sent over the typed stream in each scenario.
const N: u64 = 2_000;

/// Sends back each number it reads; ends as its source does.
async fn echo(_: u8, mut source: Source<u64>) -> std::result::Result<Option<Sink<u64>>, RpcError> {
    let sink: Sink<u64> = source.make_sink().await?;
    let mut out = sink.clone();
    tokio::spawn(async move {
        loop {
            match source.recv().await {
                Ok(Some(n)) => {
                    if out.send(n).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    let _ = out.close().await;
                    return;
                }
                Err(e) => return out.abort(&format!("source: {e}")),
            }
        }
    });
    Ok(Some(sink))
}

/// The server node, on its own thread: a channel listener, an echoer and
/// an RPC server with `echo`. Its TCP address; stops when the sender drops.
fn server() -> (String, mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (up, up_rx) = mpsc::channel();
    let (stop, stop_rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let (ctx, mut executor) = start_node();
        executor
            .execute(async move {
                let tcp = TcpTransport::create(&ctx).await?;
                let vault = Vault::create(&ctx)?;
                SecureChannel::create_listener(&ctx, "listener", &vault).await?;
                ctx.start_worker("echoer", Echoer).await?;
                RpcServer::new()
                    .handler("echo", echo)
                    .start(&ctx, "rpc")
                    .await?;
                up.send(tcp.listen("127.0.0.1:0").await?.to_string())
                    .unwrap();
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                ctx.stop().await
            })
            .expect("server node");
    });
    (up_rx.recv().unwrap(), stop, t)
}

/// How a scenario went, for RELIABILITY.md.
#[derive(Debug, Default)]
struct Outcome {
    echoes_answered: usize,
    stream_delivered: u64,
    stream_end: String,
}

/// Through `proxy`: a channel; echoes through it; a typed stream of `N`
/// numbers over it, calling `during` after `N / 4` came back. Checks order
/// and that the stream ends cleanly or as lost. `cut`: the fault is
/// expected to end the channel.
async fn scenario(
    ctx: &mut Context,
    proxy: &FaultProxy,
    during: impl FnOnce() + Send + 'static,
    cut: bool,
) -> Result<Outcome> {
    let vault = Vault::create(ctx)?;
    let to = route![(TCP, proxy.address.as_str()), "listener"];
    let channel = SecureChannel::create(ctx, to.clone(), &vault).await?;
    let mut outcome = Outcome::default();
    for i in 0..20 {
        ctx.send(route![channel.address(), "echoer"], format!("before {i}"))
            .await?;
        assert_eq!(
            ctx.receive_timeout::<String>(30).await?.body(),
            format!("before {i}")
        );
        outcome.echoes_answered += 1;
    }

    let rpc = route![channel.address(), "rpc"];
    let sink: Sink<u64> = make_sink(ctx).await?;
    let mut back: Source<u64> = call(ctx, rpc, "echo", 0u8, &sink).await?.unwrap();
    let mut writer_sink = sink.clone();
    let writer = tokio::spawn(async move {
        for n in 0..N {
            writer_sink.send(n).await?;
        }
        writer_sink.close().await
    });
    let mut during = Some(during);
    let mut fault = None;
    let end = loop {
        match back.recv().await {
            Ok(Some(n)) => {
                assert_eq!(n, outcome.stream_delivered, "a gap or a reorder");
                outcome.stream_delivered += 1;
                if outcome.stream_delivered == N / 4 {
                    let during = during.take().unwrap();
                    fault = Some(tokio::task::spawn_blocking(during));
                }
            }
            Ok(None) => break "clean end".to_string(),
            Err(e @ (RpcError::Lost(_) | RpcError::Aborted(_))) => break format!("{e}"),
            Err(e) => panic!("the typed stream ended otherwise: {e}"),
        }
    };
    if let Some(f) = fault {
        f.await.unwrap();
    }
    let _ = writer.await;
    if end == "clean end" {
        assert_eq!(
            outcome.stream_delivered, N,
            "a clean end with numbers missing"
        );
    }
    outcome.stream_end = end;

    if cut {
        // The channel's connection went: the channel ends, and says so.
        let until = Instant::now() + Duration::from_secs(10);
        while ctx.is_present(&channel.address()) != Some(false) {
            assert!(
                Instant::now() < until,
                "the channel outlived its connection"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let err = ctx
            .send(route![channel.address(), "echoer"], "after".to_string())
            .await
            .expect_err("a send through a channel that ended");
        println!("a send through the channel after the cut: {err}");
        // A new channel, over a new connection, works.
        let channel = SecureChannel::create(ctx, to, &vault).await?;
        ctx.send(route![channel.address(), "echoer"], "again".to_string())
            .await?;
        assert_eq!(ctx.receive_timeout::<String>(30).await?.body(), "again");
    } else {
        // The channel rode the fault out.
        for i in 0..20 {
            ctx.send(route![channel.address(), "echoer"], format!("after {i}"))
                .await?;
            assert_eq!(
                ctx.receive_timeout::<String>(30).await?.body(),
                format!("after {i}")
            );
            outcome.echoes_answered += 1;
        }
    }
    Ok(outcome)
}

fn run(name: &str, fault: impl FnOnce(&FaultProxy) + Send + 'static, cut: bool) {
    let (server, stop, t) = server();
    // The proxy's runtime must not end inside the node's: the last
    // reference is this one, dropped after the node stopped.
    let proxy = std::sync::Arc::new(FaultProxy::start(&server));
    let kept = proxy.clone();
    let (mut ctx, mut executor) = start_node();
    let name = name.to_string();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let started = Instant::now();
            let p = proxy.clone();
            let outcome = scenario(&mut ctx, &proxy, move || fault(&p), cut).await?;
            println!(
                "{name}: echoes answered {}, typed stream: {} of {N} delivered in order, then {}; {:?}, {} proxy connections",
                outcome.echoes_answered,
                outcome.stream_delivered,
                outcome.stream_end,
                started.elapsed(),
                proxy.connections()
            );
            ctx.stop().await
        })
        .unwrap();
    drop(kept);
    drop(stop);
    t.join().unwrap();
}

#[test]
fn a_channel_and_its_typed_stream_ride_out_stalls() {
    run(
        "stalls",
        |proxy| {
            proxy.set(Fault::Stalls {
                percent: 20,
                min: Duration::from_millis(50),
                max: Duration::from_millis(400),
            });
        },
        false,
    );
}

#[test]
fn a_channel_rides_out_a_ten_second_partition() {
    run(
        "partition",
        |proxy| {
            proxy.set(Fault::Partition);
            std::thread::sleep(Duration::from_secs(10));
            proxy.set(Fault::None);
        },
        false,
    );
}

#[test]
fn a_cut_connection_ends_the_channel_and_its_stream_saying_so() {
    run("cut", |proxy| proxy.cut_mid_frame(), true);
}

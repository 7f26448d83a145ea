//! Streams through a hub on loopback, memory and durable stores, in one run:
//! - push throughput of 1 KiB messages, one and eight producers (raw stream
//!   protocol, 256 pushes in flight per producer, counted confirmations);
//! - end-to-end latency p50/p99 (stream client to stream client) with the
//!   waiting pull and with 100 ms polling as in the seeds;
//! - the same against a closed hub (issue 16: an access file; every client
//!   reaches it through a secure channel, one per client node), beside
//!   the open durable hub.
//!
//! `cargo bench -p ockam-rs-hub --bench hub_throughput`
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use ockam_core::{async_trait, route, Result, Route, Routed, Worker, TCP};
use ockam_hub::{Access, Hub, HubConfig, StorageKind};
use ockam_node::{start_node, Context};
use ockam_stream_client::protocol::Uint;
use ockam_stream_client::protocol::*;
use ockam_stream_client::Stream;
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// How clients reach the hub: over TCP, or through a secure channel as
/// the identity with this secret (the access file names it).
#[derive(Clone, Copy)]
enum Via {
    Plain,
    Channel([u8; 32]),
}

/// The route to the hub's services from `ctx`'s node: over TCP, or through
/// a new secure channel.
async fn to_hub(ctx: &Context, hub: &str, via: Via) -> Result<Route> {
    match via {
        Via::Plain => Ok(route![(TCP, hub)]),
        Via::Channel(secret) => {
            let vault = ockam_vault::Vault::create(ctx)?;
            let channel = ockam_channel::SecureChannel::create_with_options(
                ctx,
                route![(TCP, hub), "secure_channel_listener"],
                &vault,
                ockam_channel::SecureChannelOptions {
                    static_key: Some(vault.import_x25519(secret)),
                    ..Default::default()
                },
            )
            .await?;
            Ok(route![channel.address()])
        }
    }
}

/// A hub in its own thread; returns its address and a stopper.
fn hub(
    storage: StorageKind,
    access: Access,
) -> (String, mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (up_tx, up_rx) = mpsc::channel();
    let (stop, stop_rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let (ctx, mut executor) = start_node();
        executor
            .execute(async move {
                let config = HubConfig {
                    listen: "127.0.0.1:0".into(),
                    storage,
                    access,
                    ..HubConfig::default()
                };
                up_tx
                    .send(Hub::start(&ctx, config).await?.to_string())
                    .unwrap();
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                ctx.stop().await
            })
            .expect("hub");
    });
    (up_rx.recv().unwrap(), stop, t)
}

/// One producer: opens `stream`, pushes `n` messages of `size` bytes with
/// `window` unconfirmed at most; returns when all are confirmed.
async fn produce(
    ctx: &Context,
    hub: Route,
    stream: &str,
    n: u64,
    size: usize,
    window: u64,
) -> Result<()> {
    let mut me = ctx.new_context(ockam_core::Address::random_local()).await?;
    let req = CreateStreamRequest {
        stream_name: Some(stream.to_string()),
    };
    let mut service = hub;
    service.modify().append("stream");
    me.send(service, ProtocolPayload::new(STREAM_CREATE, &req)?)
        .await?;
    let route: Route = me.receive::<ProtocolPayload>().await?.return_route();
    let data = vec![b'x'; size];
    let (mut sent, mut confirmed) = (0u64, 0u64);
    while confirmed < n {
        while sent < n && sent - confirmed < window {
            let push = PushRequest {
                request_id: Uint(sent),
                data: data.clone(),
            };
            me.send(route.clone(), ProtocolPayload::new(STREAM_PUSH, &push)?)
                .await?;
            sent += 1;
        }
        let c: PushConfirm = me
            .receive::<ProtocolPayload>()
            .await?
            .decode_data(STREAM_PUSH)?;
        assert_eq!(c.status, PushStatus::Ok);
        confirmed += 1;
    }
    Ok(())
}

fn push_rate(hub: &str, via: Via, producers: usize, n: u64) -> f64 {
    let hub = hub.to_string();
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = ockam_transport_tcp::TcpTransport::create(&ctx).await?;
            let hub = to_hub(&ctx, &hub, via).await?;
            let start = Instant::now();
            let runs = (0..producers).map(|p| {
                let stream = format!("bench-{}-{p}", rand_suffix());
                let hub = hub.clone();
                let ctx = &ctx;
                async move { produce(ctx, hub, &stream, n, 1024, 256).await }
            });
            for r in futures_join(runs).await {
                r?;
            }
            let rate = (producers as u64 * n) as f64 / start.elapsed().as_secs_f64();
            ctx.stop().await?;
            Ok(rate)
        })
        .expect("producers")
}

fn rand_suffix() -> String {
    ockam_core::Address::random_local().address().to_string()
}

async fn futures_join<F: std::future::Future>(fs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut fs: Vec<_> = fs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = fs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in fs.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("done")).collect()
}

/// Records how long each message took from send to delivery.
struct Recorder {
    samples: mpsc::Sender<Duration>,
}

#[async_trait]
impl Worker for Recorder {
    type Message = u64;
    type Context = Context;
    async fn handle_message(&mut self, _ctx: &mut Context, msg: Routed<u64>) -> Result<()> {
        let sent = Duration::from_nanos(*msg);
        let _ = self.samples.send(epoch().elapsed().saturating_sub(sent));
        Ok(())
    }
}

fn latency(hub: &str, via: Via, waiting: bool, n: usize) -> (f64, f64) {
    let hub = hub.to_string();
    let (tx, rx) = mpsc::channel();
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = ockam_transport_tcp::TcpTransport::create(&ctx).await?;
            let hub = to_hub(&ctx, &hub, via).await?;
            let tag = rand_suffix();
            let (a, b) = (format!("lat-a-{tag}"), format!("lat-b-{tag}"));
            ctx.start_worker("recorder", Recorder { samples: tx })
                .await?;
            let (sender, _r1) = Stream::new(&ctx)?
                .client_id(format!("lat-p-{tag}"))
                .with_waiting_pull(waiting)
                .connect(hub.clone(), a.as_str(), b.as_str())
                .await?;
            let _consumer = Stream::new(&ctx)?
                .client_id(format!("lat-c-{tag}"))
                .with_waiting_pull(waiting)
                .with_interval(Duration::from_millis(100))
                .connect(hub.clone(), b.as_str(), a.as_str())
                .await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            for _ in 0..n {
                let now = epoch().elapsed().as_nanos() as u64;
                ctx.send(route![sender.clone(), "recorder"], now).await?;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            tokio::time::sleep(Duration::from_millis(1500)).await;
            ctx.stop().await
        })
        .expect("latency run");
    let mut s: Vec<Duration> = rx.try_iter().collect();
    assert!(s.len() >= n, "{} of {n} messages arrived", s.len());
    s.sort();
    let p = |q: f64| s[((s.len() as f64 * q) as usize).min(s.len() - 1)].as_secs_f64() * 1000.0;
    (p(0.5), p(0.99))
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n: u64 = if quick { 500 } else { 20_000 };
    let lat_n = if quick { 30 } else { 500 };
    let dir = std::env::temp_dir().join(format!("ockam-hub-bench-{}", std::process::id()));
    println!("through the hub on loopback: 1 KiB pushes, confirmed; latency send -> delivery");
    println!(
        "{:>8} | {:>14} | {:>14} | {:>16} | {:>16}",
        "store", "1 producer/s", "8 producers/s", "wait p50/p99 ms", "poll p50/p99 ms"
    );
    // The closed hub's access file: one identity, every stream.
    let secret: [u8; 32] = rand::random();
    let vault = ockam_vault::Vault::new();
    let public = vault.public_key(&vault.import_x25519(secret)).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    let access_file = dir.join("access.toml");
    std::fs::write(
        &access_file,
        format!("[identities]\nbench = \"{public}\"\n\n[[streams]]\nnames = \"*\"\npush = [\"*\"]\npull = [\"*\"]\n"),
    )
    .unwrap();
    let closed = Access::closed(&access_file).unwrap();
    for (name, storage, access, via) in [
        ("memory", StorageKind::Memory, Access::Open, Via::Plain),
        (
            "durable",
            StorageKind::Durable(dir.join("open")),
            Access::Open,
            Via::Plain,
        ),
        (
            "closed",
            StorageKind::Durable(dir.join("closed")),
            closed,
            Via::Channel(secret),
        ),
    ] {
        let (addr, stop, t) = hub(storage, access);
        let one = push_rate(&addr, via, 1, n);
        let eight = push_rate(&addr, via, 8, n / 2);
        let wait = latency(&addr, via, true, lat_n);
        let poll = latency(&addr, via, false, lat_n.min(100));
        println!(
            "{:>8} | {:>14.0} | {:>14.0} | {:>7.2} / {:>6.2} | {:>7.2} / {:>6.2}",
            name, one, eight, wait.0, wait.1, poll.0, poll.1
        );
        drop(stop);
        t.join().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

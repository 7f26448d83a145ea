//! Streams through a hub on loopback, memory and durable stores, in one run:
//! - push throughput of 1 KiB messages, one and eight producers (raw stream
//!   protocol, 256 pushes in flight per producer, counted confirmations);
//! - end-to-end latency p50/p99 (stream client to stream client) with the
//!   waiting pull and with 100 ms polling as in the seeds.
//!
//! `cargo bench -p ockam_hub --bench hub_throughput`

use ockam_core::{async_trait, route, Result, Route, Routed, Worker, TCP};
use ockam_hub::{Hub, HubConfig, StorageKind};
use ockam_node::{start_node, Context};
use ockam_stream_client::protocol::*;
use ockam_stream_client::Stream;
use serde_bare::Uint;
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A hub in its own thread; returns its address and a stopper.
fn hub(storage: StorageKind) -> (String, mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (up_tx, up_rx) = mpsc::channel();
    let (stop, stop_rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let (ctx, mut executor) = start_node();
        executor
            .execute(async move {
                let config = HubConfig {
                    listen: "127.0.0.1:0".into(),
                    storage,
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
    hub: &str,
    stream: &str,
    n: u64,
    size: usize,
    window: u64,
) -> Result<()> {
    let mut me = ctx.new_context(ockam_core::Address::random_local()).await?;
    let req = CreateStreamRequest {
        stream_name: Some(stream.to_string()),
    };
    me.send(
        route![(TCP, hub), "stream"],
        ProtocolPayload::new(STREAM_CREATE, &req)?,
    )
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

fn push_rate(hub: &str, producers: usize, n: u64) -> f64 {
    let hub = hub.to_string();
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = ockam_transport_tcp::TcpTransport::create(&ctx).await?;
            let start = Instant::now();
            let runs = (0..producers).map(|p| {
                let stream = format!("bench-{}-{p}", rand_suffix());
                let hub = hub.clone();
                let ctx = &ctx;
                async move { produce(ctx, &hub, &stream, n, 1024, 256).await }
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

fn latency(hub: &str, waiting: bool, n: usize) -> (f64, f64) {
    let hub = hub.to_string();
    let (tx, rx) = mpsc::channel();
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = ockam_transport_tcp::TcpTransport::create(&ctx).await?;
            let tag = rand_suffix();
            let (a, b) = (format!("lat-a-{tag}"), format!("lat-b-{tag}"));
            ctx.start_worker("recorder", Recorder { samples: tx })
                .await?;
            let (sender, _r1) = Stream::new(&ctx)?
                .client_id(format!("lat-p-{tag}"))
                .with_waiting_pull(waiting)
                .connect(route![(TCP, hub.as_str())], a.as_str(), b.as_str())
                .await?;
            let _consumer = Stream::new(&ctx)?
                .client_id(format!("lat-c-{tag}"))
                .with_waiting_pull(waiting)
                .with_interval(Duration::from_millis(100))
                .connect(route![(TCP, hub.as_str())], b.as_str(), a.as_str())
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
    for (name, storage) in [
        ("memory", StorageKind::Memory),
        ("durable", StorageKind::Durable(dir.clone())),
    ] {
        let (addr, stop, t) = hub(storage);
        let one = push_rate(&addr, 1, n);
        let eight = push_rate(&addr, 8, n / 2);
        let wait = latency(&addr, true, lat_n);
        let poll = latency(&addr, false, lat_n.min(100));
        println!(
            "{:>8} | {:>14.0} | {:>14.0} | {:>7.2} / {:>6.2} | {:>7.2} / {:>6.2}",
            name, one, eight, wait.0, wait.1, poll.0, poll.1
        );
        drop(stop);
        t.join().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

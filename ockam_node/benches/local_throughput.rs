//! Local one-way throughput: small `String` messages from one sender to one
//! worker on a node, beside a bare tokio mpsc channel carrying the same
//! payload on the same kind of runtime, in the same run.
//!
//! Then two workers flooding each other (each sends its half of the
//! messages to the other from one `handle_message`, so both mailboxes pass
//! their high-water mark), beside the one-way rate: the soft mailbox limit
//! must not turn that into a cliff (issue 13: within 2x).
//!
//! `cargo bench -p ockam-rs-node --bench local_throughput`
//! (`BENCH_MESSAGES=n` and `BENCH_ROUNDS=n` change the sizes;
//! `BENCH_PROFILE_NODE=1` runs one node round only, for a profiler).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use ockam_core::{async_trait, Result, Routed, Worker};
use ockam_node::{start_node, Context};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

const PAYLOAD: &str = "hello ockam node";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counts messages and says when the last one arrived.
struct Sink {
    remaining: u64,
    done: Option<oneshot::Sender<Instant>>,
}

#[async_trait]
impl Worker for Sink {
    type Message = String;
    type Context = Context;

    async fn handle_message(&mut self, _ctx: &mut Context, msg: Routed<String>) -> Result<()> {
        debug_assert_eq!(msg.len(), PAYLOAD.len());
        self.remaining -= 1;
        if self.remaining == 0 {
            if let Some(done) = self.done.take() {
                let _ = done.send(Instant::now());
            }
        }
        Ok(())
    }
}

fn ockam_round(n: u64) -> Duration {
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let (tx, rx) = oneshot::channel();
            ctx.start_worker(
                "sink",
                Sink {
                    remaining: n,
                    done: Some(tx),
                },
            )
            .await?;
            let payload = PAYLOAD.to_string();
            let start = Instant::now();
            for _ in 0..n {
                ctx.send("sink", payload.clone()).await?;
            }
            let end = rx.await.expect("sink finished");
            ctx.stop().await?;
            Ok(end - start)
        })
        .expect("node round")
}

/// Sends `k` messages to its peer when told "go"; counts what it gets.
struct Flooder {
    peer: &'static str,
    k: u64,
    received: u64,
    done: Option<oneshot::Sender<Instant>>,
}

#[async_trait]
impl Worker for Flooder {
    type Message = String;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
        if msg.as_str() == "go" {
            let payload = PAYLOAD.to_string();
            for _ in 0..self.k {
                ctx.send(self.peer, payload.clone()).await?;
            }
        } else {
            self.received += 1;
        }
        if self.received == self.k {
            if let Some(done) = self.done.take() {
                let _ = done.send(Instant::now());
            }
        }
        Ok(())
    }
}

/// Two workers each send `k` messages to the other at once: the time
/// until both got all of them.
fn flood_round(k: u64) -> Duration {
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let (a_tx, a_rx) = oneshot::channel();
            let (b_tx, b_rx) = oneshot::channel();
            for (me, peer, done) in [("a", "b", a_tx), ("b", "a", b_tx)] {
                let w = Flooder {
                    peer,
                    k,
                    received: 0,
                    done: Some(done),
                };
                ctx.start_worker(me, w).await?;
            }
            let start = Instant::now();
            ctx.send("a", "go".to_string()).await?;
            ctx.send("b", "go".to_string()).await?;
            let end = a_rx
                .await
                .expect("a finished")
                .max(b_rx.await.expect("b finished"));
            ctx.stop().await?;
            Ok(end - start)
        })
        .expect("flood round")
}

fn mpsc_round(n: u64) -> Duration {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        tokio::spawn(async move {
            let (tx, mut rx) = mpsc::unbounded_channel::<String>();
            let (done_tx, done_rx) = oneshot::channel();
            tokio::spawn(async move {
                let mut remaining = n;
                while let Some(msg) = rx.recv().await {
                    debug_assert_eq!(msg.len(), PAYLOAD.len());
                    remaining -= 1;
                    if remaining == 0 {
                        let _ = done_tx.send(Instant::now());
                        break;
                    }
                }
            });
            let payload = PAYLOAD.to_string();
            let start = Instant::now();
            for _ in 0..n {
                tx.send(payload.clone()).expect("receiver alive");
            }
            done_rx.await.expect("receiver finished") - start
        })
        .await
        .expect("mpsc round")
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // and wants a quick smoke run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = env_or("BENCH_MESSAGES", if quick { 10_000 } else { 1_000_000 });
    let rounds = env_or("BENCH_ROUNDS", if quick { 1 } else { 5 });
    // One node round and nothing else, for a profiler or callgrind.
    if std::env::var_os("BENCH_PROFILE_NODE").is_some() {
        let t = ockam_round(n);
        println!("node round: {n} messages in {t:?}");
        return;
    }
    let mut ours = Vec::new();
    let mut bare = Vec::new();
    for round in 1..=rounds {
        let b = n as f64 / mpsc_round(n).as_secs_f64();
        let o = n as f64 / ockam_round(n).as_secs_f64();
        println!(
            "round {round}: tokio mpsc {:>12.0} msg/s   ockam node {:>12.0} msg/s   ratio {:.3}",
            b,
            o,
            o / b
        );
        bare.push(b);
        ours.push(o);
    }
    let (b, o) = (median(bare), median(ours));
    println!(
        "RESULT local one-way, {n} x {}-byte String, median of {rounds}: \
         tokio_mpsc={b:.0} msg/s ockam_node={o:.0} msg/s ratio={:.3}",
        PAYLOAD.len(),
        o / b
    );
    // Flood: the same number of messages in all, half each way.
    let k = n / 2;
    let mut one_way = Vec::new();
    let mut flood = Vec::new();
    for round in 1..=rounds {
        let o = n as f64 / ockam_round(n).as_secs_f64();
        let f = (2 * k) as f64 / flood_round(k).as_secs_f64();
        println!(
            "round {round}: one-way {o:>12.0} msg/s   two workers flooding each other {f:>12.0} msg/s   ratio {:.3}",
            f / o
        );
        one_way.push(o);
        flood.push(f);
    }
    let (o, f) = (median(one_way), median(flood));
    println!(
        "RESULT flood, 2 x {k} messages between two workers vs {n} one-way, median of {rounds}: \
         one_way={o:.0} msg/s flood={f:.0} msg/s ratio={:.3} (target >= 0.5)",
        f / o
    );
}

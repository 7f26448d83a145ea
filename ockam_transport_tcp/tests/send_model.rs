//! `Context` against a model (issue 13): random interleavings of starting
//! and stopping workers, local and TCP sends and a node stop. Invariant:
//! every send that returned `Ok` is delivered, or counted in a logged drop
//! (a warn event with a `dropped` field, on either node); never both,
//! never neither. Sends the model says must fail (no such worker, address
//! taken) fail with the right error.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use ockam_core::{async_trait, route, ErrorKind, Result, Routed, Worker, TCP};
use ockam_node::{start_node, Context};
use ockam_transport_tcp::TcpTransport;
use proptest::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::Layer;

/// Sum of the `dropped` fields of every warn (or error) event.
static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Messages the workers of both nodes handled.
static DELIVERED: AtomicU64 = AtomicU64::new(0);
/// The counters are global: one test at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct DropCounter;

struct DroppedField(u64);

impl Visit for DroppedField {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "dropped" {
            self.0 += value;
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "dropped" {
            self.0 += value.max(0) as u64;
        }
    }
    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> Layer<S> for DropCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: LayerContext<'_, S>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            let mut v = DroppedField(0);
            event.record(&mut v);
            DROPPED.fetch_add(v.0, Ordering::SeqCst);
        }
    }
}

fn install_counter() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter);
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(DropCounter).with(fmt),
        )
        .expect("the test's subscriber is the first");
    });
}

/// Counts what it handles; yields now and then so mailboxes fill up.
struct Counter;

#[async_trait]
impl Worker for Counter {
    type Message = u32;
    type Context = Context;

    async fn handle_message(&mut self, _ctx: &mut Context, msg: Routed<u32>) -> Result<()> {
        DELIVERED.fetch_add(1, Ordering::SeqCst);
        if msg.take() % 3 == 0 {
            tokio::task::yield_now().await;
        }
        Ok(())
    }
}

/// The peer node, shared by all cases: a listener and a "counter".
fn peer() -> &'static str {
    static PEER: OnceLock<String> = OnceLock::new();
    PEER.get_or_init(|| {
        install_counter();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (ctx, mut executor) = start_node();
            executor
                .execute(async move {
                    let tcp = TcpTransport::create(&ctx).await?;
                    ctx.start_worker("counter", Counter).await?;
                    tx.send(tcp.listen("127.0.0.1:0").await?).unwrap();
                    Ok(())
                })
                .unwrap();
        });
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap()
            .to_string()
    })
}

#[derive(Debug, Clone)]
enum Op {
    Start(usize),
    Stop(usize),
    SendLocal(usize, u32),
    /// To the peer's counter (the first one opens the connection).
    SendTcp(u32),
    /// To an address the peer does not have: the peer drops it, logged.
    SendTcpNowhere,
    Yield,
}

const WORKERS: usize = 4;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..WORKERS).prop_map(Op::Start),
        1 => (0..WORKERS).prop_map(Op::Stop),
        6 => ((0..WORKERS), any::<u32>()).prop_map(|(w, n)| Op::SendLocal(w, n)),
        4 => any::<u32>().prop_map(Op::SendTcp),
        1 => Just(Op::SendTcpNowhere),
        1 => Just(Op::Yield),
    ]
}

/// Runs `ops` on a fresh node, then stops it; how many sends returned Ok.
fn run(ops: Vec<Op>) -> u64 {
    let peer = peer().to_string();
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let mut running = [false; WORKERS];
            let mut ok = 0u64;
            for op in ops {
                match op {
                    Op::Start(w) => {
                        let r = ctx.start_worker(format!("w{w}"), Counter).await;
                        if running[w] {
                            assert_eq!(r.unwrap_err().kind(), ErrorKind::AlreadyExists);
                        } else {
                            r?;
                            running[w] = true;
                        }
                    }
                    Op::Stop(w) => {
                        let r = ctx.stop_worker(format!("w{w}")).await;
                        if running[w] {
                            r?;
                            running[w] = false;
                        } else {
                            assert_eq!(r.unwrap_err().kind(), ErrorKind::NotFound);
                        }
                    }
                    Op::SendLocal(w, n) => {
                        let r = ctx.send(format!("w{w}"), n).await;
                        if running[w] {
                            r?;
                            ok += 1;
                        } else {
                            assert_eq!(r.unwrap_err().kind(), ErrorKind::NotFound);
                        }
                    }
                    Op::SendTcp(n) => {
                        ctx.send(route![(TCP, peer.as_str()), "counter"], n).await?;
                        ok += 1;
                    }
                    Op::SendTcpNowhere => {
                        ctx.send(route![(TCP, peer.as_str()), "nowhere"], 0u32)
                            .await?;
                        ok += 1;
                    }
                    Op::Yield => tokio::task::yield_now().await,
                }
            }
            ctx.stop().await?;
            Ok(ok)
        })
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_ok_send_is_delivered_or_counted_in_a_logged_drop(
        ops in prop::collection::vec(op(), 1..80)
    ) {
        let _serial = ockam_core::internal::sync::lock(&SERIAL);
        peer();
        let (d0, x0) = (DELIVERED.load(Ordering::SeqCst), DROPPED.load(Ordering::SeqCst));
        let ok = run(ops);
        // The peer may still be handling the last messages.
        let deadline = Instant::now() + Duration::from_secs(10);
        let accounted = || {
            DELIVERED.load(Ordering::SeqCst) - d0 + DROPPED.load(Ordering::SeqCst) - x0
        };
        while accounted() < ok && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Nothing more arrives later (nothing counted twice).
        std::thread::sleep(Duration::from_millis(50));
        prop_assert_eq!(
            accounted(),
            ok,
            "delivered {} + dropped {} vs {} sends that returned Ok",
            DELIVERED.load(Ordering::SeqCst) - d0,
            DROPPED.load(Ordering::SeqCst) - x0,
            ok
        );
    }
}

#[test]
fn the_model_test_counts_drops() {
    // The counter sees a drop that the node logs: a stopped worker's mailbox.
    let _serial = ockam_core::internal::sync::lock(&SERIAL);
    peer();
    let before = DROPPED.load(Ordering::SeqCst);
    let (ctx, mut executor) = start_node();
    let n = Arc::new(AtomicU64::new(0));
    let n2 = n.clone();
    executor
        .execute(async move {
            struct Slow;
            #[async_trait]
            impl Worker for Slow {
                type Message = u32;
                type Context = Context;
                async fn handle_message(
                    &mut self,
                    _c: &mut Context,
                    _m: Routed<u32>,
                ) -> Result<()> {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(())
                }
            }
            ctx.start_worker("slow", Slow).await?;
            for i in 0..10u32 {
                ctx.send("slow", i).await?;
            }
            n2.store(10, Ordering::SeqCst);
            ctx.stop_worker("slow").await?;
            ctx.stop().await
        })
        .unwrap();
    let dropped = DROPPED.load(Ordering::SeqCst) - before;
    assert!(
        (8..=10).contains(&dropped),
        "dropped {dropped} of {}",
        n.load(Ordering::SeqCst)
    );
}

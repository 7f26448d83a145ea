//! Issue 18, a hop limit: a forwarding loop dies instead of spinning. A
//! client registers a forwarder on the hub for its worker "relay", and the
//! relay passes whatever it gets back to that forwarder, routes otherwise
//! unchanged (as any relay does: `Context::forward`). One message sent into
//! the loop goes round until its return route is full: every TCP hop adds
//! the connection's address to it, and a message whose return route
//! already has `MAX_ROUTE_LEN` addresses is dropped with a log line (here
//! by the client's node, after 127 rounds).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::{free_address, HubProcess};
use ockam_core::{async_trait, Any, LocalMessage, Result, Route, Routed, Worker, MAX_ROUTE_LEN};
use ockam_node::{start_node, Context};
use ockam_stream_client::RemoteForwarder;
use ockam_transport_tcp::TcpTransport;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Sends everything it gets to `to`, return route as it came.
struct Relay {
    to: Arc<std::sync::Mutex<Option<Route>>>,
    rounds: Arc<AtomicUsize>,
}

#[async_trait]
impl Worker for Relay {
    type Message = Any;
    type Context = Context;
    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        self.rounds.fetch_add(1, Ordering::SeqCst);
        let Some(to) = self.to.lock().unwrap().clone() else {
            return Ok(());
        };
        let mut t = msg.into_transport_message();
        t.onward_route = to;
        ctx.forward(LocalMessage::new(t)).await
    }
}

#[test]
fn a_forwarding_loop_through_the_hub_ends_when_its_return_route_is_full() {
    let addr = free_address();
    let hub = HubProcess::start(&addr, &["--storage", "memory"]);
    let (ctx, mut executor) = start_node();
    let hub_addr = addr.clone();
    let (rounds, settled) = executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let to = Arc::new(std::sync::Mutex::new(None));
            let rounds = Arc::new(AtomicUsize::new(0));
            ctx.start_worker(
                "relay",
                Relay {
                    to: to.clone(),
                    rounds: rounds.clone(),
                },
            )
            .await?;
            let forwarder = RemoteForwarder::create(&ctx, hub_addr.as_str(), "relay").await?;
            *to.lock().unwrap() = Some(forwarder.route());
            ctx.send(forwarder.route(), "round and round".to_string())
                .await?;
            // Until it stops going round.
            let mut last = usize::MAX;
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let now = rounds.load(Ordering::SeqCst);
                if now == last {
                    break;
                }
                last = now;
                assert!(
                    now < 10 * MAX_ROUTE_LEN,
                    "still going round after {now} rounds"
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let settled = rounds.load(Ordering::SeqCst) == last;
            ctx.stop().await?;
            Ok::<_, ockam_core::Error>((last, settled))
        })
        .expect("client node");
    println!("the loop went round {rounds} times, then ended");
    assert!(settled, "the loop went on");
    // Two TCP hops a round, each adding one address.
    assert!(
        rounds <= MAX_ROUTE_LEN / 2 + 2,
        "{rounds} rounds: longer than the return route allows"
    );
    // The hub went on serving meanwhile.
    assert!(hub.seen_lines().iter().all(|l| !l.contains("panicked")));
    drop(hub);
}

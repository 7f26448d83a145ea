//! Worker and node lifecycle: `initialize`, `shutdown`, `stop_worker`,
//! `stop`, contexts, timeouts, and what `execute` returns.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use ockam_core::{async_trait, route, Error, ErrorKind, Result, Routed, Worker};
use ockam_node::{start_node, Context};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct Counted {
    initialized: Arc<AtomicUsize>,
    shut_down: Arc<AtomicUsize>,
}

#[async_trait]
impl Worker for Counted {
    type Message = String;
    type Context = Context;

    async fn initialize(&mut self, _ctx: &mut Context) -> Result<()> {
        self.initialized.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn shutdown(&mut self, _ctx: &mut Context) -> Result<()> {
        // Shutdown may take a while and still be waited for.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.shut_down.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
        if msg.as_body() == "stop the node" {
            return ctx.stop().await;
        }
        ctx.send(msg.return_route(), msg.body()).await
    }
}

fn counters() -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
    (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)))
}

#[test]
fn stop_runs_every_workers_shutdown_and_returns() {
    let (init, down) = counters();
    let (ctx, mut executor) = start_node();
    let (i, d) = (init.clone(), down.clone());
    executor
        .execute(async move {
            for n in 0..50 {
                let w = Counted {
                    initialized: i.clone(),
                    shut_down: d.clone(),
                };
                ctx.start_worker(format!("w{n}"), w).await?;
            }
            ctx.stop().await
        })
        .unwrap();
    assert_eq!(init.load(Ordering::SeqCst), 50);
    assert_eq!(down.load(Ordering::SeqCst), 50);
}

#[test]
fn a_worker_can_stop_the_node() {
    let (init, down) = counters();
    let (ctx, mut executor) = start_node();
    let (i, d) = (init.clone(), down.clone());
    let r = executor.execute(async move {
        for n in 0..3 {
            let w = Counted {
                initialized: i.clone(),
                shut_down: d.clone(),
            };
            ctx.start_worker(format!("w{n}"), w).await?;
        }
        ctx.send("w0", "stop the node".to_string()).await?;
        // A server-style main: returns and leaves the node running.
        Ok(7)
    });
    assert_eq!(r.unwrap(), 7);
    assert_eq!(down.load(Ordering::SeqCst), 3);
}

#[test]
fn stop_worker_runs_its_shutdown_and_frees_its_addresses() {
    let (init, down) = counters();
    let (mut ctx, mut executor) = start_node();
    let d = down.clone();
    executor
        .execute(async move {
            let w = Counted {
                initialized: init,
                shut_down: d.clone(),
            };
            ctx.start_worker(["main", "alias"], w).await?;
            ctx.send("alias", "via alias".to_string()).await?;
            let reply = ctx.receive::<String>().await?;
            assert_eq!(reply.as_body(), "via alias");
            // Replies come from the worker's primary address.
            assert_eq!(reply.return_route(), route!["main"]);

            ctx.stop_worker("alias").await?;
            assert_eq!(d.load(Ordering::SeqCst), 1);
            for a in ["main", "alias"] {
                let err = ctx.send(a, "x".to_string()).await.unwrap_err();
                assert_eq!(err.kind(), ErrorKind::NotFound);
            }
            let err = ctx.stop_worker("main").await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotFound);
            ctx.stop().await
        })
        .unwrap();
    assert_eq!(down.load(Ordering::SeqCst), 1);
}

#[test]
fn contexts_send_receive_and_free_their_address_when_dropped() {
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            assert_eq!(ctx.address().to_string(), "0#app");
            let mut other = ctx.new_context("other").await?;
            ctx.send("other", 42u32).await?;
            let msg = other.receive::<u32>().await?;
            assert_eq!(*msg, 42);
            assert_eq!(msg.return_route(), route!["app"]);
            assert_eq!(msg.onward_route(), route!["other"]);
            other.send(msg.return_route(), "back".to_string()).await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "back");

            // send_from_address only with one of the context's own addresses.
            let err = other
                .send_from_address("app", 1u8, "app".into())
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);

            drop(other);
            let err = ctx.send("other", 1u8).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotFound);
            let again = ctx.new_context("other").await?;
            assert_eq!(again.address().address(), "other");
            ctx.stop().await
        })
        .unwrap();
}

#[test]
fn receive_timeout_gives_a_timeout_error() {
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let err = ctx
                .receive_duration::<String>(Duration::from_millis(50))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Timeout);
            let err = ctx.receive_timeout::<String>(0).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Timeout);
            ctx.stop().await
        })
        .unwrap();
}

#[test]
fn receive_skips_messages_of_another_type() {
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            ctx.send("app", vec![0xffu8, 0xfe]).await?;
            ctx.send("app", "text".to_string()).await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "text");
            ctx.stop().await
        })
        .unwrap();
}

#[test]
fn an_error_from_main_stops_the_node_and_is_returned() {
    let (init, down) = counters();
    let (ctx, mut executor) = start_node();
    let d = down.clone();
    let err = executor
        .execute(async move {
            let w = Counted {
                initialized: init,
                shut_down: d,
            };
            ctx.start_worker("w", w).await?;
            Err::<(), _>(Error::new(ErrorKind::Unavailable, "main gave up"))
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(down.load(Ordering::SeqCst), 1);
}

#[test]
fn a_panic_in_main_stops_the_node_and_propagates() {
    let (init, down) = counters();
    let (ctx, mut executor) = start_node();
    let d = down.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        executor.execute(async move {
            let w = Counted {
                initialized: init,
                shut_down: d,
            };
            ctx.start_worker("w", w).await?;
            if ctx.address().address() == "app" {
                panic!("main panicked");
            }
            Ok(())
        })
    }));
    assert!(r.is_err());
    assert_eq!(down.load(Ordering::SeqCst), 1);
}

#[test]
fn an_executor_runs_once() {
    let (ctx, mut executor) = start_node();
    executor.execute(async move { ctx.stop().await }).unwrap();
    let err = executor.execute(async { Ok(()) }).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

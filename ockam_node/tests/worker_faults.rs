//! One worker's bad input or bad behaviour never takes the node down:
//! unknown addresses, payloads that do not decode, panics.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use ockam_core::{
    async_trait, route, ErrorKind, LocalMessage, Result, Routed, TransportMessage, Worker,
};
use ockam_node::{start_node, Context};

/// Replies with the length of each string; panics on "boom".
struct Fragile;

#[async_trait]
impl Worker for Fragile {
    type Message = String;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
        if msg.as_body() == "boom" {
            panic!("Fragile was told to panic");
        }
        ctx.send(msg.return_route(), msg.len() as u64).await
    }
}

#[test]
fn sending_to_an_unknown_address_is_an_error_and_the_node_keeps_running() {
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let err = ctx
                .send("nobody-here", "hello".to_string())
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotFound);
            assert!(err.to_string().contains("nobody-here"), "{err}");

            // A non-local address with no transport registered for it.
            let err = ctx
                .send(route![(1, "127.0.0.1:1"), "x"], 1u8)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotFound);

            // An empty route has no next hop.
            let err = ctx.send(route![], 1u8).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);

            ctx.start_worker("fragile", Fragile).await?;
            ctx.send("fragile", "four".to_string()).await?;
            assert_eq!(*ctx.receive::<u64>().await?, 4);
            ctx.stop().await
        })
        .unwrap();
}

#[test]
fn a_payload_that_does_not_decode_is_dropped_and_the_worker_keeps_running() {
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            ctx.start_worker("fragile", Fragile).await?;
            // A BARE string whose bytes are not UTF-8, then one with trailing junk.
            for payload in [vec![2u8, 0xff, 0xfe], vec![1, b'a', 0, 0], vec![]] {
                let bad = TransportMessage::v1(route!["fragile"], route!["app"], payload);
                ctx.forward(LocalMessage::new(bad)).await?;
            }
            ctx.send("fragile", "twelve chars".to_string()).await?;
            let reply = ctx.receive::<u64>().await?;
            assert_eq!(*reply, 12, "the first reply must be to the honest message");
            ctx.stop().await
        })
        .unwrap();
}

#[test]
fn a_panicking_worker_is_stopped_and_the_others_keep_running() {
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            ctx.start_worker("fragile", Fragile).await?;
            ctx.start_worker("sturdy", Fragile).await?;
            ctx.send("fragile", "boom".to_string()).await?;

            // The panicked worker's address is freed shortly after.
            let mut gone = false;
            for _ in 0..200 {
                if !ctx
                    .list_addresses()
                    .iter()
                    .any(|a| a.address() == "fragile")
                {
                    gone = true;
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert!(gone, "a panicked worker must be deregistered");
            let err = ctx.send("fragile", "x".to_string()).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NotFound);

            ctx.send("sturdy", "abc".to_string()).await?;
            assert_eq!(*ctx.receive::<u64>().await?, 3);

            // The address can be used again.
            ctx.start_worker("fragile", Fragile).await?;
            ctx.send("fragile", "ab".to_string()).await?;
            assert_eq!(*ctx.receive::<u64>().await?, 2);
            ctx.stop().await
        })
        .unwrap();
}

#[test]
fn a_worker_that_fails_to_initialize_is_not_started() {
    struct NoInit;
    #[async_trait]
    impl Worker for NoInit {
        type Message = String;
        type Context = Context;
        async fn initialize(&mut self, _ctx: &mut Context) -> Result<()> {
            Err(ockam_core::Error::new(ErrorKind::Unavailable, "not today"))
        }
    }
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            ctx.start_worker("noinit", NoInit).await?;
            for _ in 0..200 {
                if ctx.send("noinit", "x".to_string()).await.is_err() {
                    return ctx.stop().await;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            panic!("a worker whose initialize failed is still registered");
        })
        .unwrap();
}

#[test]
fn duplicate_addresses_are_refused() {
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            ctx.start_worker(["a", "b"], Fragile).await?;
            let err = ctx.start_worker(["c", "b"], Fragile).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::AlreadyExists);
            // All or nothing: "c" was not taken by the failed start.
            ctx.start_worker("c", Fragile).await?;
            let err = ctx.new_context("app").await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::AlreadyExists);
            ctx.stop().await
        })
        .unwrap();
}

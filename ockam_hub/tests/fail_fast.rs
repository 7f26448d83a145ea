//! Issue 13, failing input 2 and its kind: the request/response helpers
//! fail fast, with the connect error as the cause, when the hub's TCP hop
//! has nothing listening (instead of waiting out their 30 s timeouts), and
//! leave nothing running; `Stream::connect` also reports a hub that does
//! not answer, within its connect timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::{free_address, HubProcess};
use ockam_core::{async_trait, route, ErrorKind, Result, Routed, Worker, TCP};
use ockam_node::{start_node, Context};
use ockam_stream_client::{RemoteForwarder, Stream};
use ockam_transport_tcp::TcpTransport;
use std::time::{Duration, Instant};

/// "Well under a second or two": the bound the tests hold the helpers to.
const FAST: Duration = Duration::from_secs(5);

struct Echoer;

#[async_trait]
impl Worker for Echoer {
    type Message = String;
    type Context = Context;
    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
        ctx.send(msg.return_route(), msg.body().clone()).await
    }
}

/// Runs `f`, which must fail; the error and how long it took (the test
/// gives up at twice `FAST`, long before any 30 s timeout).
async fn failure<T: std::fmt::Debug>(
    f: impl std::future::Future<Output = Result<T>>,
) -> (ockam_core::Error, Duration) {
    let t = Instant::now();
    let r = tokio::time::timeout(FAST * 2, f)
        .await
        .unwrap_or_else(|_| panic!("still waiting after {:?}", FAST * 2));
    (r.expect_err("an error"), t.elapsed())
}

#[test]
fn a_forwarder_on_a_hub_nobody_listens_for_fails_at_once_with_the_connect_error() {
    let nobody = free_address();
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            ctx.start_worker("echoer", Echoer).await?;
            let before = ctx.list_addresses().len();
            let (e, took) = failure(RemoteForwarder::create(&ctx, &nobody, "echoer")).await;
            assert!(took < FAST, "took {took:?}: {e}");
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
            assert!(e.to_string().contains(&nobody), "{e}");
            assert_eq!(
                common::settle_to(&ctx, Duration::from_secs(5), before).await,
                before,
                "left running"
            );
            ctx.stop().await
        })
        .unwrap();
}

#[test]
fn stream_connect_to_a_hub_nobody_listens_for_fails_at_once_and_leaves_nothing_running() {
    let nobody = free_address();
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let before = ctx.list_addresses().len();
            let (e, took) = failure(Stream::new(&ctx)?.client_id("unreachable").connect(
                route![(TCP, nobody.as_str())],
                "out",
                "in",
            ))
            .await;
            assert!(took < FAST, "took {took:?}: {e}");
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
            let cause = std::error::Error::source(&e).expect("the connect error as the cause");
            assert!(cause.to_string().contains(&nobody), "{e}");
            assert_eq!(
                common::settle_to(&ctx, Duration::from_secs(5), before).await,
                before,
                "left running"
            );

            // Without a transport for the route's first hop at all.
            let (e, took) =
                failure(Stream::new(&ctx)?.connect(route![(7u8, "somewhere:1")], "out", "in"))
                    .await;
            assert!(took < FAST, "took {took:?}: {e}");
            assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
            ctx.stop().await
        })
        .unwrap();
}

#[test]
fn stream_connect_reports_a_hub_that_does_not_answer_and_connects_to_one_that_does() {
    let hub = free_address();
    let _hub = HubProcess::start(&hub, &["--storage", "memory"]);
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            // Warm the connection up: the count below is about the client.
            ctx.send(
                route![(TCP, hub.as_str()), "echo_service"],
                "hi".to_string(),
            )
            .await?;
            ctx.receive::<String>().await?;
            let before = ctx.list_addresses().len();

            // Reachable, but no such service there: nobody answers.
            let t = Instant::now();
            let e = Stream::new(&ctx)?
                .stream_service("no_such_service")
                .with_connect_timeout(Duration::from_millis(500))
                .connect(route![(TCP, hub.as_str())], "out", "in")
                .await
                .expect_err("no answer");
            assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
            assert!(t.elapsed() < FAST, "{:?}", t.elapsed());
            assert!(e.to_string().contains("no_such_service"), "{e}");
            assert_eq!(
                common::settle_to(&ctx, Duration::from_secs(5), before).await,
                before,
                "left running"
            );

            // Names the hub would refuse are refused before anything is sent.
            for (out, client) in [("a#b", "ok"), ("é", "ok"), ("ok", "3#x")] {
                let e = Stream::new(&ctx)?
                    .client_id(client)
                    .connect(route![(TCP, hub.as_str())], out, "in")
                    .await
                    .expect_err("refused");
                assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
            }

            // The same hub, its real service: connected, and it works.
            let (tx, mut rx) = Stream::new(&ctx)?
                .client_id("fast")
                .connect(route![(TCP, hub.as_str())], "fast-loop", "fast-loop")
                .await?;
            ctx.send(tx.to_route(), "round".to_string()).await?;
            assert_eq!(rx.next::<String>().await?.take(), "round");
            ctx.stop().await
        })
        .unwrap();
}

//! Replies to `return_route()` retrace any number of hops, and `Hop`
//! workers forward any message unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use ockam::{route, Any, Context, LocalMessage, Result, Route, Routed, TransportMessage, Worker};
use ockam_get_started::{Echoer, Hop};

#[test]
fn replies_retrace_any_number_of_hops() {
    let (mut ctx, mut executor) = ockam::start_node();
    executor
        .execute(async move {
            ctx.start_worker("echoer", Echoer).await?;
            for n in 0..40 {
                ctx.start_worker(format!("h{n}"), Hop).await?;
            }
            for hops in [0usize, 1, 2, 5, 40] {
                let mut builder = Route::new();
                for n in 0..hops {
                    builder = builder.append(format!("h{n}"));
                }
                let onward: Route = builder.append("echoer").into();
                ctx.send(onward.clone(), format!("through {hops}")).await?;
                let reply = ctx.receive::<String>().await?;
                assert_eq!(reply.as_body(), &format!("through {hops}"));
                // The way back is the way there.
                assert_eq!(reply.return_route(), onward, "hops = {hops}");
                assert_eq!(reply.onward_route(), route!["app"]);
            }
            ctx.stop().await
        })
        .unwrap();
}

/// Keeps the raw payloads it receives and reports them to "app".
struct Recorder;

#[ockam::worker]
impl Worker for Recorder {
    type Message = Any;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let seen = (msg.payload().to_vec(), msg.return_route().to_string());
        ctx.send("app", seen).await
    }
}

#[test]
fn hops_forward_any_payload_unchanged() {
    let (mut ctx, mut executor) = ockam::start_node();
    executor
        .execute(async move {
            ctx.start_worker("recorder", Recorder).await?;
            ctx.start_worker("h1", Hop).await?;
            ctx.start_worker("h2", Hop).await?;
            // Bytes that are no valid message of any type the hops know.
            let payloads: Vec<Vec<u8>> = vec![vec![], vec![0xff; 3], (0..=255).collect()];
            for payload in payloads {
                let msg = TransportMessage::v1(
                    route!["h1", "h2", "recorder"],
                    route!["app"],
                    payload.clone(),
                );
                ctx.forward(LocalMessage::new(msg)).await?;
                let seen = ctx.receive::<(Vec<u8>, String)>().await?.take();
                assert_eq!(seen.0, payload);
                assert_eq!(seen.1, "0#h2 => 0#h1 => 0#app");
            }
            ctx.stop().await
        })
        .unwrap();
}

#[test]
fn a_hop_with_nowhere_to_go_drops_the_message_and_keeps_running() {
    let (mut ctx, mut executor) = ockam::start_node();
    executor
        .execute(async move {
            ctx.start_worker("echoer", Echoer).await?;
            ctx.start_worker("h1", Hop).await?;
            // Onward route ends at the hop, then a hop to nowhere.
            ctx.send(route!["h1"], "lost".to_string()).await?;
            ctx.send(route!["h1", "nowhere"], "lost".to_string())
                .await?;
            ctx.send(route!["h1", "echoer"], "found".to_string())
                .await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "found");
            ctx.stop().await
        })
        .unwrap();
}

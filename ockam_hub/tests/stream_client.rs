//! The stream client's API beyond the guides: `ReceiverAddress::next`,
//! `with_recipient`, and plain polling without the waiting pull.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use ockam_core::{async_trait, route, Result, Routed, Worker, TCP};
use ockam_hub::{Hub, HubConfig, StorageKind};
use ockam_node::{start_node, Context};
use ockam_stream_client::Stream;
use std::time::Duration;

fn memory_hub() -> HubConfig {
    HubConfig {
        listen: "127.0.0.1:0".into(),
        storage: StorageKind::Memory,
        ..HubConfig::default()
    }
}

struct Inbox;

#[async_trait]
impl Worker for Inbox {
    type Message = String;
    type Context = Context;
    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
        ctx.send("app", format!("inbox got {}", msg.as_body()))
            .await
    }
}

#[test]
fn messages_without_a_destination_reach_the_receiver_or_the_recipient_also_when_polling() {
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let hub = Hub::start(&ctx, memory_hub()).await?.to_string();
            let h = hub.as_str();
            // Side A polls (no waiting pull); side B uses the defaults.
            let (to_b, mut from_b) = Stream::new(&ctx)?
                .client_id("side-a")
                .with_waiting_pull(false)
                .with_interval(Duration::from_millis(20))
                .connect(route![(TCP, h)], "a-to-b", "b-to-a")
                .await?;
            let (to_a, mut from_a) = Stream::new(&ctx)?
                .client_id("side-b")
                .connect(route![(TCP, h)], "b-to-a", "a-to-b")
                .await?;

            // Routed to nothing beyond the stream: the other side's receiver.
            ctx.send(to_b.to_route(), "for b".to_string()).await?;
            let got = from_a.next::<String>().await?;
            assert_eq!(got.as_body(), "for b");
            // A reply goes back to the sender (here: app) through b's
            // outgoing stream, which A polls.
            ctx.send(got.return_route(), "reply".to_string()).await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "reply");
            // And the other way: to A's receiver, delivered by polling.
            ctx.send(to_a.to_route(), "for a".to_string()).await?;
            let got = tokio::time::timeout(Duration::from_secs(10), from_b.next::<String>())
                .await
                .expect("polling delivers")?;
            assert_eq!(got.as_body(), "for a");

            // A recipient worker instead of the receiver.
            ctx.start_worker("inbox", Inbox).await?;
            let (to_d, _) = Stream::new(&ctx)?
                .client_id("side-c")
                .connect(route![(TCP, h)], "c-to-d", "d-to-c")
                .await?;
            let _d = Stream::new(&ctx)?
                .client_id("side-d")
                .with_recipient("inbox")
                .connect(route![(TCP, h)], "d-to-c", "c-to-d")
                .await?;
            ctx.send(route![to_d.clone()], "hello".to_string()).await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "inbox got hello");
            ctx.stop().await
        })
        .unwrap();
}

#[test]
fn idle_stream_workers_are_stopped_and_clients_carry_on() {
    use ockam_stream_client::protocol::Uint;
    use ockam_stream_client::protocol::*;
    let config = HubConfig {
        limits: ockam_hub::Limits {
            idle_timeout: Duration::from_millis(300),
            ..Default::default()
        },
        ..memory_hub()
    };
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let hub = Hub::start(&ctx, config).await?.to_string();
            let h = hub.as_str();

            // A stream worker nobody uses goes away.
            let req = CreateStreamRequest {
                stream_name: Some("idle".into()),
            };
            ctx.send(
                route![(TCP, h), "stream"],
                ProtocolPayload::new(STREAM_CREATE, &req)?,
            )
            .await?;
            let worker = ctx.receive::<ProtocolPayload>().await?.return_route();
            tokio::time::sleep(Duration::from_millis(1200)).await;
            let push = PushRequest {
                request_id: Uint(1),
                data: vec![1],
            };
            ctx.send(worker, ProtocolPayload::new(STREAM_PUSH, &push)?)
                .await?;
            assert!(ctx
                .receive_duration::<ProtocolPayload>(Duration::from_millis(500))
                .await
                .is_err());

            // A stream client whose worker was reaped opens a new one.
            let (to_b, _) = Stream::new(&ctx)?
                .client_id("idle-a")
                .connect(route![(TCP, h)], "idle-a-b", "idle-b-a")
                .await?;
            let (_, mut from_a) = Stream::new(&ctx)?
                .client_id("idle-b")
                .with_waiting_pull(false)
                .with_interval(Duration::from_millis(50))
                .connect(route![(TCP, h)], "idle-b-a", "idle-a-b")
                .await?;
            ctx.send(to_b.to_route(), "before".to_string()).await?;
            assert_eq!(from_a.next::<String>().await?.take(), "before");
            tokio::time::sleep(Duration::from_millis(1200)).await;
            ctx.send(to_b.to_route(), "after".to_string()).await?;
            let got = tokio::time::timeout(Duration::from_secs(20), from_a.next::<String>())
                .await
                .expect("delivered after the producer reopened its stream")?;
            assert_eq!(got.take(), "after");
            ctx.stop().await
        })
        .unwrap();
}

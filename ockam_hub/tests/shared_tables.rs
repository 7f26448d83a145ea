//! The hub's shared tables under concurrent callers: stream workers (one
//! per requester and stream, a replaced one stopped), the store's indexes
//! (concurrent pushes through many stream workers of one stream), and
//! forwarders (one per target, however many registrations race).
//!
//! Hub and clients share one node here (the route to the hub is TCP all
//! the same), so that the test can count what runs on the hub.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::request;
use ockam_core::{async_trait, route, Address, Result, Route, Routed, Worker, TCP};
use ockam_hub::{Hub, HubConfig, StorageKind};
use ockam_node::{start_node, Context};
use ockam_stream_client::protocol::Uint;
use ockam_stream_client::protocol::*;
use ockam_stream_client::RemoteForwarder;
use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

fn memory_hub() -> HubConfig {
    HubConfig {
        listen: "127.0.0.1:0".into(),
        storage: StorageKind::Memory,
        ..HubConfig::default()
    }
}

/// Opens `stream` from `ctx`, keeping the answer's return route.
async fn open_stream(ctx: &mut Context, hub: &str, stream: &str) -> Result<Route> {
    let req = CreateStreamRequest {
        stream_name: Some(stream.into()),
    };
    ctx.send(
        route![(TCP, hub), "stream"],
        ProtocolPayload::new(STREAM_CREATE, &req)?,
    )
    .await?;
    let init = ctx.receive_timeout::<ProtocolPayload>(30).await?;
    let i: Init = init.decode_data(STREAM_CREATE)?;
    assert_eq!(i.stream_name, stream);
    Ok(init.return_route())
}

#[test]
fn concurrent_opens_of_one_stream_share_its_log_and_reopening_replaces_the_worker() {
    const CLIENTS: usize = 16;
    const PUSHES: u64 = 5;
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let hub = Hub::start(&ctx, memory_hub()).await?.to_string();

            // Many requesters open the same stream at once; each gets a
            // stream worker, and pushes through all of them land in one
            // log, each message at an index of its own.
            let mut tasks = Vec::new();
            for c in 0..CLIENTS {
                let mut client = ctx.new_context(Address::random_local()).await?;
                let hub = hub.clone();
                tasks.push(tokio::spawn(async move {
                    let worker = open_stream(&mut client, &hub, "shared").await?;
                    for n in 0..PUSHES {
                        let push = PushRequest {
                            request_id: Uint(n),
                            data: format!("{c}/{n}").into_bytes(),
                        };
                        client
                            .send(worker.clone(), ProtocolPayload::new(STREAM_PUSH, &push)?)
                            .await?;
                    }
                    let mut indexes = Vec::new();
                    for _ in 0..PUSHES {
                        let confirm: PushConfirm = client
                            .receive_timeout::<ProtocolPayload>(30)
                            .await?
                            .decode_data(STREAM_PUSH)?;
                        assert_eq!(confirm.status, PushStatus::Ok);
                        indexes.push(confirm.index.0);
                    }
                    // One client's pushes keep their order.
                    assert!(indexes.windows(2).all(|w| w[0] < w[1]), "{indexes:?}");
                    Ok::<_, ockam_core::Error>((worker, indexes))
                }));
            }
            let mut workers = Vec::new();
            let mut indexes = BTreeSet::new();
            for t in tasks {
                let (worker, got) = t.await.unwrap()?;
                workers.push(worker);
                indexes.extend(got);
            }
            let distinct: HashSet<&Route> = workers.iter().collect();
            assert_eq!(distinct.len(), CLIENTS, "one stream worker per requester");
            let all = CLIENTS as u64 * PUSHES;
            assert_eq!(indexes, (0..all).collect::<BTreeSet<_>>());
            let pulled: PullResponse = request(
                &mut ctx,
                workers[0].clone(),
                STREAM_PULL,
                &PullRequest {
                    request_id: Uint(1),
                    index: Uint(0),
                    limit: Uint(1000),
                },
            )
            .await?
            .decode_data(STREAM_PULL)?;
            assert_eq!(pulled.messages.len() as u64, all);

            // One requester opens a stream again and again (as a client
            // does whose stream worker went quiet): each open replaces its
            // stream worker, and the replaced ones stop.
            let mut client = ctx.new_context(Address::random_local()).await?;
            let first = open_stream(&mut client, &hub, "reopened").await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let before = ctx.list_addresses().len();
            let mut last = first.clone();
            for _ in 0..10 {
                last = open_stream(&mut client, &hub, "reopened").await?;
            }
            assert_ne!(last, first);
            let after = common::settle_to(&ctx, Duration::from_secs(10), before).await;
            assert_eq!(
                after, before,
                "replaced stream workers (or their tasks) still run"
            );
            // The latest works; the first is gone.
            let confirm: PushConfirm = request(
                &mut client,
                last,
                STREAM_PUSH,
                &PushRequest {
                    request_id: Uint(7),
                    data: vec![7],
                },
            )
            .await?
            .decode_data(STREAM_PUSH)?;
            assert_eq!((confirm.status, confirm.index), (PushStatus::Ok, Uint(0)));
            client
                .send(
                    first,
                    ProtocolPayload::new(
                        STREAM_PUSH,
                        &PushRequest {
                            request_id: Uint(8),
                            data: vec![8],
                        },
                    )?,
                )
                .await?;
            assert!(client
                .receive_duration::<ProtocolPayload>(Duration::from_millis(300))
                .await
                .is_err());
            ctx.stop().await
        })
        .unwrap();
}

struct Echo;

#[async_trait]
impl Worker for Echo {
    type Message = String;
    type Context = Context;
    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
        ctx.send(msg.return_route(), msg.body().clone()).await
    }
}

#[test]
fn racing_registrations_of_one_destination_get_one_forwarder() {
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let hub = Hub::start(&ctx, memory_hub()).await?.to_string();
            ctx.start_worker("echoer", Echo).await?;
            ctx.start_worker("other", Echo).await?;
            // Warm the connection up, so that the count below sees only
            // forwarders.
            RemoteForwarder::create(&ctx, &hub, "other").await?;
            let before = ctx.list_addresses().len();

            let mut tasks = Vec::new();
            for _ in 0..10 {
                let c = ctx.new_context(Address::random_local()).await?;
                let hub = hub.clone();
                tasks.push(tokio::spawn(async move {
                    RemoteForwarder::create(&c, &hub, "echoer").await
                }));
            }
            let mut addresses = BTreeSet::new();
            for t in tasks {
                addresses.insert(t.await.unwrap()?.remote_address());
            }
            assert_eq!(addresses.len(), 1, "{addresses:?}");
            let forwarder = addresses.into_iter().next().unwrap();
            // One forwarder more on the node (and the temporary contexts
            // gone).
            assert_eq!(
                common::settle_to(&ctx, Duration::from_secs(10), before + 1).await,
                before + 1
            );

            ctx.send(
                route![(TCP, hub.as_str()), forwarder.clone()],
                "through".to_string(),
            )
            .await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "through");
            // Another destination, another forwarder.
            let other = RemoteForwarder::create(&ctx, &hub, "other").await?;
            assert_ne!(other.remote_address(), forwarder);
            ctx.stop().await
        })
        .unwrap();
}

/// Issue 18: `RemoteForwarder::unregister` removes the forwarder; only the
/// route it was registered over may.
#[test]
fn a_forwarder_is_unregistered_by_its_registrant_only() {
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let hub = Hub::start(&ctx, memory_hub()).await?.to_string();
            ctx.start_worker("echoer", Echo).await?;
            let forwarder = RemoteForwarder::create(&ctx, &hub, "echoer").await?;
            let address = forwarder.remote_address();
            ctx.send(forwarder.route(), "through".to_string()).await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "through");

            // Over another route (straight to the service, not over the
            // TCP connection it was registered over): refused, kept.
            let refusal: StreamError = request(
                &mut ctx,
                route!["forwarding_service"],
                ockam_stream_client::FORWARDING_UNREGISTER,
                &address.to_string(),
            )
            .await?
            .decode_data(STREAM_ERROR)?;
            assert!(
                refusal.reason.contains("another route"),
                "{}",
                refusal.reason
            );
            assert!(ctx.list_addresses().contains(&address));

            // By its registrant: gone, and nothing goes through any more.
            forwarder.unregister(&ctx).await?;
            assert!(!ctx.list_addresses().contains(&address));
            ctx.send(
                route![(TCP, hub.as_str()), address.clone()],
                "after".to_string(),
            )
            .await?;
            assert!(ctx
                .receive_duration::<String>(Duration::from_millis(500))
                .await
                .is_err());
            // Again: there is no such forwarder.
            let again = RemoteForwarder::create(&ctx, &hub, "echoer").await?;
            let second = again.remote_address();
            assert_ne!(second, address);
            again.unregister(&ctx).await?;
            let stale: StreamError = request(
                &mut ctx,
                route![(TCP, hub.as_str()), "forwarding_service"],
                ockam_stream_client::FORWARDING_UNREGISTER,
                &second.to_string(),
            )
            .await?
            .decode_data(STREAM_ERROR)?;
            assert!(stale.reason.contains("no forwarder"), "{}", stale.reason);
            ctx.stop().await
        })
        .unwrap();
}

//! Issue 18, bounded resources per peer: a client may not make the hub
//! start stream workers or forwarders without bound. One client (one TCP
//! connection) asks for many more than the hub allows it; past its cap
//! each request is refused with a reason, the hub's memory stays where it
//! was, what the client has goes on working, and another client is served.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::{free_address, request, rss_mib, HubProcess};
use ockam_core::{async_trait, route, ErrorKind, Result, Routed, Worker, TCP};
use ockam_node::{start_node, Context};
use ockam_stream_client::protocol::{
    CreateStreamRequest, ProtocolPayload, StreamError, STREAM_CREATE, STREAM_ERROR,
};
use ockam_stream_client::RemoteForwarder;
use ockam_transport_tcp::TcpTransport;

/// The caps the hub is started with.
const CAP: usize = 20;
/// Requests past them.
const PAST: usize = 1_000;

/// Sends what it gets back where it came from.
struct Echo;

#[async_trait]
impl Worker for Echo {
    type Message = String;
    type Context = Context;
    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
        ctx.send(msg.return_route(), msg.take()).await
    }
}

/// Asks `stream` to open stream `name`: its reply.
async fn create(ctx: &mut Context, hub: &str, name: &str) -> Result<ProtocolPayload> {
    let req = CreateStreamRequest {
        stream_name: Some(name.into()),
    };
    request(ctx, route![(TCP, hub), "stream"], STREAM_CREATE, &req).await
}

/// Whether `reply` is a refusal for being over the per-peer cap.
fn refused_at_cap(reply: &ProtocolPayload) -> bool {
    reply.protocol == STREAM_ERROR
        && reply
            .decode_data::<StreamError>(STREAM_ERROR)
            .is_ok_and(|e| e.reason.contains("the most one peer may have"))
}

#[test]
fn a_peer_past_its_stream_worker_and_forwarder_caps_is_refused_and_others_are_served() {
    let addr = free_address();
    let cap = CAP.to_string();
    let hub = HubProcess::start(
        &addr,
        &[
            "--storage",
            "memory",
            "--max-stream-workers-per-peer",
            &cap,
            "--max-forwarders-per-peer",
            &cap,
        ],
    );
    let pid = hub.child.id();
    let (mut ctx, mut executor) = start_node();
    let hub_addr = addr.clone();
    let (at_cap, past_cap) = executor
        .execute(async move {
            let hub = hub_addr.as_str();
            let _tcp = TcpTransport::create(&ctx).await?;
            // Up to the cap: served.
            for i in 0..CAP {
                let reply = create(&mut ctx, hub, &format!("s{i}")).await?;
                assert_eq!(reply.protocol, STREAM_CREATE, "stream {i} was refused");
            }
            let mut forwarders = Vec::new();
            for i in 0..CAP {
                forwarders.push(RemoteForwarder::create(&ctx, hub, format!("d{i}")).await?);
            }
            let at_cap = rss_mib(pid);
            // Past it: refused, every one, with the reason.
            for i in CAP..CAP + PAST {
                let reply = create(&mut ctx, hub, &format!("s{i}")).await?;
                assert!(refused_at_cap(&reply), "stream {i}: {reply:?}");
                let e = RemoteForwarder::create(&ctx, hub, format!("d{i}"))
                    .await
                    .expect_err("a forwarder past the cap");
                assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
                assert!(e.to_string().contains("the most one peer may have"), "{e}");
            }
            let past_cap = rss_mib(pid);
            // What it has goes on: a stream opened again (the same worker
            // key: not a new one), a forwarder registered again, and a
            // message through a forwarder.
            let reply = create(&mut ctx, hub, "s0").await?;
            assert_eq!(reply.protocol, STREAM_CREATE, "reopening s0 was refused");
            let again = RemoteForwarder::create(&ctx, hub, "d0").await?;
            assert_eq!(again.remote_address(), forwarders[0].remote_address());
            ctx.start_worker("d1", Echo).await?;
            ctx.send(forwarders[1].route(), "through".to_string())
                .await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "through");
            ctx.stop().await?;
            Ok::<_, ockam_core::Error>((at_cap, past_cap))
        })
        .expect("the capped client");
    println!(
        "hub RSS with {CAP} stream workers and {CAP} forwarders: {at_cap:.1} MiB; after {PAST} of each refused: {past_cap:.1} MiB"
    );
    assert!(
        past_cap - at_cap < 8.0,
        "refused requests cost the hub memory: {at_cap:.1} -> {past_cap:.1} MiB"
    );

    // Another client (its own connection) is served.
    let hub_addr = addr.clone();
    std::thread::spawn(move || {
        let (mut ctx, mut executor) = start_node();
        executor
            .execute(async move {
                let hub = hub_addr.as_str();
                let _tcp = TcpTransport::create(&ctx).await?;
                let reply = create(&mut ctx, hub, "other").await?;
                assert_eq!(reply.protocol, STREAM_CREATE, "another client was refused");
                RemoteForwarder::create(&ctx, hub, "other").await?;
                ctx.stop().await
            })
            .expect("another client");
    })
    .join()
    .unwrap();
    drop(hub);
}

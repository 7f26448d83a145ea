//! Volume: 100,000 messages through one stream (stream client both ends),
//! and 1,000 streams with their messages interleaved.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::request;
use ockam_core::{async_trait, route, Result, Routed, Worker, TCP};
use ockam_hub::{Hub, HubConfig, StorageKind};
use ockam_node::{start_node, Context};
use ockam_stream_client::protocol::Uint;
use ockam_stream_client::protocol::*;
use ockam_stream_client::Stream;
use std::time::Duration;

struct Checker {
    next: u64,
    want: u64,
}

#[async_trait]
impl Worker for Checker {
    type Message = u64;
    type Context = Context;
    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<u64>) -> Result<()> {
        assert!(
            *msg <= self.next,
            "gap: got {}, expected {}",
            *msg,
            self.next
        );
        if *msg == self.next {
            self.next += 1;
            if self.next == self.want {
                ctx.send("app", self.next).await?;
            }
        }
        Ok(())
    }
}

fn hub_config(dir: &std::path::Path) -> HubConfig {
    HubConfig {
        listen: "127.0.0.1:0".into(),
        storage: StorageKind::Durable(dir.to_path_buf()),
        ..HubConfig::default()
    }
}

#[test]
fn a_hundred_thousand_messages_through_one_stream() {
    const N: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let config = hub_config(dir.path());
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            // Hub and clients on one node: the route to the hub is TCP anyway.
            let hub = Hub::start(&ctx, config).await?.to_string();
            ctx.start_worker("checker", Checker { next: 0, want: N })
                .await?;
            let (sender, _) = Stream::new(&ctx)?
                .client_id("volume-producer")
                .connect(route![(TCP, hub.as_str())], "volume", "volume-back")
                .await?;
            let _consumer = Stream::new(&ctx)?
                .client_id("volume-consumer")
                .connect(route![(TCP, hub.as_str())], "volume-back", "volume")
                .await?;
            for n in 0..N {
                ctx.send(route![sender.clone(), "checker"], n).await?;
            }
            let done = ctx
                .receive_duration::<u64>(Duration::from_secs(300))
                .await?;
            assert_eq!(*done, N);
            ctx.stop().await
        })
        .unwrap();
}

#[test]
fn a_thousand_streams_with_interleaved_messages() {
    const STREAMS: usize = 1000;
    const EACH: u64 = 5;
    // Interleaving is what is tested here, not durability: memory store.
    let config = HubConfig {
        listen: "127.0.0.1:0".into(),
        storage: StorageKind::Memory,
        ..HubConfig::default()
    };
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let hub = Hub::start(&ctx, config).await?.to_string();
            let _tcp = ockam_transport_tcp::TcpTransport::create(&ctx).await?;
            let mut routes = Vec::new();
            for s in 0..STREAMS {
                let req = CreateStreamRequest {
                    stream_name: Some(format!("s{s}")),
                };
                ctx.send(
                    route![(TCP, hub.as_str()), "stream"],
                    ProtocolPayload::new(STREAM_CREATE, &req)?,
                )
                .await?;
                let init = ctx.receive::<ProtocolPayload>().await?;
                routes.push(init.return_route());
            }
            // Round-robin pushes: message k of every stream, then k+1, ...
            for k in 0..EACH {
                for (s, r) in routes.iter().enumerate() {
                    let push = PushRequest {
                        request_id: Uint(k),
                        data: format!("s{s}-m{k}").into_bytes(),
                    };
                    let c: PushConfirm = request(&mut ctx, r.clone(), STREAM_PUSH, &push)
                        .await?
                        .decode_data(STREAM_PUSH)?;
                    assert_eq!((c.status, c.index), (PushStatus::Ok, Uint(k)));
                }
            }
            for (s, r) in routes.iter().enumerate() {
                let pull = PullRequest {
                    request_id: Uint(0),
                    index: Uint(0),
                    limit: Uint(100),
                };
                let p: PullResponse = request(&mut ctx, r.clone(), STREAM_PULL, &pull)
                    .await?
                    .decode_data(STREAM_PULL)?;
                let got: Vec<String> = p
                    .messages
                    .into_iter()
                    .map(|m| String::from_utf8(m.data).unwrap())
                    .collect();
                let want: Vec<String> = (0..EACH).map(|k| format!("s{s}-m{k}")).collect();
                assert_eq!(got, want);
            }
            ctx.stop().await
        })
        .unwrap();
}

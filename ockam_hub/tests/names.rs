//! Addresses through their text form, with a hub process: a name one side
//! accepts reaches the other side unchanged (worker names may be any UTF-8,
//! `#` and digits included), and a request the hub refuses is answered
//! with why, not with silence.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::{free_address, request, HubProcess};
use ockam_core::{async_trait, route, Address, ErrorKind, Result, Routed, Worker, LOCAL, TCP};
use ockam_node::{start_node, Context};
use ockam_stream_client::protocol::*;
use ockam_stream_client::{RemoteForwarder, Stream, FORWARDING_SERVICE};
use ockam_transport_tcp::TcpTransport;
use std::time::{Duration, Instant};

/// Names of local workers that look like other things in text form.
const NAMES: [&str; 7] = ["3#x", "a#b", "é", "0#y", "#", "x#1#2", "echo er"];

/// Answers with its own name and what it got.
struct Named;

#[async_trait]
impl Worker for Named {
    type Message = String;
    type Context = Context;
    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
        let me = ctx.address();
        ctx.send(
            msg.return_route(),
            format!("{} got {}", me.address(), msg.body()),
        )
        .await
    }
}

fn hub() -> (HubProcess, String) {
    let addr = free_address();
    (HubProcess::start(&addr, &["--storage", "memory"]), addr)
}

#[test]
fn worker_names_of_any_utf8_work_through_forwarders_and_streams() {
    let (_hub, hub) = hub();
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let h = hub.as_str();
            for name in NAMES {
                ctx.start_worker(Address::new(LOCAL, name), Named).await?;
            }
            for name in NAMES {
                let fwd = RemoteForwarder::create(&ctx, h, Address::new(LOCAL, name)).await?;
                // The forwarder's address survives its text form, as a
                // user passes it on (the forwarding examples print it).
                let text = fwd.remote_address().to_string();
                assert_eq!(Address::parse(&text)?, fwd.remote_address());
                ctx.send(route![(TCP, h), text.as_str()], "hello".to_string())
                    .await?;
                let reply = ctx.receive::<String>().await?.take();
                assert_eq!(reply, format!("{name} got hello"));
            }
            // As text, a name with no number before its '#' is local as
            // it is; a number makes it another transport's address, which
            // is refused here rather than turned into something else.
            let fwd = RemoteForwarder::create(&ctx, h, "a#b").await?;
            ctx.send(fwd.route(), "as text".to_string()).await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "a#b got as text");
            let e = RemoteForwarder::create(&ctx, h, "3#x")
                .await
                .expect_err("not local");
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");

            // Through a stream (and back through it): the routes travel
            // as bytes inside the stream's messages.
            let (tx, _rx) = Stream::new(&ctx)?
                .client_id("names")
                .connect(route![(TCP, h)], "names-loop", "names-loop")
                .await?;
            for name in NAMES {
                ctx.send(
                    route![tx.clone(), Address::new(LOCAL, name)],
                    "streamed".to_string(),
                )
                .await?;
                let reply = ctx.receive::<String>().await?.take();
                assert_eq!(reply, format!("{name} got streamed"));
            }
            ctx.stop().await
        })
        .unwrap();
}

#[test]
fn refused_registrations_and_names_are_answered_with_why() {
    let (_hub, hub) = hub();
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let h = hub.as_str();
            let service = route![(TCP, h), FORWARDING_SERVICE];

            // Not a string; an empty name; a name longer than an address
            // may be.
            let long = "x".repeat(5000);
            ctx.send(service.clone(), vec![0xffu8, 0xff]).await?;
            ctx.send(service.clone(), String::new()).await?;
            ctx.send(service.clone(), long).await?;
            for _ in 0..3 {
                let t = Instant::now();
                let r = ctx
                    .receive_duration::<ProtocolPayload>(Duration::from_secs(5))
                    .await?;
                assert!(t.elapsed() < Duration::from_secs(5));
                let e: StreamError = r.decode_data(STREAM_ERROR)?;
                assert_eq!(e.protocol, FORWARDING_SERVICE);
                assert!(!e.reason.is_empty());
            }
            // What `create` makes of a refusal: an error that says why, at
            // once.
            let t = Instant::now();
            let e = RemoteForwarder::create(&ctx, h, Address::new(LOCAL, ""))
                .await
                .expect_err("refused");
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains("refused"), "{e}");

            // Stream and client names: what the client refuses, the hub
            // refuses too (one rule), with an answer.
            for name in ["a#b", "3#x", "é", "a b"] {
                let r = request(
                    &mut ctx,
                    route![(TCP, h), "stream"],
                    STREAM_CREATE,
                    &CreateStreamRequest {
                        stream_name: Some(name.into()),
                    },
                )
                .await?;
                assert_eq!(r.protocol, STREAM_ERROR, "{name:?}");
                let r = request(
                    &mut ctx,
                    route![(TCP, h), "stream_index"],
                    STREAM_INDEX,
                    &IndexRequest::Get {
                        client_id: name.into(),
                        stream_name: "s".into(),
                    },
                )
                .await?;
                assert_eq!(r.protocol, STREAM_ERROR, "{name:?}");
                assert!(validate_name("stream", name).is_err());
            }

            // And the hub still registers forwarders.
            ctx.start_worker("echoer", Named).await?;
            let fwd = RemoteForwarder::create(&ctx, h, "echoer").await?;
            ctx.send(fwd.route(), "still".to_string()).await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "echoer got still");
            ctx.stop().await
        })
        .unwrap();
}

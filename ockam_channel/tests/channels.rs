//! Secure channels on a node: replies, volume, order, concurrency, trust,
//! and hostile ciphertexts (tampered, truncated, replayed).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::Echoer;
use ockam_channel::{
    internal::ChannelMessage, ListenerOptions, SecureChannel, SecureChannelOptions,
};
use ockam_core::{
    async_trait, route, Any, ErrorKind, LocalMessage, Message, Result, Routed, Worker,
};
use ockam_node::{start_node, Context};
use ockam_vault::{PublicKey, Vault};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Forwards everything (a hop) and keeps a copy of each message it passed
/// on, ready to be forwarded again.
struct Tap {
    seen: Arc<Mutex<Vec<LocalMessage>>>,
}

#[async_trait]
impl Worker for Tap {
    type Message = Any;
    type Context = Context;
    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let mut local = msg.into_local_message();
        local.transport_mut().onward_route.step()?;
        local
            .transport_mut()
            .return_route
            .modify()
            .prepend(ctx.address());
        self.seen.lock().unwrap().push(local.clone());
        ctx.forward(local).await
    }
}

fn run(
    f: impl FnOnce(Context) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>,
) {
    let (ctx, mut executor) = start_node();
    executor.execute(f(ctx)).unwrap();
}

#[test]
fn a_channel_inside_one_node_carries_messages_and_replies() {
    run(|mut ctx| {
        Box::pin(async move {
            let vault = Vault::create(&ctx)?;
            ctx.start_worker("echoer", Echoer).await?;
            let listener_key = SecureChannel::create_listener(&ctx, "listener", &vault).await?;
            let channel = SecureChannel::create(&ctx, "listener", &vault).await?;
            assert_eq!(channel.remote_static(), listener_key);
            ctx.send(route![channel.address(), "echoer"], "Hello".to_string())
                .await?;
            let reply = ctx.receive::<String>().await?;
            assert_eq!(reply.as_body(), "Hello");
            // The reply came back through the channel.
            assert_eq!(reply.return_route().next()?, &channel.address());
            ctx.stop().await
        })
    });
}

#[test]
fn messages_of_every_length_and_route_come_through_whole() {
    run(|mut ctx| {
        Box::pin(async move {
            let vault = Vault::create(&ctx)?;
            ctx.start_worker("echoer", Echoer).await?;
            ctx.start_worker("echoer-with-a-much-longer-name-than-most", Echoer)
                .await?;
            SecureChannel::create_listener(&ctx, "listener", &vault).await?;
            let channel = SecureChannel::create(&ctx, "listener", &vault).await?;
            // Lengths around the 16-byte padding, in both directions, and
            // the same routes one after another (the receiver reuses the
            // routes it decoded last) as well as different ones.
            for (i, len) in [0, 1, 9, 10, 15, 16, 17, 31, 1025, 0, 70_000, 3]
                .into_iter()
                .enumerate()
            {
                let to = if i % 4 == 3 {
                    "echoer-with-a-much-longer-name-than-most"
                } else {
                    "echoer"
                };
                let text: String = (0..len).map(|n| (b'a' + (n % 26) as u8) as char).collect();
                ctx.send(route![channel.address(), to], text.clone())
                    .await?;
                let reply = ctx.receive::<String>().await?;
                assert_eq!(reply.return_route(), route![channel.address(), to]);
                assert_eq!(reply.take(), text, "{len} bytes to {to}");
            }
            ctx.stop().await
        })
    });
}

/// Checks order and reports the count at the end.
struct Checker {
    next: u64,
    want: u64,
}

#[async_trait]
impl Worker for Checker {
    type Message = u64;
    type Context = Context;
    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<u64>) -> Result<()> {
        assert_eq!(*msg, self.next, "out of order");
        self.next += 1;
        if self.next == self.want {
            ctx.send("app", self.next).await?;
        }
        Ok(())
    }
}

#[test]
fn ten_thousand_messages_arrive_complete_and_in_order() {
    run(|mut ctx| {
        Box::pin(async move {
            let vault = Vault::create(&ctx)?;
            ctx.start_worker(
                "checker",
                Checker {
                    next: 0,
                    want: 10_000,
                },
            )
            .await?;
            SecureChannel::create_listener(&ctx, "listener", &vault).await?;
            let channel = SecureChannel::create(&ctx, "listener", &vault).await?;
            for n in 0..10_000u64 {
                ctx.send(route![channel.address(), "checker"], n).await?;
            }
            let done = ctx
                .receive_duration::<u64>(Duration::from_secs(120))
                .await?;
            assert_eq!(*done, 10_000);
            ctx.stop().await
        })
    });
}

#[test]
fn a_hundred_channels_to_one_listener_at_once() {
    run(|mut ctx| {
        Box::pin(async move {
            let vault = Vault::create(&ctx)?;
            ctx.start_worker("echoer", Echoer).await?;
            SecureChannel::create_listener(&ctx, "listener", &vault).await?;
            let creates = (0..100).map(|_| SecureChannel::create(&ctx, "listener", &vault));
            let mut channels = Vec::new();
            for c in futures_util::future::join_all(creates).await {
                channels.push(c?);
            }
            let mut hashes: Vec<_> = channels.iter().map(|c| c.handshake_hash()).collect();
            hashes.sort();
            hashes.dedup();
            assert_eq!(hashes.len(), 100, "every channel has its own keys");
            for (i, c) in channels.iter().enumerate() {
                ctx.send(route![c.address(), "echoer"], format!("via {i}"))
                    .await?;
                let reply = ctx.receive::<String>().await?;
                assert_eq!(reply.as_body(), &format!("via {i}"));
                assert_eq!(reply.return_route().next()?, &c.address());
            }
            ctx.stop().await
        })
    });
}

#[test]
fn tampered_truncated_and_replayed_ciphertexts_are_dropped_and_the_channel_keeps_working() {
    run(|mut ctx| {
        Box::pin(async move {
            let vault = Vault::create(&ctx)?;
            let seen = Arc::new(Mutex::new(Vec::new()));
            ctx.start_worker("echoer", Echoer).await?;
            ctx.start_worker("tap", Tap { seen: seen.clone() }).await?;
            SecureChannel::create_listener(&ctx, "listener", &vault).await?;
            let channel = SecureChannel::create(&ctx, route!["tap", "listener"], &vault).await?;
            ctx.send(route![channel.address(), "echoer"], "first".to_string())
                .await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "first");

            // The ciphertext of "first" as it crossed the tap, towards the listener side.
            let recorded = {
                let seen = seen.lock().unwrap();
                seen.iter()
                    .rev()
                    .find(|m| {
                        matches!(
                            ChannelMessage::decode(&m.transport().payload),
                            Ok(ChannelMessage::Transport { .. })
                        ) && m
                            .transport()
                            .return_route
                            .iter()
                            .any(|a| a.address() == "tap")
                    })
                    .cloned()
                    .expect("a recorded transport message")
            };
            let ChannelMessage::Transport { nonce, ciphertext } =
                ChannelMessage::decode(&recorded.transport().payload)?
            else {
                unreachable!()
            };
            let with = |payload: ChannelMessage| {
                let mut m = recorded.clone();
                m.transport_mut().payload = payload.encode().unwrap();
                m
            };
            let mut flipped = ciphertext.clone();
            flipped[3] ^= 0x20;
            let attacks = vec![
                recorded.clone(), // replay
                with(ChannelMessage::Transport {
                    nonce,
                    ciphertext: flipped,
                }),
                with(ChannelMessage::Transport {
                    nonce: nonce + 1,
                    ciphertext: ciphertext.clone(),
                }),
                with(ChannelMessage::Transport {
                    nonce: nonce + 5,
                    ciphertext: ciphertext[..ciphertext.len() - 1].to_vec(),
                }),
                with(ChannelMessage::Transport {
                    nonce: nonce + 6,
                    ciphertext: vec![],
                }),
                with(ChannelMessage::Handshake(vec![0; 96])),
            ];
            for a in attacks {
                ctx.forward(a).await?;
            }
            let mut garbage = recorded.clone();
            garbage.transport_mut().payload = vec![0xff; 40];
            ctx.forward(garbage).await?;

            // None of that reached the echoer (no reply), and the channel works.
            let err = ctx
                .receive_duration::<String>(Duration::from_millis(300))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Timeout);
            ctx.send(route![channel.address(), "echoer"], "second".to_string())
                .await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "second");
            ctx.stop().await
        })
    });
}

#[test]
fn trust_is_checked_on_both_sides() {
    run(|mut ctx| {
        Box::pin(async move {
            let vault = Vault::create(&ctx)?;
            ctx.start_worker("echoer", Echoer).await?;
            let listener_key = SecureChannel::create_listener(&ctx, "open", &vault).await?;

            // The initiator requires another key than the listener's.
            let err = SecureChannel::create_with_options(
                &ctx,
                "open",
                &vault,
                SecureChannelOptions {
                    trusted_peer: Some(PublicKey([7; 32])),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Security, "{err}");

            // ... and the right one.
            let ok = SecureChannel::create_with_options(
                &ctx,
                "open",
                &vault,
                SecureChannelOptions {
                    trusted_peer: Some(listener_key),
                    ..Default::default()
                },
            )
            .await?;
            assert_eq!(ok.remote_static(), listener_key);

            // A listener that accepts one initiator key only.
            let alice = vault.generate_x25519();
            let alice_public = vault.public_key(&alice)?;
            SecureChannel::create_listener_with_options(
                &ctx,
                "closed",
                &vault,
                ListenerOptions {
                    trusted_peers: Some(vec![alice_public]),
                    ..Default::default()
                },
            )
            .await?;
            let err = SecureChannel::create(&ctx, "closed", &vault)
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Security, "{err}");
            assert!(err.to_string().contains("refused"), "{err}");
            let alices = SecureChannel::create_with_options(
                &ctx,
                "closed",
                &vault,
                SecureChannelOptions {
                    static_key: Some(alice),
                    ..Default::default()
                },
            )
            .await?;
            ctx.send(route![alices.address(), "echoer"], "alice".to_string())
                .await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "alice");
            ctx.stop().await
        })
    });
}

#[test]
fn a_handshake_to_nowhere_times_out_and_garbage_to_the_listener_is_harmless() {
    run(|mut ctx| {
        Box::pin(async move {
            let vault = Vault::create(&ctx)?;
            ctx.start_worker("echoer", Echoer).await?;
            ctx.start_worker(
                "black_hole",
                Checker {
                    next: 0,
                    want: u64::MAX,
                },
            )
            .await?;
            let err = SecureChannel::create_with_options(
                &ctx,
                "black_hole",
                &vault,
                SecureChannelOptions {
                    timeout: Duration::from_millis(300),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Timeout);

            SecureChannel::create_listener(&ctx, "listener", &vault).await?;
            // Garbage of every kind at the listener.
            ctx.send("listener", vec![1u8, 2, 3]).await?;
            ctx.send("listener", ChannelMessage::Handshake(vec![9; 5]))
                .await?;
            ctx.send(
                "listener",
                ChannelMessage::Transport {
                    nonce: 0,
                    ciphertext: vec![0; 64],
                },
            )
            .await?;
            ctx.send("listener", ChannelMessage::Refused("no".into()))
                .await?;
            // It still serves honest initiators.
            let channel = SecureChannel::create(&ctx, "listener", &vault).await?;
            ctx.send(route![channel.address(), "echoer"], "fine".to_string())
                .await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "fine");
            ctx.stop().await
        })
    });
}

/// Replies with the first address of the return route it saw.
struct Reporter;

#[async_trait]
impl Worker for Reporter {
    type Message = String;
    type Context = Context;
    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
        let first = msg.return_route().next()?.address().to_string();
        ctx.send(msg.return_route(), first).await
    }
}

/// Both ends of a channel on one node, and two senders whose routes cross
/// them in opposite orders at the same time: each end holds its lock while
/// it hands a ciphertext on, so if one end's handler ran inside the
/// other's, the two senders could each hold one lock and wait for the other.
#[test]
fn routes_through_both_ends_of_a_channel_in_opposite_orders_do_not_deadlock() {
    const N: u64 = 2_000;
    run(|mut ctx| {
        Box::pin(async move {
            let vault = Vault::create(&ctx)?;
            ctx.start_worker("reporter", Reporter).await?;
            for name in ["checker_a", "checker_b"] {
                ctx.start_worker(name, Checker { next: 0, want: N }).await?;
            }
            SecureChannel::create_listener(&ctx, "listener", &vault).await?;
            let channel = SecureChannel::create(&ctx, "listener", &vault).await?;
            let i_local = channel.address();
            // The responder's end names itself in the return routes it hands on.
            ctx.send(route![i_local.clone(), "reporter"], String::new())
                .await?;
            let r_local = ctx.receive::<String>().await?.take();
            let mut senders = Vec::new();
            for (name, route) in [
                (
                    "sender_a",
                    route![i_local.clone(), r_local.as_str(), "checker_a"],
                ),
                (
                    "sender_b",
                    route![r_local.as_str(), i_local.clone(), "checker_b"],
                ),
            ] {
                let sender = ctx.new_context(name).await?;
                senders.push(tokio::spawn(async move {
                    for n in 0..N {
                        sender.send(route.clone(), n).await?;
                    }
                    Ok::<_, ockam_core::Error>(())
                }));
            }
            for s in senders {
                s.await.expect("sender task")?;
            }
            for _ in 0..2 {
                let done = ctx.receive_duration::<u64>(Duration::from_secs(60)).await?;
                assert_eq!(*done, N);
            }
            ctx.stop().await
        })
    });
}

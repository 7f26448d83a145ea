//! Issue 16's ground: a service knows who sent a message that came
//! through a secure channel (the peer's authenticated static key), and
//! knows that a message from a TCP connection did not; a listener admits
//! initiators by a rule it consults at each handshake, so the rule can
//! change while it runs.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use ockam_channel::{Admit, ListenerOptions, SecureChannel, SecureChannelOptions};
use ockam_core::{async_trait, route, ErrorKind, Result, Routed, Worker, TCP};
use ockam_node::{start_node, Context};
use ockam_transport_tcp::TcpTransport;
use ockam_vault::{PublicKey, Vault};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

/// Answers every message with the sender's channel identity ("none" if
/// the message did not come through a channel).
struct WhoAmI;

#[async_trait]
impl Worker for WhoAmI {
    type Message = String;
    type Context = Context;
    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
        let back = msg.return_route();
        let who = back
            .next()
            .ok()
            .and_then(|first| SecureChannel::peer_identity(ctx, first))
            .map_or_else(|| "none".to_string(), |key| key.to_string());
        ctx.send(back, who).await
    }
}

#[test]
fn a_service_knows_who_sent_a_message_through_a_channel_and_a_rule_admits_initiators() {
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let tcp = TcpTransport::create(&ctx).await?;
            let vault = Vault::create(&ctx)?;
            let admitted: Arc<RwLock<HashSet<PublicKey>>> = Arc::default();
            let rule = admitted.clone();
            SecureChannel::create_listener_with_options(
                &ctx,
                "listener",
                &vault,
                ListenerOptions {
                    admit: Some(Admit(Arc::new(move |key| {
                        rule.read().unwrap().contains(key)
                    }))),
                    ..Default::default()
                },
            )
            .await?;
            ctx.start_worker("whoami", WhoAmI).await?;
            let addr = tcp.listen("127.0.0.1:0").await?.to_string();

            // Over plain TCP: no identity.
            ctx.send(route![(TCP, addr.as_str()), "whoami"], "?".to_string())
                .await?;
            assert_eq!(ctx.receive_timeout::<String>(5).await?.body(), "none");

            // A key the rule does not admit: refused, saying why.
            let alice = vault.generate_x25519();
            let alice_public = vault.public_key(&alice)?;
            let options = || SecureChannelOptions {
                static_key: Some(alice.clone()),
                ..Default::default()
            };
            let to = route![(TCP, addr.as_str()), "listener"];
            let err = SecureChannel::create_with_options(&ctx, to.clone(), &vault, options())
                .await
                .expect_err("a key the rule does not admit");
            assert_eq!(err.kind(), ErrorKind::Security);
            assert!(err.message().contains("not a trusted key"), "{err}");

            // Admitted from now on: the rule is asked at each handshake.
            admitted.write().unwrap().insert(alice_public);
            let channel = SecureChannel::create_with_options(&ctx, to, &vault, options()).await?;
            ctx.send(route![channel.address(), "whoami"], "?".to_string())
                .await?;
            assert_eq!(
                ctx.receive_timeout::<String>(5).await?.body(),
                alice_public.to_string()
            );

            ctx.stop().await
        })
        .unwrap();
}

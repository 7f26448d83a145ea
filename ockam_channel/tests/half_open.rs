//! Issue 18, bounded resources per peer: one peer floods a listener with
//! first handshake messages it never follows up. Each starts a responder
//! that waits for the rest of its handshake, so the listener keeps at most
//! 64 of them per peer (1,024 in all) and drops the others; another peer
//! still gets a channel at once.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::ListenerNode;
use ockam_channel::{internal::ChannelMessage, ListenerOptions, SecureChannel};
use ockam_core::{route, TCP};
use ockam_node::start_node;
use ockam_transport_tcp::TcpTransport;
use ockam_vault::Vault;
use std::time::{Duration, Instant};

/// Unfinished handshakes one peer may have with one listener.
const PER_PEER: usize = 64;
/// First handshake messages the flooding peer sends.
const FLOOD: u64 = 2_000;

/// 32 bytes that pass for an initiator's ephemeral public key (any 32
/// bytes are an X25519 u-coordinate), different for each `i`.
fn ephemeral(i: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..4)
        .flat_map(|_| {
            x ^= x >> 30;
            x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x ^= x >> 27;
            x.to_le_bytes()
        })
        .collect()
}

#[test]
fn a_peer_that_floods_a_listener_with_handshakes_keeps_at_most_its_share() {
    let listener = ListenerNode::start(ListenerOptions::default());
    let addr = listener.addr.clone();
    let workers = || listener.workers();
    let before = workers();

    // The flooding peer: first messages only, over one connection.
    let (ctx, mut executor) = start_node();
    let to = addr.clone();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            for i in 0..FLOOD {
                ctx.send(
                    route![(TCP, to.as_str()), "listener"],
                    ChannelMessage::Handshake(ephemeral(i)),
                )
                .await?;
            }
            // Until the listener has taken them all in (its worker count
            // stops moving), then a little longer.
            tokio::time::sleep(Duration::from_secs(1)).await;
            ctx.stop().await
        })
        .unwrap();
    let mut during = workers();
    let settle = Instant::now() + Duration::from_secs(10);
    while Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(200));
        let now = workers();
        if now == during {
            break;
        }
        during = now;
    }
    println!(
        "listener workers: {before} before, {during} after {FLOOD} first handshake messages from one peer"
    );
    // A responder holds 3 addresses: its two ends and its handshake
    // deadline's context.
    assert!(
        during <= before + 3 * PER_PEER,
        "about {} responders for one peer",
        (during - before) / 3
    );
    assert!(
        during >= before + PER_PEER,
        "the flood did not reach the listener ({before} -> {during} workers)"
    );

    // Another peer gets a channel and talks through it.
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let vault = Vault::create(&ctx)?;
            let channel =
                SecureChannel::create(&ctx, route![(TCP, addr.as_str()), "listener"], &vault)
                    .await?;
            ctx.send(route![channel.address(), "echoer"], "hello".to_string())
                .await?;
            let mut ctx = ctx;
            assert_eq!(ctx.receive::<String>().await?.body(), "hello");
            ctx.stop().await
        })
        .unwrap();
}

//! `Context::is_present` for TCP addresses: what a hub's janitors ask to
//! learn that the way to a peer is gone without sending to it.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::TestNode;
use ockam_core::{Address, TCP};
use ockam_node::start_node;
use ockam_transport_tcp::TcpTransport;
use std::time::{Duration, Instant};

#[test]
fn a_tcp_address_is_present_while_its_connection_is_open() {
    let peer = TestNode::start();
    let addr = peer.addr.to_string();
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let tcp = TcpTransport::create(&ctx).await?;
            let hop = Address::new(TCP, addr.as_str());
            assert_eq!(ctx.is_present(&hop), Some(false), "before any connection");
            tcp.connect(&addr).await?;
            assert_eq!(ctx.is_present(&hop), Some(true), "connected");
            // Local addresses: registered or not.
            assert_eq!(ctx.is_present(&ctx.address()), Some(true));
            assert_eq!(ctx.is_present(&Address::from("nobody")), Some(false));
            // A transport this node does not have cannot tell.
            assert_eq!(ctx.is_present(&Address::new(7, "x")), None);

            drop(peer);
            let deadline = Instant::now() + Duration::from_secs(10);
            while ctx.is_present(&hop) != Some(false) {
                assert!(
                    Instant::now() < deadline,
                    "still present after its peer left"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ctx.stop().await
        })
        .unwrap();
}

/// The addresses `listen` gives the node are all there when it returns:
/// none comes a moment later (a test that counts a node's addresses to
/// find leaks counted one too few when it asked at once, and saw a leak).
#[test]
fn listen_adds_its_addresses_before_it_returns() {
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let tcp = TcpTransport::create(&ctx).await?;
            let mut counts = Vec::new();
            for _ in 0..20 {
                let before = ctx.list_addresses().len();
                tcp.listen("127.0.0.1:0").await?;
                let at_return = ctx.list_addresses().len();
                tokio::time::sleep(Duration::from_millis(20)).await;
                counts.push((before, at_return, ctx.list_addresses().len()));
            }
            assert!(
                counts
                    .iter()
                    .all(|&(_, at_return, later)| at_return == later),
                "(before, as listen returned, 20 ms later): {counts:?}"
            );
            ctx.stop().await
        })
        .unwrap();
}

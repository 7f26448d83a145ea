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

//! Issue 13, failing input 2: a channel to a TCP address where nothing
//! listens fails at once, with the connect error (the first handshake
//! message is sent from the channel worker's `initialize`: its failure
//! reaches `create`'s caller), and leaves nothing running.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use ockam_channel::SecureChannel;
use ockam_core::{route, ErrorKind, TCP};
use ockam_node::start_node;
use ockam_transport_tcp::TcpTransport;
use ockam_vault::Vault;
use std::time::{Duration, Instant};

/// A loopback address nothing listens on (it was free a moment ago).
fn nobody() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[test]
fn a_channel_to_a_port_nobody_listens_on_fails_at_once_with_the_connect_error() {
    let nobody = nobody();
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let vault = Vault::create(&ctx)?;
            let before = ctx.list_addresses().len();
            let t = Instant::now();
            let created = tokio::time::timeout(
                Duration::from_secs(10),
                SecureChannel::create(&ctx, route![(TCP, nobody.as_str()), "listener"], &vault),
            )
            .await
            .expect("create returns well before its 30 s handshake timeout");
            let e = created.expect_err("nothing listens there");
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{:?}: {e}",
                t.elapsed()
            );
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
            assert!(e.to_string().contains(&nobody), "{e}");
            // The channel's worker is gone.
            let deadline = Instant::now() + Duration::from_secs(5);
            while ctx.list_addresses().len() != before && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(ctx.list_addresses().len(), before);
            ctx.stop().await
        })
        .unwrap();
}

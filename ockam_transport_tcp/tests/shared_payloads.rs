//! Payloads whose end is a shared buffer (`ockam_core::SharedTail`) go out
//! with vectored writes, the shared ends not copied into the connection's
//! buffer: whatever their sizes, mixed with ordinary messages, and across
//! the partial writes of a socket whose buffer is full, every byte arrives
//! in order.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::TestNode;
use ockam_core::{internal::wire::put_uint, route, SharedTail, TCP};
use ockam_node::start_node;
use ockam_transport_tcp::TcpTransport;

/// The text of message `i`, `len` bytes long.
fn text(i: usize, len: usize) -> String {
    let tag = format!("<{i}>");
    let mut s = tag.repeat(len / tag.len() + 1);
    s.truncate(len);
    s
}

#[test]
fn shared_payload_ends_arrive_whole_and_in_order() {
    let echo = TestNode::start();
    let peer = echo.addr.to_string();
    // Below, at and above the size from which an end is shared, and large
    // enough together (about 40 MB) to fill the socket's buffers.
    let sizes = [
        0usize, 1, 100, 4_095, 4_096, 4_097, 65_536, 300_000, 17, 1_000_000,
    ];
    let n = 400;
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let to = route![(TCP, peer.as_str()), "echoer"];
            let mut sent = Vec::new();
            for i in 0..n {
                let body = text(i, sizes[i % sizes.len()]);
                if i % 3 == 2 {
                    // An ordinary message between the shared ones.
                    ctx.send(to.clone(), body.clone()).await?;
                } else {
                    // A `String`'s BARE encoding: its length, then its bytes.
                    let mut head = Vec::new();
                    put_uint(&mut head, body.len() as u64);
                    let payload = SharedTail {
                        head: &head,
                        tail: bytes::Bytes::from(body.clone().into_bytes()),
                    };
                    ctx.send_payload(to.clone(), &payload).await?;
                }
                sent.push(body);
            }
            for (i, want) in sent.iter().enumerate() {
                let got = ctx
                    .receive_duration::<String>(std::time::Duration::from_secs(60))
                    .await?;
                assert_eq!(got.as_body().len(), want.len(), "message {i}: length");
                assert!(got.as_body() == want, "message {i}: content");
            }
            ctx.stop().await
        })
        .unwrap();
}

//! 1,000 concurrent client connections to one listener, each doing an echo
//! round trip.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::{echo_request, TestNode};
use ockam_core::{route, Message, TransportMessage};
use ockam_transport_tcp::internal::FrameDecoder;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLIENTS: usize = 1000;

#[test]
fn a_thousand_concurrent_clients_each_get_their_echo() {
    let node = TestNode::start();
    let addr = node.addr;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(async move {
        // Connect all first, so that all 1,000 connections are open at once.
        let mut streams = Vec::with_capacity(CLIENTS);
        for _ in 0..CLIENTS {
            streams.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        }
        let tasks: Vec<_> = streams
            .into_iter()
            .enumerate()
            .map(|(i, mut s)| {
                tokio::spawn(async move {
                    let text = format!("client {i}");
                    s.write_all(&echo_request(&text)).await.expect("write");
                    let mut decoder = FrameDecoder::new(1 << 20);
                    let mut buf = [0u8; 1024];
                    loop {
                        if let Some(f) = decoder.next_frame().expect("valid frame") {
                            let reply = TransportMessage::decode(f).expect("transport message");
                            assert_eq!(reply.onward_route, route!["client"]);
                            assert_eq!(String::decode(&reply.payload).unwrap(), text);
                            return true;
                        }
                        let n = s.read(&mut buf).await.expect("read");
                        assert!(n > 0, "connection {i} closed before its echo");
                        decoder.extend(&buf[..n]);
                    }
                })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            if tokio::time::timeout(Duration::from_secs(120), t)
                .await
                .expect("echo within 120 s")
                .expect("client task")
            {
                ok += 1;
            }
        }
        ok
    });
    assert_eq!(ok, CLIENTS);
}

//! Across nodes over TCP, the whole inner message travels encrypted: a byte
//! capture of the TCP hop never contains the payload or the inner route.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::Echoer;
use ockam_channel::SecureChannel;
use ockam_core::{route, TCP};
use ockam_node::start_node;
use ockam_transport_tcp::TcpTransport;
use ockam_vault::Vault;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Forwards one connection to `to`, recording every byte both ways.
fn capturing_proxy(to: String) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let capture = Arc::new(Mutex::new(Vec::new()));
    let cap = capture.clone();
    std::thread::spawn(move || {
        let (client, _) = listener.accept().unwrap();
        let server = TcpStream::connect(&to).unwrap();
        let pump = |mut from: TcpStream, mut to: TcpStream, cap: Arc<Mutex<Vec<u8>>>| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = from.read(&mut buf) {
                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    cap.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                let _ = to.shutdown(std::net::Shutdown::Both);
            })
        };
        pump(
            client.try_clone().unwrap(),
            server.try_clone().unwrap(),
            cap.clone(),
        );
        pump(server, client, cap);
    });
    (addr, capture)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_capture_of_the_tcp_hop_never_contains_the_plaintext() {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let responder = std::thread::spawn(move || {
        let (ctx, mut executor) = start_node();
        executor
            .execute(async move {
                let tcp = TcpTransport::create(&ctx).await?;
                let vault = Vault::create(&ctx)?;
                SecureChannel::create_listener(&ctx, "secure_channel_listener", &vault).await?;
                ctx.start_worker("echoer", Echoer).await?;
                addr_tx.send(tcp.listen("127.0.0.1:0").await?).unwrap();
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                ctx.stop().await
            })
            .unwrap();
    });
    let (proxy, capture) = capturing_proxy(addr_rx.recv().unwrap().to_string());

    const SECRET: &str = "top secret: the eagle lands at dawn";
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let vault = Vault::create(&ctx)?;
            let channel = SecureChannel::create(
                &ctx,
                route![(TCP, proxy.as_str()), "secure_channel_listener"],
                &vault,
            )
            .await?;
            for _ in 0..3 {
                ctx.send(route![channel.address(), "echoer"], SECRET.to_string())
                    .await?;
                let reply = ctx.receive::<String>().await?;
                assert_eq!(reply.as_body(), SECRET);
            }
            ctx.stop().await
        })
        .unwrap();

    let bytes = capture.lock().unwrap().clone();
    // The capture is real: the outer route to the listener is visible...
    assert!(
        contains(&bytes, b"secure_channel_listener"),
        "nothing captured"
    );
    // ...but neither the payload nor the inner route ever is.
    assert!(
        !contains(&bytes, SECRET.as_bytes()),
        "plaintext on the wire"
    );
    assert!(!contains(&bytes, b"eagle"), "plaintext on the wire");
    assert!(!contains(&bytes, b"echoer"), "inner route on the wire");
    drop(stop_tx);
    responder.join().unwrap();
}

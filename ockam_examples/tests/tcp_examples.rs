//! The transport guide's examples and seed 002's client/server, run as
//! separate processes talking over loopback TCP.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::{example, free_port, run, start_middle, Running};
use ockam::{route, Context, ErrorKind, Result, TcpTransport, TCP};
use std::time::{Duration, Instant};

#[test]
fn seed_002_client_and_server_talk() {
    let addr = format!("127.0.0.1:{}", free_port());
    let server = Running::start(example("server").arg(&addr));
    // The server logs (stderr) rather than prints: wait until it accepts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "server never listened on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = run(example("client").arg(&addr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client failed: {stderr}");
    assert!(
        stderr.contains("Received return message: 'Hello you over there!'"),
        "client logged:\n{stderr}"
    );
    drop(server);
}

#[test]
fn initiator_reaches_the_responder_over_tcp() {
    let responder =
        Running::start(example("04-routing-over-transport-responder").arg("127.0.0.1:0"));
    let line = responder.wait_for("Responder listening on");
    let addr = line.rsplit(' ').next().expect("address").to_string();
    let out = run(example("04-routing-over-transport-initiator").arg(&addr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("App Received: Hello Ockam!"), "{stdout}");
}

#[test]
fn a_message_crosses_two_tcp_hops_through_a_middle_node() {
    let responder =
        Running::start(example("05-routing-over-transport-two-hops-responder").arg("127.0.0.1:0"));
    let line = responder.wait_for("Responder listening on");
    let responder_addr = line.rsplit(' ').next().expect("address").to_string();
    let (_middle, middle_addr) =
        start_middle("05-routing-over-transport-two-hops-middle", &responder_addr);
    let out = run(example("05-routing-over-transport-two-hops-initiator")
        .arg(&middle_addr)
        .arg(&responder_addr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("App Received: Hello Ockam!"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "Return route: 1#{middle_addr} => 1#{responder_addr} => 0#echoer"
        )),
        "{stdout}"
    );
}

/// Sends one echo request and waits briefly for the reply.
async fn echo(ctx: &mut Context, peer: &str, text: &str) -> Result<()> {
    ctx.send(route![(TCP, peer), "echoer"], text.to_string())
        .await?;
    let reply = ctx
        .receive_duration::<String>(Duration::from_millis(500))
        .await?;
    assert_eq!(reply.as_body(), text);
    Ok(())
}

#[test]
fn a_dead_peer_gives_errors_and_is_reconnected_when_back() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut peer = Running::start(example("04-routing-over-transport-responder").arg(&addr));
    peer.wait_for("Responder listening on");

    let (mut ctx, mut executor) = ockam::start_node();
    executor
        .execute(async move {
            let tcp = TcpTransport::create(&ctx).await?;
            tcp.connect(&addr).await?;
            echo(&mut ctx, &addr, "before").await?;

            // The peer process dies.
            peer.kill();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                assert!(
                    Instant::now() < deadline,
                    "sends to a dead peer never failed"
                );
                match ctx
                    .send(route![(TCP, addr.as_str()), "echoer"], "x".to_string())
                    .await
                {
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                        break;
                    }
                    Ok(()) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            // The dead connection is cleaned up.
            assert!(tcp.connection_worker(&addr).is_none());

            // The peer comes back on the same port: a later send reconnects.
            let peer = Running::start(example("04-routing-over-transport-responder").arg(&addr));
            peer.wait_for("Responder listening on");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match echo(&mut ctx, &addr, "after").await {
                    Ok(()) => break,
                    Err(e) => {
                        assert!(Instant::now() < deadline, "never reconnected: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            drop(peer);
            ctx.stop().await
        })
        .unwrap();
}

//! Network faults as a user meets them (issue 18): a producer and a
//! consumer node reach a hub process through a fault-injecting TCP proxy
//! (`common::faults`). Streams must deliver every message, in order
//! (repeats allowed and counted), whatever the link does.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;
// Only the hub's own tests use it (other packages include `common`).
#[path = "common/faults.rs"]
mod faults;
#[path = "common/netns.rs"]
mod netns;

use common::{
    consumer, free_address, rss_mib, spawn_producer, wait_for, HubProcess, Pace, EMBEDDED,
};
use faults::{Fault, FaultProxy};
use std::time::{Duration, Instant};

/// Messages each scenario sends.
const N: u64 = 1_000;

/// A hub process with its durable store in a temporary directory, and a
/// proxy in front of it.
fn hub_behind_a_proxy() -> (HubProcess, FaultProxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_address();
    let hub = HubProcess::start(&addr, &["--data-dir", dir.path().to_str().unwrap()]);
    let proxy = FaultProxy::start(&addr);
    (hub, proxy, dir)
}

/// Runs a producer and a consumer of `N` numbers through `proxy`, calling
/// `during` once `at` numbers were delivered; returns (delivered, repeats)
/// once all were delivered, or panics after `within`.
fn stream_through(
    proxy: &FaultProxy,
    name: &'static str,
    at: u64,
    within: Duration,
    during: impl FnOnce(),
) -> (u64, usize) {
    let (progress, repeats, stop_consumer, consumer_thread) =
        consumer(proxy.address.clone(), EMBEDDED, name, 0);
    let pace = Pace {
        count: N,
        every: 20,
        pause: Duration::from_millis(20),
    };
    let (stop_producer, producer) =
        spawn_producer(proxy.address.clone(), EMBEDDED, name, pace, None);
    let started = Instant::now();
    assert_eq!(
        wait_for(&progress, at, within),
        at,
        "{name}: the first {at} never arrived"
    );
    during();
    let left = within.saturating_sub(started.elapsed());
    let delivered = wait_for(&progress, N, left);
    let repeated = repeats.try_iter().count();
    println!(
        "{name}: sent {N}, delivered {delivered}, repeated {repeated}, lost {}, in {:?}, {} proxy connections",
        N - delivered,
        started.elapsed(),
        proxy.connections()
    );
    assert_eq!(delivered, N, "{name}: lost messages");
    drop(stop_producer);
    drop(stop_consumer);
    producer.join().unwrap();
    consumer_thread.join().unwrap();
    (delivered, repeated)
}

#[test]
fn a_link_that_stalls_a_fifth_of_its_chunks_loses_nothing() {
    let (_hub, proxy, _dir) = hub_behind_a_proxy();
    proxy.set(Fault::Stalls {
        percent: 20,
        min: Duration::from_millis(50),
        max: Duration::from_millis(400),
    });
    stream_through(&proxy, "stalls", 1, Duration::from_secs(240), || {});
}

#[test]
fn a_ten_second_partition_loses_nothing() {
    let (_hub, proxy, _dir) = hub_behind_a_proxy();
    stream_through(&proxy, "partition", 300, Duration::from_secs(240), || {
        proxy.set(Fault::Partition);
        std::thread::sleep(Duration::from_secs(10));
        proxy.set(Fault::None);
    });
}

#[test]
fn connections_cut_mid_frame_lose_nothing() {
    let (_hub, proxy, _dir) = hub_behind_a_proxy();
    stream_through(&proxy, "cuts", 200, Duration::from_secs(240), || {
        for _ in 0..4 {
            proxy.cut_mid_frame();
            std::thread::sleep(Duration::from_secs(2));
        }
    });
    assert!(
        proxy.connections() > 2,
        "the cuts did not make the clients connect again"
    );
}

/// A peer that sends echo requests as fast as it can and never reads the
/// answers: the hub must not buffer them without bound (it holds the peer
/// back while the echo service's queue is full, and disconnects it once
/// 16 MiB of answers wait for it: a "slow consumer", as NATS calls it), and
/// must go on serving others at once.
#[test]
fn a_peer_that_stops_reading_is_held_back_and_others_are_served() {
    use ockam_core::{route, TransportMessage};
    use ockam_transport_tcp::internal::encode_frame;
    use ockam_transport_tcp::DEFAULT_MAX_FRAME_SIZE;
    use std::io::Write;

    let dir = tempfile::tempdir().unwrap();
    let addr = free_address();
    let hub = HubProcess::start(&addr, &["--data-dir", dir.path().to_str().unwrap()]);
    let pid = hub.child.id();
    let before = rss_mib(pid);

    // 64 KiB echo requests, 1 GiB offered, never a read.
    let msg = TransportMessage::v1(
        route!["echo_service"],
        route!["nobody"],
        vec![7u8; 64 * 1024],
    );
    let mut frame = Vec::new();
    encode_frame(&msg, &mut frame, DEFAULT_MAX_FRAME_SIZE).unwrap();
    let mut greedy = std::net::TcpStream::connect(&addr).unwrap();
    greedy
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let writer = std::thread::spawn(move || {
        let mut sent = 0u64;
        for _ in 0..16 * 1024 {
            if greedy.write_all(&frame).is_err() {
                break; // held back (the hub stopped reading us) or disconnected
            }
            sent += frame.len() as u64;
        }
        (sent, greedy)
    });
    let (sent, _greedy) = writer.join().unwrap();
    let during = rss_mib(pid);

    // Another client is answered meanwhile.
    let (mut ctx, mut executor) = ockam_node::start_node();
    let hub_addr = addr.clone();
    let answered = executor
        .execute(async move {
            let _tcp = ockam_transport_tcp::TcpTransport::create(&ctx).await?;
            let started = Instant::now();
            ctx.send(
                route![(ockam_core::TCP, hub_addr.as_str()), "echo_service"],
                "still there?".to_string(),
            )
            .await?;
            let reply = ctx.receive_timeout::<String>(10_000).await?.take();
            assert_eq!(reply, "still there?");
            let took = started.elapsed();
            ctx.stop().await?;
            Ok(took)
        })
        .unwrap();
    println!(
        "a peer that stops reading: it got {} MiB in before it was held back; hub RSS {before:.1} -> {during:.1} MiB; another client answered in {answered:?}",
        sent / (1024 * 1024)
    );
    assert!(
        sent < 512 * 1024 * 1024,
        "the hub took {sent} bytes from a peer that reads nothing"
    );
    assert!(
        during < before + 128.0,
        "hub RSS grew from {before:.1} to {during:.1} MiB"
    );
    assert!(
        answered < Duration::from_secs(2),
        "another client waited {answered:?}"
    );
    hub.wait_for_log("the peer reads nothing", Duration::from_secs(10));
}

/// A link that goes down for longer than the peer timeout: the hub
/// vanishes for the client and the client for the hub, neither sends a
/// FIN. Each side must notice (the client's connection closes, the hub
/// closes its end and stops the forwarder registered over it) instead of
/// keeping a dead connection, with what was sent into it, for ever (on
/// Linux, about 15 minutes with data unacknowledged; never when idle).
/// Once the link is back, the client reaches the hub again.
#[test]
fn a_peer_that_vanishes_without_fin_is_noticed_on_both_sides() {
    use ockam_core::{route, TCP};
    use ockam_node::start_node;
    use ockam_stream_client::RemoteForwarder;
    use ockam_transport_tcp::{TcpOptions, TcpTransport};

    let Some(ns) = netns::Netns::create() else {
        return;
    };
    let hub_addr = format!("{}:4000", ns.peer_ip);
    let hub = HubProcess::start_in(
        Some(&ns.name),
        &hub_addr,
        &["--storage", "memory", "--peer-timeout-ms", "3000"],
    );
    let (mut ctx, mut executor) = start_node();
    let addr = hub_addr.clone();
    let noticed = executor
        .execute(async move {
            let tcp = TcpTransport::create_with_options(
                &ctx,
                TcpOptions {
                    peer_timeout: Some(Duration::from_secs(3)),
                    ..TcpOptions::default()
                },
            )
            .await?;
            let echo = route![(TCP, addr.as_str()), "echo_service"];
            ctx.send(echo.clone(), "before".to_string()).await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "before");
            let _forwarder = RemoteForwarder::create(&ctx, addr.as_str(), "app").await?;

            ns.link(false);
            // Accepted into the connection; it cannot be delivered now.
            ctx.send(echo.clone(), "during".to_string()).await?;
            let cut = Instant::now();
            while tcp.connection_worker(&addr).is_some() {
                assert!(
                    cut.elapsed() < Duration::from_secs(30),
                    "the client still holds its connection to a hub gone for 30 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let noticed = cut.elapsed();

            ns.link(true);
            // A new connection, made on demand, reaches the hub.
            ctx.send(echo, "after".to_string()).await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "after");
            ctx.stop().await?;
            Ok::<_, ockam_core::Error>(noticed)
        })
        .expect("client node");
    println!("the client noticed the hub had vanished after {noticed:?}");
    // The hub noticed too: it closed its end and the forwarder went with it.
    hub.wait_for_log("closing TCP connection", Duration::from_secs(30));
    hub.wait_for_log(
        "the way to the forwarder's registrant is gone",
        Duration::from_secs(30),
    );
}

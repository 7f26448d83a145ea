//! A listener that receives garbage, truncated or oversize frames, frames
//! that decode to nonsense, or clients that vanish mid-frame closes that one
//! connection (with a log line); other connections keep working.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::{closed_by_peer, echo_request, frame, raw_echo, read_frame, TestNode};
use ockam_core::{route, Message, TransportMessage};
use ockam_transport_tcp::TcpOptions;
use rand::RngExt;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

const CLOSE_WITHIN: Duration = Duration::from_secs(10);

fn send_and_expect_close(node: &TestNode, bytes: &[u8], what: &str) {
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.write_all(bytes).unwrap();
    assert!(
        closed_by_peer(&mut s, CLOSE_WITHIN),
        "{what}: connection was not closed"
    );
    raw_echo(node.addr, what).unwrap_or_else(|e| panic!("after {what}: echo failed: {e}"));
}

/// Sends `bad` then 20 echo requests on one connection: all 20 come back.
fn send_and_expect_drop(node: &TestNode, bad: &[u8], what: &str) {
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(bad).unwrap();
    for i in 0..20 {
        s.write_all(&echo_request(&format!("{what} {i}"))).unwrap();
    }
    let replies = common::read_frames(&mut s, 20)
        .unwrap_or_else(|e| panic!("after {what}: the 20 echoes did not come back: {e}"));
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(
            String::decode(&reply.payload).unwrap(),
            format!("{what} {i}")
        );
    }
}

#[test]
fn bad_frames_close_only_their_connection() {
    let node = TestNode::start_with(
        TcpOptions {
            max_frame_size: 64 * 1024,
            ..TcpOptions::default()
        },
        vec![],
    );
    // A healthy connection that stays open through all of it.
    let mut healthy = TcpStream::connect(node.addr).unwrap();
    healthy
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();

    send_and_expect_close(&node, &[0xff; 64], "garbage with a huge length");
    send_and_expect_close(&node, &(1u32 << 20).to_be_bytes(), "oversize length prefix");
    send_and_expect_close(&node, &[0, 0, 0, 0], "empty frame");

    // Well-framed messages that do not decode are dropped one by one: the
    // frames behind them are intact, so the connection carries on.
    send_and_expect_drop(&node, &[0, 0, 0, 5, 1, 2, 3, 4, 5], "frame of nonsense");
    let mut v2 = frame(&TransportMessage::v1(route!["echoer"], route!["c"], vec![]));
    v2[4] = 2;
    send_and_expect_drop(&node, &v2, "unknown transport message version");
    let mut trailing = echo_request("x");
    trailing[3] += 1;
    trailing.push(0);
    send_and_expect_drop(&node, &trailing, "frame with trailing bytes");
    // Issue 13: a route of 302 addresses, and an empty return address.
    let long = TransportMessage::v1(
        ockam_core::Route::create((0..302).map(|i| format!("h{i}"))),
        route!["c"],
        vec![],
    );
    send_and_expect_drop(&node, &frame(&long), "onward route of 302 addresses");
    let empty_addr = TransportMessage::v1(route!["echoer"], route![""], vec![]);
    send_and_expect_drop(&node, &frame(&empty_addr), "empty return address");
    // A return route already at the limit: the hop cannot add itself.
    let full = TransportMessage::v1(
        route!["echoer"],
        ockam_core::Route::create((0..ockam_core::MAX_ROUTE_LEN).map(|i| format!("r{i}"))),
        "full".to_string().encode().unwrap(),
    );
    send_and_expect_drop(&node, &frame(&full), "return route at the limit");

    // A client that vanishes in the middle of a frame.
    {
        let mut s = TcpStream::connect(node.addr).unwrap();
        let req = echo_request("never finished");
        s.write_all(&req[..req.len() / 2]).unwrap();
    }
    raw_echo(node.addr, "after a vanished client").unwrap();

    // A message to an address that does not exist is dropped, not fatal.
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.write_all(&frame(&TransportMessage::v1(
        route!["nobody"],
        route!["c"],
        vec![1],
    )))
    .unwrap();
    s.write_all(&echo_request("still here")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let reply = common::read_frame(&mut s).unwrap();
    assert_eq!(reply.onward_route, route!["client"]);

    healthy.write_all(&echo_request("healthy")).unwrap();
    common::read_frame(&mut healthy).expect("the healthy connection still works");
}

#[test]
fn random_bytes_from_many_connections_at_once() {
    let node = TestNode::start();
    let addr = node.addr;
    let threads: Vec<_> = (0..64)
        .map(|i| {
            std::thread::spawn(move || {
                let mut rng = rand::rng();
                let mut s = TcpStream::connect(addr).unwrap();
                for _ in 0..8 {
                    let n = rng.random_range(1..2048);
                    let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                    if s.write_all(&junk).is_err() {
                        break; // already closed by the node: fine
                    }
                }
                if i % 2 == 0 {
                    // Half of them wait to be closed, half just vanish.
                    closed_by_peer(&mut s, CLOSE_WITHIN);
                }
            })
        })
        .collect();
    // Honest traffic keeps flowing meanwhile.
    for i in 0..20 {
        raw_echo(addr, &format!("honest {i}")).unwrap();
    }
    for t in threads {
        t.join().expect("no client thread panics");
    }
    raw_echo(addr, "after the storm").unwrap();
}

/// A flood of connections past `TcpOptions::max_connections` (issue 18,
/// bounded resources): the ones over the cap are closed at once, the ones
/// within it keep serving, and a place freed is taken again.
#[test]
fn connections_past_the_cap_are_closed_and_the_others_served() {
    let node = TestNode::start_with(
        TcpOptions {
            max_connections: 3,
            ..TcpOptions::default()
        },
        vec![],
    );
    // Three accepted, each proven by an echo (so each is registered).
    let mut kept: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut s = TcpStream::connect(node.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(&echo_request(&format!("kept {i}"))).unwrap();
            read_frame(&mut s).unwrap();
            s
        })
        .collect();
    // Past the cap: closed at once, whatever they send.
    for i in 0..20 {
        let mut s = TcpStream::connect(node.addr).unwrap();
        let _ = s.write_all(&echo_request(&format!("over {i}")));
        assert!(
            closed_by_peer(&mut s, Duration::from_secs(5)),
            "connection {i} past the cap stayed open"
        );
    }
    // The kept ones still serve.
    for (i, s) in kept.iter_mut().enumerate() {
        s.write_all(&echo_request(&format!("still {i}"))).unwrap();
        read_frame(s).unwrap();
    }
    // One leaves: its place is taken again (once the node saw it go).
    drop(kept.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if raw_echo(node.addr, "a freed place").is_ok() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a freed place was never taken again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

//! Issue 13, failing input 4: a reply to a client that has left. A client
//! bound to local port P opens a stream on a hub process, asks for a
//! waiting pull (3 s) and disconnects. The hub must not connect to
//! 127.0.0.1:P to hand over the pull's answer (nor for anything else): a
//! peer that connected to the hub and left is gone.
//!
//! The client is a plain socket speaking the TCP frame format (a length,
//! then a transport message), so that the test chooses its local port and
//! can listen there once it has left.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::{free_address, HubProcess};
use ockam_core::{decode, encode, route, Route, TransportMessage};
use ockam_stream_client::protocol::Uint;
use ockam_stream_client::protocol::{
    CreateStreamRequest, Init, ProtocolPayload, PullWaitRequest, STREAM_CREATE, STREAM_PULL_WAIT,
};
use ockam_transport_tcp::internal::encode_frame;
use ockam_transport_tcp::{internal::FrameDecoder, DEFAULT_MAX_FRAME_SIZE};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// How long the hub is watched after the client left: well past the
/// pull's 3 s.
const WATCH: Duration = Duration::from_secs(5);

async fn send(conn: &mut TcpStream, onward: Route, payload: ProtocolPayload) {
    let msg = TransportMessage::v1(onward, route!["client"], encode(&payload).unwrap());
    let mut frame = Vec::new();
    encode_frame(&msg, &mut frame, DEFAULT_MAX_FRAME_SIZE).unwrap();
    conn.write_all(&frame).await.unwrap();
}

async fn receive(conn: &mut TcpStream, decoder: &mut FrameDecoder) -> TransportMessage {
    loop {
        if let Some(frame) = decoder.next_frame().unwrap() {
            return TransportMessage::decode(frame).unwrap();
        }
        let n = tokio::time::timeout(
            Duration::from_secs(30),
            conn.read_buf(decoder.read_buffer(4096)),
        )
        .await
        .expect("the hub answers within 30 s")
        .unwrap();
        assert!(n > 0, "the hub closed the connection");
    }
}

/// A listener on `addr`, where a client socket was bound a moment ago.
async fn listen_where_the_client_was(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        match socket.bind(addr).and_then(|()| socket.listen(16)) {
            Ok(l) => return l,
            Err(e) if Instant::now() < deadline => {
                eprintln!("cannot listen on {addr} yet: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot listen on {addr}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_never_dials_a_client_that_left() {
    let hub_addr = free_address();
    let _hub = tokio::task::spawn_blocking({
        let a = hub_addr.clone();
        move || HubProcess::start(&a, &["--storage", "memory"])
    })
    .await
    .unwrap();

    // The client, on a local port of its own choosing (P).
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let client_addr = socket.local_addr().unwrap();
    let mut conn = socket.connect(hub_addr.parse().unwrap()).await.unwrap();
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);

    let create = CreateStreamRequest {
        stream_name: Some("departed-client".into()),
    };
    send(
        &mut conn,
        route!["stream"],
        ProtocolPayload::new(STREAM_CREATE, &create).unwrap(),
    )
    .await;
    let init = receive(&mut conn, &mut decoder).await;
    assert_eq!(init.onward_route, route!["client"]);
    let reply: ProtocolPayload = decode(&init.payload).unwrap();
    let i: Init = reply.decode_data(STREAM_CREATE).unwrap();
    assert_eq!(i.stream_name, "departed-client");
    let stream_worker = init.return_route;

    // A waiting pull on the empty stream: answered in 3 s ...
    let pull = PullWaitRequest {
        request_id: Uint(1),
        index: Uint(0),
        limit: Uint(10),
        wait_ms: Uint(3000),
    };
    send(
        &mut conn,
        stream_worker,
        ProtocolPayload::new(STREAM_PULL_WAIT, &pull).unwrap(),
    )
    .await;
    // ... but the client leaves at once.
    conn.shutdown().await.unwrap();
    drop(conn);
    let left = Instant::now();

    let listener = listen_where_the_client_was(client_addr).await;
    let watch = WATCH.saturating_sub(left.elapsed());
    match tokio::time::timeout(watch, listener.accept()).await {
        Err(_) => {} // nobody came: right
        Ok(Err(e)) => panic!("accept on {client_addr} failed: {e}"),
        Ok(Ok((mut dialed, from))) => {
            // Say what the hub wanted to hand over.
            let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_SIZE);
            let what =
                tokio::time::timeout(Duration::from_secs(1), receive(&mut dialed, &mut decoder))
                    .await
                    .map(|m| format!("{:?} -> {:?}", m.return_route, m.onward_route))
                    .unwrap_or_else(|_| "nothing within 1 s".into());
            panic!(
                "{:?} after the client left, the hub ({from}) connected to its old \
                 address {client_addr} and sent: {what}",
                left.elapsed()
            );
        }
    }
}

//! Issue 13: nothing a send accepted is lost in silence. Each failing
//! input of the issue, with the outcome it must have.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::{Echoer, TestNode};
use ockam_core::{
    async_trait, route, Address, ErrorKind, Result, Route, Routed, Worker, MAX_ROUTE_LEN, TCP,
};
use ockam_node::{start_node, Context};
use ockam_transport_tcp::TcpTransport;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counts the messages it gets.
struct Counter(Arc<AtomicUsize>);

#[async_trait]
impl Worker for Counter {
    type Message = u32;
    type Context = Context;

    async fn handle_message(&mut self, _ctx: &mut Context, _msg: Routed<u32>) -> Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A node on its own thread that listens and counts what reaches "counter".
fn counting_node() -> (String, Arc<AtomicUsize>, std::sync::mpsc::Sender<()>) {
    let count = Arc::new(AtomicUsize::new(0));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let c = count.clone();
    std::thread::spawn(move || {
        let (ctx, mut executor) = start_node();
        executor
            .execute(async move {
                let tcp = TcpTransport::create(&ctx).await?;
                ctx.start_worker("counter", Counter(c)).await?;
                addr_tx.send(tcp.listen("127.0.0.1:0").await?).unwrap();
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                ctx.stop().await
            })
            .unwrap();
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    (addr.to_string(), count, stop_tx)
}

fn wait_for(count: &AtomicUsize, n: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    while count.load(Ordering::SeqCst) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    count.load(Ordering::SeqCst)
}

/// A port where nothing listens.
fn dead_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Input 1: stop right after sending, before a connection exists.
#[test]
fn messages_sent_right_before_stop_go_out_over_a_connection_made_on_demand() {
    for run in 0..5 {
        let (peer, count, _stop) = counting_node();
        let (ctx, mut executor) = start_node();
        let p = peer.clone();
        executor
            .execute(async move {
                let _tcp = TcpTransport::create(&ctx).await?;
                for i in 0..100u32 {
                    ctx.send(route![(TCP, p.as_str()), "counter"], i).await?;
                }
                ctx.stop().await
            })
            .unwrap();
        assert_eq!(
            wait_for(&count, 100, Duration::from_secs(10)),
            100,
            "run {run}: the peer got only some of the 100 messages"
        );
    }
}

/// The same from inside a worker that sends while the node is stopping
/// (it needs a new connection, i.e. a new worker, during the drain).
#[test]
fn a_worker_draining_at_stop_can_open_a_connection() {
    struct LateSender(String);

    #[async_trait]
    impl Worker for LateSender {
        type Message = u32;
        type Context = Context;

        async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<u32>) -> Result<()> {
            ctx.send(route![(TCP, self.0.as_str()), "counter"], msg.take())
                .await
        }
    }

    let (peer, count, _stop) = counting_node();
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            ctx.start_worker("late", LateSender(peer)).await?;
            for i in 0..50u32 {
                ctx.send("late", i).await?;
            }
            ctx.stop().await
        })
        .unwrap();
    assert_eq!(wait_for(&count, 50, Duration::from_secs(10)), 50);
}

/// Input 2: the first send to a port where nothing listens fails with the
/// connect error, at once; so do sends made while that attempt runs.
#[test]
fn the_first_send_to_an_unreachable_peer_fails_with_the_connect_error() {
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let dead = dead_port();
            let started = Instant::now();
            let e = ctx
                .send(route![(TCP, dead.as_str()), "x"], 1u32)
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
            assert!(e.to_string().contains(&dead), "{e}");
            assert!(started.elapsed() < Duration::from_secs(5));

            // Many senders at once to another dead port: every one fails.
            let dead = dead_port();
            let mut tasks = Vec::new();
            for i in 0..20u32 {
                let c = ctx.new_context(Address::random_local()).await?;
                let d = dead.clone();
                tasks.push(tokio::spawn(async move {
                    c.send(route![(TCP, d.as_str()), "x"], i).await
                }));
            }
            for t in tasks {
                let e = t.await.unwrap().unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
            }
            ctx.stop().await
        })
        .unwrap();
}

/// Input 3: a message the peer would refuse is refused to its sender; the
/// connection and the messages behind it carry on.
#[test]
fn a_message_over_the_limits_is_the_senders_error_not_the_connections() {
    let server = TestNode::start();
    let peer = server.addr.to_string();
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let tcp = TcpTransport::create(&ctx).await?;
            tcp.connect(&peer).await?;
            let hop = Address::new(TCP, &peer);
            // 302 addresses: the TCP hop and 301 on the other side.
            let mut long = Route::create((0..301).map(|i| format!("h{i}")));
            long.modify().prepend(hop.clone());
            let e = ctx.send(long, "x".to_string()).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
            assert!(e.to_string().contains("longer than 256"), "{e}");
            // A context at an address no peer would accept cannot exist.
            let e = ctx.new_context("").await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
            // The connection is intact: 20 echoes come back.
            for i in 0..20 {
                ctx.send(route![hop.clone(), "echoer"], format!("e{i}"))
                    .await?;
            }
            for i in 0..20 {
                assert_eq!(ctx.receive::<String>().await?.take(), format!("e{i}"));
            }
            ctx.stop().await
        })
        .unwrap();
}

/// A return route that reaches the limit on the way: that message is
/// dropped (with a log line) where the hop cannot add itself; the
/// connection carries on.
#[test]
fn a_return_route_that_fills_up_on_the_way_drops_that_message_only() {
    let server = TestNode::start();
    let peer = server.addr.to_string();
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let tcp = TcpTransport::create(&ctx).await?;
            tcp.connect(&peer).await?;
            let hop = Address::new(TCP, &peer);
            // A local hop that makes the return route as long as allowed.
            struct Filler;
            #[async_trait]
            impl Worker for Filler {
                type Message = ockam_core::Any;
                type Context = Context;
                async fn handle_message(
                    &mut self,
                    ctx: &mut Context,
                    msg: Routed<ockam_core::Any>,
                ) -> Result<()> {
                    let mut local = msg.into_local_message();
                    let t = local.transport_mut();
                    t.onward_route.step()?;
                    while t.return_route.len() < MAX_ROUTE_LEN {
                        t.return_route.modify().prepend("filler");
                    }
                    ctx.forward(local).await
                }
            }
            ctx.start_worker("filler", Filler).await?;
            ctx.send(route!["filler", hop.clone(), "echoer"], "lost".to_string())
                .await?;
            ctx.send(route![hop.clone(), "echoer"], "kept".to_string())
                .await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "kept");
            ctx.stop().await
        })
        .unwrap();
}

/// Input 4: a peer that connected to us and left is not dialed back.
#[test]
fn a_peer_that_connected_and_left_is_not_dialed_back() {
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let tcp = TcpTransport::create(&ctx).await?;
            ctx.start_worker("echoer", Echoer).await?;
            let addr = tcp.listen("127.0.0.1:0").await?;
            // A client from a port we know; it sends one echo and leaves.
            let client = tokio::net::TcpSocket::new_v4()?;
            client.set_reuseaddr(true)?;
            client.bind("127.0.0.1:0".parse().unwrap())?;
            let local = client.local_addr()?;
            let mut s = client.connect(addr).await?;
            let peer = local.to_string();
            let t0 = Instant::now();
            while tcp.connection_worker(&peer).is_none() {
                assert!(t0.elapsed() < Duration::from_secs(10));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // It leaves; wait until the node saw it go.
            tokio::io::AsyncWriteExt::shutdown(&mut s).await?;
            drop(s);
            let t0 = Instant::now();
            while tcp.connection_worker(&peer).is_some() {
                assert!(t0.elapsed() < Duration::from_secs(10));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Something listens there now: it must not be dialed.
            let l = tokio::net::TcpSocket::new_v4()?;
            l.set_reuseaddr(true)?;
            l.bind(local)?;
            let listener = l.listen(16)?;
            let e = ctx
                .send(route![(TCP, peer.as_str()), "echoer"], "late".to_string())
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
            let accepted =
                tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
            assert!(accepted.is_err(), "the node dialed a departed client");
            // An explicit connect is the application's choice: it dials.
            tcp.connect(&peer).await?;
            let _conn = listener.accept().await?;
            ctx.stop().await
        })
        .unwrap();
}

/// Concurrent `connect` calls to one peer share one connection.
#[test]
fn concurrent_connects_share_one_connection() {
    let server = TestNode::start();
    let peer = server.addr.to_string();
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let tcp = Arc::new(TcpTransport::create(&ctx).await?);
            let mut tasks = Vec::new();
            for _ in 0..20 {
                let (tcp, peer) = (tcp.clone(), peer.clone());
                tasks.push(tokio::spawn(async move { tcp.connect(peer).await }));
            }
            for t in tasks {
                t.await.unwrap()?;
            }
            assert_eq!(tcp.connection_count(), 1);
            let workers = ctx.list_addresses().len();
            // Sends made concurrently with a connection opened on demand
            // share it as well.
            let other = TestNode::start();
            let mut tasks = Vec::new();
            for i in 0..20u32 {
                let c = ctx.new_context(Address::random_local()).await?;
                let p = other.addr.to_string();
                tasks.push(tokio::spawn(async move {
                    c.send(route![(TCP, p.as_str()), "echoer"], format!("{i}"))
                        .await
                }));
            }
            for t in tasks {
                t.await.unwrap()?;
            }
            assert_eq!(tcp.connection_count(), 2);
            // One new connection: a worker and its reader's context.
            assert_eq!(ctx.list_addresses().len(), workers + 2);
            ctx.stop().await
        })
        .unwrap();
}

/// Replies sent while the node stops still reach a peer that connected to
/// it: the connection drains after the workers that use it.
#[test]
fn replies_made_while_the_node_stops_reach_the_client() {
    struct SlowEcho;

    #[async_trait]
    impl Worker for SlowEcho {
        type Message = String;
        type Context = Context;

        async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
            tokio::time::sleep(Duration::from_millis(20)).await;
            ctx.send(msg.return_route(), msg.body()).await
        }
    }

    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (ctx, mut executor) = start_node();
        executor
            .execute(async move {
                let tcp = TcpTransport::create(&ctx).await?;
                ctx.start_worker("echoer", SlowEcho).await?;
                addr_tx.send(tcp.listen("127.0.0.1:0").await?).unwrap();
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                ctx.stop().await
            })
            .unwrap();
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    for i in 0..20 {
        std::io::Write::write_all(&mut s, &common::echo_request(&format!("r{i}"))).unwrap();
    }
    // The echoer has most of them still queued when the node stops.
    std::thread::sleep(Duration::from_millis(100));
    stop_tx.send(()).unwrap();
    let replies = common::read_frames(&mut s, 20).expect("all 20 replies");
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(
            <String as ockam_core::Message>::decode(&r.payload).unwrap(),
            format!("r{i}")
        );
    }
    server.join().unwrap();
}

/// A handler passing messages on to two peers whose connections are being
/// opened: the sender learns of the one that fails, whichever it is.
#[test]
fn messages_passed_on_to_two_new_connections_report_either_failure() {
    let server = TestNode::start();
    let live = server.addr.to_string();
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let dead = dead_port();
            let back = route![ctx.address()];
            let msg = |peer: &str| {
                ockam_core::LocalMessage::new(ockam_core::TransportMessage::v1(
                    route![(TCP, peer), "echoer"],
                    back.clone(),
                    <String as ockam_core::Message>::encode(&"x".to_string()).unwrap(),
                ))
            };
            let mut on = ctx.onward();
            on.forward(msg(&live))?;
            on.forward(msg(&dead))?;
            let e = ctx.settle(on).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
            assert!(e.to_string().contains(&dead), "{e}");
            ctx.stop().await
        })
        .unwrap();
}

/// A peer whose connect hangs: nothing answers its SYNs (a listener whose
/// accept queue is full and who never accepts).
fn hanging_peer() -> (std::net::TcpListener, Vec<std::net::TcpStream>, String) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    // Fill the accept queue: once full, the kernel drops new SYNs.
    let mut held = Vec::new();
    for _ in 0..1024 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => held.push(s),
            Err(_) => return (l, held, addr.to_string()),
        }
    }
    panic!("the accept queue of {addr} never filled");
}

/// A TCP reader that passes a message on to a connection being opened
/// does not wait for it: the messages behind it on the same connection
/// go on at once, and the loss, when the connection fails, is logged.
#[test]
fn a_reader_is_not_held_up_by_a_connection_its_message_opens() {
    let (_listener, _held, hanging) = hanging_peer();
    let relay_node = TestNode::start_with(
        ockam_transport_tcp::TcpOptions {
            connect_for_remote_senders: true,
            connect_timeout: Duration::from_secs(5),
            ..ockam_transport_tcp::TcpOptions::default()
        },
        vec![],
    );
    let relay = relay_node.addr.to_string();
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let tcp = TcpTransport::create(&ctx).await?;
            tcp.connect(&relay).await?;
            let hop = Address::new(TCP, &relay);
            ctx.send(
                route![hop.clone(), (TCP, hanging.as_str()), "x"],
                "held".to_string(),
            )
            .await?;
            let started = Instant::now();
            ctx.send(route![hop.clone(), "echoer"], "behind".to_string())
                .await?;
            let reply = ctx
                .receive_duration::<String>(Duration::from_secs(10))
                .await?;
            assert_eq!(reply.take(), "behind");
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "the echo behind it took {:?}",
                started.elapsed()
            );
            ctx.stop().await
        })
        .unwrap();
}

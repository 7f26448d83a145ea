//! Routes across several nodes over TCP, connections made on demand, and
//! what senders see when a peer cannot be reached.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::TestNode;
use ockam_core::{route, ErrorKind, Route, TCP};
use ockam_node::start_node;
use ockam_transport_tcp::{TcpOptions, TcpTransport};
use std::time::{Duration, Instant};

#[test]
fn a_message_crosses_two_tcp_hops_and_the_reply_comes_back() {
    let c = TestNode::start();
    let b = TestNode::start_with(TcpOptions::default(), vec![c.addr.to_string()]);
    let (b_addr, c_addr) = (b.addr.to_string(), c.addr.to_string());
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            // A is not connected to B yet: the first send connects on demand.
            let onward: Route = route![(TCP, b_addr.as_str()), (TCP, c_addr.as_str()), "echoer"];
            for i in 0..10 {
                ctx.send(onward.clone(), format!("hello {i}")).await?;
                let reply = ctx.receive::<String>().await?;
                assert_eq!(reply.as_body(), &format!("hello {i}"));
                assert_eq!(reply.return_route(), onward);
            }
            ctx.stop().await
        })
        .unwrap();
}

#[test]
fn remote_senders_cannot_make_a_node_connect_anywhere_unless_allowed() {
    let c = TestNode::start();
    let closed = TestNode::start();
    let open = TestNode::start_with(
        TcpOptions {
            connect_for_remote_senders: true,
            ..TcpOptions::default()
        },
        vec![],
    );
    let (closed_addr, open_addr, c_addr) = (
        closed.addr.to_string(),
        open.addr.to_string(),
        c.addr.to_string(),
    );
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let via_closed = route![
                (TCP, closed_addr.as_str()),
                (TCP, c_addr.as_str()),
                "echoer"
            ];
            ctx.send(via_closed, "refused".to_string()).await?;
            let err = ctx
                .receive_duration::<String>(Duration::from_secs(2))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Timeout);

            let via_open = route![(TCP, open_addr.as_str()), (TCP, c_addr.as_str()), "echoer"];
            ctx.send(via_open, "allowed".to_string()).await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "allowed");
            ctx.stop().await
        })
        .unwrap();
}

#[test]
fn unreachable_peers_give_errors_and_bad_addresses_are_refused() {
    // A port nothing listens on: bind one, note it, close it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead = dead.to_string();
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let tcp = TcpTransport::create(&ctx).await?;
            let err = tcp.connect(&dead).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
            for bad in ["nonsense", "host:", ":80", "h:99999"] {
                let err = tcp.connect(bad).await.unwrap_err();
                assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}: {err}");
            }
            // Sends fail at once, the first included (issue 13): it waits
            // for the connection attempt and gets its error.
            for _ in 0..3 {
                let e = ctx
                    .send(route![(TCP, dead.as_str()), "x"], 1u8)
                    .await
                    .unwrap_err();
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                assert!(e.to_string().contains(&dead), "{e}");
            }
            assert!(tcp.connection_worker(&dead).is_none());
            ctx.stop().await
        })
        .unwrap();
}

/// A transport whose frames are at most 1 KiB.
async fn small_frames(ctx: &ockam_node::Context) -> ockam_core::Result<TcpTransport> {
    TcpTransport::create_with_options(
        ctx,
        TcpOptions {
            max_frame_size: 1024,
            ..TcpOptions::default()
        },
    )
    .await
}

#[test]
fn messages_larger_than_the_frame_limit_are_refused_not_fatal() {
    let server = TestNode::start();
    let peer = server.addr.to_string();
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let tcp = small_frames(&ctx).await?;
            tcp.connect(&peer).await?;
            let err = ctx
                .send(route![(TCP, peer.as_str()), "echoer"], "x".repeat(4096))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
            ctx.send(route![(TCP, peer.as_str()), "echoer"], "small".to_string())
                .await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "small");
            ctx.stop().await
        })
        .unwrap();
}

/// A message whose encoding grows by a byte every time it is written.
struct Growing(std::sync::atomic::AtomicUsize);

impl serde::Serialize for Growing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        s.serialize_str(&"g".repeat(n))
    }
}

impl<'de> serde::Deserialize<'de> for Growing {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <String as serde::Deserialize>::deserialize(d).map(|s| Growing(s.len().into()))
    }
}

#[test]
fn a_message_that_encodes_differently_each_time_is_an_error_not_a_broken_stream() {
    let server = TestNode::start();
    let peer = server.addr.to_string();
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let tcp = TcpTransport::create(&ctx).await?;
            tcp.connect(&peer).await?;
            // Written straight into the connection's buffer: measured at
            // 100 bytes, then written as 101.
            let err = ctx
                .send(route![(TCP, peer.as_str()), "echoer"], Growing(100.into()))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Encoding, "{err}");
            // Nothing of it went out: the next message arrives intact.
            ctx.send(route![(TCP, peer.as_str()), "echoer"], "after".to_string())
                .await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "after");
            ctx.stop().await
        })
        .unwrap();
}

#[test]
fn messages_passed_on_in_parts_arrive_whole_over_tcp() {
    let server = TestNode::start();
    let peer = server.addr.to_string();
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let tcp = small_frames(&ctx).await?;
            let onward: Route = route![(TCP, peer.as_str()), "echoer"];
            let back: Route = route![ctx.address()];
            async fn send(
                ctx: &ockam_node::Context,
                onward: &Route,
                back: &Route,
                text: &str,
            ) -> ockam_core::Result<()> {
                let bytes = ockam_core::Message::encode(&text.to_string())?;
                let (a, b) = bytes.split_at(bytes.len() / 2);
                let mut on = ctx.onward();
                let r = on.forward_parts(onward, back, a, b.to_vec());
                ctx.settle(on).await?;
                r
            }
            // No connection yet: taken the way of a built message, which
            // connects on demand.
            send(&ctx, &onward, &back, "first").await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "first");
            // Connected now: straight into the connection's outbox.
            tcp.connect(&peer).await?;
            send(&ctx, &onward, &back, "second").await?;
            let reply = ctx.receive::<String>().await?;
            assert_eq!(reply.return_route(), onward);
            assert_eq!(reply.take(), "second");
            // Too large for a frame: an error for the sender, nothing sent.
            let err = send(&ctx, &onward, &back, &"x".repeat(4096))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
            send(&ctx, &onward, &back, "third").await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "third");
            ctx.stop().await
        })
        .unwrap();
}

#[test]
fn messages_in_parts_and_built_ones_keep_their_order_to_a_new_peer() {
    const N: usize = 1000;
    let server = TestNode::start();
    let peer = server.addr.to_string();
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let onward: Route = route![(TCP, peer.as_str()), "echoer"];
            let back: Route = route![ctx.address()];
            // The first ones go through the on-demand router while it
            // connects; later ones straight to the connection.
            for i in 0..N {
                let text = format!("m{i}");
                if i % 2 == 0 {
                    ctx.send(onward.clone(), text).await?;
                } else {
                    let bytes = ockam_core::Message::encode(&text)?;
                    let mut on = ctx.onward();
                    let r = on.forward_parts(&onward, &back, &bytes[..1], bytes[1..].to_vec());
                    ctx.settle(on).await?;
                    r?;
                }
            }
            for i in 0..N {
                assert_eq!(ctx.receive::<String>().await?.take(), format!("m{i}"));
            }
            ctx.stop().await
        })
        .unwrap();
}

#[test]
fn many_small_messages_over_tcp_arrive_complete_and_in_order() {
    use ockam_core::{async_trait, Result, Routed, Worker};
    use ockam_node::Context;

    const N: u64 = 200_000;

    struct Checker {
        next: u64,
    }

    #[async_trait]
    impl Worker for Checker {
        type Message = u64;
        type Context = Context;
        async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<u64>) -> Result<()> {
            assert_eq!(*msg, self.next);
            self.next += 1;
            if self.next == N {
                ctx.send(msg.return_route(), self.next).await?;
                // Its job is done: stop the server node.
                ctx.stop().await?;
            }
            Ok(())
        }
    }

    ockam_node::setup_tracing();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let (ctx, mut executor) = start_node();
        executor
            .execute(async move {
                let tcp = TcpTransport::create(&ctx).await?;
                ctx.start_worker("checker", Checker { next: 0 }).await?;
                addr_tx.send(tcp.listen("127.0.0.1:0").await?).unwrap();
                Ok(())
            })
            .unwrap();
    });
    let peer = addr_rx.recv().unwrap().to_string();
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            for n in 0..N {
                ctx.send(route![(TCP, peer.as_str()), "checker"], n).await?;
            }
            let done = ctx
                .receive_duration::<u64>(Duration::from_secs(120))
                .await?;
            assert_eq!(*done, N);
            ctx.stop().await
        })
        .unwrap();
    server.join().expect("the server node stopped cleanly");
}

/// A transport writing in batches of 64 KiB, so that its outbox refuses
/// messages (64 batches queued) at 4 MiB instead of 16 MiB.
async fn small_batches(ctx: &ockam_node::Context) -> ockam_core::Result<TcpTransport> {
    TcpTransport::create_with_options(
        ctx,
        TcpOptions {
            write_batch_bytes: 64 * 1024,
            ..TcpOptions::default()
        },
    )
    .await
}

/// A peer that accepts the connection and never reads: senders are slowed
/// down to nothing and then refused with an error, instead of the node
/// buffering without limit or a send hanging.
#[test]
fn a_peer_that_never_reads_slows_senders_then_refuses_them() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = listener.local_addr().unwrap().to_string();
    // Accept, hold the socket open, never read.
    let holder = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    let (ctx, mut executor) = start_node();
    let (sent, elapsed, err) = executor
        .execute(async move {
            let _tcp = small_batches(&ctx).await?;
            let payload = "x".repeat(512 * 1024);
            let start = Instant::now();
            let mut sent = 0u64;
            let err = loop {
                match ctx
                    .send(route![(TCP, peer.as_str()), "nobody"], payload.clone())
                    .await
                {
                    Ok(()) => sent += 1,
                    Err(e) => break e,
                }
                assert!(sent < 100_000, "never refused");
            };
            let elapsed = start.elapsed();
            ctx.stop().await?;
            Ok((sent, elapsed, err))
        })
        .unwrap();
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    // 64 batches of 64 KiB queued, plus what the sockets' buffers took.
    assert!(sent >= 8, "refused after only {sent} messages");
    // Once over the batch size, every send waited for the writer (which
    // could not write) before it returned.
    assert!(
        elapsed >= ockam_node::PRESSURE_WAIT * 32,
        "{sent} sends took only {elapsed:?}: senders were not slowed down"
    );
    drop(holder.join());
}

/// A peer that reads, but slower than the sender writes: the sender is
/// slowed down to its pace for as long as it takes, and every message
/// arrives (none is refused because the queue grew while the peer read).
#[test]
fn a_slow_reader_slows_senders_and_gets_every_message() {
    use std::io::Read;
    const N: usize = 60;
    const SIZE: usize = 256 * 1024;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = listener.local_addr().unwrap().to_string();
    // ~12 MB/s: 64 KiB every 5 ms.
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut decoder = ockam_transport_tcp::internal::FrameDecoder::new(1 << 24);
        let mut buf = vec![0u8; 64 * 1024];
        let mut frames = 0;
        while frames < N {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the sender closed after {frames} messages");
            decoder.extend(&buf[..n]);
            while let Some(f) = decoder.next_frame().unwrap() {
                assert!(f.len() > SIZE);
                frames += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        frames
    });
    let (ctx, mut executor) = start_node();
    let frames = executor
        .execute(async move {
            let tcp = small_batches(&ctx).await?;
            tcp.connect(&peer).await?;
            let payload = "x".repeat(SIZE);
            for _ in 0..N {
                ctx.send(route![(TCP, peer.as_str()), "sink"], payload.clone())
                    .await?;
            }
            let frames = tokio::task::spawn_blocking(move || reader.join().unwrap())
                .await
                .unwrap();
            ctx.stop().await?;
            Ok(frames)
        })
        .unwrap();
    assert_eq!(frames, N);
}

//! Issue 18, per-connection state released when its connection goes: an
//! established channel ends at both ends when its connection closes (the
//! hub kept the responders of departed clients for ever, and the client's
//! channel went on accepting sends no one could answer), an end that stops
//! tells the other (`PLAIN_CLOSE`), and a listener holds each peer to its
//! share of channels.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::ListenerNode;
use ockam_channel::{ListenerOptions, SecureChannel};
use ockam_core::{route, ErrorKind, Result, TCP};
use ockam_node::{start_node, Context};
use ockam_transport_tcp::TcpTransport;
use ockam_vault::Vault;
use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a channel end may take to notice what ended it: its check
/// runs every second.
const NOTICE: Duration = Duration::from_secs(5);

/// A TCP proxy whose connections the test can cut, as a network would:
/// both sides see the connection close, and nothing more is said.
struct CutProxy {
    addr: String,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl CutProxy {
    fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let conns = Arc::new(Mutex::new(Vec::new()));
        let kept = conns.clone();
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut all = kept.lock().unwrap();
                all.push(client.try_clone().unwrap());
                all.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.flush();
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        CutProxy { addr, conns }
    }

    /// Closes every connection through the proxy, both sides.
    fn cut(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Sends `text` through `channel` to the far end's echoer and waits for it.
async fn echo(ctx: &mut Context, channel: &SecureChannel, text: &str) -> Result<()> {
    ctx.send(route![channel.address(), "echoer"], text.to_string())
        .await?;
    let back = ctx.receive_timeout::<String>(5).await?;
    assert_eq!(back.body(), text);
    Ok(())
}

/// Waits up to [`NOTICE`] for `channel`'s worker to be gone from `ctx`'s node.
async fn wait_until_gone(ctx: &Context, channel: &SecureChannel) -> bool {
    let until = Instant::now() + NOTICE;
    while Instant::now() < until {
        if ctx.is_present(&channel.address()) == Some(false) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[test]
fn a_channel_whose_connection_closes_ends_at_both_ends_and_says_so() {
    let listener = ListenerNode::start(ListenerOptions::default());
    let before = listener.workers();
    let proxy = CutProxy::start(&listener.addr);
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let vault = Vault::create(&ctx)?;
            let to = route![(TCP, proxy.addr.as_str()), "listener"];
            let channel = SecureChannel::create(&ctx, to, &vault).await?;
            echo(&mut ctx, &channel, "hello").await?;
            let established = listener.addresses();
            println!("listener addresses while the channel is up: {established:?}");
            let established = established.len();
            assert!(established > before, "no responder on the listener");

            proxy.cut();
            assert!(
                wait_until_gone(&ctx, &channel).await,
                "the initiator's end outlived its connection by {NOTICE:?}"
            );
            let err = ctx
                .send(route![channel.address(), "echoer"], "lost?".to_string())
                .await
                .expect_err("a send through a channel that ended");
            println!("a send through the lost channel: {err}");
            assert!(matches!(
                err.kind(),
                ErrorKind::NotFound | ErrorKind::Unavailable
            ));

            let after = listener.wait_for_workers(before, NOTICE);
            assert_eq!(
                after,
                before,
                "the listener's responder outlived its connection ({established} addresses while \
                 the channel was up; now {:?})",
                listener.addresses()
            );
            ctx.stop().await
        })
        .unwrap();
}

#[test]
fn a_channel_closed_at_one_end_ends_at_the_other() {
    let listener = ListenerNode::start(ListenerOptions::default());
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let vault = Vault::create(&ctx)?;
            // The connection first, in plain text: it stays open, and
            // counts in the listener's addresses from now on.
            let echoer = route![(TCP, listener.addr.as_str()), "echoer"];
            ctx.send(echoer, "plain".to_string()).await?;
            ctx.receive_timeout::<String>(5).await?;
            let before = listener.workers();
            let to = route![(TCP, listener.addr.as_str()), "listener"];
            let channel = SecureChannel::create(&ctx, to, &vault).await?;
            echo(&mut ctx, &channel, "hello").await?;
            assert!(listener.workers() > before);

            // The connection stays open: only the initiator's word can end
            // the responder.
            ctx.stop_worker(channel.address()).await?;
            let after = listener.wait_for_workers(before, NOTICE);
            assert_eq!(after, before, "the responder outlived the initiator's end");
            ctx.stop().await
        })
        .unwrap();
}

#[test]
fn a_peer_past_its_share_of_channels_is_refused_and_others_are_served() {
    const CAP: usize = 3;
    let listener = ListenerNode::start(ListenerOptions {
        max_channels_per_peer: CAP,
        ..Default::default()
    });
    let addr = listener.addr.clone();
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let vault = Vault::create(&ctx)?;
            let to = route![(TCP, listener.addr.as_str()), "listener"];
            let mut channels = Vec::new();
            for _ in 0..CAP {
                channels.push(SecureChannel::create(&ctx, to.clone(), &vault).await?);
            }
            // `create` returns once it sent the last handshake message: a
            // round trip makes sure each responder has read it too.
            for channel in &channels {
                echo(&mut ctx, channel, "up").await?;
            }
            let at_cap = listener.workers();
            for _ in 0..20 {
                let err = SecureChannel::create(&ctx, to.clone(), &vault)
                    .await
                    .expect_err("a channel past the peer's share");
                assert_eq!(err.kind(), ErrorKind::Security);
                assert!(
                    err.message().contains("the most one peer may have"),
                    "{err}"
                );
            }
            println!(
                "listener addresses: {at_cap} at the cap, {} after 20 refusals",
                listener.workers()
            );
            assert_eq!(
                listener.workers(),
                at_cap,
                "refused handshakes left state behind"
            );
            for channel in &channels {
                echo(&mut ctx, channel, "still here").await?;
            }

            // Another peer (another connection) is served meanwhile.
            let other = std::thread::spawn(move || {
                let (mut ctx, mut executor) = start_node();
                executor
                    .execute(async move {
                        let _tcp = TcpTransport::create(&ctx).await?;
                        let vault = Vault::create(&ctx)?;
                        let to = route![(TCP, addr.as_str()), "listener"];
                        let channel = SecureChannel::create(&ctx, to, &vault).await?;
                        echo(&mut ctx, &channel, "another peer").await?;
                        ctx.stop().await
                    })
                    .unwrap();
            });
            other.join().unwrap();

            // A channel that ends gives its place back.
            ctx.stop_worker(channels.remove(0).address()).await?;
            let until = Instant::now() + NOTICE;
            let channel = loop {
                match SecureChannel::create(&ctx, to.clone(), &vault).await {
                    Ok(c) => break c,
                    Err(e) if Instant::now() < until => {
                        assert_eq!(e.kind(), ErrorKind::Security);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("the closed channel's place was not given back: {e}"),
                }
            };
            echo(&mut ctx, &channel, "a freed place").await?;
            ctx.stop().await
        })
        .unwrap();
}

//! Issue 14, failing inputs 1-3, with real processes: a hub process, the
//! `stream_receiver` example as the consuming application, and pushes made
//! with the stream protocol itself (so that the test knows each is stored).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::{free_address, push, HubProcess};
use ockam_core::{route, TCP};
use ockam_node::start_node;
use ockam_stream_client::protocol::Uint;
use ockam_stream_client::protocol::*;
use ockam_transport_tcp::TcpTransport;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One request to the index service; its answer, if any within 2 s.
fn index_request(hub: &str, req: IndexRequest) -> Option<ProtocolPayload> {
    let hub = hub.to_string();
    std::thread::spawn(move || {
        let (mut ctx, mut executor) = start_node();
        executor
            .execute(async move {
                let _tcp = TcpTransport::create(&ctx).await?;
                ctx.send(
                    route![(TCP, hub.as_str()), "stream_index"],
                    ProtocolPayload::new(STREAM_INDEX, &req)?,
                )
                .await?;
                let answer = ctx
                    .receive_duration::<ProtocolPayload>(Duration::from_secs(2))
                    .await
                    .ok()
                    .map(|m| m.take());
                ctx.stop().await?;
                Ok(answer)
            })
            .expect("index node")
    })
    .join()
    .unwrap()
}

/// The `stream_receiver` example (built beside this test by `cargo test`),
/// and its `GOT` lines.
struct Receiver {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Receiver {
    fn start(hub: &str, client: &str, stream: &str, take: Option<u64>) -> Receiver {
        let mut dir = std::env::current_exe().unwrap();
        dir.pop();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let bin = dir.join("examples").join("stream_receiver");
        assert!(
            bin.exists(),
            "{} missing: run through `cargo test`",
            bin.display()
        );
        let take = take.map_or("all".to_string(), |t| t.to_string());
        let mut child = Command::new(bin)
            .args([hub, client, stream, take.as_str()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(|l| l.ok()) {
                if let Some(m) = line.strip_prefix("GOT ") {
                    if tx.send(m.to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        Receiver { child, lines }
    }

    /// The next message it got, within `within`.
    fn next(&self, within: Duration) -> Option<String> {
        self.lines.recv_timeout(within).ok()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn texts(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn durable_hub(addr: &str, dir: &Path, extra: &[&str]) -> HubProcess {
    let mut args = vec!["--data-dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    HubProcess::start(addr, &args)
}

/// Input 1: the application took m0 and m1 (called `next()` twice) and
/// was killed; the same client id must get m1 or earlier again (m1 was
/// returned but never followed by another `next()`), never nothing.
#[test]
fn a_consumer_killed_after_two_next_calls_resumes_at_what_it_had_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let hub = free_address();
    let _hub = durable_hub(&hub, dir.path(), &[]);
    push(&hub, "stream", "S", &texts("m", 10));

    let mut first = Receiver::start(&hub, "C", "S", Some(2));
    assert_eq!(first.next(Duration::from_secs(30)).as_deref(), Some("m0"));
    assert_eq!(first.next(Duration::from_secs(30)).as_deref(), Some("m1"));
    std::thread::sleep(Duration::from_secs(2));
    first.kill9();

    let again = Receiver::start(&hub, "C", "S", None);
    let resumed = again
        .next(Duration::from_secs(30))
        .expect("the same client id gets the messages it had not taken");
    assert!(
        ["m0", "m1"].contains(&resumed.as_str()),
        "resumed at {resumed}: m1 was never taken (no next() after it)"
    );
    let mut last = resumed;
    while last != "m9" {
        last = again.next(Duration::from_secs(30)).expect("m2..m9 follow");
    }
}

/// Input 2a: an in-memory hub restarts empty under a running consumer;
/// what is pushed to it afterwards arrives whole (not only the messages
/// past the consumer's old position).
#[test]
fn a_hub_that_restarts_empty_does_not_make_the_consumer_skip() {
    let hub = free_address();
    let mut hub_process = HubProcess::start(&hub, &["--storage", "memory"]);
    push(&hub, "stream", "S", &texts("m", 5));
    let receiver = Receiver::start(&hub, "C", "S", None);
    for m in texts("m", 5) {
        assert_eq!(receiver.next(Duration::from_secs(30)), Some(m));
    }
    // Let the consumer save its position (at most every 100 ms).
    std::thread::sleep(Duration::from_millis(500));
    hub_process.kill9();
    let _hub_process = HubProcess::start(&hub, &["--storage", "memory"]);
    push(&hub, "stream", "S", &texts("n", 7));
    for n in texts("n", 7) {
        assert_eq!(
            receiver.next(Duration::from_secs(30)),
            Some(n.clone()),
            "every message of the new log, {n} included"
        );
    }
}

/// Input 2b: a save past the end of the stream is refused (and not kept),
/// so the client still gets what is pushed later.
#[test]
fn a_saved_index_past_the_end_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let hub = free_address();
    let _hub = durable_hub(&hub, dir.path(), &[]);
    push(&hub, "stream", "T", &texts("t", 3));
    let save = IndexRequest::Save {
        client_id: "X".into(),
        stream_name: "T".into(),
        index: Uint(100),
    };
    let refusal: StreamError = index_request(&hub, save)
        .expect("a refusal")
        .decode_data(STREAM_ERROR)
        .unwrap();
    assert!(refusal.is_past_end(), "{refusal:?}");
    let get = IndexRequest::Get {
        client_id: "X".into(),
        stream_name: "T".into(),
    };
    let index: Index = index_request(&hub, get)
        .expect("an answer")
        .decode_data(STREAM_INDEX)
        .unwrap();
    assert_eq!(index.index, None, "nothing saved");
    push(&hub, "stream", "T", &texts("u", 2));
    let receiver = Receiver::start(&hub, "X", "T", None);
    for m in ["t0", "t1", "t2", "u0", "u1"] {
        assert_eq!(receiver.next(Duration::from_secs(30)).as_deref(), Some(m));
    }
}

/// Input 3: with an idle timeout shorter than a waiting pull, messages
/// pushed now and then arrive at once, not after the consumer noticed
/// that its stream worker was stopped under its waiting pull.
#[test]
fn the_idle_reaper_leaves_a_waiting_pull_alone() {
    let hub = free_address();
    let _hub = HubProcess::start(&hub, &["--storage", "memory", "--idle-timeout-s", "2"]);
    let receiver = Receiver::start(&hub, "C", "S", None);
    std::thread::sleep(Duration::from_secs(1));
    for (round, pause) in [(0, 0u64), (1, 8), (2, 8)] {
        std::thread::sleep(Duration::from_secs(pause));
        let pushed = Instant::now();
        push(&hub, "stream", "S", &[format!("r{round}")]);
        assert_eq!(
            receiver.next(Duration::from_secs(30)).as_deref(),
            Some(format!("r{round}").as_str())
        );
        // The bug made this about 4 s: a lost waiting pull and a reopen.
        let late = pushed.elapsed();
        assert!(
            late < Duration::from_secs(3),
            "round {round}: {late:?} late"
        );
    }
}

/// A stream worker takes pushes only over the route that opened it: after
/// a connection broke, a push over the new one could otherwise land before
/// the pushes lost with the old one (and confirm them for the producer).
#[test]
fn a_push_over_another_route_than_the_opening_one_is_refused() {
    let hub = free_address();
    let _hub = HubProcess::start(&hub, &["--storage", "memory"]);
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let worker =
                common::open_stream(&mut ctx, route![(TCP, hub.as_str()), "stream"], "bound")
                    .await?;
            let mut other = ctx.new_context(ockam_core::Address::random_local()).await?;
            let push = PushRequest {
                request_id: Uint(1),
                data: common::stored("x"),
            };
            other
                .send(worker.clone(), ProtocolPayload::new(STREAM_PUSH, &push)?)
                .await?;
            let refusal: StreamError = other
                .receive_timeout::<ProtocolPayload>(10)
                .await?
                .decode_data(STREAM_ERROR)?;
            assert_eq!(refusal.protocol, STREAM_PUSH);
            // Nothing is stored through that worker any more, whoever asks.
            ctx.send(worker, ProtocolPayload::new(STREAM_PUSH, &push)?)
                .await?;
            assert!(ctx
                .receive_duration::<ProtocolPayload>(Duration::from_millis(500))
                .await
                .is_err());
            ctx.stop().await
        })
        .unwrap();
}

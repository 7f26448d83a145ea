//! Reliability with real processes: the hub is killed with SIGKILL while a
//! producer pushes 10,000 numbered messages, and restarted on the same data
//! directory; every message arrives, in order (a redelivered tail is
//! allowed, a gap or reorder is not). A consumer that stops and comes back
//! resumes from its saved index.

use ockam_core::{async_trait, route, Result, Routed, Worker, TCP};
use ockam_node::{start_node, Context};
use ockam_stream_client::Stream;
use ockam_transport_tcp::TcpTransport;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const COUNT: u64 = 10_000;

struct HubProcess(Child);

impl HubProcess {
    fn start(addr: &str, dir: &Path) -> HubProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_ockam_hub"))
            .args(["--listen", addr, "--data-dir", dir.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn hub");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "hub did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        HubProcess(child)
    }

    fn kill9(&mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A loopback address that was free a moment ago.
fn free_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// A node in a thread that sends the numbers 0..COUNT to "checker" through
/// the "numbers" stream, pausing `pause` every `every` messages (and
/// reporting its progress there, if asked). It stops when the returned
/// sender is dropped.
fn spawn_producer(
    hub: String,
    client_id: &'static str,
    every: u64,
    pause: Duration,
    progress: Option<mpsc::Sender<u64>>,
) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (stop, stop_rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let (ctx, mut executor) = start_node();
        executor
            .execute(async move {
                let _tcp = TcpTransport::create(&ctx).await?;
                let (sender, _receiver) = Stream::new(&ctx)?
                    .client_id(client_id)
                    .connect(route![(TCP, hub.as_str())], "numbers", "numbers-back")
                    .await?;
                for n in 0..COUNT {
                    ctx.send(route![sender.clone(), "checker"], n).await?;
                    if n % every == 0 {
                        if let Some(p) = &progress {
                            let _ = p.send(n);
                        }
                        tokio::time::sleep(pause).await;
                    }
                }
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                ctx.stop().await
            })
            .expect("producer node");
    });
    (stop, t)
}

/// Accepts numbers in order; repeats of already-seen numbers are fine
/// (at-least-once), a jump ahead is a lost message.
struct Checker {
    next: u64,
    stop_at: u64,
    report: mpsc::Sender<u64>,
    repeats: mpsc::Sender<u64>,
}

#[async_trait]
impl Worker for Checker {
    type Message = u64;
    type Context = Context;
    async fn handle_message(&mut self, _ctx: &mut Context, msg: Routed<u64>) -> Result<()> {
        let n = *msg;
        assert!(
            n <= self.next,
            "gap or reorder: got {n}, expected {}",
            self.next
        );
        if n < self.next {
            let _ = self.repeats.send(n);
        }
        if n == self.next {
            self.next += 1;
            if self.next % 1000 == 0 || self.next == self.stop_at {
                let _ = self.report.send(self.next);
            }
        }
        Ok(())
    }
}

/// A node in a thread: stream client with `client_id`, a checker at
/// "checker" that reports progress. Stops when `stop` is dropped.
type Consumer = (
    mpsc::Receiver<u64>,
    mpsc::Receiver<u64>,
    mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
);

fn consumer(hub: String, client_id: &'static str, first: u64, stop_at: u64) -> Consumer {
    let (report, progress) = mpsc::channel();
    let (repeats, repeated) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let (ctx, mut executor) = start_node();
        executor
            .execute(async move {
                let _tcp = TcpTransport::create(&ctx).await?;
                ctx.start_worker(
                    "checker",
                    Checker {
                        next: first,
                        stop_at,
                        report,
                        repeats,
                    },
                )
                .await?;
                let _conn = Stream::new(&ctx)?
                    .client_id(client_id)
                    .connect(route![(TCP, hub.as_str())], "numbers-back", "numbers")
                    .await?;
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                ctx.stop().await
            })
            .expect("consumer node");
    });
    (progress, repeated, stop_tx, t)
}

fn wait_for(progress: &mpsc::Receiver<u64>, target: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    let mut seen = 0;
    while seen < target {
        let left = deadline.saturating_duration_since(Instant::now());
        match progress.recv_timeout(left) {
            Ok(n) => seen = seen.max(n),
            Err(_) => panic!("only {seen} of {target} messages arrived in time"),
        }
    }
    seen
}

#[test]
fn kill_9_of_the_hub_loses_nothing_and_the_consumer_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let hub = free_address();
    let mut hub_process = HubProcess::start(&hub, dir.path());

    let (progress, _repeated, stop_consumer, consumer_thread) =
        consumer(hub.clone(), "checker-1", 0, COUNT);

    // The producer: 10,000 numbers into the stream, with a short pause
    // every 500 (where it also reports its progress).
    let (sent_tx, sent_rx) = mpsc::channel::<u64>();
    let (stop_producer, producer) = spawn_producer(
        hub.clone(),
        "producer-1",
        500,
        Duration::from_millis(5),
        Some(sent_tx),
    );

    // Mid-stream: kill -9 the hub, then bring it back on the same data.
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("producer progress")
        < 3000
    {
        assert!(Instant::now() < deadline);
    }
    hub_process.kill9();
    std::thread::sleep(Duration::from_millis(500));
    hub_process = HubProcess::start(&hub, dir.path());

    let got = wait_for(&progress, COUNT, Duration::from_secs(180));
    assert_eq!(got, COUNT);

    // The consumer goes away and comes back with the same client id: it
    // resumes at its saved index (everything before was delivered once).
    drop(stop_consumer);
    consumer_thread.join().unwrap();
    let (progress, repeated, stop_consumer, consumer_thread) =
        consumer(hub.clone(), "checker-1", COUNT, COUNT);
    // Nothing new was pushed, so nothing new arrives; at most the last
    // pulled batch comes again (saved after delivery), not the stream.
    assert!(progress.recv_timeout(Duration::from_secs(2)).is_err());
    let repeats = repeated.try_iter().count() as u64;
    assert!(
        repeats <= ockam_stream_client::PULL_LIMIT,
        "the consumer started over instead of resuming: {repeats} repeats"
    );
    drop(stop_consumer);
    consumer_thread.join().unwrap();

    drop(stop_producer);
    producer.join().unwrap();
    drop(hub_process);
}

/// The `numbers_consumer` example, which `cargo test` builds beside this test.
fn numbers_consumer(hub: &str, client_id: &str) -> (Child, mpsc::Receiver<String>) {
    let mut dir = std::env::current_exe().unwrap();
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("examples").join("numbers_consumer");
    assert!(
        bin.exists(),
        "{} missing: run through `cargo test`",
        bin.display()
    );
    let mut child = Command::new(bin)
        .args([hub, client_id])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Reads `NEXT n` lines until `n >= until`; panics on a gap. Returns the
/// last `n` and the `FIRST` value, if seen.
fn follow(lines: &mpsc::Receiver<String>, until: u64) -> (u64, Option<u64>) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut last, mut first) = (0, None);
    while last < until {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("consumer stalled at {last}"));
        assert!(!line.starts_with("GAP"), "{line}");
        if let Some(n) = line.strip_prefix("FIRST ") {
            first = Some(n.parse().unwrap());
        }
        if let Some(n) = line.strip_prefix("NEXT ") {
            last = n.parse().unwrap();
        }
    }
    (last, first)
}

#[test]
fn kill_9_of_the_consumer_process_resumes_from_its_saved_index() {
    let dir = tempfile::tempdir().unwrap();
    let hub = free_address();
    let _hub_process = HubProcess::start(&hub, dir.path());

    let (stop_producer, producer) = spawn_producer(
        hub.clone(),
        "producer-2",
        200,
        Duration::from_millis(20),
        None,
    );

    let (mut first, lines) = numbers_consumer(&hub, "crashy-consumer");
    let (before, start) = follow(&lines, 3000);
    assert_eq!(start, Some(0));
    let _ = first.kill(); // SIGKILL, mid-stream
    let _ = first.wait();

    let (mut second, lines) = numbers_consumer(&hub, "crashy-consumer");
    let (last, resumed_at) = follow(&lines, COUNT - 1);
    let resumed_at = resumed_at.expect("a first message after the restart");
    assert!(
        resumed_at <= before + 1,
        "gap across the restart: {before} then {resumed_at}"
    );
    assert!(
        resumed_at > 0,
        "the consumer started over instead of resuming at its saved index"
    );
    assert_eq!(last, COUNT - 1);
    let _ = second.kill();
    let _ = second.wait();
    drop(stop_producer);
    producer.join().unwrap();
}

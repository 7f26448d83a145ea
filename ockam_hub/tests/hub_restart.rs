//! Reliability with real processes: the hub is killed with SIGKILL while a
//! producer pushes 10,000 numbered messages, and restarted on the same data
//! directory; every message arrives, in order (a redelivered tail is
//! allowed, a gap or reorder is not). A consumer that stops and comes back
//! resumes from its saved index.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::{consumer, free_address, spawn_producer, wait_for, HubProcess, Pace, EMBEDDED};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const COUNT: u64 = 10_000;

fn durable_hub(addr: &str, dir: &Path) -> HubProcess {
    durable_hub_with(addr, dir, "always")
}

fn durable_hub_with(addr: &str, dir: &Path, fsync: &str) -> HubProcess {
    HubProcess::start(
        addr,
        &["--data-dir", dir.to_str().unwrap(), "--fsync", fsync],
    )
}

#[test]
fn kill_9_of_the_hub_loses_nothing_and_the_consumer_resumes() {
    kill_9_mid_stream("always");
}

/// The same with `--fsync interval` (issue 17): pushes are confirmed from
/// the write-ahead log before they are fsynced; the restart replays it.
#[test]
fn kill_9_of_a_hub_that_fsyncs_every_interval_loses_nothing_either() {
    kill_9_mid_stream("interval=1000");
}

fn kill_9_mid_stream(fsync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let hub = free_address();
    let mut hub_process = durable_hub_with(&hub, dir.path(), fsync);

    let (progress, _repeated, stop_consumer, consumer_thread) =
        consumer(hub.clone(), EMBEDDED, "checker-1", 0);

    // The producer: 10,000 numbers into the stream, with a short pause
    // every 500 (where it also reports its progress).
    let (sent_tx, sent_rx) = mpsc::channel::<u64>();
    let pace = Pace {
        count: COUNT,
        every: 500,
        pause: Duration::from_millis(5),
    };
    let (stop_producer, producer) =
        spawn_producer(hub.clone(), EMBEDDED, "producer-1", pace, Some(sent_tx));

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
    hub_process = durable_hub_with(&hub, dir.path(), fsync);

    let got = wait_for(&progress, COUNT, Duration::from_secs(180));
    assert_eq!(got, COUNT);

    // The consumer goes away and comes back with the same client id: it
    // resumes at its saved index (everything before was delivered once).
    drop(stop_consumer);
    consumer_thread.join().unwrap();
    let (progress, repeated, stop_consumer, consumer_thread) =
        consumer(hub.clone(), EMBEDDED, "checker-1", COUNT);
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
    let _hub_process = durable_hub(&hub, dir.path());

    let pace = Pace {
        count: COUNT,
        every: 200,
        pause: Duration::from_millis(20),
    };
    let (stop_producer, producer) = spawn_producer(hub.clone(), EMBEDDED, "producer-2", pace, None);

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

//! Issue 17, the hub as operators run it, with real hub processes: its
//! Prometheus metrics, scraped over HTTP by a real client (Python's
//! urllib), move with what the hub does; `ockam_hub streams` reads a data
//! directory while the hub runs on it.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::{free_address, open_stream, request, HubProcess};
use ockam_core::{route, TCP};
use ockam_node::start_node;
use ockam_stream_client::protocol::Uint;
use ockam_stream_client::protocol::{
    IndexRequest, ProtocolPayload, PushRequest, STREAM_INDEX, STREAM_PUSH,
};
use ockam_transport_tcp::TcpTransport;
use std::time::{Duration, Instant};

/// The metrics page at `addr`, fetched with Python's HTTP client.
fn scrape(addr: &str) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())",
            &format!("http://{addr}/metrics"),
        ])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "scraping {addr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The value of the sample of `name` whose labels include every one of
/// `labels` (`key="value"`), in Prometheus text format.
fn sample(page: &str, name: &str, labels: &[&str]) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .find(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name && labels.iter().all(|want| rest.contains(want))
        })
        .and_then(|(_, v)| v.parse().ok())
}

/// A hub on a new data directory, serving metrics, with `args` besides;
/// up. Its directory, address, metrics address and process.
fn hub_with_metrics(args: &[&str]) -> (tempfile::TempDir, String, String, HubProcess) {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_address();
    let metrics = free_address();
    let mut all = vec![
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--metrics-listen",
        &metrics,
    ];
    all.extend_from_slice(args);
    let hub = HubProcess::start(&addr, &all);
    hub.wait_for_log("serving Prometheus metrics", Duration::from_secs(10));
    hub.wait_for_log("hub up", Duration::from_secs(10));
    (dir, addr, metrics, hub)
}

#[test]
fn the_metrics_page_counts_what_the_hub_does() {
    let (_dir, addr, metrics, hub) = hub_with_metrics(&[]);
    let before = scrape(&metrics);
    assert_eq!(
        sample(
            &before,
            "ockam_hub_pushed_messages_total",
            &[r#"service="stream""#]
        ),
        Some(0.0),
        "{before}"
    );

    let (mut ctx, mut executor) = start_node();
    let (a, m) = (addr.clone(), metrics.clone());
    executor
        .execute(async move {
            let (addr, metrics) = (a, m);
            let _tcp = TcpTransport::create(&ctx).await?;
            let worker =
                open_stream(&mut ctx, route![(TCP, addr.as_str()), "stream"], "m-1").await?;
            for i in 0..10u64 {
                let req = PushRequest {
                    request_id: Uint(i),
                    data: vec![7; 100],
                };
                request(&mut ctx, worker.clone(), STREAM_PUSH, &req).await?;
            }
            let save = IndexRequest::Save {
                client_id: "c".into(),
                stream_name: "m-1".into(),
                index: Uint(4),
            };
            let index = route![(TCP, addr.as_str()), "stream_index"];
            ctx.send(index.clone(), ProtocolPayload::new(STREAM_INDEX, &save)?)
                .await?;
            // A request the hub refuses: a name it does not take.
            let bad = IndexRequest::Get {
                client_id: "no spaces".into(),
                stream_name: "m-1".into(),
            };
            request(&mut ctx, index, STREAM_INDEX, &bad).await?;
            // While this node's connection is open, the hub counts it.
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let m = metrics.clone();
                let page = tokio::task::spawn_blocking(move || scrape(&m))
                    .await
                    .unwrap();
                if sample(&page, "ockam_hub_connections", &[]) == Some(1.0) {
                    break;
                }
                assert!(Instant::now() < deadline, "connections after 15 s:\n{page}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            ctx.stop().await
        })
        .unwrap();

    // Gauges are sampled every second.
    let page = scrape_until(&metrics, "a lag of 6", |page| {
        let lag = &[r#"client="c""#, r#"stream="m-1""#];
        sample(page, "ockam_hub_consumer_lag_messages", lag) == Some(6.0)
    });
    let s = |name: &str, labels: &[&str]| {
        sample(&page, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{page}"))
    };
    let stream = r#"service="stream""#;
    assert_eq!(s("ockam_hub_pushed_messages_total", &[stream]), 10.0);
    assert_eq!(
        s(
            "ockam_hub_requests_total",
            &[stream, r#"protocol="stream_push""#]
        ),
        10.0
    );
    assert_eq!(
        s(
            "ockam_hub_requests_total",
            &[stream, r#"protocol="stream_create""#]
        ),
        1.0
    );
    assert_eq!(
        s(
            "ockam_hub_requests_total",
            &[stream, r#"protocol="stream_index""#]
        ),
        2.0
    );
    assert_eq!(
        s("ockam_hub_refusals_total", &[r#"protocol="stream_index""#]),
        1.0
    );
    assert!(
        s("ockam_hub_store_commit_seconds_count", &[]) >= 2.0,
        "a commit for the pushes and one for the index"
    );
    // `--fsync always` (the default) has no flushes, and nothing failed.
    assert_eq!(
        sample(&page, "ockam_hub_store_flush_seconds_count", &[]).unwrap_or(0.0),
        0.0
    );
    assert_eq!(s("ockam_hub_store_errors_total", &[r#"op="commit""#]), 0.0);
    assert_eq!(s("ockam_hub_store_errors_total", &[r#"op="flush""#]), 0.0);
    assert_eq!(s("ockam_hub_streams", &[stream]), 1.0);
    assert_eq!(s("ockam_hub_stored_messages", &[stream]), 10.0);
    assert!(s("ockam_hub_stored_bytes", &[]) > 0.0);
    assert!(s("ockam_hub_workers", &[]) >= 4.0, "services at least");
    drop(hub);
}

#[test]
fn with_fsync_interval_the_metrics_page_times_commits_and_flushes_apart() {
    let (_dir, addr, metrics, hub) = hub_with_metrics(&["--fsync", "interval=20"]);
    push_from_new_node(&addr, "f-1", 10);
    // The commit thread moves the pushes into the data file within about
    // 10 ms, and a flush follows within the interval.
    let page = scrape_until(&metrics, "a commit and a flush", |page| {
        let count = |name: &str| sample(page, name, &[]).unwrap_or(0.0);
        count("ockam_hub_store_commit_seconds_count") >= 1.0
            && count("ockam_hub_store_flush_seconds_count") >= 1.0
    });
    assert_eq!(
        sample(&page, "ockam_hub_store_errors_total", &[r#"op="flush""#]),
        Some(0.0),
        "{page}"
    );
    drop(hub);
}

/// Scrapes the metrics page at `metrics` until `done` holds of it (15 s
/// at most, then fails saying it waited for `what`); the page.
fn scrape_until(metrics: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = scrape(metrics);
        if done(&page) {
            return page;
        }
        assert!(Instant::now() < deadline, "no {what} after 15 s:\n{page}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// [`push_n`] from a node of its own, stopped after.
fn push_from_new_node(addr: &str, stream: &str, n: u64) {
    let (mut ctx, mut executor) = start_node();
    let (addr, stream) = (addr.to_string(), stream.to_string());
    executor
        .execute(async move {
            push_n(&mut ctx, &addr, &stream, n).await?;
            ctx.stop().await
        })
        .unwrap();
}

/// Pushes `n` messages of 100 bytes to `stream` at the hub at `addr`.
async fn push_n(
    ctx: &mut ockam_node::Context,
    addr: &str,
    stream: &str,
    n: u64,
) -> ockam_core::Result<()> {
    let _tcp = TcpTransport::create(ctx).await?;
    let worker = open_stream(ctx, route![(TCP, addr), "stream"], stream).await?;
    for i in 0..n {
        let req = PushRequest {
            request_id: Uint(i),
            data: vec![7; 100],
        };
        request(ctx, worker.clone(), STREAM_PUSH, &req).await?;
    }
    Ok(())
}

/// Saves client `c`'s read position in `stream` at the hub at `addr`, and
/// returns once it is saved (the hub answers the next request on the
/// index service after it).
async fn save_index(
    ctx: &mut ockam_node::Context,
    addr: &str,
    stream: &str,
    at: u64,
) -> ockam_core::Result<()> {
    let save = IndexRequest::Save {
        client_id: "c".into(),
        stream_name: stream.into(),
        index: Uint(at),
    };
    let index = route![(TCP, addr), "stream_index"];
    ctx.send(index.clone(), ProtocolPayload::new(STREAM_INDEX, &save)?)
        .await?;
    let get = IndexRequest::Get {
        client_id: "c".into(),
        stream_name: stream.into(),
    };
    request(ctx, index, STREAM_INDEX, &get).await?;
    Ok(())
}

/// `ockam_hub streams ...` on `dir`: exit code and standard output.
fn streams(dir: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ockam_hub"))
        .arg("streams")
        .args(args)
        .args(["--data-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn streams_list_and_show_read_a_data_directory_while_the_hub_runs() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_address();
    let hub = HubProcess::start(&addr, &["--data-dir", dir.path().to_str().unwrap()]);
    hub.wait_for_log("hub up", Duration::from_secs(10));
    let (mut ctx, mut executor) = start_node();
    let a = addr.clone();
    executor
        .execute(async move {
            push_n(&mut ctx, &a, "i-1", 5).await?;
            push_n(&mut ctx, &a, "i-2", 3).await?;
            save_index(&mut ctx, &a, "i-1", 2).await?;
            ctx.stop().await
        })
        .unwrap();

    // While the hub runs.
    let (code, json) = streams(dir.path(), &["list", "--json"]);
    assert_eq!(code, 0, "{json}");
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["i-1", "i-2"]);
    let one = &list[0];
    assert_eq!(one["messages"], 5);
    assert_eq!(one["bytes"], 500);
    assert_eq!(one["oldest"], 0);
    assert_eq!(one["newest"], 4);
    assert_eq!(one["readers"][0]["client"], "c");
    assert_eq!(one["readers"][0]["index"], 2);
    assert_eq!(one["readers"][0]["lag"], 3);
    assert_eq!(list[1]["messages"], 3);
    assert_eq!(list[1]["readers"].as_array().unwrap().len(), 0);

    let (code, table) = streams(dir.path(), &["list"]);
    assert_eq!(code, 0);
    let row = table.lines().find(|l| l.starts_with("i-1")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells, ["i-1", "5", "500", "0", "4", "1", "3"], "{table}");
    let (code, text) = streams(dir.path(), &["show", "i-1"]);
    assert_eq!(code, 0);
    assert!(
        text.contains("5 messages, 500 bytes, oldest 0, newest 4, next 5"),
        "{text}"
    );
    let reader = text.lines().find(|l| l.starts_with("c ")).unwrap();
    assert_eq!(
        reader.split_whitespace().collect::<Vec<_>>(),
        ["c", "2", "3"]
    );
    assert_eq!(streams(dir.path(), &["show", "nope"]).0, 1);
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(streams(empty.path(), &["list"]).0, 1, "no data file");

    // The hub still serves (the reader took nothing from it), and after it
    // stops the directory reads the same.
    push_from_new_node(&addr, "i-2", 1);
    // Killed: the file needs the repair a hub makes, which a reader
    // cannot; it says so. A hub started and stopped again repairs it.
    drop(hub);
    let (code, text) = streams(dir.path(), &["list"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("not closed cleanly"), "{text}");
    let mut hub = HubProcess::start(&addr, &["--data-dir", dir.path().to_str().unwrap()]);
    hub.wait_for_log("hub up", Duration::from_secs(10));
    hub.terminate();
    let (code, json) = streams(dir.path(), &["show", "i-2", "--json"]);
    assert_eq!(code, 0, "{json}");
    let two: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(two["messages"], 4);
}

/// Pushes `n` messages of `size` bytes to the stream worker at `worker`,
/// many in flight at once, and waits for every confirmation.
async fn push_many(
    ctx: &mut ockam_node::Context,
    worker: &ockam_core::Route,
    first_id: u64,
    n: u64,
    size: usize,
) -> ockam_core::Result<()> {
    for i in 0..n {
        let req = PushRequest {
            request_id: Uint(first_id + i),
            data: vec![(i % 251) as u8; size],
        };
        ctx.send(worker.clone(), ProtocolPayload::new(STREAM_PUSH, &req)?)
            .await?;
    }
    for _ in 0..n {
        ctx.receive_timeout::<ProtocolPayload>(60).await?;
    }
    Ok(())
}

/// What `ockam_hub streams show NAME --json` says of `stream`.
fn shown(dir: &std::path::Path, stream: &str) -> serde_json::Value {
    let (code, json) = streams(dir, &["show", stream, "--json"]);
    assert_eq!(code, 0, "{json}");
    serde_json::from_str(&json).unwrap()
}

/// Waits (up to 20 s) until `ok` holds of what the hub shows of `stream`.
fn wait_shown(
    dir: &std::path::Path,
    stream: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = shown(dir, stream);
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{stream} after 20 s: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn retention_keeps_streams_within_their_limits_and_tells_trimmed_readers() {
    use ockam_stream_client::protocol::{PullRequest, StreamError, STREAM_ERROR, STREAM_PULL};
    use ockam_stream_client::StreamEvent;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rules = dir.path().join("retention.toml");
    std::fs::write(
        &rules,
        "[[streams]]\nnames = \"big-*\"\nmax_bytes = 200000\nmax_messages = 1000000\n\n\
         [[streams]]\nnames = \"old-*\"\nmax_age = \"2s\"\n",
    )
    .unwrap();
    let addr = free_address();
    let hub = HubProcess::start(
        &addr,
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--retention-max-messages",
            "100",
            "--retention-file",
            rules.to_str().unwrap(),
            "--max-message-size",
            "2000",
        ],
    );
    hub.wait_for_log("hub up", Duration::from_secs(10));
    let (mut ctx, mut executor) = start_node();
    let (a, d) = (addr.clone(), data.clone());
    executor
        .execute(async move {
            let (addr, data) = (a, d);
            let _tcp = TcpTransport::create(&ctx).await?;
            let service = route![(TCP, addr.as_str()), "stream"];

            // The hub's default: 100 messages.
            let r1 = open_stream(&mut ctx, service.clone(), "r-1").await?;
            push_many(&mut ctx, &r1, 0, 300, 100).await?;
            let d = data.clone();
            let s = tokio::task::spawn_blocking(move || {
                wait_shown(&d, "r-1", |s| s["messages"] == 100)
            })
            .await
            .unwrap();
            assert_eq!(
                (s["oldest"].clone(), s["newest"].clone()),
                (200.into(), 299.into())
            );
            assert_eq!(s["bytes"], 10_000);

            // A reader at 0 is told where the stream now starts.
            let pull = PullRequest {
                request_id: Uint(1),
                index: Uint(0),
                limit: Uint(10),
            };
            let p = request(&mut ctx, r1.clone(), STREAM_PULL, &pull).await?;
            assert_eq!(p.protocol, STREAM_ERROR);
            let refusal: StreamError = p.decode_data(STREAM_ERROR)?;
            assert_eq!(refusal.trimmed_to(), Some(200), "{refusal:?}");

            // A stream client is told, as an event, what it missed; and,
            // when the hub refuses a message it sent until the producer
            // gives it up (larger than --max-message-size), that too.
            let (events, mut seen) = tokio::sync::mpsc::unbounded_channel();
            let (sender, _receiver) = ockam_stream_client::Stream::new(&ctx)?
                .client_id("late")
                .with_events(events)
                .connect(route![(TCP, addr.as_str())], "r-out", "r-1")
                .await?;
            let in_time = Duration::from_secs(60);
            let missed = tokio::time::timeout(in_time, seen.recv())
                .await
                .ok()
                .flatten();
            assert_eq!(
                missed,
                Some(StreamEvent::Missed {
                    stream: "r-1".into(),
                    from: 0,
                    to: 200
                })
            );
            ctx.send(route![sender.clone(), "anywhere"], "x".repeat(3000))
                .await?;
            let gave_up = tokio::time::timeout(in_time, seen.recv())
                .await
                .ok()
                .flatten();
            assert_eq!(
                gave_up,
                Some(StreamEvent::GaveUp {
                    stream: "r-out".into(),
                    request_id: 1
                })
            );

            // A file rule by bytes, on a steady load: the stream stays
            // within it and the data file stops growing.
            let big = open_stream(&mut ctx, service.clone(), "big-1").await?;
            let mut sizes = Vec::new();
            for round in 0..12u64 {
                push_many(&mut ctx, &big, round * 2000, 2000, 1024).await?;
                let d = data.clone();
                tokio::task::spawn_blocking(move || {
                    wait_shown(&d, "big-1", |s| {
                        s["bytes"].as_u64().is_some_and(|b| b <= 200_000)
                    })
                })
                .await
                .unwrap();
                sizes.push(std::fs::metadata(data.join("streams.redb"))?.len());
            }
            println!("data file after each round of 2,000 KiB: {sizes:?} bytes");
            // Kept growing, it would triple from the first third to the
            // last (8 MB to 24 MB). Reclaimed, it may still grow a step
            // when a trim lags a burst on a loaded machine (3.1 MB to
            // 4.4 MB once, in round 7 of 12), then stay there.
            let early = sizes[..4].iter().max().copied().unwrap_or(0);
            let late = sizes[8..].iter().max().copied().unwrap_or(0);
            assert!(
                late <= early * 2,
                "the data file kept growing under a byte limit: {sizes:?}"
            );
            let pushed = 12 * 2000 * 1024;
            assert!(
                late < pushed / 4,
                "a data file of {late} bytes for {pushed} bytes pushed, 200,000 kept"
            );

            // By age: 2 s.
            let old = open_stream(&mut ctx, service, "old-1").await?;
            push_many(&mut ctx, &old, 0, 10, 10).await?;
            let d = data.clone();
            let s = tokio::task::spawn_blocking(move || {
                wait_shown(&d, "old-1", |s| s["messages"] == 0)
            })
            .await
            .unwrap();
            assert_eq!(s["next"], 10);
            ctx.stop().await
        })
        .unwrap();
    let trimmed = hub.wait_for_log("retention: trimmed", Duration::from_secs(5));
    assert!(trimmed.contains("r-1") || trimmed.contains("big-1") || trimmed.contains("old-1"));
    hub.wait_for_log("a reader's position was trimmed", Duration::from_secs(5));
}

/// `--fsync interval`: a push is confirmed before it is fsynced, from the
/// write-ahead log; `kill -9` of the hub right after the confirmations
/// (long before the interval's fsync) loses none of them, nor a saved
/// read position: the restarted hub replays the log.
#[test]
fn fsync_interval_loses_nothing_confirmed_when_the_hub_is_killed() {
    use ockam_stream_client::protocol::{Index, PullRequest, PullResponse, STREAM_PULL};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let addr = free_address();
    let args = ["--data-dir", data.as_str(), "--fsync", "interval=60000"];
    let mut hub = HubProcess::start(&addr, &args);
    hub.wait_for_log("hub up", Duration::from_secs(10));
    const N: u64 = 3000;
    let (mut ctx, mut executor) = start_node();
    let a = addr.clone();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let worker = open_stream(&mut ctx, route![(TCP, a.as_str()), "stream"], "w-1").await?;
            for i in 0..N {
                let req = PushRequest {
                    request_id: Uint(i),
                    data: i.to_be_bytes().repeat(64),
                };
                ctx.send(worker.clone(), ProtocolPayload::new(STREAM_PUSH, &req)?)
                    .await?;
            }
            for _ in 0..N {
                let p = ctx.receive_timeout::<ProtocolPayload>(60).await?;
                let c: ockam_stream_client::protocol::PushConfirm = p.decode_data(STREAM_PUSH)?;
                assert_eq!(c.status, ockam_stream_client::protocol::PushStatus::Ok);
            }
            save_index(&mut ctx, &a, "w-1", 1234).await?;
            ctx.stop().await
        })
        .unwrap();
    // Everything confirmed; nothing fsynced since the start.
    hub.kill9();
    let log = std::fs::metadata(dir.path().join("wal.log")).unwrap().len();
    assert!(log > N * 512, "the log holds the pushes: {log} bytes");

    let hub = HubProcess::start(&addr, &args);
    hub.wait_for_log("write-ahead log replayed", Duration::from_secs(30));
    hub.wait_for_log("hub up", Duration::from_secs(30));
    let (mut ctx, mut executor) = start_node();
    let a = addr.clone();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let worker = open_stream(&mut ctx, route![(TCP, a.as_str()), "stream"], "w-1").await?;
            let mut next = 0u64;
            while next < N {
                let pull = PullRequest {
                    request_id: Uint(next),
                    index: Uint(next),
                    limit: Uint(1000),
                };
                let p = request(&mut ctx, worker.clone(), STREAM_PULL, &pull).await?;
                let got: PullResponse = p.decode_data(STREAM_PULL)?;
                assert!(!got.messages.is_empty(), "message {next} lost");
                for m in got.messages {
                    assert_eq!(m.index.0, next);
                    assert_eq!(m.data, next.to_be_bytes().repeat(64), "message {next}");
                    next += 1;
                }
            }
            let get = IndexRequest::Get {
                client_id: "c".into(),
                stream_name: "w-1".into(),
            };
            let index = route![(TCP, a.as_str()), "stream_index"];
            let p = request(&mut ctx, index, STREAM_INDEX, &get).await?;
            assert_eq!(
                p.decode_data::<Index>(STREAM_INDEX)?.index.map(|u| u.0),
                Some(1234)
            );
            ctx.stop().await
        })
        .unwrap();
    drop(hub);
}

//! The hub beside NATS JetStream (issue 17), each as its own process over
//! loopback, 1 KiB messages, the same counts, in one run:
//! - publish: N messages split over 1 and 8 producers, 1,024 unconfirmed
//!   pushes in all (one connection), until every one is confirmed stored;
//! - consume: N messages from the start of the stream;
//! - latency: one message at a time, push to delivery to a reader waiting
//!   for it (our waiting pull; JetStream's pull consumer), p50 and p99.
//!
//! JetStream: Debian's `nats-server -js -sd DIR` (file storage; it
//! acknowledges a publish once written to its file, without fsync) driven
//! by `../shared/anchors/jetstream` (`scripts/build-anchors.sh jetstream`).
//! The hub: the `ockam_hub` binary, durable store, in each `--fsync` mode
//! (`always`: a push is confirmed once fsynced, group commit; `interval`:
//! once in the write-ahead log, fsynced every 100 ms), and `always` with
//! retention trimming the stream during the publish.
//!
//! Each system runs once a round, in turn (3 rounds, `BENCH_ROUNDS=n`;
//! one with `--quick`), and the figures are each one's medians: this
//! machine's speed drifts by a third within minutes, and a slow spell
//! then weighs on every system instead of one. Each round starts one
//! system later than the last, and before each system the page cache is
//! written back (`sync`), so that no system can be measured during the
//! previous one's writeback, and none always runs after the same one.
//!
//! `cargo bench -p ockam-rs-hub --bench vs_jetstream` (`-- --quick`: fewer
//! messages, one round). The same binary is our client: `publish PORT N SIZE
//! PRODUCERS`, `consume PORT N`, `latency PORT N SIZE`.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use ockam_core::{route, Result, Route, TCP};
use ockam_node::{start_node, Context};
use ockam_stream_client::protocol::Uint;
use ockam_stream_client::protocol::*;
use ockam_transport_tcp::TcpTransport;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../ockam_transport_tcp/benches/support/anchors.rs"]
mod anchors;
use anchors::*;

/// Opens `stream` at the hub; the route to its stream worker.
async fn open(ctx: &mut Context, hub: &str, stream: &str) -> Result<Route> {
    let req = CreateStreamRequest {
        stream_name: Some(stream.into()),
    };
    ctx.send(
        route![(TCP, hub), "stream"],
        ProtocolPayload::new(STREAM_CREATE, &req)?,
    )
    .await?;
    Ok(ctx
        .receive_timeout::<ProtocolPayload>(30)
        .await?
        .return_route())
}

fn publish(port: &str, n: u64, size: usize, producers: u64) {
    let (ctx, mut executor) = start_node();
    let hub = format!("127.0.0.1:{port}");
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let window = (1024 / producers).max(1);
            let mut tasks = Vec::new();
            let mut workers = Vec::new();
            for p in 0..producers {
                let mut c = ctx.new_context(ockam_core::Address::random_local()).await?;
                let worker = open(&mut c, &hub, "bench_publish").await?;
                workers.push((c, worker, n / producers + u64::from(p < n % producers)));
            }
            let t = Instant::now();
            for (mut c, worker, count) in workers {
                tasks.push(tokio::spawn(async move {
                    let data = vec![b'x'; size];
                    let (mut sent, mut confirmed) = (0u64, 0u64);
                    while confirmed < count {
                        while sent < count && sent - confirmed < window {
                            // Borrowed, as the JetStream anchor publishes a
                            // shared `Bytes`: no copy of the message per push
                            // before its encoding.
                            let req = PushRequestRef {
                                request_id: Uint(sent),
                                data: &data,
                            };
                            c.send(worker.clone(), ProtocolPayload::new(STREAM_PUSH, &req)?)
                                .await?;
                            sent += 1;
                        }
                        let p = c.receive_timeout::<ProtocolPayload>(60).await?;
                        let confirm: PushConfirm = p.decode_data(STREAM_PUSH)?;
                        assert_eq!(confirm.status, PushStatus::Ok);
                        confirmed += 1;
                    }
                    Ok::<_, ockam_core::Error>(())
                }));
            }
            for task in tasks {
                task.await.expect("producer")?;
            }
            let s = t.elapsed().as_secs_f64();
            println!("RESULT msgs={n} secs={s:.3} msg_per_s={:.0}", n as f64 / s);
            ctx.stop().await
        })
        .unwrap();
}

fn consume(port: &str, n: u64) {
    let (mut ctx, mut executor) = start_node();
    let hub = format!("127.0.0.1:{port}");
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let worker = open(&mut ctx, &hub, "bench_publish").await?;
            let t = Instant::now();
            // With retention on, what was trimmed is skipped (the hub says
            // where the stream starts now): up to `n` of what is kept.
            let (mut got, mut at, mut id) = (0u64, 0u64, 0u64);
            while got < n {
                id += 1;
                let req = PullRequest {
                    request_id: Uint(id),
                    index: Uint(at),
                    limit: Uint(1000),
                };
                ctx.send(worker.clone(), ProtocolPayload::new(STREAM_PULL, &req)?)
                    .await?;
                let p = ctx.receive_timeout::<ProtocolPayload>(60).await?;
                if p.protocol == STREAM_ERROR {
                    let refusal: StreamError = p.decode_data(STREAM_ERROR)?;
                    at = refusal
                        .trimmed_to()
                        .expect("only a trimmed start is refused");
                    continue;
                }
                let resp: PullResponse = p.decode_data(STREAM_PULL)?;
                if resp.messages.is_empty() {
                    break; // the end of what is kept
                }
                got += resp.messages.len() as u64;
                at += resp.messages.len() as u64;
            }
            let s = t.elapsed().as_secs_f64();
            println!(
                "RESULT msgs={got} secs={s:.3} msg_per_s={:.0}",
                got as f64 / s
            );
            ctx.stop().await
        })
        .unwrap();
}

fn latency(port: &str, n: u64, size: usize) {
    let (mut ctx, mut executor) = start_node();
    let hub = format!("127.0.0.1:{port}");
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let worker = open(&mut ctx, &hub, "bench_latency").await?;
            let mut reader = ctx.new_context(ockam_core::Address::random_local()).await?;
            let reader_worker = open(&mut reader, &hub, "bench_latency").await?;
            let data = vec![b'x'; size];
            let mut samples = Vec::with_capacity(n as usize);
            for i in 0..n {
                // The reader waits for message i before it is pushed.
                let wait = PullWaitRequest {
                    request_id: Uint(i),
                    index: Uint(i),
                    limit: Uint(1),
                    wait_ms: Uint(30_000),
                };
                reader
                    .send(
                        reader_worker.clone(),
                        ProtocolPayload::new(STREAM_PULL_WAIT, &wait)?,
                    )
                    .await?;
                // (Sent before the clock starts; it reaches the hub first.)
                tokio::time::sleep(Duration::from_micros(200)).await;
                let t = Instant::now();
                let push = PushRequest {
                    request_id: Uint(i),
                    data: data.clone(),
                };
                ctx.send(worker.clone(), ProtocolPayload::new(STREAM_PUSH, &push)?)
                    .await?;
                ctx.receive_timeout::<ProtocolPayload>(30).await?;
                let p = reader.receive_timeout::<ProtocolPayload>(30).await?;
                let resp: PullResponse = p.decode_data(STREAM_PULL)?;
                assert_eq!(resp.messages.len(), 1);
                samples.push(t.elapsed());
            }
            print_latency(&mut samples);
            ctx.stop().await
        })
        .unwrap();
}

/// A server process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `nats-server -js` on a free port with a new storage directory.
fn nats() -> Option<(Server, String, tempfile::TempDir)> {
    let dir = tempfile::tempdir().ok()?;
    let port = free_port();
    let child = Command::new("nats-server")
        .args(["-js", "-sd", dir.path().to_str()?, "-p", &port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_listening(&port);
    Some((Server(child), port, dir))
}

/// Before each system: writes back what is dirty in the page cache
/// (`sync`) and lets the machine settle, so that no system can be measured
/// during the previous one's writeback (the same for JetStream and ours).
fn settle() {
    let _ = Command::new("sync").status();
    std::thread::sleep(Duration::from_millis(500));
}

/// A hub process with a new data directory and `args`.
fn hub(args: &[&str]) -> (Server, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_ockam_hub"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(&port);
    (Server(child), port, dir)
}

/// Runs `bin args` (PORT replaced by `port`) and reads its RESULT or
/// LATENCY line: msg/s, or (p50, p99) in µs.
fn run(
    bin: &std::path::Path,
    args: &[&str],
    port: &str,
) -> std::result::Result<(f64, f64), String> {
    let out = Command::new(bin)
        .args(subst(args, port))
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RESULT") || l.starts_with("LATENCY"))
        .ok_or_else(|| format!("no result: {}", String::from_utf8_lossy(&out.stderr)))?;
    if line.starts_with("RESULT") {
        Ok((field(line, "msg_per_s").ok_or("unreadable")?, 0.0))
    } else {
        Ok((
            field(line, "p50_us").ok_or("unreadable")?,
            field(line, "p99_us").ok_or("unreadable")?,
        ))
    }
}

/// The figures of one system: publish with 1 and 8 producers, consume,
/// latency (p50, p99).
type Figures = [std::result::Result<(f64, f64), String>; 4];

fn figures(bin: &std::path::Path, port: &str, n: &str, rounds: &str) -> Figures {
    [
        run(bin, &["publish", "PORT", n, "1024", "1"], port),
        run(bin, &["publish", "PORT", n, "1024", "8"], port),
        run(bin, &["consume", "PORT", n], port),
        run(bin, &["latency", "PORT", rounds, "1024"], port),
    ]
}

/// The median of the successful values of `runs` (`a`, or `b` of each
/// pair), or the first error when none succeeded.
fn median(
    runs: &[&std::result::Result<(f64, f64), String>],
    second: bool,
) -> std::result::Result<f64, String> {
    let mut ok: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|&(a, b)| if second { b } else { a }))
        .collect();
    if ok.is_empty() {
        return Err(runs
            .iter()
            .find_map(|r| r.as_ref().err().cloned())
            .unwrap_or_default());
    }
    ok.sort_by(f64::total_cmp);
    Ok(ok[ok.len() / 2])
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args[i].parse::<u64>().unwrap();
    match args.first().map(String::as_str) {
        Some("publish") => return publish(&args[1], arg(2), arg(3) as usize, arg(4)),
        Some("consume") => return consume(&args[1], arg(2)),
        Some("latency") => return latency(&args[1], arg(2), arg(3) as usize),
        _ => {}
    }
    let quick = args.iter().any(|a| a == "--quick") || std::env::var_os("CI").is_some();
    let (n, rounds) = if quick {
        ("20000", "200")
    } else {
        ("200000", "2000")
    };
    // Every system runs once a round, in turn, so that a slow spell of the
    // machine weighs on all of them; the figures are the medians.
    let repeats: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 });
    let me = std::env::current_exe().expect("own path");
    println!("hub vs NATS JetStream, separate processes over loopback, 1 KiB messages, {n} messages, {rounds} round trips; {repeats} rounds, each system in turn, medians (BENCH_ROUNDS=n)");
    let js_bin = anchor("jetstream");
    if js_bin.is_none() {
        println!("(JetStream anchor not built: scripts/build-anchors.sh jetstream)");
    }
    // The last: retention on (the stream over its limit from a quarter of
    // the publish on, so trimming runs during it), beside `always` off.
    let modes: &[(&str, &[&str])] = &[
        ("hub --fsync interval=100", &["--fsync", "interval=100"]),
        ("hub --fsync always", &["--fsync", "always"]),
        (
            "always, retention on",
            &["--fsync", "always", "--retention-max-messages", "50000"],
        ),
    ];
    let mut js_runs: Vec<Figures> = Vec::new();
    let mut our_runs: Vec<Vec<Figures>> = vec![Vec::new(); modes.len()];
    // System 0 is JetStream, system m + 1 our mode m. Each round starts
    // one system later than the last, so that no system always runs right
    // after the same one.
    let systems = modes.len() + 1;
    for round in 0..repeats {
        eprintln!("round {} of {repeats}", round + 1);
        for k in 0..systems {
            let system = (round + k) % systems;
            settle();
            if system == 0 {
                if let Some(bin) = &js_bin {
                    match nats() {
                        Some((server, port, _dir)) => {
                            js_runs.push(figures(bin, &port, n, rounds));
                            drop(server);
                        }
                        None if round == 0 => {
                            println!("(no nats-server: apt-get install nats-server)")
                        }
                        None => {}
                    }
                }
            } else {
                let (server, port, _dir) = hub(modes[system - 1].1);
                our_runs[system - 1].push(figures(&me, &port, n, rounds));
                drop(server);
            }
        }
    }
    let labels = [
        "publish, 1 producer (msg/s)",
        "publish, 8 producers (msg/s)",
        "consume from the start (msg/s)",
        "latency p50 / p99 (µs)",
    ];
    for ((name, _), ours) in modes.iter().zip(&our_runs) {
        println!();
        println!(
            "{:<32} | {:>16} | {:>16} | ours / JetStream",
            "", name, "JetStream"
        );
        for (i, label) in labels.iter().enumerate() {
            let mine: Vec<_> = ours.iter().map(|f| &f[i]).collect();
            let theirs: Vec<_> = js_runs.iter().map(|f| &f[i]).collect();
            let show = |runs: &[&std::result::Result<(f64, f64), String>]| {
                if runs.is_empty() {
                    return "-".to_string();
                }
                match (median(runs, false), median(runs, true)) {
                    (Ok(a), Ok(b)) if i == 3 => format!("{a:.0} / {b:.0}"),
                    (Ok(a), _) => format!("{a:.0}"),
                    (Err(e), _) => format!("({e})"),
                }
            };
            let ratio = match (median(&mine, false), median(&theirs, false)) {
                (Ok(a), Ok(b)) if !theirs.is_empty() => format!("{:.2}", a / b),
                _ => "-".into(),
            };
            println!(
                "{label:<32} | {:>16} | {:>16} | {ratio}",
                show(&mine),
                show(&theirs)
            );
        }
    }
}

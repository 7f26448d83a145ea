//! One-way throughput of a typed stream over TCP between two processes,
//! beside seed 004's tonic bidirectional stream (the `tonic` anchor, built
//! by `scripts/build-anchors.sh tonic`), 64 B and 4 KiB messages, and 1 KiB
//! over a secure channel beside tonic over TLS; prints the ratio ours /
//! tonic.
//!
//! Then round trips, one message at a time, beside tonic's `echo` mode
//! (p50 and p99), and the resident memory of a receiving process whose
//! consumer is stalled while its producer tries to send 1 GiB.
//!
//! `cargo bench -p ockam-rs-rpc --bench typed_stream` (`-- --quick`: fewer
//! messages; `BENCH_ROUNDS=n`: medians of n alternating runs of each, 9 by
//! default). The same binary is the two processes: `sink PORT N` (also the
//! echo and stalled servers) and `source PORT N SIZE`, `echo PORT N SIZE`,
//! `flood PORT BYTES SIZE`.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use ockam_channel::SecureChannel;
use ockam_core::{route, TCP};
use ockam_node::start_node;
use ockam_rpc::{call, make_sink, RpcServer, Sink, Source, Window};
use ockam_transport_tcp::TcpTransport;
use ockam_vault::Vault;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[path = "../tests/common/stall.rs"]
mod stall;

#[path = "../../ockam_transport_tcp/benches/support/anchors.rs"]
mod anchors;
use anchors::*;

#[derive(Serialize, Deserialize)]
struct Blob(#[serde(with = "serde_bytes")] Vec<u8>);

/// The receiving window the sink grants: large enough not to be the limit.
const WINDOW: Window = Window {
    messages: 65_536,
    bytes: 8 * 1024 * 1024,
};

fn sink(port: &str, n: u64, secure: bool) {
    let (ctx, mut executor) = start_node();
    let port = port.to_string();
    executor
        .execute(async move {
            let tcp = TcpTransport::create(&ctx).await?;
            if secure {
                let vault = Vault::create(&ctx)?;
                SecureChannel::create_listener(&ctx, "secure", &vault).await?;
            }
            tcp.listen(format!("127.0.0.1:{port}")).await?;
            RpcServer::new()
                .with_window(WINDOW)
                .handler("sink", move |_: u8, mut source: Source<Blob>| async move {
                    tokio::spawn(async move {
                        let mut got = 0u64;
                        let mut first = None;
                        while let Ok(Some(_)) = source.recv().await {
                            first.get_or_insert_with(Instant::now);
                            got += 1;
                            if got == n {
                                break;
                            }
                        }
                        let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
                        // Until the sender's close (dropping the source
                        // would cancel the stream under its `close`).
                        while let Ok(Some(_)) = source.recv().await {}
                        println!(
                            "RESULT msgs={got} secs={secs:.3} msg_per_s={:.0}",
                            got as f64 / secs.max(1e-9)
                        );
                    });
                    Ok(None::<Sink<u8>>)
                })
                .handler("echo", |_: u8, mut source: Source<Blob>| async move {
                    let sink: Sink<Blob> = source.make_sink().await?;
                    let mut out = sink.clone();
                    tokio::spawn(async move {
                        while let Ok(Some(m)) = source.recv().await {
                            if out.send(m).await.is_err() {
                                return;
                            }
                        }
                        let _ = out.close().await;
                    });
                    Ok(Some(sink))
                })
                .handler("stall", stall::stall::<Blob>)
                .start(&ctx, "rpc")
                .await?;
            std::future::pending::<()>().await;
            Ok(())
        })
        .unwrap();
}

fn source(port: &str, n: u64, size: usize, secure: bool) {
    let (ctx, mut executor) = start_node();
    let port = port.to_string();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let mut sink: Sink<Blob> = make_sink(&ctx).await?;
            let peer = format!("127.0.0.1:{port}");
            let route = if secure {
                let vault = Vault::create(&ctx)?;
                let channel =
                    SecureChannel::create(&ctx, route![(TCP, peer.as_str()), "secure"], &vault)
                        .await?;
                route![channel.address(), "rpc"]
            } else {
                route![(TCP, peer.as_str()), "rpc"]
            };
            let _none = call::<u8, Blob, u8>(&ctx, route, "sink", 0, &sink).await?;
            let body = vec![7u8; size];
            for _ in 0..n {
                sink.send(Blob(body.clone())).await?;
            }
            sink.close().await?;
            ctx.stop().await
        })
        .unwrap();
}

/// Runs `f` on a new node with TCP, given the route to the server's
/// "rpc" at `port`.
fn client<F, Fut>(port: &str, f: F)
where
    F: FnOnce(ockam_node::Context, ockam_core::Route) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ockam_core::Result<()>> + Send + 'static,
{
    let (ctx, mut executor) = start_node();
    let peer = format!("127.0.0.1:{port}");
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            f(ctx, route![(TCP, peer.as_str()), "rpc"]).await
        })
        .unwrap();
}

/// `n` round trips of `size` bytes, one at a time, through the server's
/// echo handler; prints `LATENCY …` (all of them, as tonic's echo does).
fn echo(port: &str, n: u64, size: usize) {
    client(port, move |ctx, rpc| async move {
        let mut sink: Sink<Blob> = make_sink(&ctx).await?;
        let mut back: Source<Blob> = call(&ctx, rpc, "echo", 0u8, &sink)
            .await?
            .expect("a reverse stream");
        let body = vec![7u8; size];
        let mut samples = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let t = Instant::now();
            sink.send(Blob(body.clone())).await?;
            back.recv().await?.expect("an echo");
            samples.push(t.elapsed());
        }
        print_latency(&mut samples);
        sink.close().await?;
        ctx.stop().await
    })
}

/// Tries to send `bytes` in messages of `size` to the server's stalled
/// handler; prints `SENT bytes=…` every second (it stops growing once the
/// window is used up).
fn flood(port: &str, bytes: u64, size: usize) {
    client(port, move |ctx, rpc| async move {
        use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
        let mut sink: Sink<Blob> = make_sink(&ctx).await?;
        call::<u8, Blob, u8>(&ctx, rpc, "stall", 0, &sink).await?;
        let sent = std::sync::Arc::new(AtomicU64::new(0));
        let seen = sent.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            println!("SENT bytes={}", seen.load(Relaxed));
        });
        let body = vec![7u8; size];
        while sent.load(Relaxed) < bytes {
            sink.send(Blob(body.clone())).await?;
            sent.fetch_add(size as u64, Relaxed);
        }
        sink.close().await?;
        ctx.stop().await
    })
}

/// The resident memory of process `pid`, in MiB (Linux).
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// A stalled consumer: the receiving process's resident memory after the
/// producer has tried to send 1 GiB for `secs` seconds.
fn stalled_memory(me: &std::path::PathBuf, secs: u64) -> Result<(f64, f64), String> {
    use std::process::Command;
    let port = free_port();
    let mut server = spawn(Command::new(me).args(["sink", &port, "0"]));
    wait_listening(&port);
    let gib = (1u64 << 30).to_string();
    let flood = spawn(Command::new(me).args(["flood", &port, &gib, "65536"]));
    std::thread::sleep(Duration::from_secs(secs));
    let rss = rss_mib(server.id()).ok_or("no /proc status for the receiver");
    let sent = line_from(flood, "SENT", Duration::from_secs(5))
        .map(|l| field(&l, "bytes").unwrap_or(0.0) / (1024.0 * 1024.0));
    let _ = server.kill();
    let _ = server.wait();
    Ok((rss?, sent?))
}

/// The median of the runs that worked, or the first failure if none did.
fn median(runs: impl Iterator<Item = Result<f64, String>>) -> Result<f64, String> {
    let mut ok = Vec::new();
    let mut first_err = None;
    for r in runs {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if ok.is_empty() {
        return Err(first_err.unwrap_or_else(|| "no run".into()));
    }
    ok.sort_by(f64::total_cmp);
    Ok(ok[ok.len() / 2])
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some(mode @ ("sink" | "sink-secure")) => {
            return sink(&args[1], args[2].parse().unwrap(), mode == "sink-secure")
        }
        Some("echo") => return echo(&args[1], args[2].parse().unwrap(), args[3].parse().unwrap()),
        Some("flood") => {
            return flood(&args[1], args[2].parse().unwrap(), args[3].parse().unwrap())
        }
        Some(mode @ ("source" | "source-secure")) => {
            return source(
                &args[1],
                args[2].parse().unwrap(),
                args[3].parse().unwrap(),
                mode == "source-secure",
            )
        }
        _ => {}
    }
    let quick = args.iter().any(|a| a == "--quick") || std::env::var_os("CI").is_some();
    let me = std::env::current_exe().expect("own path");
    let n: u64 = if quick { 20_000 } else { 1_000_000 };
    let to = Duration::from_secs(if quick { 60 } else { 180 });
    // Runs of ours and tonic alternate; medians are shown (this machine's
    // two cores are shared by both processes: single runs vary by 1.5 x,
    // so the median of 9, and 64 B messages four times as many, so that a
    // run lasts long enough not to be one scheduling hiccup).
    // `BENCH_ROUNDS=n` for another number of runs.
    let runs: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(if quick { 1 } else { 9 });
    println!(
        "typed stream one-way over loopback TCP, two processes, {n} messages ({} at 64 B), median of {runs} alternating runs",
        4 * n
    );
    println!(
        "{:>6} | {:>12} | {:>12} | ours/tonic (of medians; per-run range)",
        "size", "ours msg/s", "tonic msg/s"
    );
    let cases: [(usize, bool); 3] = [(64, false), (4096, false), (1024, true)];
    for (size, secure) in cases {
        let s = size.to_string();
        let ns = if size <= 64 { 4 * n } else { n }.to_string();
        let (sink_mode, source_mode) = if secure {
            ("sink-secure", "source-secure")
        } else {
            ("sink", "source")
        };
        let mut pairs = Vec::new();
        for _ in 0..runs {
            let ours = two_process(
                &me,
                &[sink_mode, "PORT", &ns],
                &[source_mode, "PORT", &ns, &s],
                to,
            );
            let tonic = match anchor("tonic") {
                Some(bin) if secure => two_process(
                    &bin,
                    &["server", "PORT", &ns, "tls"],
                    &["client", "PORT", &ns, &s, "tls"],
                    to,
                ),
                Some(bin) => two_process(
                    &bin,
                    &["server", "PORT", &ns],
                    &["client", "PORT", &ns, &s],
                    to,
                ),
                None => Err("not built (scripts/build-anchors.sh tonic)".into()),
            };
            pairs.push((ours, tonic));
        }
        let ours = median(pairs.iter().map(|p| p.0.clone()));
        let tonic = median(pairs.iter().map(|p| p.1.clone()));
        let show = |r: &Result<f64, String>| match r {
            Ok(v) => format!("{v:.0}"),
            Err(e) => format!("({e})"),
        };
        let per_run: Vec<f64> = pairs
            .iter()
            .filter_map(|p| Some(p.0.as_ref().ok()? / p.1.as_ref().ok()?))
            .collect();
        let lo = per_run.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = per_run.iter().copied().fold(0.0, f64::max);
        let ratio = match (&ours, &tonic) {
            (Ok(a), Ok(b)) => format!("{:.2} ({lo:.2}-{hi:.2})", a / b),
            _ => "-".into(),
        };
        let label = if secure {
            format!("{size} (secure channel / TLS)")
        } else {
            size.to_string()
        };
        println!(
            "{label:>6} | {:>12} | {:>12} | {ratio}",
            show(&ours),
            show(&tonic)
        );
    }

    let rounds: u64 = if quick { 2_000 } else { 20_000 };
    println!();
    println!(
        "round trips, one message at a time, 64 B, {rounds} (p50 / p99 µs; medians of {runs} alternating runs)"
    );
    let mut pairs = Vec::new();
    for _ in 0..runs {
        let ours = round_trips(
            &me,
            &["sink", "PORT", "0"],
            &["echo", "PORT", &rounds.to_string(), "64"],
            to,
        );
        let tonic = match anchor("tonic") {
            Some(bin) => round_trips(
                &bin,
                &["server", "PORT", "0"],
                &["echo", "PORT", &rounds.to_string(), "64"],
                to,
            ),
            None => Err("not built (scripts/build-anchors.sh tonic)".into()),
        };
        pairs.push((ours, tonic));
    }
    let both = |r: &[&Result<(f64, f64), String>]| -> Result<(f64, f64), String> {
        let p50 = median(
            r.iter()
                .map(|x| x.as_ref().map(|v| v.0).map_err(Clone::clone)),
        )?;
        let p99 = median(
            r.iter()
                .map(|x| x.as_ref().map(|v| v.1).map_err(Clone::clone)),
        )?;
        Ok((p50, p99))
    };
    let ours = both(&pairs.iter().map(|p| &p.0).collect::<Vec<_>>());
    let tonic = both(&pairs.iter().map(|p| &p.1).collect::<Vec<_>>());
    let show = |r: &Result<(f64, f64), String>| match r {
        Ok((p50, p99)) => format!("{p50:.1} / {p99:.1}"),
        Err(e) => format!("({e})"),
    };
    let ratio = match (&ours, &tonic) {
        (Ok(a), Ok(b)) => format!("{:.2}", a.0 / b.0),
        _ => "-".into(),
    };
    println!(
        "ours {} | tonic {} | p50 ours/tonic {ratio} (target <= 1)",
        show(&ours),
        show(&tonic)
    );

    println!();
    let secs = if quick { 3 } else { 10 };
    match stalled_memory(&me, secs) {
        Ok((rss, sent)) => println!(
            "stalled consumer, producer trying 1 GiB in 64 KiB messages for {secs} s: receiver RSS {rss:.1} MiB (target < 64), producer got {sent:.1} MiB out"
        ),
        Err(e) => println!("stalled consumer: ({e})"),
    }
}

//! Running the comparison programs of `../shared/anchors` (built by
//! `scripts/build-anchors.sh`) and our own bench binaries as processes,
//! side by side: shared by the benches that compare with them
//! (`#[path]`-included).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port()
        .to_string()
}

pub fn wait_listening(port: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn anchor(name: &str) -> Option<PathBuf> {
    let file = format!("{name}-anchor");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        std::env::var_os("ANCHOR_BIN_DIR").map(|d| PathBuf::from(d).join(&file)),
        Some(
            root.join("target/anchors")
                .join(name)
                .join("release")
                .join(&file),
        ),
    ];
    candidates.into_iter().flatten().find(|p| p.exists())
}

/// Waits for `child` to print a line starting with `prefix` (at most
/// `timeout`), then kills it. Returns the line, or why there is none.
pub fn line_from(
    mut child: Child,
    prefix: &str,
    timeout: Duration,
) -> std::result::Result<String, String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let p = prefix.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if line.starts_with(&p) {
                let _ = tx.send(line);
                return;
            }
        }
    });
    let r = rx
        .recv_timeout(timeout)
        .map_err(|_| format!("no {prefix} line within {timeout:?}"));
    let _ = child.kill();
    let _ = child.wait();
    r
}

pub fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

pub fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("spawn")
}

/// A two-process one-way run: start the sink, then the source.
pub fn two_process(
    bin: &PathBuf,
    sink_args: &[&str],
    source_args: &[&str],
    timeout: Duration,
) -> std::result::Result<f64, String> {
    let port = free_port();
    let sink = spawn(Command::new(bin).args(subst(sink_args, &port)));
    wait_listening(&port);
    let mut source = spawn(Command::new(bin).args(subst(source_args, &port)));
    let r = line_from(sink, "RESULT", timeout);
    let _ = source.kill();
    let _ = source.wait();
    let line = r?;
    field(&line, "msg_per_s").ok_or_else(|| format!("unreadable result {line:?}"))
}

/// A two-process round-trip run: start the server, then the client, which
/// prints `LATENCY n=… p50_us=… p99_us=…`; returns (p50, p99) in µs.
pub fn round_trips(
    bin: &PathBuf,
    server: &[&str],
    client: &[&str],
    timeout: Duration,
) -> std::result::Result<(f64, f64), String> {
    let port = free_port();
    let mut srv = spawn(Command::new(bin).args(subst(server, &port)));
    wait_listening(&port);
    let cli = spawn(Command::new(bin).args(subst(client, &port)));
    let r = line_from(cli, "LATENCY", timeout);
    let _ = srv.kill();
    let _ = srv.wait();
    let line = r?;
    Ok((
        field(&line, "p50_us").ok_or("no p50")?,
        field(&line, "p99_us").ok_or("no p99")?,
    ))
}

/// Prints `LATENCY n=… p50_us=… p99_us=…` for `samples` (sorted here).
pub fn print_latency(samples: &mut [Duration]) {
    samples.sort();
    let p = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "LATENCY n={} p50_us={:.1} p99_us={:.1}",
        samples.len(),
        p(0.50).as_secs_f64() * 1e6,
        p(0.99).as_secs_f64() * 1e6
    );
}

pub fn subst(args: &[&str], port: &str) -> Vec<String> {
    args.iter()
        .map(|a| {
            if *a == "PORT" {
                port.to_string()
            } else {
                a.to_string()
            }
        })
        .collect()
}

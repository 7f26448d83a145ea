//! One-way throughput of a typed stream over TCP between two processes,
//! beside seed 004's tonic bidirectional stream (the `tonic` anchor, built
//! by `scripts/build-anchors.sh tonic`), 64 B and 4 KiB messages, and 1 KiB
//! over a secure channel beside tonic over TLS; prints the ratio ours /
//! tonic.
//!
//! `cargo bench -p ockam_rpc --bench typed_stream` (`-- --quick`: fewer
//! messages). The same binary is the two processes: `sink PORT N` and
//! `source PORT N SIZE`.

use ockam_channel::SecureChannel;
use ockam_core::{route, TCP};
use ockam_node::start_node;
use ockam_rpc::{call, make_sink, RpcServer, Sink, Source, Window};
use ockam_transport_tcp::TcpTransport;
use ockam_vault::Vault;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[path = "../../ockam_transport_tcp/benches/support/anchors.rs"]
mod anchors;
use anchors::*;

#[derive(Serialize, Deserialize)]
struct Blob(#[serde(with = "serde_bytes")] Vec<u8>);

/// The receiving window the sink grants: large enough not to be the limit.
const WINDOW: Window = Window {
    messages: 16_384,
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
                        println!(
                            "RESULT msgs={got} secs={secs:.3} msg_per_s={:.0}",
                            got as f64 / secs.max(1e-9)
                        );
                    });
                    Ok(None::<Sink<u8>>)
                })
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some(mode @ ("sink" | "sink-secure")) => {
            return sink(&args[1], args[2].parse().unwrap(), mode == "sink-secure")
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
    println!("typed stream one-way over loopback TCP, two processes, {n} messages");
    println!(
        "{:>6} | {:>12} | {:>12} | ours/tonic",
        "size", "ours msg/s", "tonic msg/s"
    );
    let cases: [(usize, bool); 3] = [(64, false), (4096, false), (1024, true)];
    for (size, secure) in cases {
        let s = size.to_string();
        let ns = n.to_string();
        let (sink_mode, source_mode) = if secure {
            ("sink-secure", "source-secure")
        } else {
            ("sink", "source")
        };
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
        let show = |r: &Result<f64, String>| match r {
            Ok(v) => format!("{v:.0}"),
            Err(e) => format!("({e})"),
        };
        let ratio = match (&ours, &tonic) {
            (Ok(a), Ok(b)) => format!("{:.2}", a / b),
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
}

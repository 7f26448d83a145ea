//! Secure channel costs, side by side in one run:
//! - throughput of 1 KiB and 64 KiB messages from node A to a worker on
//!   node B over loopback TCP, through a secure channel vs the same TCP
//!   route in plaintext;
//! - raw AES-256-GCM seal + open of the same sizes (the limit), with the
//!   vault's AEAD (`ring`) and, for reference, the `aes-gcm` crate;
//! - a full Noise XX handshake, ours vs `snow`, in memory.
//!
//! `cargo bench -p ockam-rs-channel --bench channel_throughput`
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use ockam_channel::{
    internal::{HandshakeState, Role, PROTOCOL_NAME},
    SecureChannel,
};
use ockam_core::{async_trait, route, Result, Route, Routed, Worker, TCP};
use ockam_node::{start_node, Context};
use ockam_transport_tcp::TcpTransport;
use ockam_vault::{AeadKey, Vault};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Counts messages; reports the time of the last one.
struct Sink {
    want: u64,
    got: u64,
    done: mpsc::Sender<Instant>,
}

#[async_trait]
impl Worker for Sink {
    type Message = String;
    type Context = Context;
    async fn handle_message(&mut self, _ctx: &mut Context, _msg: Routed<String>) -> Result<()> {
        self.got += 1;
        if self.got == self.want {
            let _ = self.done.send(Instant::now());
            self.got = 0;
        }
        Ok(())
    }
}

/// Node B in its own thread: TCP listener, channel listener, sinks.
fn start_b(want: Vec<u64>) -> (String, mpsc::Receiver<Instant>, mpsc::Sender<()>) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (ctx, mut executor) = start_node();
        executor
            .execute(async move {
                let tcp = TcpTransport::create(&ctx).await?;
                let vault = Vault::create(&ctx)?;
                SecureChannel::create_listener(&ctx, "listener", &vault).await?;
                for (i, n) in want.into_iter().enumerate() {
                    ctx.start_worker(
                        format!("sink{i}"),
                        Sink {
                            want: n,
                            got: 0,
                            done: done_tx.clone(),
                        },
                    )
                    .await?;
                }
                addr_tx.send(tcp.listen("127.0.0.1:0").await?).unwrap();
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                ctx.stop().await
            })
            .expect("node B");
    });
    (addr_rx.recv().unwrap().to_string(), done_rx, stop_tx)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    // BENCH_ROUNDS=n: rounds per size (default 5).
    let rounds = if quick {
        1
    } else {
        std::env::var("BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5)
    };
    let mut sizes: [(usize, u64); 2] = if quick {
        [(1024, 2_000), (64 * 1024, 200)]
    } else {
        [(1024, 200_000), (64 * 1024, 10_000)]
    };
    // BENCH_SCALE=0.1 shrinks the message counts (for profiling one size).
    if let Some(scale) = std::env::var("BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        for s in sizes.iter_mut() {
            s.1 = ((s.1 as f64 * scale) as u64).max(1);
        }
    }

    // BENCH_ONLY=plain|secure runs one of the two (for profiling).
    let only = std::env::var("BENCH_ONLY").ok().map(|v| v == "secure");
    // BENCH_SIZE=1024 runs that size only.
    let only_size: Option<usize> = std::env::var("BENCH_SIZE")
        .ok()
        .and_then(|v| v.parse().ok());
    // sink0/sink1: plaintext and encrypted runs of size 0; sink2/sink3: size 1.
    // BENCH_SLICES=n: slices per round and mode (default 10).
    let slices: u64 = std::env::var("BENCH_SLICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 1 } else { 10 })
        .max(1);
    let per_slice = move |n: u64| (n / slices).max(1);
    let (b, done, stop) = start_b(vec![
        per_slice(sizes[0].1),
        per_slice(sizes[0].1),
        per_slice(sizes[1].1),
        per_slice(sizes[1].1),
    ]);
    let (ctx, mut executor) = start_node();
    let results = executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let vault = Vault::create(&ctx)?;
            let channel =
                SecureChannel::create(&ctx, route![(TCP, b.as_str()), "listener"], &vault).await?;
            let mut results = Vec::new();
            for (i, (size, n)) in sizes.iter().enumerate() {
                if only_size.is_some_and(|only| only != *size) {
                    continue;
                }
                let payload = "x".repeat(*size);
                let mut plain = Vec::new();
                let mut secure = Vec::new();
                for _ in 0..rounds {
                    // The round's messages go in slices, plaintext and
                    // encrypted in turn, so that both see the machine in
                    // the same states (how the node threads happen to be
                    // placed changes a run's speed by up to a third here).
                    let mut elapsed = [Duration::ZERO; 2];
                    for _ in 0..slices {
                        for encrypted in [false, true] {
                            if only.is_some_and(|o| o != encrypted) {
                                continue;
                            }
                            let sink = format!("sink{}", 2 * i + encrypted as usize);
                            let r: Route = if encrypted {
                                route![channel.address(), sink.as_str()]
                            } else {
                                route![(TCP, b.as_str()), sink.as_str()]
                            };
                            let start = Instant::now();
                            for _ in 0..per_slice(*n) {
                                ctx.send(r.clone(), payload.clone()).await?;
                            }
                            let end = tokio::task::block_in_place(|| {
                                done.recv_timeout(Duration::from_secs(300))
                            })
                            .expect("all messages arrived");
                            elapsed[encrypted as usize] += end - start;
                        }
                    }
                    for (encrypted, out) in [(false, &mut plain), (true, &mut secure)] {
                        let e = elapsed[encrypted as usize];
                        out.push(if e.is_zero() {
                            f64::NAN
                        } else {
                            (per_slice(*n) * slices) as f64 / e.as_secs_f64()
                        });
                    }
                }
                // Each round's plaintext and encrypted slices alternate, so
                // their ratio is steadier than that of the medians on a
                // machine whose speed drifts.
                let ratios: Vec<f64> = plain.iter().zip(&secure).map(|(p, s)| s / p).collect();
                if std::env::var_os("BENCH_VERBOSE").is_some() {
                    eprintln!("size {size}: per-round secure/plain {ratios:.3?}");
                    eprintln!("  plain {plain:.0?}\n  secure {secure:.0?}");
                }
                let ratio = median(ratios);
                results.push((*size, median(plain), median(secure), ratio));
            }
            ctx.stop().await?;
            Ok(results)
        })
        .expect("node A");
    drop(stop);

    println!(
        "through a secure channel vs the same TCP route in plaintext (median of {rounds} \
         rounds of {slices} alternating slices; ratio: median of the rounds' secure/plain); \
         AES-256-GCM seal + open alone, ours (ring) and the aes-gcm crate:"
    );
    println!(
        "{:>8} | {:>14} | {:>14} | {:>8} | {:>14} | {:>14}",
        "size", "plain msg/s", "secure msg/s", "ratio", "ours seal+open", "aes-gcm crate"
    );
    for (size, plain, secure, ratio) in results {
        let n = if quick {
            1_000
        } else {
            200_000_000 / size as u64
        };
        println!(
            "{:>8} | {:>14.0} | {:>14.0} | {:>8.3} | {:>14.0} | {:>14.0}",
            size,
            plain,
            secure,
            ratio,
            aead_rate(size, n),
            aes_gcm_crate_rate(size, n)
        );
    }

    if only_size.is_some() {
        return;
    }
    let n = if quick { 50 } else { 2_000 };
    let ours = median((0..rounds).map(|_| handshake_ours(n)).collect());
    let theirs = median((0..rounds).map(|_| handshake_snow(n)).collect());
    println!(
        "\nNoise XX handshake (both sides, in memory), median of {rounds} x {n}:\n  ours {:.1} µs  snow {:.1} µs  ratio {:.2}",
        ours,
        theirs,
        ours / theirs
    );
}

/// Seal + open of `size` bytes with the `aes-gcm` crate, for reference.
fn aes_gcm_crate_rate(size: usize, n: u64) -> f64 {
    use aes_gcm::aead::{AeadInOut, KeyInit};
    let key = aes_gcm::Aes256Gcm::new(&[7; 32].into());
    let mut buf = vec![b'x'; size];
    let start = Instant::now();
    for i in 0..n {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&i.to_be_bytes());
        let tag = key
            .encrypt_inout_detached(&nonce.into(), &[], buf.as_mut_slice().into())
            .expect("seal");
        key.decrypt_inout_detached(&nonce.into(), &[], buf.as_mut_slice().into(), &tag)
            .expect("open");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Seal + open of `size` bytes with our AEAD, `n` times: messages per second.
fn aead_rate(size: usize, n: u64) -> f64 {
    let key = AeadKey::new(&[7; 32]);
    let mut buf = vec![b'x'; size];
    let start = Instant::now();
    for i in 0..n {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&i.to_be_bytes());
        key.seal_in_place(&nonce, &[], &mut buf).expect("seal");
        key.open_in_place(&nonce, &[], &mut buf).expect("open");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Microseconds per complete XX handshake with our state machine.
fn handshake_ours(n: usize) -> f64 {
    let vault = Vault::new();
    let (si, sr) = (vault.generate_x25519(), vault.generate_x25519());
    let start = Instant::now();
    for _ in 0..n {
        let mut i = HandshakeState::new(&vault, Role::Initiator, &[], si.clone());
        let mut r = HandshakeState::new(&vault, Role::Responder, &[], sr.clone());
        let m1 = i.write_message(&[]).unwrap();
        r.read_message(&m1).unwrap();
        let m2 = r.write_message(&[]).unwrap();
        i.read_message(&m2).unwrap();
        let m3 = i.write_message(&[]).unwrap();
        r.read_message(&m3).unwrap();
        let (a, b) = (i.into_transport().unwrap(), r.into_transport().unwrap());
        assert_eq!(a.handshake_hash, b.handshake_hash);
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// Microseconds per complete XX handshake with `snow`.
fn handshake_snow(n: usize) -> f64 {
    let builder = || snow::Builder::new(PROTOCOL_NAME.parse().unwrap());
    let (ki, kr) = (
        builder().generate_keypair().unwrap(),
        builder().generate_keypair().unwrap(),
    );
    let mut buf = vec![0u8; 1024];
    let mut out = vec![0u8; 1024];
    let start = Instant::now();
    for _ in 0..n {
        let mut i = builder()
            .local_private_key(&ki.private)
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut r = builder()
            .local_private_key(&kr.private)
            .unwrap()
            .build_responder()
            .unwrap();
        let l = i.write_message(&[], &mut buf).unwrap();
        r.read_message(&buf[..l], &mut out).unwrap();
        let l = r.write_message(&[], &mut buf).unwrap();
        i.read_message(&buf[..l], &mut out).unwrap();
        let l = i.write_message(&[], &mut buf).unwrap();
        r.read_message(&buf[..l], &mut out).unwrap();
        let (a, b) = (
            i.into_transport_mode().unwrap(),
            r.into_transport_mode().unwrap(),
        );
        assert!(a.is_initiator() && !b.is_initiator());
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

//! What `Message::decode` costs for a serde type, beside the exact
//! `ockam_core::decode` (whose trailing-byte check allocates serde_bare's
//! end-of-input error on every success): one message of `Blob` (a byte
//! string) decoded in a loop, at 64 B and 1 KiB, 3 rounds, ns per decode.
//!
//! `cargo bench -p ockam-rs-core --bench decode` (under `CI`, or with
//! `--quick`: fewer decodes).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use ockam_core::Message;
use serde::{Deserialize, Serialize};
use std::time::Instant;

#[derive(Serialize, Deserialize)]
struct Blob(#[serde(with = "serde_bytes")] Vec<u8>);

/// Nanoseconds per call of `f`, over `n` calls.
fn per_call(n: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick") || std::env::var_os("CI").is_some();
    let n = if quick { 10_000 } else { 5_000_000 };
    for size in [64, 1024] {
        let data = ockam_core::encode(&Blob(vec![7; size])).unwrap();
        for round in 0..3 {
            let exact = per_call(n, || {
                std::hint::black_box(
                    ockam_core::decode::<Blob>(std::hint::black_box(&data)).unwrap(),
                );
            });
            let message = per_call(n, || {
                std::hint::black_box(Blob::decode(std::hint::black_box(&data)).unwrap());
            });
            println!(
                "{size} B, round {round}: Message::decode {message:.1} ns, exact decode {exact:.1} ns ({:.2} x)",
                message / exact
            );
        }
    }
}

//! Every fuzz target's body on the stable toolchain: over its committed
//! inputs (`fuzz/corpus/<target>/`, the seed corpus, and
//! `fuzz/regressions/<target>/`, inputs fuzzing once found), then over
//! random inputs and mutations of the corpus.
//!
//! `OCKAM_FUZZ_ITERATIONS` (default 3,000) random inputs a target;
//! `OCKAM_FUZZ_SEED` replays a run (each run prints its seed). An input
//! that panics is written to `target/fuzz-failures/` and the test fails,
//! naming it.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An input that takes longer than this is reported (a body must not hang).
const SLOW: Duration = Duration::from_secs(2);

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| {
            Some((
                e.path().display().to_string(),
                std::fs::read(e.path()).ok()?,
            ))
        })
        .collect();
    out.sort();
    out
}

/// A mutation of `base` (or of nothing): bit flips, bytes set, cut,
/// inserted, duplicated, or spliced with `other`.
fn mutate(rng: &mut StdRng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = base.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        match rng.random_range(0..7) {
            0 if !v.is_empty() => {
                let i = rng.random_range(0..v.len());
                v[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !v.is_empty() => {
                let i = rng.random_range(0..v.len());
                v[i] = [0, 1, 0x7f, 0x80, 0xff][rng.random_range(0..5)];
            }
            2 if !v.is_empty() => {
                let at = rng.random_range(0..v.len());
                v.truncate(at);
            }
            3 => {
                let at = rng.random_range(0..=v.len());
                let mut extra = vec![0u8; rng.random_range(1..16)];
                rng.fill_bytes(&mut extra);
                v.splice(at..at, extra);
            }
            4 if !v.is_empty() => {
                let a = rng.random_range(0..v.len());
                let b = rng.random_range(a..v.len().min(a + 64) + 1).min(v.len());
                let chunk = v[a..b].to_vec();
                let at = rng.random_range(0..=v.len());
                v.splice(at..at, chunk);
            }
            5 if !other.is_empty() => {
                let at = rng.random_range(0..=v.len());
                let from = rng.random_range(0..other.len());
                v.truncate(at);
                v.extend_from_slice(&other[from..]);
            }
            _ => {
                let mut fresh = vec![0u8; rng.random_range(0..256)];
                rng.fill_bytes(&mut fresh);
                v = fresh;
            }
        }
    }
    v
}

/// Runs `body` on `input`; the failure, if it panics or is too slow.
fn run(body: fn(&[u8]), input: &[u8]) -> Option<String> {
    let started = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| body(input)));
    let took = started.elapsed();
    match outcome {
        Err(p) => Some(
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into()),
        ),
        Ok(()) if took > SLOW => Some(format!("took {took:?}")),
        Ok(()) => None,
    }
}

#[test]
fn every_target_survives_its_corpus_and_random_inputs() {
    let iterations: usize = std::env::var("OCKAM_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let seed: u64 = std::env::var("OCKAM_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    println!("OCKAM_FUZZ_SEED={seed} OCKAM_FUZZ_ITERATIONS={iterations}");
    let failures_dir = workspace().join("target/fuzz-failures");
    let mut failures = Vec::new();
    for &(name, body) in ockam_fuzz::TARGETS {
        let corpus = files(&workspace().join("fuzz/corpus").join(name));
        assert!(
            !corpus.is_empty(),
            "no seed corpus for {name} (cargo run -p ockam-rs-fuzz --bin seed-corpus)"
        );
        let regressions = files(&workspace().join("fuzz/regressions").join(name));
        let mut fail = |input: &[u8], why: String, what: String| {
            let _ = std::fs::create_dir_all(&failures_dir);
            let path = failures_dir.join(format!("{name}-{}", failures.len()));
            let _ = std::fs::write(&path, input);
            failures.push(format!(
                "{name}: {what}: {why} (input in {})",
                path.display()
            ));
        };
        for (path, input) in corpus.iter().chain(&regressions) {
            if let Some(why) = run(body, input) {
                fail(input, why, path.clone());
            }
        }
        let mut rng = StdRng::seed_from_u64(seed ^ name.len() as u64);
        let started = Instant::now();
        for i in 0..iterations {
            let base = &corpus[rng.random_range(0..corpus.len())].1;
            let other = &corpus[rng.random_range(0..corpus.len())].1;
            let input = if i % 8 == 0 {
                mutate(&mut rng, &[], other)
            } else {
                mutate(&mut rng, base, other)
            };
            if let Some(why) = run(body, &input) {
                fail(&input, why, format!("random input {i}"));
            }
        }
        println!(
            "{name}: {} committed inputs, {iterations} random in {:?}",
            corpus.len() + regressions.len(),
            started.elapsed()
        );
    }
    assert!(
        failures.is_empty(),
        "{} inputs failed (OCKAM_FUZZ_SEED={seed}):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

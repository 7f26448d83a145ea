//! A stalled consumer and the producer it holds: shared by the stall tests
//! here, the hub's and the typed-stream bench (`#[path]`-included there).
#![allow(dead_code)]

use ockam_rpc::{RpcError, Sink, Source};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Offers `n` messages of `body` bytes to `sink` from a task until the
/// producer has made no progress for `quiet`; returns how many went
/// through, and the task (still waiting in `send`, unless it finished).
pub async fn offer_until_held(
    mut sink: Sink<Vec<u8>>,
    n: u64,
    body: usize,
    quiet: Duration,
) -> (
    u64,
    tokio::task::JoinHandle<Result<Sink<Vec<u8>>, RpcError>>,
) {
    let sent = Arc::new(AtomicU64::new(0));
    let counted = sent.clone();
    let producer = tokio::spawn(async move {
        for _ in 0..n {
            sink.send(vec![7u8; body]).await?;
            counted.fetch_add(1, Relaxed);
        }
        Ok(sink)
    });
    let mut last = u64::MAX;
    while sent.load(Relaxed) != last {
        last = sent.load(Relaxed);
        tokio::time::sleep(quiet).await;
    }
    (sent.load(Relaxed), producer)
}

/// A handler that holds its source and never reads: a stalled consumer
/// (it makes no reverse stream).
pub async fn stall<T: Send + 'static>(
    _: u8,
    source: Source<T>,
) -> Result<Option<Sink<u8>>, RpcError> {
    tokio::spawn(async move {
        std::future::pending::<()>().await;
        drop(source);
    });
    Ok(None)
}

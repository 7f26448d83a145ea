//! Where streams live: the [`StreamStore`] trait and its back ends, an
//! in-memory store ([`MemoryStore`]), a durable store on the `redb`
//! embedded database ([`DurableStore`]) and Apache Kafka ([`KafkaStore`]).

mod batch;
#[cfg(feature = "kafka")]
pub mod kafka;
#[path = "kafka/config.rs"]
mod kafka_config;
mod memory;
mod redb;
mod tail;
mod wal;

pub use self::redb::{
    inspect, DurableStore, ReaderReport, StreamReport, DATA_FILE, INSPECT_SOCKET,
};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaStats, KafkaStore};
pub use kafka_config::KafkaConfig;
pub use memory::MemoryStore;
pub use wal::WAL_FILE;

/// When the durable store's pushes become durable (issue 17, `--fsync`).
/// A process crash (`kill -9`) loses nothing confirmed in either mode;
/// they differ on a power cut or a crash of the operating system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// A push is confirmed once fsynced (commits are grouped: every push
    /// waiting while one commits goes into the next). A power cut loses
    /// nothing confirmed. The default.
    #[default]
    Always,
    /// A push is confirmed once written to the operating system (a
    /// write-ahead log in the data directory), readable from memory at
    /// once, and committed to the database without fsync, usually within
    /// 10 ms; everything is fsynced every interval, as NATS JetStream's
    /// and Kafka's defaults do. A power cut loses up to one interval of
    /// confirmed pushes.
    Interval(Duration),
}

impl std::str::FromStr for Fsync {
    type Err = String;

    /// `always`, or `interval=<ms>` (1 to 60,000).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "always" => Ok(Fsync::Always),
            _ => match s.strip_prefix("interval=").map(str::parse::<u64>) {
                Some(Ok(ms)) if (1..=60_000).contains(&ms) => {
                    Ok(Fsync::Interval(Duration::from_millis(ms)))
                }
                _ => Err(format!(
                    "{s:?}: expected `always` or `interval=<ms>` (1 to 60000)"
                )),
            },
        }
    }
}

use async_trait::async_trait;
use ockam_core::{Error, ErrorKind, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The storage a hub keeps streams and client read positions in.
///
/// A stream is an append-only log: message `i` is the `i`-th pushed (from 0).
/// `push` returns only once the message is stored as durably as the back
/// end can (the durable store: on disk, fsynced).
#[async_trait]
pub trait StreamStore: Send + Sync + 'static {
    /// Appends `data` to `stream`; returns its index.
    ///
    /// # Errors
    /// As the future of [`StreamStore::submit_push`]; the Kafka store also
    /// fails with [`ErrorKind::ResourceExhausted`] when too many pushes
    /// wait for the broker.
    async fn push(&self, stream: &str, data: Vec<u8>) -> Result<u64> {
        self.submit_push(stream, data, Ticket::alone()).await
    }
    /// Queues `data` for `stream` *now* (pushes are stored in the order
    /// they are submitted) and returns a future of its index, so that a
    /// caller can submit more before the first is durable (group commit).
    ///
    /// `ticket` places the push in its submitter's sequence (see
    /// [`crate::sequencer`]): a store that learns of a failure of the
    /// submitter's pushes before the submitter does (another push of the
    /// same commit failed, say) marks it on the ticket, and writes none of
    /// the submitter's pushes that [`Ticket::may_store`] refuses, so that
    /// nothing is stored after the gap.
    ///
    /// # Errors
    /// The future fails when the push is not stored: the back end failed
    /// (kind [`ErrorKind::Unavailable`] or [`ErrorKind::Io`], transient) or
    /// refused the message ([`ErrorKind::InvalidInput`]), or an earlier
    /// push of the same submitter failed.
    fn submit_push(&self, stream: &str, data: Vec<u8>, ticket: Ticket) -> PendingPush;
    /// Up to `limit` messages of `stream` from `from` on, in order, and no
    /// more than `max_bytes` of data (but always the first one, if any).
    ///
    /// # Errors
    /// The back end cannot be read: [`ErrorKind::Io`] (durable store),
    /// [`ErrorKind::Unavailable`] (its writer stopped; Kafka failed or did
    /// not answer in time), [`ErrorKind::ResourceExhausted`] (every Kafka
    /// reader stayed busy). The in-memory store never fails.
    async fn pull(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>>;
    /// [`pull`](Self::pull) of messages this hub has just announced (a
    /// waiting pull woken by a push): their pages are in memory, so a store
    /// may read them on the caller's task instead of handing the read to a
    /// thread of its own (one hand-off each way fewer on the way from a
    /// push to a waiting reader). The default is [`pull`](Self::pull).
    ///
    /// # Errors
    /// As [`StreamStore::pull`]'s.
    async fn pull_fresh(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        self.pull(stream, from, limit, max_bytes).await
    }
    /// [`pull`](Self::pull), but a store that can wait for new messages
    /// itself (one other hubs write to) waits up to `wait` for a first one;
    /// the others answer at once.
    ///
    /// # Errors
    /// As [`StreamStore::pull`]'s.
    async fn pull_waiting(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let _ = wait;
        self.pull(stream, from, limit, max_bytes).await
    }
    /// The index the next push to `stream` gets (0 for a new stream).
    ///
    /// # Errors
    /// As [`StreamStore::pull`]'s: the back end cannot be read.
    async fn next_index(&self, stream: &str) -> Result<u64>;
    /// The end of `stream` ([`next_index`](Self::next_index)) if `index`
    /// is past it, `None` if the stream reaches `index`: the check made
    /// before a read position is answered or saved.
    ///
    /// The default asks [`next_index`](Self::next_index) each time. A
    /// store whose `next_index` is a round trip to a back end (Kafka)
    /// answers `None` without one when it already saw the stream reach
    /// `index` (a stream's end only grows, unless the back end loses
    /// records: the Kafka store notices that at its next look), and asks
    /// only otherwise: a check must never refuse a position the stream
    /// does reach.
    ///
    /// # Errors
    /// As [`StreamStore::next_index`]'s.
    async fn end_before(&self, stream: &str, index: u64) -> Result<Option<u64>> {
        let end = self.next_index(stream).await?;
        Ok((index > end).then_some(end))
    }
    /// The read position saved for `(client, stream)`.
    ///
    /// # Errors
    /// As [`StreamStore::pull`]'s: the back end cannot be read.
    async fn get_index(&self, client: &str, stream: &str) -> Result<Option<u64>>;
    /// Saves the read position of `(client, stream)`.
    ///
    /// # Errors
    /// The position is not saved: [`ErrorKind::Io`] or
    /// [`ErrorKind::Unavailable`] as for [`StreamStore::pull`]. The
    /// in-memory store never fails.
    async fn save_index(&self, client: &str, stream: &str, index: u64) -> Result<()>;
    /// Which log this is: a number that changes when the store's contents
    /// are lost and it starts empty again (an in-memory store at every hub
    /// start; a durable store only if its file is deleted), and 0 for a
    /// store that keeps no such identity. Stream workers tell it to
    /// clients (see `STORE_MARK`), so that a client notices that the
    /// positions it holds belong to another log.
    fn incarnation(&self) -> u64 {
        0
    }
    /// Forgets what it keeps in memory for streams and clients unused for
    /// `idle` (caches, clients of the back end), so that memory follows
    /// the streams in use, not every stream ever touched. The hub calls it
    /// now and then (every half `Limits::idle_timeout`).
    async fn forget_idle(&self, idle: Duration) {
        let _ = idle;
    }
    /// Whether others (other hubs) may push to the same streams, so that
    /// this hub does not see every push: waiting pulls then look at the
    /// store now and then instead of only when this hub stores a message.
    fn has_other_writers(&self) -> bool {
        false
    }
    /// What the store holds, for metrics and inspection (issue 17):
    /// `None` for a store that keeps no such account (Kafka: its own tools
    /// show topics and consumer groups).
    ///
    /// # Errors
    /// The store cannot be read.
    async fn stats(&self) -> Result<Option<StoreStats>> {
        Ok(None)
    }
}

/// What a store holds: see [`StreamStore::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Each stream and the index its next message gets (how many were
    /// ever pushed), by name.
    pub streams: std::collections::BTreeMap<String, u64>,
    /// Each saved read position: `(client, stream)` and the index of the
    /// next message the client reads. On a closed hub the client is
    /// `{identity}/{client_id}`.
    pub indexes: std::collections::BTreeMap<(String, String), u64>,
}

impl StoreStats {
    /// How far `(client, stream)`'s read position is behind the end of its
    /// stream, in messages.
    pub fn lag(&self, client: &str, stream: &str) -> Option<u64> {
        let at = self
            .indexes
            .get(&(client.to_string(), stream.to_string()))?;
        let end = self.streams.get(stream).copied().unwrap_or(0);
        Some(end.saturating_sub(*at))
    }
}

pub use crate::sequencer::{Fence, Ticket};

/// A random incarnation (never 0: 0 is "unknown").
pub(crate) fn new_incarnation() -> u64 {
    rand::random::<u64>().max(1)
}

/// The error of a push refused because an earlier push of its submitter
/// failed ([`crate::sequencer`]).
pub(crate) fn after_gap() -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "an earlier push of this stream worker failed; nothing after it is stored",
    )
}

/// The outcome of a submitted push, once stored.
pub type PendingPush = std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64>> + Send>>;

fn storage_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Io, format!("storage: {what}: {e}"))
}

/// What a pull takes: up to `limit` messages and no more than `max_bytes`
/// of data, but always the first message (a pull must make progress).
struct Within {
    out: Vec<(u64, Vec<u8>)>,
    bytes: usize,
    limit: usize,
    max_bytes: usize,
}

impl Within {
    fn new(limit: usize, max_bytes: usize) -> Within {
        Within {
            out: Vec::new(),
            bytes: 0,
            limit,
            max_bytes,
        }
    }

    /// Takes message `index` (copied) if there is room; `false` when there
    /// is not, and the pull is complete.
    fn take(&mut self, index: u64, data: &[u8]) -> bool {
        if self.out.len() >= self.limit {
            return false;
        }
        self.bytes = self.bytes.saturating_add(data.len());
        if self.bytes > self.max_bytes && !self.out.is_empty() {
            return false;
        }
        self.out.push((index, data.to_vec()));
        true
    }
}

/// The messages of `items` a pull takes (see [`Within`]).
fn take_within<'a>(
    items: impl Iterator<Item = (u64, &'a [u8])>,
    limit: usize,
    max_bytes: usize,
) -> Vec<(u64, Vec<u8>)> {
    let mut within = Within::new(limit, max_bytes);
    for (index, data) in items {
        if !within.take(index, data) {
            break;
        }
    }
    within.out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exercise(store: &dyn StreamStore) {
        assert_eq!(store.next_index("s").await.unwrap(), 0);
        for i in 0..10u64 {
            assert_eq!(store.push("s", vec![i as u8]).await.unwrap(), i);
        }
        assert_eq!(store.push("t", b"other".to_vec()).await.unwrap(), 0);
        let got = store.pull("s", 3, 4, usize::MAX).await.unwrap();
        assert_eq!(got, (3..7).map(|i| (i, vec![i as u8])).collect::<Vec<_>>());
        assert!(store.pull("s", 10, 5, usize::MAX).await.unwrap().is_empty());
        assert!(store
            .pull("missing", 0, 5, usize::MAX)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store.pull("t", 0, 100, usize::MAX).await.unwrap(),
            vec![(0, b"other".to_vec())]
        );
        assert_eq!(store.get_index("c", "s").await.unwrap(), None);
        store.save_index("c", "s", 7).await.unwrap();
        assert_eq!(store.get_index("c", "s").await.unwrap(), Some(7));
        assert_eq!(store.next_index("s").await.unwrap(), 10);
        // The byte cap stops early but always returns the first message.
        assert_eq!(store.pull("s", 0, 100, 2).await.unwrap().len(), 2);
        assert_eq!(store.pull("s", 0, 100, 0).await.unwrap().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn memory_store_behaves() {
        exercise(&MemoryStore::new()).await;
    }

    /// `--fsync interval`: dropping the store stops its writer (the
    /// flush thread does not keep it alive) and makes what it committed
    /// durable, so that a clean stop leaves no log to replay.
    #[tokio::test(flavor = "multi_thread")]
    async fn an_interval_store_closes_cleanly_and_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            DurableStore::open_with(dir.path(), Fsync::Interval(Duration::from_secs(60))).unwrap();
        exercise(&store).await;
        let (done, closed) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(store);
            let _ = done.send(());
        });
        closed
            .recv_timeout(Duration::from_secs(10))
            .expect("the store closed within 10 s");
        let log = std::fs::metadata(dir.path().join(WAL_FILE)).unwrap().len();
        assert_eq!(log, 0, "a clean close leaves the log empty");
        let store = DurableStore::open(dir.path()).unwrap();
        assert_eq!(store.next_index("s").await.unwrap(), 10);
        assert_eq!(store.get_index("c", "s").await.unwrap(), Some(7));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn durable_store_behaves_and_keeps_everything_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = DurableStore::open(dir.path()).unwrap();
            exercise(&store).await;
        }
        let first = DurableStore::open(dir.path()).unwrap().incarnation();
        assert_ne!(first, 0);
        let store = DurableStore::open(dir.path()).unwrap();
        assert_eq!(
            store.incarnation(),
            first,
            "the same log, the same incarnation"
        );
        assert_ne!(
            MemoryStore::new().incarnation(),
            MemoryStore::new().incarnation()
        );
        assert_eq!(store.next_index("s").await.unwrap(), 10);
        assert_eq!(store.get_index("c", "s").await.unwrap(), Some(7));
        assert_eq!(store.push("s", vec![10]).await.unwrap(), 10);
    }

    /// The hub's on-disk records are redb's pages (checksummed) and our
    /// record batches in them (see `batch`, whose own tests cut them
    /// anywhere): a data file damaged any way
    /// (cut short, bytes flipped, a page zeroed) is refused with an error,
    /// or opened and served, but never panics the hub. Issue 18's "the
    /// hub's on-disk records" decoder; seeded, so each case replays.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_damaged_data_file_is_an_error_or_served_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = DurableStore::open(dir.path()).unwrap();
            exercise(&store).await;
            for i in 0..200u64 {
                store.push("many", vec![i as u8; 300]).await.unwrap();
            }
        }
        let good = std::fs::read(dir.path().join("streams.redb")).unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: usize| {
            // splitmix64: a fixed sequence of damage, the same every run.
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = seed;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d1_049b_1331_11eb);
            ((z ^ (z >> 31)) % n as u64) as usize
        };
        let (mut refused, mut served) = (0, 0);
        for case in 0..60 {
            let mut bad = good.clone();
            match case % 3 {
                0 => bad.truncate(next(good.len())),
                1 => {
                    for _ in 0..16 {
                        let at = next(bad.len());
                        bad[at] ^= 1 << next(8);
                    }
                }
                _ => {
                    let at = next(bad.len() / 4096) * 4096;
                    let end = (at + 4096).min(bad.len());
                    bad[at..end].fill(0);
                }
            }
            let damaged = tempfile::tempdir().unwrap();
            std::fs::write(damaged.path().join("streams.redb"), &bad).unwrap();
            let path = damaged.path().to_path_buf();
            let outcome = tokio::spawn(async move {
                let store = match DurableStore::open(&path) {
                    Ok(s) => s,
                    Err(_) => return false,
                };
                let _ = store.next_index("s").await;
                let _ = store.pull("many", 0, 1000, usize::MAX).await;
                let _ = store.get_index("c", "s").await;
                let _ = store.push("s", vec![1]).await;
                true
            })
            .await;
            match outcome {
                Ok(true) => served += 1,
                Ok(false) => refused += 1,
                Err(e) => panic!("damage case {case} panicked the store: {e}"),
            }
        }
        println!("damaged data files: {refused} refused, {served} opened and served");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_pushes_share_commits_and_keep_per_stream_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(DurableStore::open(dir.path()).unwrap());
        let tasks: Vec<_> = (0..8)
            .map(|p| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut last = None;
                    for i in 0..200u32 {
                        let idx = store
                            .push(&format!("s{p}"), i.to_be_bytes().to_vec())
                            .await
                            .unwrap();
                        assert_eq!(idx, i as u64);
                        last = Some(idx);
                    }
                    last
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Some(199));
        }
        let all = store.pull("s3", 0, 1000, usize::MAX).await.unwrap();
        assert_eq!(all.len(), 200);
        assert!(all
            .iter()
            .enumerate()
            .all(|(i, (idx, d))| *idx == i as u64 && d == &(i as u32).to_be_bytes()));
    }
}

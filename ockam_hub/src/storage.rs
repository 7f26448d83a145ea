//! Where streams live: the [`StreamStore`] trait and its back ends, an
//! in-memory store and a durable store on the `redb` embedded database.

use async_trait::async_trait;
use ockam_core::{Error, ErrorKind, Result};
use redb::{ReadableDatabase, ReadableTable};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info};

/// The storage a hub keeps streams and client read positions in.
///
/// A stream is an append-only log: message `i` is the `i`-th pushed (from 0).
/// `push` returns only once the message is stored as durably as the back
/// end can (the durable store: on disk, fsynced).
#[async_trait]
pub trait StreamStore: Send + Sync + 'static {
    /// Appends `data` to `stream`; returns its index.
    async fn push(&self, stream: &str, data: Vec<u8>) -> Result<u64> {
        self.submit_push(stream, data).await
    }
    /// Queues `data` for `stream` *now* (pushes are stored in the order
    /// they are submitted) and returns a future of its index, so that a
    /// caller can submit more before the first is durable (group commit).
    fn submit_push(&self, stream: &str, data: Vec<u8>) -> PendingPush;
    /// [`submit_push`](Self::submit_push) for a submitter that stores
    /// nothing more once one of its pushes failed (a hub stream worker):
    /// `fence` is its failure flag. A store that learns of a failure before
    /// the submitter does (another push of the same batch failed, say)
    /// sets it and refuses the submitter's pushes still waiting, so that
    /// none of them is stored after the gap.
    fn submit_push_fenced(&self, stream: &str, data: Vec<u8>, fence: &Fence) -> PendingPush {
        let _ = fence;
        self.submit_push(stream, data)
    }
    /// Up to `limit` messages of `stream` from `from` on, in order, and no
    /// more than `max_bytes` of data (but always the first one, if any).
    async fn pull(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>>;
    /// [`pull`](Self::pull), but a store that can wait for new messages
    /// itself (one other hubs write to) waits up to `wait` for a first one;
    /// the others answer at once.
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
    async fn next_index(&self, stream: &str) -> Result<u64>;
    /// The read position saved for `(client, stream)`.
    async fn get_index(&self, client: &str, stream: &str) -> Result<Option<u64>>;
    /// Saves the read position of `(client, stream)`.
    async fn save_index(&self, client: &str, stream: &str, index: u64) -> Result<()>;
    /// Whether others (other hubs) may push to the same streams, so that
    /// this hub does not see every push: waiting pulls then look at the
    /// store now and then instead of only when this hub stores a message.
    fn has_other_writers(&self) -> bool {
        false
    }
}

/// A submitter's failure flag; see [`StreamStore::submit_push_fenced`].
pub type Fence = Arc<std::sync::atomic::AtomicBool>;

/// The outcome of a submitted push, once stored.
pub type PendingPush = std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64>> + Send>>;

fn storage_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Io, format!("storage: {what}: {e}"))
}

/// Up to `limit` messages and no more than `max_bytes` of data, but always
/// the first message (a pull must make progress).
fn take_within(
    items: impl Iterator<Item = Result<(u64, Vec<u8>)>>,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<(u64, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    for item in items.take(limit) {
        let (index, data) = item?;
        bytes = bytes.saturating_add(data.len());
        if bytes > max_bytes && !out.is_empty() {
            break;
        }
        out.push((index, data));
    }
    Ok(out)
}

// ------------------------------------------------------------------ memory

/// Keeps everything in memory: fast, gone when the hub stops.
#[derive(Default)]
pub struct MemoryStore {
    streams: Mutex<HashMap<String, Vec<Vec<u8>>>>,
    indexes: Mutex<HashMap<(String, String), u64>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl StreamStore for MemoryStore {
    fn submit_push(&self, stream: &str, data: Vec<u8>) -> PendingPush {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let log = streams.entry(stream.to_string()).or_default();
        log.push(data);
        let index = log.len() as u64 - 1;
        Box::pin(async move { Ok(index) })
    }

    async fn pull(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let Some(log) = streams.get(stream) else {
            return Ok(Vec::new());
        };
        take_within(
            log.iter()
                .enumerate()
                .skip(usize::try_from(from).unwrap_or(usize::MAX))
                .map(|(i, d)| Ok((i as u64, d.clone()))),
            limit,
            max_bytes,
        )
    }

    async fn next_index(&self, stream: &str) -> Result<u64> {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        Ok(streams.get(stream).map_or(0, |l| l.len() as u64))
    }

    async fn get_index(&self, client: &str, stream: &str) -> Result<Option<u64>> {
        let indexes = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
        Ok(indexes
            .get(&(client.to_string(), stream.to_string()))
            .copied())
    }

    async fn save_index(&self, client: &str, stream: &str, index: u64) -> Result<()> {
        let mut indexes = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
        indexes.insert((client.to_string(), stream.to_string()), index);
        Ok(())
    }
}

// ----------------------------------------------------------------- durable

const MESSAGES: redb::TableDefinition<(&str, u64), &[u8]> = redb::TableDefinition::new("messages");
const HEADS: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("heads");
const INDEXES: redb::TableDefinition<(&str, &str), u64> = redb::TableDefinition::new("indexes");

/// Most writes folded into one transaction (one fsync).
const MAX_BATCH: usize = 4096;

enum Write {
    Push {
        stream: String,
        data: Vec<u8>,
        done: oneshot::Sender<Result<u64>>,
    },
    SaveIndex {
        client: String,
        stream: String,
        index: u64,
        done: oneshot::Sender<Result<()>>,
    },
}

/// Streams on disk in one `redb` database file, written with group commit:
/// every push waiting while a transaction commits goes into the next one,
/// so many concurrent pushes share one fsync.
pub struct DurableStore {
    db: Arc<redb::Database>,
    writes: Option<mpsc::UnboundedSender<Write>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for DurableStore {
    fn drop(&mut self) {
        // Let the writer finish what it was given, then close the file.
        drop(self.writes.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl DurableStore {
    /// Opens (or creates) the store in directory `dir`.
    pub fn open(dir: &Path) -> Result<DurableStore> {
        std::fs::create_dir_all(dir)
            .map_err(|e| storage_error(&format!("cannot create {}", dir.display()), e))?;
        let path = dir.join("streams.redb");
        let db = redb::Database::create(&path)
            .map_err(|e| storage_error(&format!("cannot open {}", path.display()), e))?;
        // Make sure the tables exist, so that readers never see them missing.
        let txn = db.begin_write().map_err(|e| storage_error("begin", e))?;
        {
            txn.open_table(MESSAGES)
                .map_err(|e| storage_error("open table", e))?;
            txn.open_table(HEADS)
                .map_err(|e| storage_error("open table", e))?;
            txn.open_table(INDEXES)
                .map_err(|e| storage_error("open table", e))?;
        }
        txn.commit().map_err(|e| storage_error("commit", e))?;
        let db = Arc::new(db);
        let (writes, rx) = mpsc::unbounded_channel();
        let writer_db = db.clone();
        let writer = std::thread::Builder::new()
            .name("hub-store-writer".into())
            .spawn(move || writer(writer_db, rx))
            .map_err(|e| storage_error("cannot start the writer thread", e))?;
        info!(path = %path.display(), "durable stream store open");
        Ok(DurableStore {
            db,
            writes: Some(writes),
            writer: Some(writer),
        })
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db
                .begin_read()
                .map_err(|e| storage_error("begin read", e))?;
            f(&txn)
        })
        .await
        .map_err(|e| storage_error("read task", e))?
    }

    fn send(&self, w: Write) -> Result<()> {
        self.writes
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::Unavailable, "storage closed"))?
            .send(w)
            .map_err(|_| Error::new(ErrorKind::Unavailable, "storage writer stopped"))
    }
}

/// The writer thread: takes every write waiting, commits them together.
fn writer(db: Arc<redb::Database>, mut rx: mpsc::UnboundedReceiver<Write>) {
    // After a failed commit nothing more is written: a later write landing
    // after a lost one would leave a gap in a stream.
    let mut broken: Option<Error> = None;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let n = batch.len();
        let result = match &broken {
            Some(e) => Err(e.clone()),
            None => commit(&db, &batch),
        };
        if let (Err(e), None) = (&result, &broken) {
            broken = Some(Error::new(
                ErrorKind::Unavailable,
                format!("storage failed earlier ({e}); restart the hub"),
            ));
        }
        match result {
            Ok(indexes) => {
                for (w, index) in batch.into_iter().zip(indexes) {
                    match w {
                        Write::Push { done, .. } => {
                            let _ = done.send(Ok(index));
                        }
                        Write::SaveIndex { done, .. } => {
                            let _ = done.send(Ok(()));
                        }
                    }
                }
                debug!(writes = n, "committed");
            }
            Err(e) => {
                error!(error = %e, writes = n, "storage commit failed; the writes are refused");
                for w in batch {
                    match w {
                        Write::Push { done, .. } => {
                            let _ = done.send(Err(e.clone()));
                        }
                        Write::SaveIndex { done, .. } => {
                            let _ = done.send(Err(e.clone()));
                        }
                    }
                }
            }
        }
    }
}

fn commit(db: &redb::Database, batch: &[Write]) -> Result<Vec<u64>> {
    let txn = db.begin_write().map_err(|e| storage_error("begin", e))?;
    let mut out = Vec::with_capacity(batch.len());
    {
        let mut messages = txn
            .open_table(MESSAGES)
            .map_err(|e| storage_error("open", e))?;
        let mut heads = txn
            .open_table(HEADS)
            .map_err(|e| storage_error("open", e))?;
        let mut indexes = txn
            .open_table(INDEXES)
            .map_err(|e| storage_error("open", e))?;
        for w in batch {
            match w {
                Write::Push { stream, data, .. } => {
                    let next = heads
                        .get(stream.as_str())
                        .map_err(|e| storage_error("read head", e))?
                        .map_or(0, |g| g.value());
                    messages
                        .insert((stream.as_str(), next), data.as_slice())
                        .map_err(|e| storage_error("insert", e))?;
                    heads
                        .insert(stream.as_str(), next + 1)
                        .map_err(|e| storage_error("update head", e))?;
                    out.push(next);
                }
                Write::SaveIndex {
                    client,
                    stream,
                    index,
                    ..
                } => {
                    indexes
                        .insert((client.as_str(), stream.as_str()), *index)
                        .map_err(|e| storage_error("save index", e))?;
                    out.push(*index);
                }
            }
        }
    }
    // Durability::Immediate (the default): on disk when this returns.
    txn.commit().map_err(|e| storage_error("commit", e))?;
    Ok(out)
}

#[async_trait]
impl StreamStore for DurableStore {
    fn submit_push(&self, stream: &str, data: Vec<u8>) -> PendingPush {
        let (done, rx) = oneshot::channel();
        let sent = self.send(Write::Push {
            stream: stream.to_string(),
            data,
            done,
        });
        Box::pin(async move {
            sent?;
            rx.await
                .map_err(|_| Error::new(ErrorKind::Unavailable, "storage writer stopped"))?
        })
    }

    async fn pull(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let stream = stream.to_string();
        self.read(move |txn| {
            let table = txn
                .open_table(MESSAGES)
                .map_err(|e| storage_error("open", e))?;
            let range = table
                .range((stream.as_str(), from)..=(stream.as_str(), u64::MAX))
                .map_err(|e| storage_error("range", e))?;
            take_within(
                range.map(|item| {
                    item.map(|(k, v)| (k.value().1, v.value().to_vec()))
                        .map_err(|e| storage_error("read", e))
                }),
                limit,
                max_bytes,
            )
        })
        .await
    }

    async fn next_index(&self, stream: &str) -> Result<u64> {
        let stream = stream.to_string();
        self.read(move |txn| {
            let table = txn
                .open_table(HEADS)
                .map_err(|e| storage_error("open", e))?;
            Ok(table
                .get(stream.as_str())
                .map_err(|e| storage_error("read head", e))?
                .map_or(0, |g| g.value()))
        })
        .await
    }

    async fn get_index(&self, client: &str, stream: &str) -> Result<Option<u64>> {
        let (client, stream) = (client.to_string(), stream.to_string());
        self.read(move |txn| {
            let table = txn
                .open_table(INDEXES)
                .map_err(|e| storage_error("open", e))?;
            Ok(table
                .get((client.as_str(), stream.as_str()))
                .map_err(|e| storage_error("read index", e))?
                .map(|g| g.value()))
        })
        .await
    }

    async fn save_index(&self, client: &str, stream: &str, index: u64) -> Result<()> {
        let (done, rx) = oneshot::channel();
        self.send(Write::SaveIndex {
            client: client.to_string(),
            stream: stream.to_string(),
            index,
            done,
        })?;
        rx.await
            .map_err(|_| Error::new(ErrorKind::Unavailable, "storage writer stopped"))?
    }
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

    #[tokio::test(flavor = "multi_thread")]
    async fn durable_store_behaves_and_keeps_everything_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = DurableStore::open(dir.path()).unwrap();
            exercise(&store).await;
        }
        let store = DurableStore::open(dir.path()).unwrap();
        assert_eq!(store.next_index("s").await.unwrap(), 10);
        assert_eq!(store.get_index("c", "s").await.unwrap(), Some(7));
        assert_eq!(store.push("s", vec![10]).await.unwrap(), 10);
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

//! [`DurableStore`]: streams on disk in a `redb` database.

use super::*;
use ::redb::{ReadableDatabase, ReadableTable};
use std::path::Path;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info};

const MESSAGES: ::redb::TableDefinition<(&str, u64), &[u8]> =
    ::redb::TableDefinition::new("messages");
const HEADS: ::redb::TableDefinition<&str, u64> = ::redb::TableDefinition::new("heads");
const INDEXES: ::redb::TableDefinition<(&str, &str), u64> = ::redb::TableDefinition::new("indexes");
/// Facts about the store itself: its `incarnation`, made when the file is.
const META: ::redb::TableDefinition<&str, u64> = ::redb::TableDefinition::new("meta");

/// The data file's name in the store's directory.
pub const DATA_FILE: &str = "streams.redb";

/// Memory redb may use to cache the data file's pages, in bytes (64 MiB).
/// redb's own default is 1 GiB: a hub's resident memory would grow with
/// the data it keeps until it reached that (seen in the soak, issue 18).
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The page cache while the file is checked and, if need be, repaired on
/// opening: none (reads go to the operating system's file cache), see
/// [`DurableStore::open`]. With 4 MiB, a hub restarted after `kill -9` on
/// 97 MiB of data still settled at 16 MiB against 12 MiB after a clean stop.
const REPAIR_CACHE_BYTES: usize = 0;

/// Most writes folded into one transaction (one fsync).
const MAX_BATCH: usize = 4096;

enum Write {
    Push {
        stream: String,
        data: Vec<u8>,
        done: oneshot::Sender<Result<u64>>,
        ticket: Ticket,
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
    db: Arc<::redb::Database>,
    writes: Option<mpsc::UnboundedSender<Write>>,
    writer: Option<std::thread::JoinHandle<()>>,
    incarnation: u64,
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

/// Opens (or creates) the database file at `path` with a page cache of
/// `cache_bytes`; `true` when redb had
/// to repair it first (the last process to write it did not close it:
/// killed, or the machine stopped), with the repair's progress logged.
///
/// # Errors
/// [`ErrorKind::Io`] when the file cannot be opened or is damaged beyond
/// repair.
fn open_database(path: &Path, cache_bytes: usize) -> Result<(::redb::Database, bool)> {
    let repaired = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = repaired.clone();
    let shown = path.display().to_string();
    // redb refuses a damaged file with `Corrupted`, but panics where it is
    // built with debug assertions (a `debug_assert` at the check, by
    // design; this workspace builds it without them even in dev, see the
    // root Cargo.toml, but a user's build may not): either way, a damaged
    // data file is an error here.
    let created = std::panic::catch_unwind(|| {
        ::redb::Builder::new()
            .set_cache_size(cache_bytes)
            .set_repair_callback(move |session| {
                seen.store(true, std::sync::atomic::Ordering::Relaxed);
                info!(
                    path = %shown,
                    progress_percent = (session.progress() * 100.0).round(),
                    "repairing the data file after an unclean shutdown"
                );
            })
            .create(path)
    })
    .map_err(|p| {
        let why = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        storage_error(&format!("{} is damaged", path.display()), why)
    })?;
    let db = created.map_err(|e| storage_error(&format!("cannot open {}", path.display()), e))?;
    Ok((db, repaired.load(std::sync::atomic::Ordering::Relaxed)))
}

impl DurableStore {
    /// Opens (or creates) the store in directory `dir`, caching at most
    /// 64 MiB of it in memory (redb's default: 1 GiB).
    pub fn open(dir: &Path) -> Result<DurableStore> {
        std::fs::create_dir_all(dir)
            .map_err(|e| storage_error(&format!("cannot create {}", dir.display()), e))?;
        let path = dir.join(DATA_FILE);
        // A file the last writer did not close (killed, or the machine
        // stopped) is repaired as it opens: redb reads all of it, three
        // times, through its page cache. Opened with the full cache, the
        // hub kept what the repair read: the memory is freed when the file
        // closes, but the allocator keeps it (76 MiB against 10 MiB after
        // a clean stop, issue 18's soak). So the file is opened first with
        // no cache, repaired if it must be, closed cleanly, and opened again
        // with the full cache, now clean, at no cost.
        let (db, repaired) = open_database(&path, REPAIR_CACHE_BYTES)?;
        drop(db);
        let (db, _) = open_database(&path, CACHE_BYTES)?;
        if repaired {
            info!(path = %path.display(), "data file repaired after an unclean shutdown");
        }
        // Make sure the tables exist, so that readers never see them missing.
        let txn = db.begin_write().map_err(|e| storage_error("begin", e))?;
        let incarnation = {
            txn.open_table(MESSAGES)
                .map_err(|e| storage_error("open table", e))?;
            txn.open_table(HEADS)
                .map_err(|e| storage_error("open table", e))?;
            txn.open_table(INDEXES)
                .map_err(|e| storage_error("open table", e))?;
            let mut meta = txn
                .open_table(META)
                .map_err(|e| storage_error("open table", e))?;
            let known = meta
                .get("incarnation")
                .map_err(|e| storage_error("read meta", e))?
                .map(|g| g.value());
            match known {
                Some(i) => i,
                None => {
                    let i = new_incarnation();
                    meta.insert("incarnation", i)
                        .map_err(|e| storage_error("write meta", e))?;
                    i
                }
            }
        };
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
            incarnation,
        })
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&::redb::ReadTransaction) -> Result<T> + Send + 'static,
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

impl Write {
    /// Answers the write with `e`; a push's submitter stores nothing more
    /// (the gap rule, [`crate::sequencer`]).
    fn refuse(self, e: Error) {
        match self {
            Write::Push { done, ticket, .. } => {
                ticket.fail();
                let _ = done.send(Err(e));
            }
            Write::SaveIndex { done, .. } => {
                let _ = done.send(Err(e));
            }
        }
    }
}

/// The writer thread: takes every write waiting, commits them together.
/// A push whose submitter failed meanwhile is left out (the gap rule); when
/// a commit fails, every write in it is refused, and the submitters of its
/// pushes store nothing more.
fn writer(db: Arc<::redb::Database>, mut rx: mpsc::UnboundedReceiver<Write>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(w) = next.take() {
            match w {
                Write::Push { ref ticket, .. } if !ticket.may_store() => w.refuse(after_gap()),
                w => batch.push(w),
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        let n = batch.len();
        let started = std::time::Instant::now();
        let committed = commit(&db, &batch);
        metrics::histogram!(crate::metrics::COMMIT_SECONDS).record(started.elapsed());
        match committed {
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
                    w.refuse(e.clone());
                }
            }
        }
    }
}

fn commit(db: &::redb::Database, batch: &[Write]) -> Result<Vec<u64>> {
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
    fn incarnation(&self) -> u64 {
        self.incarnation
    }

    async fn stats(&self) -> Result<Option<StoreStats>> {
        self.read(|txn| {
            let mut stats = StoreStats::default();
            let heads = txn
                .open_table(HEADS)
                .map_err(|e| storage_error("open", e))?;
            for entry in heads.iter().map_err(|e| storage_error("read heads", e))? {
                let (name, next) = entry.map_err(|e| storage_error("read heads", e))?;
                stats.streams.insert(name.value().to_string(), next.value());
            }
            let indexes = txn
                .open_table(INDEXES)
                .map_err(|e| storage_error("open", e))?;
            for entry in indexes
                .iter()
                .map_err(|e| storage_error("read indexes", e))?
            {
                let (key, at) = entry.map_err(|e| storage_error("read indexes", e))?;
                let (client, stream) = key.value();
                stats
                    .indexes
                    .insert((client.to_string(), stream.to_string()), at.value());
            }
            Ok(Some(stats))
        })
        .await
    }

    fn submit_push(&self, stream: &str, data: Vec<u8>, ticket: Ticket) -> PendingPush {
        let (done, rx) = oneshot::channel();
        let sent = self.send(Write::Push {
            stream: stream.to_string(),
            data,
            done,
            ticket,
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

/// One stream as [`inspect`] finds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamReport {
    /// The stream's name.
    pub name: String,
    /// Messages kept.
    pub messages: u64,
    /// Bytes of their data.
    pub bytes: u64,
    /// The index of the oldest kept message (`None`: none kept).
    pub oldest: Option<u64>,
    /// The index of the newest message (`None`: none kept).
    pub newest: Option<u64>,
    /// The index the next push gets.
    pub next: u64,
    /// The saved read positions in it.
    pub readers: Vec<ReaderReport>,
}

/// A saved read position, as [`inspect`] finds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReaderReport {
    /// The client (on a closed hub: `identity/client_id`).
    pub client: String,
    /// The index of the next message it reads.
    pub index: u64,
    /// Messages between it and the end of the stream.
    pub lag: u64,
}

/// Reads what the durable store in `dir` holds: every stream (or only
/// `only`), its messages, bytes, oldest and newest index, and the read
/// positions saved in it with their lag. Reads the data file itself when
/// no hub has it open; otherwise asks that hub, through the socket it
/// listens on in `dir` ([`INSPECT_SOCKET`]: whoever may read the data
/// directory may ask), and gets the hub's last commit.
///
/// # Errors
/// [`ErrorKind::NotFound`] when `dir` holds no data file;
/// [`ErrorKind::Unavailable`] when the file needs a repair (its hub was
/// killed and has not been started again; a reader cannot repair it), or
/// a hub has it open and does not answer;
/// [`ErrorKind::Io`] when it cannot be read.
pub fn inspect(dir: &Path, only: Option<&str>) -> Result<Vec<StreamReport>> {
    let path = dir.join(DATA_FILE);
    if !path.exists() {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("no hub data file at {}", path.display()),
        ));
    }
    let db = match ::redb::ReadOnlyDatabase::open(&path) {
        Ok(db) => db,
        Err(::redb::DatabaseError::DatabaseAlreadyOpen) => return ask_hub(dir, only),
        // A reader cannot repair: the hub does as it opens the file.
        Err(::redb::DatabaseError::RepairAborted) => {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "{} was not closed cleanly (its hub was killed, or the machine stopped) \
                     and needs the repair a hub makes when it opens it: start the hub on it, \
                     then read it again",
                    path.display()
                ),
            ))
        }
        Err(e) => {
            return Err(storage_error(
                &format!("cannot open {} to read", path.display()),
                e,
            ))
        }
    };
    let txn = db
        .begin_read()
        .map_err(|e| storage_error("begin read", e))?;
    report(&txn, only)
}

/// The socket a hub with a durable store listens on in its data
/// directory, for [`inspect`]: a request is one line, `list` or `show
/// NAME`; the answer is the report as JSON, then the connection closes.
pub const INSPECT_SOCKET: &str = "inspect.sock";

/// [`inspect`] through the socket of the hub that has `dir` open.
fn ask_hub(dir: &Path, only: Option<&str>) -> Result<Vec<StreamReport>> {
    use std::io::{Read, Write};
    let socket = dir.join(INSPECT_SOCKET);
    let unavailable = |e: std::io::Error| {
        Error::with_source(
            ErrorKind::Unavailable,
            format!(
                "a hub has {} open and does not answer on {}",
                dir.join(DATA_FILE).display(),
                socket.display()
            ),
            e,
        )
    };
    let mut conn = std::os::unix::net::UnixStream::connect(&socket).map_err(unavailable)?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(unavailable)?;
    let line = match only {
        Some(name) => format!("show {name}\n"),
        None => "list\n".to_string(),
    };
    conn.write_all(line.as_bytes()).map_err(unavailable)?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).map_err(unavailable)?;
    let answer: std::result::Result<Vec<StreamReport>, String> = serde_json::from_str(&answer)
        .map_err(|e| Error::with_source(ErrorKind::Protocol, "the hub's inspect answer", e))?;
    answer.map_err(|why| Error::new(ErrorKind::Io, why))
}

impl DurableStore {
    /// Answers [`inspect`] requests on `socket` (see [`INSPECT_SOCKET`])
    /// until the store is dropped. A socket file left by a hub that was
    /// killed is replaced.
    ///
    /// # Errors
    /// The socket cannot be made.
    pub fn serve_inspect(self: &Arc<Self>, socket: &Path) -> Result<()> {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket).map_err(|e| {
            Error::with_source(
                ErrorKind::Io,
                format!("cannot listen on {}", socket.display()),
                e,
            )
        })?;
        let store = Arc::downgrade(self);
        tokio::spawn(async move {
            use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
            while let Ok((conn, _)) = listener.accept().await {
                let Some(store) = store.upgrade() else {
                    return;
                };
                tokio::spawn(async move {
                    let (read, mut write) = conn.into_split();
                    let mut line = String::new();
                    let mut read = tokio::io::BufReader::new(read.take(4096));
                    if read.read_line(&mut line).await.is_err() {
                        return;
                    }
                    let only = match line.trim().split_once(' ') {
                        Some(("show", name)) => Some(name.to_string()),
                        _ => None,
                    };
                    let answer = store
                        .read(move |txn| report(txn, only.as_deref()))
                        .await
                        .map_err(|e| e.to_string());
                    let json = serde_json::to_string(&answer).unwrap_or_default();
                    let _ = write.write_all(json.as_bytes()).await;
                });
            }
        });
        Ok(())
    }
}

/// What [`inspect`] reports, read in `txn`.
fn report(txn: &::redb::ReadTransaction, only: Option<&str>) -> Result<Vec<StreamReport>> {
    let heads = txn
        .open_table(HEADS)
        .map_err(|e| storage_error("open", e))?;
    let messages = txn
        .open_table(MESSAGES)
        .map_err(|e| storage_error("open", e))?;
    let indexes = txn
        .open_table(INDEXES)
        .map_err(|e| storage_error("open", e))?;
    let mut readers: HashMap<String, Vec<(String, u64)>> = HashMap::new();
    for entry in indexes.iter().map_err(|e| storage_error("read", e))? {
        let (key, at) = entry.map_err(|e| storage_error("read", e))?;
        let (client, stream) = key.value();
        if only.is_none_or(|o| o == stream) {
            readers
                .entry(stream.to_string())
                .or_default()
                .push((client.to_string(), at.value()));
        }
    }
    let mut out = Vec::new();
    for entry in heads.iter().map_err(|e| storage_error("read", e))? {
        let (name, next) = entry.map_err(|e| storage_error("read", e))?;
        let (name, next) = (name.value().to_string(), next.value());
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let (mut count, mut bytes, mut oldest, mut newest) = (0u64, 0u64, None, None);
        let range = messages
            .range((name.as_str(), 0)..=(name.as_str(), u64::MAX))
            .map_err(|e| storage_error("read", e))?;
        for m in range {
            let (key, data) = m.map_err(|e| storage_error("read", e))?;
            let index = key.value().1;
            oldest.get_or_insert(index);
            newest = Some(index);
            count += 1;
            bytes += data.value().len() as u64;
        }
        let mut stream_readers: Vec<ReaderReport> = readers
            .remove(&name)
            .unwrap_or_default()
            .into_iter()
            .map(|(client, index)| ReaderReport {
                lag: next.saturating_sub(index),
                client,
                index,
            })
            .collect();
        stream_readers.sort_by(|a, b| a.client.cmp(&b.client));
        out.push(StreamReport {
            name,
            messages: count,
            bytes,
            oldest,
            newest,
            next,
            readers: stream_readers,
        });
    }
    Ok(out)
}

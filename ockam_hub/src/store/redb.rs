//! [`DurableStore`]: streams on disk in a `redb` database.

use super::*;
use ::redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};
use ockam_core::internal::sync::lock;
use std::path::Path;
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

/// Messages, as record batches (see [`batch`]): `(stream, base) ->` the
/// messages `base..` of `stream` stored by one commit.
const BATCHES: ::redb::TableDefinition<(&str, u64), &[u8]> =
    ::redb::TableDefinition::new("batches");
/// Messages one record each, `(stream, index) -> data`: data files written
/// before record batches; opening one moves them to [`BATCHES`] (see
/// [`migrate_messages`]).
const MESSAGES: ::redb::TableDefinition<(&str, u64), &[u8]> =
    ::redb::TableDefinition::new("messages");
const HEADS: ::redb::TableDefinition<&str, u64> = ::redb::TableDefinition::new("heads");
const INDEXES: ::redb::TableDefinition<(&str, &str), u64> = ::redb::TableDefinition::new("indexes");
/// Facts about the store itself: its `incarnation`, made when the file
/// is, and its `format` ([`FORMAT`]).
const META: ::redb::TableDefinition<&str, u64> = ::redb::TableDefinition::new("meta");

/// The data file's layout, kept in [`META`] as `format`: 2 since messages
/// are kept as record batches (1, or none: one record per message, moved
/// into batches on opening). A hub refuses a file of a later format, made
/// by a newer hub, instead of misreading it.
const FORMAT: u64 = 2;
/// Per stream: the index of its oldest kept message and the bytes of the
/// messages kept (issue 17, retention).
const STREAM_STATS: ::redb::TableDefinition<&str, (u64, u64)> =
    ::redb::TableDefinition::new("stream_stats");
/// Per stream, when its messages were stored: `(stream, i) -> t`, the
/// first message of a commit to the stream and the commit's time
/// (milliseconds since the Unix epoch); the messages from `i` to the next
/// entry were stored from then to less than [`TIME_GRAIN`] later (a
/// commit within that of the last entry makes none: one table fewer to
/// write for most commits).
const TIMES: ::redb::TableDefinition<(&str, u64), u64> = ::redb::TableDefinition::new("times");

/// How finely [`TIMES`] tells when messages were stored, in milliseconds
/// (1 s): retention by age removes a message up to that much later.
const TIME_GRAIN: u64 = 1000;

/// How many messages one trim removes in one commit, at least, so that
/// trimming a large backlog never holds up pushes for long: it removes
/// whole record batches until this many are gone (so up to this plus one
/// batch's messages).
const TRIM_CHUNK: u64 = 2000;

/// How often retention looks at every stream.
const TRIM_EVERY: Duration = Duration::from_secs(1);

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
    /// Removes messages of `stream` before `to` (about [`TRIM_CHUNK`] of
    /// them, see [`trim`]); answers the new oldest index. Committed in a
    /// transaction of its own: a trim that fails (a damaged batch) fails
    /// alone.
    Trim {
        stream: String,
        to: u64,
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
    db: Arc<::redb::Database>,
    writes: Arc<Writes>,
    writer: Option<std::thread::JoinHandle<()>>,
    incarnation: u64,
}

impl Drop for DurableStore {
    fn drop(&mut self) {
        // Let the writer finish what it was given, then close the file.
        lock(&self.writes.queue).closing = true;
        self.writes.wake.notify_one();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        // Close the file and the log now, even if the flush thread still
        // holds these writes for a moment.
        drop(lock(&self.writes.committer).take());
    }
}

/// The writes waiting for a commit, and who commits them: one committer
/// at a time, the writer thread or (`--fsync interval`, nothing waiting)
/// the task that submits a push or a read position, which then commits it
/// itself, without the two thread hand-offs a commit on the writer thread
/// costs (an in-process push took 131 µs at p50 on this machine through
/// the writer thread, 59 µs committed by its submitter; a commit without
/// fsync takes about 40 µs in a tight loop). See [`DurableStore::submit`].
struct Writes {
    queue: Mutex<Queue>,
    /// Wakes the writer thread when it has work ([`Queue::writer_turn`])
    /// or the store closes.
    wake: std::sync::Condvar,
    /// What commits: taken by the one committer ([`Queue::busy`]); `None`
    /// once the store is closed (the database file and the log closed with
    /// it, whoever holds the last reference to these writes).
    committer: Mutex<Option<Committer>>,
    /// Whether a submitter may commit its write itself (`--fsync
    /// interval`: a commit without fsync is short; with `always`, an fsync
    /// would hold up the submitter's executor thread).
    inline: bool,
}

/// See [`Writes`]. When no committer is busy, nothing waits.
#[derive(Default)]
struct Queue {
    /// In the order submitted.
    writes: Vec<Write>,
    /// `--fsync interval`: make everything committed so far durable.
    flush: bool,
    /// A committer is at work (the writer thread, or a submitter committing
    /// its own write): whatever is submitted meanwhile waits here for the
    /// writer thread (which a submitter that committed hands them to).
    busy: bool,
    /// The committer is the writer thread.
    writer_turn: bool,
    /// The store is closing: the writer commits what waits, makes it
    /// durable and ends.
    closing: bool,
    /// A committer panicked: nothing more is committed (see
    /// [`Committing`]).
    broken: bool,
    /// When the last commit ended.
    last_commit: Option<std::time::Instant>,
    /// The writer thread waits for more writes before its commit (see
    /// [`LINGER`]).
    lingering: bool,
}

/// `--fsync interval` under load: how long the writer thread lets writes
/// gather before a commit, when few wait and its last commit held many
/// (Kafka's `linger.ms`, on the side that stores). A commit without fsync
/// is short, so without it the writer would commit a few writes at a
/// time, paying a commit's fixed cost (its tables' pages, written back)
/// for each few; with `always`, the fsync itself lets them gather. Writes
/// that come alone or in small groups never wait for it.
const LINGER: Duration = Duration::from_micros(500);
/// Enough writes waiting to commit them without lingering.
const LINGER_WRITES: usize = 256;
/// The writes in the last commit from which the next lingers.
const LINGER_AFTER: usize = 32;

/// How long the store must have been idle (no commit) for a write to be
/// committed by its submitter (see [`Writes`]): a write that follows
/// another more closely is likely one of many (a client's pipelined
/// pushes, many clients at once), which the writer thread groups into one
/// commit; committed one by one by their submitter, they would not be.
const IDLE: Duration = Duration::from_micros(100);

/// Held by the writer thread while it commits (a submitter committing its
/// own write catches a panic instead): if it panics (a bug, or redb on a
/// damaged file), the store stops taking writes and refuses those
/// waiting, instead of leaving them unanswered behind a committer that is
/// gone. The writes of the commit it was making are answered too: their
/// answer channels close as it unwinds.
struct Committing<'a>(&'a Writes);

impl Drop for Committing<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop_after_panic();
        }
    }
}

impl Writes {
    /// A committer panicked: no more writes are taken, and those waiting
    /// are refused (see [`Committing`]).
    fn stop_after_panic(&self) {
        error!("a storage commit panicked; the store takes no more writes (restart the hub)");
        let mut q = lock(&self.queue);
        q.broken = true;
        for w in std::mem::take(&mut q.writes) {
            w.refuse(Error::new(ErrorKind::Unavailable, "storage writer stopped"));
        }
        self.wake.notify_one();
    }
}

/// The database and the write-ahead log, written by one committer at a
/// time.
struct Committer {
    db: Arc<::redb::Database>,
    wal: Option<wal::Wal>,
    durability: ::redb::Durability,
    /// Commits since the last durable one (`--fsync interval`).
    dirty: bool,
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
    .map_err(|p| damaged(path, p))?;
    let db = created.map_err(|e| storage_error(&format!("cannot open {}", path.display()), e))?;
    Ok((db, repaired.load(std::sync::atomic::Ordering::Relaxed)))
}

/// The error for a data file at `path` that made redb panic with `panic`.
fn damaged(path: &Path, panic: Box<dyn std::any::Any + Send>) -> Error {
    let why = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    storage_error(&format!("{} is damaged", path.display()), why)
}

impl DurableStore {
    /// Opens (or creates) the store in directory `dir`, caching at most
    /// 64 MiB of it in memory (redb's default: 1 GiB); pushes are
    /// confirmed once fsynced ([`Fsync::Always`]).
    ///
    /// # Errors
    /// As [`DurableStore::open_with`].
    pub fn open(dir: &Path) -> Result<DurableStore> {
        Self::open_with(dir, Fsync::Always)
    }

    /// [`DurableStore::open`] with pushes made durable as `fsync` says.
    /// With [`Fsync::Interval`], a write-ahead log left by a process that
    /// died is replayed first (progress logged).
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when the directory, the data file or the log
    /// cannot be made, read or written, or the data file is damaged.
    pub fn open_with(dir: &Path, fsync: Fsync) -> Result<DurableStore> {
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
        // Make sure the tables exist, so that readers never see them
        // missing. A damaged file can make redb panic here as in opening
        // (see `open_database`): an error too.
        let incarnation = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            {
                let txn = db
                    .begin_read()
                    .map_err(|e| storage_error("begin read", e))?;
                check_format(&txn, &path)?;
            }
            migrate_messages(&db)?;
            prepare(&db)
        }))
        .unwrap_or_else(|p| Err(damaged(&path, p)))?;
        // A log left by `--fsync interval`, whatever the mode now: what it
        // holds was confirmed.
        let logged = wal::read(dir)?;
        if !logged.is_empty() {
            replay(&db, logged)?;
        }
        let wal = match fsync {
            Fsync::Always => {
                let _ = std::fs::remove_file(dir.join(WAL_FILE));
                None
            }
            Fsync::Interval(_) => {
                let mut wal = wal::Wal::open(dir)?;
                wal.clear()?;
                Some(wal)
            }
        };
        let db = Arc::new(db);
        let durability = if wal.is_some() {
            ::redb::Durability::None
        } else {
            ::redb::Durability::Immediate
        };
        let writes = Arc::new(Writes {
            queue: Mutex::new(Queue::default()),
            wake: std::sync::Condvar::new(),
            committer: Mutex::new(Some(Committer {
                db: db.clone(),
                wal,
                durability,
                dirty: false,
            })),
            inline: matches!(fsync, Fsync::Interval(_)),
        });
        if let Fsync::Interval(every) = fsync {
            // Asks the writer for a durable commit every interval. Holds
            // the writes weakly, so that it ends once the store is gone
            // (started first: if the writer cannot be, it ends at once).
            let flushes = Arc::downgrade(&writes);
            std::thread::Builder::new()
                .name("hub-store-flush".into())
                .spawn(move || loop {
                    std::thread::sleep(every);
                    let Some(writes) = flushes.upgrade() else {
                        return;
                    };
                    let mut q = lock(&writes.queue);
                    if q.closing {
                        return;
                    }
                    q.flush = true;
                    if !q.busy {
                        q.busy = true;
                        q.writer_turn = true;
                        writes.wake.notify_one();
                    }
                })
                .map_err(|e| storage_error("cannot start the flush thread", e))?;
        }
        let for_writer = writes.clone();
        let writer = std::thread::Builder::new()
            .name("hub-store-writer".into())
            .spawn(move || writer(&for_writer))
            .map_err(|e| storage_error("cannot start the writer thread", e))?;
        info!(path = %path.display(), ?fsync, "durable stream store open");
        Ok(DurableStore {
            db,
            writes,
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

    /// Submits `w` for a commit: into the queue, for the committer at work
    /// or for the writer thread; or, with `--fsync interval`, when nothing
    /// waits, no commit ended in the last [`IDLE`] and `w` is a push or a
    /// read position, committed at once on the caller's thread (see
    /// [`Writes`]). `w` is answered through its channel either way (a
    /// commit that panics drops it unanswered: "storage writer stopped").
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] when the store is closing, or stopped
    /// taking writes after a committer panicked.
    fn submit(&self, w: Write) -> Result<()> {
        let writes = &self.writes;
        let mut q = lock(&writes.queue);
        if q.closing {
            return Err(Error::new(ErrorKind::Unavailable, "storage closed"));
        }
        if q.broken {
            return Err(Error::new(ErrorKind::Unavailable, "storage writer stopped"));
        }
        let inline = writes.inline
            && !matches!(w, Write::Trim { .. })
            && q.last_commit.is_none_or(|t| t.elapsed() >= IDLE);
        if q.busy || !inline {
            q.writes.push(w);
            if q.lingering && q.writes.len() == LINGER_WRITES {
                writes.wake.notify_one();
            }
            if !q.busy {
                q.busy = true;
                q.writer_turn = true;
                writes.wake.notify_one();
            }
            return Ok(());
        }
        // Nothing waits (no committer is busy): this write is the next.
        q.busy = true;
        drop(q);
        let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if let Some(c) = lock(&writes.committer).as_mut() {
                c.commit(vec![w], false);
            }
        }));
        if committed.is_err() {
            // Its write's answer channel was dropped as it unwound.
            writes.stop_after_panic();
            return Ok(());
        }
        let mut q = lock(&writes.queue);
        q.last_commit = Some(std::time::Instant::now());
        if q.writes.is_empty() && !q.flush {
            q.busy = false;
        } else {
            // Submitted meanwhile: for the writer thread.
            q.writer_turn = true;
            writes.wake.notify_one();
        }
        Ok(())
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
            Write::Trim { done, .. } => {
                let _ = done.send(Err(e));
            }
        }
    }
}

/// The writer thread: when it is its turn, takes every write waiting and
/// commits them together, until none waits; makes the commits durable
/// when asked (`--fsync interval`) and when the store closes.
fn writer(writes: &Writes) {
    let mut q = lock(&writes.queue);
    // The writes in the last commit (see `LINGER`).
    let mut last_size = 0;
    loop {
        while !q.writer_turn && !q.closing && !q.broken {
            q = writes
                .wake
                .wait(q)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if !q.writer_turn || q.broken {
            // Closing, and nothing waits (no committer is busy); or a
            // committer panicked.
            break;
        }
        if writes.inline && last_size >= LINGER_AFTER {
            // Until enough wait (a submitter wakes it then) or time is up.
            let until = std::time::Instant::now() + LINGER;
            q.lingering = true;
            while !q.closing && q.writes.len() < LINGER_WRITES {
                let left = until.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                q = writes
                    .wake
                    .wait_timeout(q, left)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
            q.lingering = false;
        }
        let batch = std::mem::take(&mut q.writes);
        let flush = std::mem::take(&mut q.flush);
        if batch.is_empty() && !flush {
            q.writer_turn = false;
            q.busy = false;
            // Idle: the next write does not linger.
            last_size = 0;
            continue;
        }
        drop(q);
        last_size = batch.len();
        let committing = Committing(writes);
        if let Some(c) = lock(&writes.committer).as_mut() {
            c.commit(batch, flush);
        }
        drop(committing);
        q = lock(&writes.queue);
        q.last_commit = Some(std::time::Instant::now());
    }
    drop(q);
    // The store is closing: what was committed becomes durable now.
    if let Some(c) = lock(&writes.committer).as_mut() {
        c.flush();
    }
}

impl Committer {
    /// Commits `batch`, at most [`MAX_BATCH`] writes a transaction, and
    /// answers each write; then, if `flush`, makes everything durable. A
    /// push whose submitter failed meanwhile is left out (the gap rule);
    /// when a commit fails, every write in it is refused, and the
    /// submitters of its pushes store nothing more.
    fn commit(&mut self, batch: Vec<Write>, flush: bool) {
        let mut admitted = Vec::with_capacity(batch.len());
        let mut trims = Vec::new();
        for w in batch {
            match w {
                // Alone: a trim that fails fails no push.
                Write::Trim { .. } => trims.push(w),
                Write::Push { ref ticket, .. } if !ticket.may_store() => w.refuse(after_gap()),
                // Its length would not fit a record batch (see `batch`).
                Write::Push { ref data, .. } if u32::try_from(data.len()).is_err() => w.refuse(
                    Error::new(ErrorKind::InvalidInput, "a message of 4 GiB or more"),
                ),
                w => admitted.push(w),
            }
            if admitted.len() == MAX_BATCH {
                self.write_batch(std::mem::take(&mut admitted));
            }
        }
        if !admitted.is_empty() {
            self.write_batch(admitted);
        }
        for trim in trims {
            self.write_batch(vec![trim]);
        }
        if flush {
            self.flush();
        }
    }

    /// `--fsync interval`: makes everything committed so far durable; the
    /// log, whose records it all holds, starts over.
    fn flush(&mut self) {
        let Some(wal) = self.wal.as_mut() else {
            return;
        };
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        let started = std::time::Instant::now();
        let flushed = durable_commit(&self.db).and_then(|()| wal.clear());
        metrics::histogram!(crate::metrics::COMMIT_SECONDS).record(started.elapsed());
        if let Err(e) = flushed {
            error!(error = %e, "the interval's fsync failed; trying again at the next");
            self.dirty = true;
        }
    }

    /// Commits `batch`, logs it in the write-ahead log if there is one,
    /// then answers each write: a push is confirmed only after both.
    fn write_batch(&mut self, batch: Vec<Write>) {
        let n = batch.len();
        let started = std::time::Instant::now();
        let mut logged = Vec::new();
        let log = self.wal.is_some().then_some(&mut logged);
        let mut committed = commit(&self.db, &batch, self.durability, log);
        self.dirty = true;
        if let (Ok(indexes), Some(wal)) = (&committed, self.wal.as_mut()) {
            // The record batches, then the read positions.
            let records: Vec<wal::RecordRef<'_>> = logged
                .iter()
                .map(|(stream, base, batch)| wal::RecordRef::Batch {
                    stream,
                    base: *base,
                    batch,
                })
                .chain(batch.iter().zip(indexes).filter_map(|(w, &index)| match w {
                    Write::SaveIndex { client, stream, .. } => Some(wal::RecordRef::Save {
                        client,
                        stream,
                        index,
                    }),
                    Write::Push { .. } | Write::Trim { .. } => None,
                }))
                .collect();
            if let Err(e) = wal.append(&records) {
                // Committed, but not safe from a crash: not confirmed (the
                // clients resend; the gap rule stops their later pushes).
                committed = Err(e);
            }
        }
        if matches!(self.durability, ::redb::Durability::Immediate) {
            metrics::histogram!(crate::metrics::COMMIT_SECONDS).record(started.elapsed());
        }
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
                        Write::Trim { done, .. } => {
                            let _ = done.send(Ok(index));
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

/// Applies the write-ahead log's records that the database lacks (a
/// process that died after confirming them, before the next fsync): the
/// pushes at each stream's head, and every read position, in order.
fn replay(db: &::redb::Database, records: Vec<wal::Record>) -> Result<()> {
    info!(
        records = records.len(),
        "replaying the write-ahead log (the last hub did not stop cleanly)"
    );
    let txn = db
        .begin_read()
        .map_err(|e| storage_error("begin read", e))?;
    let table = txn
        .open_table(HEADS)
        .map_err(|e| storage_error("open", e))?;
    let mut heads: HashMap<String, u64> = HashMap::new();
    let mut writes = Vec::new();
    let mut skipped = 0usize;
    // Pushes as logged: one by one (logs from before record batches), or
    // a batch's messages.
    let pushes = records.into_iter().flat_map(|r| -> Vec<ReplayItem> {
        match r {
            wal::Record::Push {
                stream,
                index,
                data,
            } => vec![ReplayItem::Push(stream, index, data)],
            wal::Record::Batch {
                stream,
                base,
                batch,
            } => (base..)
                .zip(batch::messages(&batch))
                .map(|(index, data)| match data {
                    Ok(data) => ReplayItem::Push(stream.clone(), index, data.to_vec()),
                    // Cut short: never, the log's own framing holds whole
                    // records (counted as not applied).
                    Err(_) => ReplayItem::Damaged,
                })
                .collect(),
            wal::Record::Save {
                client,
                stream,
                index,
            } => vec![ReplayItem::Save(client, stream, index)],
        }
    });
    for r in pushes {
        match r {
            ReplayItem::Damaged => skipped += 1,
            ReplayItem::Push(stream, index, data) => {
                let head = match heads.get_mut(&stream) {
                    Some(h) => h,
                    None => {
                        let h = table
                            .get(stream.as_str())
                            .map_err(|e| storage_error("read head", e))?
                            .map_or(0, |g| g.value());
                        heads.entry(stream.clone()).or_insert(h)
                    }
                };
                if index != *head {
                    // Already in the database (index below), or after a
                    // record that was not (above: never, the log is in
                    // order; counted).
                    skipped += 1;
                    continue;
                }
                *head += 1;
                writes.push(Write::Push {
                    stream,
                    data,
                    done: oneshot::channel().0,
                    ticket: Ticket::alone(),
                });
            }
            ReplayItem::Save(client, stream, index) => writes.push(Write::SaveIndex {
                client,
                stream,
                index,
                done: oneshot::channel().0,
            }),
        }
    }
    drop(table);
    drop(txn);
    let total = writes.len();
    let mut done = 0usize;
    for chunk in writes.chunks(MAX_BATCH) {
        commit(db, chunk, ::redb::Durability::Immediate, None)?;
        done += chunk.len();
        info!(done, left = total - done, "replaying the write-ahead log");
    }
    info!(
        applied = total,
        already_stored = skipped,
        "write-ahead log replayed"
    );
    Ok(())
}

/// What [`replay`] applies: a push, a read position, or a batch's
/// message it could not read.
enum ReplayItem {
    Push(String, u64, Vec<u8>),
    Save(String, String, u64),
    Damaged,
}

/// An empty commit with fsync: makes every commit before it durable.
fn durable_commit(db: &::redb::Database) -> Result<()> {
    let txn = db.begin_write().map_err(|e| storage_error("begin", e))?;
    txn.commit().map_err(|e| storage_error("commit", e))
}

/// What one commit pushed to one stream.
struct Pushed {
    /// The index of its first message in the commit.
    first: u64,
    /// The index its next message gets.
    next: u64,
    /// The bytes of its messages in the commit.
    bytes: u64,
    /// The record batch being built: messages from `base` on.
    batch: Vec<u8>,
    /// The index of the batch's first message.
    base: u64,
}

impl Pushed {
    /// Stores the batch being built, if it holds anything (and hands it
    /// to `log`, if any), and starts the next one at `self.next`.
    fn store_batch<'a>(
        &mut self,
        batches: &mut ::redb::Table<(&str, u64), &[u8]>,
        stream: &'a str,
        log: Option<&mut Vec<(&'a str, u64, Vec<u8>)>>,
    ) -> Result<()> {
        if !self.batch.is_empty() {
            batches
                .insert((stream, self.base), self.batch.as_slice())
                .map_err(|e| storage_error("insert", e))?;
            match log {
                Some(log) => log.push((stream, self.base, std::mem::take(&mut self.batch))),
                None => self.batch.clear(),
            }
        }
        self.base = self.next;
        Ok(())
    }
}

/// Commits `batch` with `durability`; the index each write got (a push's,
/// a trim's new oldest, a read position's). With `log`, the record
/// batches written go there too (stream, base, batch), for the
/// write-ahead log.
fn commit<'a>(
    db: &::redb::Database,
    batch: &'a [Write],
    durability: ::redb::Durability,
    mut log: Option<&mut Vec<(&'a str, u64, Vec<u8>)>>,
) -> Result<Vec<u64>> {
    let mut txn = db.begin_write().map_err(|e| storage_error("begin", e))?;
    txn.set_durability(durability)
        .map_err(|e| storage_error("durability", e))?;
    let mut out = Vec::with_capacity(batch.len());
    {
        let mut batches = txn
            .open_table(BATCHES)
            .map_err(|e| storage_error("open", e))?;
        let mut heads = txn
            .open_table(HEADS)
            .map_err(|e| storage_error("open", e))?;
        let mut indexes = txn
            .open_table(INDEXES)
            .map_err(|e| storage_error("open", e))?;
        let mut stats = txn
            .open_table(STREAM_STATS)
            .map_err(|e| storage_error("open", e))?;
        let mut times = txn
            .open_table(TIMES)
            .map_err(|e| storage_error("open", e))?;
        // Per stream pushed to: its first index in this commit, its next,
        // the bytes added and its record batch (its head read once and
        // written once, one stats update, one time entry, and one insert
        // per batch).
        let mut pushed: HashMap<&str, Pushed> = HashMap::new();
        for w in batch {
            match w {
                Write::Push { stream, data, .. } => {
                    let p = match pushed.get_mut(stream.as_str()) {
                        Some(p) => p,
                        None => {
                            let next = heads
                                .get(stream.as_str())
                                .map_err(|e| storage_error("read head", e))?
                                .map_or(0, |g| g.value());
                            pushed.entry(stream.as_str()).or_insert(Pushed {
                                first: next,
                                next,
                                bytes: 0,
                                batch: Vec::new(),
                                base: next,
                            })
                        }
                    };
                    if !batch::fits(&p.batch, data) {
                        p.store_batch(&mut batches, stream, log.as_deref_mut())?;
                    }
                    batch::append(&mut p.batch, data)?;
                    let index = p.next;
                    p.next += 1;
                    p.bytes += data.len() as u64;
                    out.push(index);
                }
                Write::Trim { stream, to, .. } => {
                    let oldest = trim(&mut batches, &mut stats, &mut times, stream, *to)?;
                    out.push(oldest);
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
        let now = unix_millis();
        for (stream, mut p) in pushed {
            p.store_batch(&mut batches, stream, log.as_deref_mut())?;
            heads
                .insert(stream, p.next)
                .map_err(|e| storage_error("update head", e))?;
            let (oldest, kept) = stats
                .get(stream)
                .map_err(|e| storage_error("read stats", e))?
                .map_or((p.first, 0), |g| g.value());
            stats
                .insert(stream, (oldest, kept + p.bytes))
                .map_err(|e| storage_error("update stats", e))?;
            let last = times
                .range((stream, 0)..=(stream, u64::MAX))
                .map_err(|e| storage_error("read times", e))?
                .next_back()
                .transpose()
                .map_err(|e| storage_error("read times", e))?
                .map(|(_, t)| t.value());
            if last.is_none_or(|t| now.saturating_sub(t) >= TIME_GRAIN) {
                times
                    .insert((stream, p.first), now)
                    .map_err(|e| storage_error("update times", e))?;
            }
        }
    }
    // Durability::Immediate: on disk when this returns; None: in this
    // process's memory, logged by the caller, durable at the next flush.
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
        let sent = self.submit(Write::Push {
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
        self.read(move |txn| read_messages(txn, &stream, from, limit, max_bytes))
            .await
    }

    /// Reads on the caller's task: the messages were just committed, so
    /// their pages are in redb's cache (no disk read to wait for).
    async fn pull_fresh(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| storage_error("begin read", e))?;
        read_messages(&txn, stream, from, limit, max_bytes)
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
        self.submit(Write::SaveIndex {
            client: client.to_string(),
            stream: stream.to_string(),
            index,
            done,
        })?;
        rx.await
            .map_err(|_| Error::new(ErrorKind::Unavailable, "storage writer stopped"))?
    }
}

/// Up to `limit` messages of `stream` from `from` on, within `max_bytes`
/// (see [`StreamStore::pull`]): from the record batch holding `from` on.
fn read_messages(
    txn: &::redb::ReadTransaction,
    stream: &str,
    from: u64,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<(u64, Vec<u8>)>> {
    let table = txn
        .open_table(BATCHES)
        .map_err(|e| storage_error("open", e))?;
    let start = batch_holding(&table, stream, from)?;
    let mut within = Within::new(limit, max_bytes);
    for entry in table
        .range((stream, start)..=(stream, u64::MAX))
        .map_err(|e| storage_error("range", e))?
    {
        let (key, value) = entry.map_err(|e| storage_error("read", e))?;
        for (index, data) in (key.value().1..).zip(batch::messages(value.value())) {
            // A damaged batch is an error even before `from`: its
            // messages after the damage cannot be read.
            let data = data?;
            if index >= from && !within.take(index, data) {
                return Ok(within.out);
            }
        }
    }
    Ok(within.out)
}

/// The base of the record batch of `stream` holding message `index`
/// (the last to start at or before it), or `index` when there is none.
fn batch_holding(
    batches: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    stream: &str,
    index: u64,
) -> Result<u64> {
    Ok(batches
        .range((stream, 0)..=(stream, index))
        .map_err(|e| storage_error("range", e))?
        .next_back()
        .transpose()
        .map_err(|e| storage_error("read", e))?
        .map_or(index, |(key, _)| key.value().1))
}

/// Creates the tables that are missing, counts what each stream keeps if
/// it was never counted, and returns the store's incarnation (made with
/// the file).
fn prepare(db: &::redb::Database) -> Result<u64> {
    let txn = db.begin_write().map_err(|e| storage_error("begin", e))?;
    let incarnation = {
        txn.open_table(BATCHES)
            .map_err(|e| storage_error("open table", e))?;
        txn.open_table(HEADS)
            .map_err(|e| storage_error("open table", e))?;
        txn.open_table(INDEXES)
            .map_err(|e| storage_error("open table", e))?;
        txn.open_table(TIMES)
            .map_err(|e| storage_error("open table", e))?;
        backfill_stats(&txn)?;
        let mut meta = txn
            .open_table(META)
            .map_err(|e| storage_error("open table", e))?;
        let known = meta
            .get("incarnation")
            .map_err(|e| storage_error("read meta", e))?
            .map(|g| g.value());
        meta.insert("format", FORMAT)
            .map_err(|e| storage_error("write meta", e))?;
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
    Ok(incarnation)
}

/// Refuses a data file (at `path`, read in `txn`) of a later [`FORMAT`]
/// than this hub's.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for such a file; [`ErrorKind::Io`] when its
/// format cannot be read.
fn check_format(txn: &::redb::ReadTransaction, path: &Path) -> Result<()> {
    let Some(meta) = open_if_exists(txn, META)? else {
        return Ok(());
    };
    let format = meta
        .get("format")
        .map_err(|e| storage_error("read meta", e))?
        .map(|g| g.value());
    match format {
        Some(f) if f > FORMAT => Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{} was written by a newer hub (data format {f}; this hub reads up to {FORMAT}): \
                 run that hub, or a newer one",
                path.display()
            ),
        )),
        _ => Ok(()),
    }
}

/// Counts what each stream keeps for streams that have no stats yet (a
/// data file written before retention came, issue 17): their oldest index
/// and bytes, from their messages, and one time (now) for all of them.
/// Logs its progress at info, since a large file takes a while.
fn backfill_stats(txn: &::redb::WriteTransaction) -> Result<()> {
    let heads = txn
        .open_table(HEADS)
        .map_err(|e| storage_error("open table", e))?;
    let mut stats = txn
        .open_table(STREAM_STATS)
        .map_err(|e| storage_error("open table", e))?;
    let mut missing = Vec::new();
    for entry in heads.iter().map_err(|e| storage_error("read heads", e))? {
        let (name, _) = entry.map_err(|e| storage_error("read heads", e))?;
        let name = name.value().to_string();
        if stats
            .get(name.as_str())
            .map_err(|e| storage_error("read stats", e))?
            .is_none()
        {
            missing.push(name);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let batches = txn
        .open_table(BATCHES)
        .map_err(|e| storage_error("open table", e))?;
    let mut times = txn
        .open_table(TIMES)
        .map_err(|e| storage_error("open table", e))?;
    let (total, now) = (missing.len(), unix_millis());
    info!(
        streams = total,
        "counting what each stream keeps (a data file from before retention; once)"
    );
    let mut last_log = std::time::Instant::now();
    for (done, name) in missing.iter().enumerate() {
        let mut kept = Kept::default();
        kept.scan_batches(&batches, name)?;
        let next = heads
            .get(name.as_str())
            .map_err(|e| storage_error("read head", e))?
            .map_or(0, |g| g.value());
        let oldest = kept.oldest.unwrap_or(next);
        stats
            .insert(name.as_str(), (oldest, kept.bytes))
            .map_err(|e| storage_error("write stats", e))?;
        times
            .insert((name.as_str(), oldest), now)
            .map_err(|e| storage_error("write times", e))?;
        if last_log.elapsed() >= Duration::from_secs(2) {
            last_log = std::time::Instant::now();
            info!(
                done = done + 1,
                left = total - done - 1,
                "counting what each stream keeps"
            );
        }
    }
    info!(streams = total, "counted what each stream keeps");
    Ok(())
}

/// The streams over a limit of `policy` at `now` (Unix milliseconds):
/// each with its oldest index and the index to trim it to.
fn trim_targets(
    txn: &::redb::ReadTransaction,
    policy: &crate::retention::RetentionPolicy,
    now: u64,
) -> Result<Vec<(String, u64, u64)>> {
    let heads = txn
        .open_table(HEADS)
        .map_err(|e| storage_error("open", e))?;
    let stats = txn
        .open_table(STREAM_STATS)
        .map_err(|e| storage_error("open", e))?;
    let times = txn
        .open_table(TIMES)
        .map_err(|e| storage_error("open", e))?;
    let batches = txn
        .open_table(BATCHES)
        .map_err(|e| storage_error("open", e))?;
    let mut out = Vec::new();
    for entry in heads.iter().map_err(|e| storage_error("read", e))? {
        let (name, next) = entry.map_err(|e| storage_error("read", e))?;
        let (name, next) = (name.value(), next.value());
        let limits = policy.for_stream(name);
        if !limits.is_limited() {
            continue;
        }
        let Some((oldest, bytes)) = stats
            .get(name)
            .map_err(|e| storage_error("read", e))?
            .map(|g| g.value())
        else {
            continue;
        };
        let mut to = oldest;
        if let Some(max) = limits.max_messages {
            to = to.max(next.saturating_sub(max));
        }
        if let Some(age) = limits.max_age {
            let cutoff = now.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
            // The first messages young enough (their entry's time, plus
            // its grain, at or after the cutoff): everything before goes.
            let mut young = next;
            for e in times
                .range((name, 0)..=(name, u64::MAX))
                .map_err(|e| storage_error("read", e))?
            {
                let (k, t) = e.map_err(|e| storage_error("read", e))?;
                if t.value().saturating_add(TIME_GRAIN) >= cutoff {
                    young = k.value().1;
                    break;
                }
            }
            to = to.max(young);
        }
        if let Some(max) = limits.max_bytes {
            if bytes > max {
                match cut_for_bytes(&batches, name, oldest, next, bytes - max) {
                    Ok(cut) => to = to.max(cut),
                    // This stream alone: the others are still kept within
                    // their limits.
                    Err(e) => {
                        warn!(stream = %name, error = %e, "retention: cannot count this stream's bytes; not trimming it by bytes");
                    }
                }
            }
        }
        let to = to.min(next);
        if to > oldest {
            out.push((name.to_string(), oldest, to));
        }
    }
    Ok(out)
}

/// Where to trim `stream` (kept from `oldest`, next index `next`) so that
/// `over` bytes of its oldest messages go: the index after the last of
/// them.
///
/// # Errors
/// A batch cannot be read (or is damaged).
fn cut_for_bytes(
    batches: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    stream: &str,
    oldest: u64,
    next: u64,
    mut over: u64,
) -> Result<u64> {
    let mut cut = oldest;
    let start = batch_holding(batches, stream, oldest)?;
    for entry in batches
        .range((stream, start)..(stream, next))
        .map_err(|e| storage_error("read", e))?
    {
        let (key, value) = entry.map_err(|e| storage_error("read", e))?;
        for (index, data) in (key.value().1..).zip(batch::messages(value.value())) {
            let data = data?;
            if index < oldest {
                continue;
            }
            if over == 0 {
                return Ok(cut);
            }
            over = over.saturating_sub(data.len() as u64);
            cut = index + 1;
        }
    }
    Ok(cut)
}

/// What a stream keeps, counted message by message.
#[derive(Default)]
struct Kept {
    count: u64,
    bytes: u64,
    oldest: Option<u64>,
    newest: Option<u64>,
}

impl Kept {
    /// Counts message `index` of `bytes`.
    fn add(&mut self, index: u64, bytes: usize) {
        self.oldest.get_or_insert(index);
        self.newest = Some(index);
        self.count += 1;
        self.bytes += bytes as u64;
    }

    /// Counts the messages of `stream` in `batches` (for files without
    /// `stream_stats`: see [`backfill_stats`] and [`inspect`]).
    fn scan_batches(
        &mut self,
        batches: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
        stream: &str,
    ) -> Result<()> {
        for entry in batches
            .range((stream, 0)..=(stream, u64::MAX))
            .map_err(|e| storage_error("read", e))?
        {
            let (key, value) = entry.map_err(|e| storage_error("read", e))?;
            for (index, data) in (key.value().1..).zip(batch::messages(value.value())) {
                self.add(index, data?.len());
            }
        }
        Ok(())
    }

    /// Counts the messages of `stream` in `messages`, a table of a data
    /// file from before record batches that no hub has opened since (only
    /// [`inspect`] reads one).
    fn scan_messages(
        &mut self,
        messages: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
        stream: &str,
    ) -> Result<()> {
        for entry in messages
            .range((stream, 0)..=(stream, u64::MAX))
            .map_err(|e| storage_error("read", e))?
        {
            let (key, data) = entry.map_err(|e| storage_error("read", e))?;
            self.add(key.value().1, data.value().len());
        }
        Ok(())
    }
}

/// Most messages [`migrate_messages`] moves in one commit.
const MIGRATE_CHUNK: u64 = 10_000;

/// Moves the messages of a data file from before record batches (one
/// record per message, in [`MESSAGES`]) into [`BATCHES`], the runs of a
/// stream's consecutive messages as batches, [`MIGRATE_CHUNK`] messages a
/// commit, with its progress logged at info; then drops the old table.
/// Nothing to do for other files. A hub stopped halfway goes on from
/// where it stopped when it opens the file again.
fn migrate_messages(db: &::redb::Database) -> Result<()> {
    let total = {
        let txn = db
            .begin_read()
            .map_err(|e| storage_error("begin read", e))?;
        let Some(messages) = open_if_exists(&txn, MESSAGES)? else {
            return Ok(());
        };
        messages.len().map_err(|e| storage_error("read", e))?
    };
    info!(
        messages = total,
        "moving messages into record batches (a data file from before them; once)"
    );
    let (started, mut last_log, mut done) =
        (std::time::Instant::now(), std::time::Instant::now(), 0u64);
    loop {
        let txn = db.begin_write().map_err(|e| storage_error("begin", e))?;
        let moved = {
            let mut messages = txn
                .open_table(MESSAGES)
                .map_err(|e| storage_error("open table", e))?;
            let mut batches = txn
                .open_table(BATCHES)
                .map_err(|e| storage_error("open table", e))?;
            // The batch being built: its stream, base, next index, bytes.
            let mut building: Option<(String, u64, u64, Vec<u8>)> = None;
            let mut moved = 0u64;
            while moved < MIGRATE_CHUNK {
                let Some((key, value)) =
                    messages.pop_first().map_err(|e| storage_error("read", e))?
                else {
                    break;
                };
                let ((stream, index), data) = (key.value(), value.value());
                match &mut building {
                    Some((s, _, next, b))
                        if s == stream && *next == index && batch::fits(b, data) =>
                    {
                        batch::append(b, data)?;
                        *next += 1;
                    }
                    _ => {
                        if let Some((s, base, _, b)) = building.take() {
                            batches
                                .insert((s.as_str(), base), b.as_slice())
                                .map_err(|e| storage_error("insert", e))?;
                        }
                        let mut b = Vec::new();
                        batch::append(&mut b, data)?;
                        building = Some((stream.to_string(), index, index + 1, b));
                    }
                }
                moved += 1;
            }
            if let Some((s, base, _, b)) = building {
                batches
                    .insert((s.as_str(), base), b.as_slice())
                    .map_err(|e| storage_error("insert", e))?;
            }
            moved
        };
        if moved == 0 {
            txn.delete_table(MESSAGES)
                .map_err(|e| storage_error("drop the old messages table", e))?;
        }
        txn.commit().map_err(|e| storage_error("commit", e))?;
        if moved == 0 {
            break;
        }
        done += moved;
        if last_log.elapsed() >= Duration::from_secs(2) {
            last_log = std::time::Instant::now();
            info!(
                done,
                left = total.saturating_sub(done),
                "moving messages into record batches"
            );
        }
    }
    info!(messages = done, took = ?started.elapsed(), "moved messages into record batches");
    Ok(())
}

/// `table` in `txn`, or `None` when the file has no such table.
fn open_if_exists<K: ::redb::Key + 'static, V: ::redb::Value + 'static>(
    txn: &::redb::ReadTransaction,
    table: ::redb::TableDefinition<K, V>,
) -> Result<Option<::redb::ReadOnlyTable<K, V>>> {
    match txn.open_table(table) {
        Ok(t) => Ok(Some(t)),
        Err(::redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(storage_error("open", e)),
    }
}

/// Milliseconds since the Unix epoch.
fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Removes the messages of `stream` before `to`, whole record batches
/// until at least [`TRIM_CHUNK`] messages are gone (the batch holding `to`
/// is cut: its messages from `to` on are stored again, from `to`), with
/// their bytes from its stats and the times that no longer cover a kept
/// message; returns the new oldest index.
fn trim(
    batches: &mut ::redb::Table<(&str, u64), &[u8]>,
    stats: &mut ::redb::Table<&str, (u64, u64)>,
    times: &mut ::redb::Table<(&str, u64), u64>,
    stream: &str,
    to: u64,
) -> Result<u64> {
    let Some((oldest, bytes)) = stats
        .get(stream)
        .map_err(|e| storage_error("read stats", e))?
        .map(|g| g.value())
    else {
        return Ok(0);
    };
    if to <= oldest {
        return Ok(oldest);
    }
    // The batches to remove whole, and the one to cut (its base and the
    // messages it keeps).
    let mut whole = Vec::new();
    let mut cut: Option<(u64, Vec<u8>)> = None;
    let (mut until, mut removed) = (to, 0u64);
    for entry in batches
        .range((stream, 0)..(stream, to))
        .map_err(|e| storage_error("read", e))?
    {
        let (key, value) = entry.map_err(|e| storage_error("read", e))?;
        let (base, value) = (key.value().1, value.value());
        let (count, data_bytes) = batch::count(value)?;
        let end = base + count;
        if end > to {
            let (gone, rest) = batch::split(value, to - base)?;
            removed += gone;
            cut = Some((base, rest.to_vec()));
            break;
        }
        whole.push(base);
        removed += data_bytes;
        if end.saturating_sub(oldest) >= TRIM_CHUNK && end < to {
            until = end;
            break;
        }
    }
    for base in whole {
        batches
            .remove((stream, base))
            .map_err(|e| storage_error("trim", e))?;
    }
    if let Some((base, rest)) = cut {
        batches
            .remove((stream, base))
            .map_err(|e| storage_error("trim", e))?;
        batches
            .insert((stream, to), rest.as_slice())
            .map_err(|e| storage_error("trim", e))?;
    }
    stats
        .insert(stream, (until, bytes.saturating_sub(removed)))
        .map_err(|e| storage_error("update stats", e))?;
    // The time entries before `until`: the last one still covers `until`
    // (unless an entry starts there), so it moves to `until`.
    let before: Vec<(u64, u64)> = times
        .range((stream, 0)..(stream, until))
        .map_err(|e| storage_error("read times", e))?
        .map(|e| e.map(|(k, v)| (k.value().1, v.value())))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| storage_error("read times", e))?;
    if let Some(&(_, t)) = before.last() {
        for (i, _) in &before {
            times
                .remove((stream, *i))
                .map_err(|e| storage_error("trim times", e))?;
        }
        let starts_there = times
            .get((stream, until))
            .map_err(|e| storage_error("read times", e))?
            .is_some();
        if !starts_there {
            times
                .insert((stream, until), t)
                .map_err(|e| storage_error("trim times", e))?;
        }
    }
    Ok(until)
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
    check_format(&txn, &path)?;
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
    /// Keeps each stream within its limits in `policy` (issue 17; see
    /// [`crate::retention`]): every second a task looks at every
    /// stream and removes its oldest messages past a limit, whole record
    /// batches of at least a few thousand messages per commit, between the
    /// pushes (which it never holds up for long).
    /// Removed messages' pages are reused for new ones, so the data file
    /// stops growing; it does not shrink. Runs until the store is dropped.
    pub fn start_retention(self: &Arc<Self>, policy: crate::retention::RetentionPolicy) {
        if !policy.is_limited() {
            return;
        }
        let store = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TRIM_EVERY).await;
                let Some(store) = store.upgrade() else {
                    return;
                };
                if let Err(e) = store.enforce(&policy).await {
                    warn!(error = %e, "retention: could not trim; trying again");
                }
            }
        });
    }

    /// One round of retention: every stream over a limit is trimmed to it.
    async fn enforce(&self, policy: &crate::retention::RetentionPolicy) -> Result<()> {
        let now = unix_millis();
        let policy = policy.clone();
        let targets = self
            .read(move |txn| trim_targets(txn, &policy, now))
            .await?;
        for (stream, oldest, to) in targets {
            let started = std::time::Instant::now();
            let mut last_log = started;
            let mut at = oldest;
            while at < to {
                let (done, answer) = oneshot::channel();
                self.submit(Write::Trim {
                    stream: stream.clone(),
                    to,
                    done,
                })?;
                let next = answer
                    .await
                    .map_err(|_| Error::new(ErrorKind::Unavailable, "storage writer stopped"))??;
                if next <= at {
                    break;
                }
                at = next;
                if last_log.elapsed() >= Duration::from_secs(2) {
                    last_log = std::time::Instant::now();
                    info!(%stream, removed = at - oldest, left = to - at, "retention: trimming");
                }
            }
            info!(%stream, removed = at - oldest, oldest = at, took = ?started.elapsed(), "retention: trimmed the oldest messages");
        }
        Ok(())
    }

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
    // A file no hub opened since record batches came has no batches,
    // and its messages one a record (counted where it has no stats).
    let batches = open_if_exists(txn, BATCHES)?;
    let messages = open_if_exists(txn, MESSAGES)?;
    let indexes = txn
        .open_table(INDEXES)
        .map_err(|e| storage_error("open", e))?;
    let stats = open_if_exists(txn, STREAM_STATS)?;
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
        let kept = match &stats {
            Some(stats) => stats
                .get(name.as_str())
                .map_err(|e| storage_error("read", e))?
                .map(|g| g.value()),
            None => None,
        };
        let (count, bytes, oldest, newest) = match kept {
            Some((first, bytes)) => {
                let count = next.saturating_sub(first);
                let some = |i| (count > 0).then_some(i);
                (count, bytes, some(first), some(next.saturating_sub(1)))
            }
            // A file from before retention kept these (issue 17): counted.
            None => {
                let mut kept = Kept::default();
                if let Some(batches) = &batches {
                    kept.scan_batches(batches, &name)?;
                }
                if let Some(messages) = &messages {
                    kept.scan_messages(messages, &name)?;
                }
                (kept.count, kept.bytes, kept.oldest, kept.newest)
            }
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::{Retention, RetentionPolicy};

    /// Message `i` of the tests' streams: its size varies (0 to 3 KiB, and
    /// every 97th bigger than a whole batch), its bytes say `i`.
    fn message(i: u64) -> Vec<u8> {
        let len = if i % 97 == 50 {
            batch::MAX_BATCH_BYTES + 10
        } else {
            (i as usize * 37) % 3072
        };
        let mut m = vec![(i % 251) as u8; len];
        if len >= 8 {
            m[..8].copy_from_slice(&i.to_le_bytes());
        }
        m
    }

    /// Pushes messages `from..to` of `stream` at once, so that they share
    /// commits (and record batches); returns when all are stored.
    async fn push_all(store: &DurableStore, stream: &str, range: std::ops::Range<u64>) {
        let pending: Vec<_> = range
            .clone()
            .map(|i| store.submit_push(stream, message(i), Ticket::alone()))
            .collect();
        for (i, p) in range.zip(pending) {
            assert_eq!(p.await.unwrap(), i);
        }
    }

    /// Every message of `stream` from `from` on, pulled `limit` at a time.
    async fn pull_all(store: &DurableStore, stream: &str, from: u64, limit: usize) -> Vec<u64> {
        let mut got = Vec::new();
        let mut at = from;
        loop {
            let some = store.pull(stream, at, limit, usize::MAX).await.unwrap();
            let Some(&(last, _)) = some.last() else {
                return got;
            };
            for (i, data) in some {
                assert_eq!(data, message(i), "message {i}");
                got.push(i);
            }
            at = last + 1;
        }
    }

    async fn kept(store: &DurableStore, stream: &str) -> StreamReport {
        let stream = stream.to_string();
        store
            .read(move |txn| report(txn, Some(&stream)))
            .await
            .unwrap()
            .remove(0)
    }

    fn bytes_of(range: std::ops::Range<u64>) -> u64 {
        range.map(|i| message(i).len() as u64).sum()
    }

    /// Messages pushed together share record batches (several per commit
    /// when they are many, a big one alone); a pull from any index, of any
    /// size, reads them back in order, and so does a reopened store.
    #[tokio::test(flavor = "multi_thread")]
    async fn pulls_read_messages_from_anywhere_in_their_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = DurableStore::open(dir.path()).unwrap();
        push_all(&store, "s", 0..600).await;
        push_all(&store, "s", 600..601).await;
        let batches = store
            .read(|txn| {
                let t = txn.open_table(BATCHES).unwrap();
                Ok(t.len().unwrap())
            })
            .await
            .unwrap();
        assert!(
            (10..300).contains(&batches),
            "601 messages in {batches} batches"
        );
        for (from, limit) in [(0, 1000), (0, 7), (1, 1), (37, 50), (599, 3), (600, 1)] {
            assert_eq!(
                pull_all(&store, "s", from, limit).await,
                (from..601).collect::<Vec<_>>(),
                "from {from}, {limit} at a time"
            );
        }
        assert!(store
            .pull("s", 601, 10, usize::MAX)
            .await
            .unwrap()
            .is_empty());
        // The byte cap cuts inside a batch.
        let cap = message(3).len() + message(4).len();
        let capped = store.pull("s", 3, 100, cap).await.unwrap();
        assert_eq!(capped.iter().map(|m| m.0).collect::<Vec<_>>(), [3, 4]);
        let fresh = store.pull_fresh("s", 598, 2, usize::MAX).await.unwrap();
        assert_eq!(fresh.iter().map(|m| m.0).collect::<Vec<_>>(), [598, 599]);
        let shown = kept(&store, "s").await;
        assert_eq!(
            (shown.messages, shown.bytes, shown.oldest, shown.newest),
            (601, bytes_of(0..601), Some(0), Some(600))
        );
        drop(store);
        let store = DurableStore::open(dir.path()).unwrap();
        assert_eq!(
            pull_all(&store, "s", 250, 64).await,
            (250..601).collect::<Vec<_>>()
        );
    }

    /// Trimming removes whole batches and cuts the one holding its end:
    /// what is left reads back from the new oldest index, and the stream's
    /// count and bytes follow.
    #[tokio::test(flavor = "multi_thread")]
    async fn trims_cut_batches_where_they_must() {
        let dir = tempfile::tempdir().unwrap();
        let store = DurableStore::open(dir.path()).unwrap();
        push_all(&store, "s", 0..500).await;
        push_all(&store, "s", 500..5000).await;
        for to in [1u64, 2, 333, 499, 500, 2600, 5000] {
            let mut at = kept(&store, "s").await.oldest.unwrap_or(5000);
            while at < to {
                let (done, answer) = oneshot::channel();
                store
                    .submit(Write::Trim {
                        stream: "s".into(),
                        to,
                        done,
                    })
                    .unwrap();
                let next = answer.await.unwrap().unwrap();
                assert!(next > at && next <= to, "trimmed {at} to {next}, not {to}");
                at = next;
            }
            assert_eq!(
                pull_all(&store, "s", 0, 100).await,
                (to..5000).collect::<Vec<_>>()
            );
            let shown = kept(&store, "s").await;
            assert_eq!(
                (shown.messages, shown.bytes),
                (5000 - to, bytes_of(to..5000)),
                "after trimming to {to}"
            );
        }
        push_all(&store, "s", 5000..5010).await;
        assert_eq!(
            pull_all(&store, "s", 0, 3).await,
            (5000..5010).collect::<Vec<_>>()
        );
    }

    /// Retention by bytes cuts inside a batch at the right message.
    #[tokio::test(flavor = "multi_thread")]
    async fn retention_by_bytes_counts_messages_inside_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = DurableStore::open(dir.path()).unwrap();
        push_all(&store, "s", 0..300).await;
        let max = bytes_of(120..300);
        let policy = RetentionPolicy::new(Retention {
            max_bytes: Some(max),
            ..Retention::default()
        });
        store.enforce(&policy).await.unwrap();
        let shown = kept(&store, "s").await;
        assert_eq!((shown.oldest, shown.bytes), (Some(120), max));
        store.enforce(&policy).await.unwrap();
        assert_eq!(kept(&store, "s").await.oldest, Some(120));
    }

    /// A data file from before record batches (one record per message)
    /// is read as it is by `inspect`, and moved into batches when a hub
    /// opens it: every message, head, read position and count kept.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_data_file_from_before_record_batches_is_moved_into_them() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = ::redb::Database::create(dir.path().join(DATA_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut messages = txn.open_table(MESSAGES).unwrap();
                let mut heads = txn.open_table(HEADS).unwrap();
                let mut indexes = txn.open_table(INDEXES).unwrap();
                // "a" from 0; "b" trimmed to 30 once (and no stats: from
                // before retention too).
                for i in 0..25_000u64 {
                    messages.insert(("a", i), message(i).as_slice()).unwrap();
                }
                for i in 30..70u64 {
                    messages.insert(("b", i), message(i).as_slice()).unwrap();
                }
                heads.insert("a", 25_000).unwrap();
                heads.insert("b", 70).unwrap();
                indexes.insert(("c", "a"), 10).unwrap();
            }
            txn.commit().unwrap();
        }
        let before = inspect(dir.path(), None).unwrap();
        assert_eq!(
            (before[1].messages, before[1].oldest, before[1].newest),
            (40, Some(30), Some(69))
        );
        let store = DurableStore::open(dir.path()).unwrap();
        assert_eq!(
            pull_all(&store, "a", 0, 5000).await,
            (0..25_000).collect::<Vec<_>>()
        );
        assert_eq!(
            pull_all(&store, "b", 0, 7).await,
            (30..70).collect::<Vec<_>>()
        );
        assert_eq!(store.get_index("c", "a").await.unwrap(), Some(10));
        assert_eq!(store.next_index("b").await.unwrap(), 70);
        let shown = kept(&store, "a").await;
        assert_eq!((shown.messages, shown.bytes), (25_000, bytes_of(0..25_000)));
        let gone = store
            .read(|txn| Ok(open_if_exists(txn, MESSAGES)?.is_none()))
            .await
            .unwrap();
        assert!(gone, "the old table is dropped once empty");
        push_all(&store, "b", 70..72).await;
        drop(store);
        let after = inspect(dir.path(), None).unwrap();
        assert_eq!(
            (
                after[1].messages,
                after[1].oldest,
                after[1].newest,
                after[1].bytes
            ),
            (42, Some(30), Some(71), bytes_of(30..72))
        );
        assert_eq!(after[0].readers[0].lag, 25_000 - 10);
    }

    /// `--fsync interval`: a push to an idle store is committed by its
    /// submitter, so its answer is ready as `submit_push` returns. (With
    /// `always` the writer thread commits every write: an fsync would hold
    /// up the submitter's thread.)
    #[tokio::test(flavor = "multi_thread")]
    async fn an_idle_interval_store_commits_a_push_on_the_submitters_thread() {
        let dir = tempfile::tempdir().unwrap();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let store =
            DurableStore::open_with(dir.path(), Fsync::Interval(Duration::from_secs(60))).unwrap();
        for i in 0..5 {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let mut pending = store.submit_push("s", message(i), Ticket::alone());
            let std::task::Poll::Ready(index) = pending.as_mut().poll(&mut cx) else {
                panic!("push {i} to an idle store not answered at once");
            };
            assert_eq!(index.unwrap(), i);
        }
    }

    /// Pushes that come in bursts and alone, from several submitters to one
    /// stream, committed by their submitters and by the writer thread in
    /// turn (lingering after big commits): each submitter's pushes are
    /// stored in the order it made them,
    /// every index once, each with its own data.
    #[tokio::test(flavor = "multi_thread")]
    async fn inline_and_grouped_commits_keep_each_submitters_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            DurableStore::open_with(dir.path(), Fsync::Interval(Duration::from_millis(5))).unwrap(),
        );
        let tasks: Vec<_> = (0..4u64)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut stored = Vec::new();
                    for round in 0..40u64 {
                        // Bursts of 1 to 7, and now and then of 100 (the
                        // writer thread then lingers), apart by 0 to 300 µs.
                        let burst = if round % 10 == t {
                            100
                        } else {
                            1 + (round * 7 + t * 3) % 7
                        };
                        let pending: Vec<_> = (0..burst)
                            .map(|k| {
                                let data = format!("{t}/{round}/{k}").into_bytes();
                                (data.clone(), store.submit_push("s", data, Ticket::alone()))
                            })
                            .collect();
                        for (data, p) in pending {
                            stored.push((p.await.unwrap(), data));
                        }
                        let pause = (round * 37 + t * 101) % 300;
                        tokio::time::sleep(Duration::from_micros(pause)).await;
                    }
                    stored
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            let stored = t.await.unwrap();
            assert!(
                stored.windows(2).all(|w| w[0].0 < w[1].0),
                "one submitter's pushes in its order"
            );
            all.extend(stored);
        }
        all.sort();
        let n = all.len() as u64;
        assert_eq!(
            all.iter().map(|s| s.0).collect::<Vec<_>>(),
            (0..n).collect::<Vec<_>>()
        );
        let pulled = store.pull("s", 0, usize::MAX, usize::MAX).await.unwrap();
        assert_eq!(pulled, all);
    }

    /// A write-ahead log left by a hub that was killed is replayed as the
    /// store opens: its record batches, and the one-message records of
    /// hubs from before batches, from each stream's head on (what the
    /// database already has is skipped), and its read positions.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_log_of_batches_and_of_single_pushes_is_replayed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = DurableStore::open(dir.path()).unwrap();
            push_all(&store, "s", 0..2).await;
        }
        let mut two = Vec::new();
        batch::append(&mut two, &message(3)).unwrap();
        batch::append(&mut two, &message(4)).unwrap();
        let mut wal = wal::Wal::open(dir.path()).unwrap();
        wal.append(&[
            // Already in the database: skipped.
            wal::RecordRef::Push {
                stream: "s",
                index: 1,
                data: &message(1),
            },
            wal::RecordRef::Push {
                stream: "s",
                index: 2,
                data: &message(2),
            },
            wal::RecordRef::Batch {
                stream: "s",
                base: 3,
                batch: &two,
            },
            wal::RecordRef::Save {
                client: "c",
                stream: "s",
                index: 4,
            },
        ])
        .unwrap();
        drop(wal);
        let store = DurableStore::open(dir.path()).unwrap();
        assert_eq!(
            pull_all(&store, "s", 0, 2).await,
            (0..5).collect::<Vec<_>>()
        );
        assert_eq!(store.get_index("c", "s").await.unwrap(), Some(4));
        assert_eq!(kept(&store, "s").await.bytes, bytes_of(0..5));
    }

    /// A record batch damaged inside (a length that runs past its end): a
    /// pull that needs it is an error, also from an index after the damage
    /// (never a silent jump); retention skips that stream by bytes and
    /// keeps the others within their limits; a trim of it fails alone, and
    /// pushes go on.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_damaged_batch_is_an_error_where_it_is_needed_and_nowhere_else() {
        let dir = tempfile::tempdir().unwrap();
        let store = DurableStore::open(dir.path()).unwrap();
        push_all(&store, "s", 0..300).await;
        push_all(&store, "d", 0..4).await;
        {
            let mut bad = Vec::new();
            for i in 0..4 {
                batch::append(&mut bad, &message(i)).unwrap();
            }
            // The second message's length, made to run past the end.
            let second = 4 + message(0).len();
            bad[second..second + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            let txn = store.db.begin_write().unwrap();
            {
                let mut batches = txn.open_table(BATCHES).unwrap();
                batches
                    .retain_in(("d", 0)..=("d", u64::MAX), |_, _| false)
                    .unwrap();
                batches.insert(("d", 0), bad.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        assert_eq!(pull_all(&store, "s", 0, 50).await.len(), 300);
        assert!(store.pull("d", 2, 10, usize::MAX).await.is_err());
        assert!(store.pull("d", 0, 10, usize::MAX).await.is_err());
        let policy = RetentionPolicy::new(Retention {
            max_bytes: Some(bytes_of(200..300)),
            ..Retention::default()
        });
        store.enforce(&policy).await.unwrap();
        assert_eq!(kept(&store, "s").await.oldest, Some(200));
        let (done, answer) = oneshot::channel();
        store
            .submit(Write::Trim {
                stream: "d".into(),
                to: 3,
                done,
            })
            .unwrap();
        let pushed = store.submit_push("s", message(300), Ticket::alone());
        assert!(
            answer.await.unwrap().is_err(),
            "the trim of the damaged batch fails"
        );
        assert_eq!(pushed.await.unwrap(), 300, "and alone");
    }

    /// A data file of a later format (a newer hub's) is refused, by a hub
    /// opening it and by `inspect`, with what to do; this hub's own
    /// format is written as it opens a file.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_data_file_of_a_later_format_is_refused_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        drop(DurableStore::open(dir.path()).unwrap());
        let path = dir.path().join(DATA_FILE);
        {
            let db = ::redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                assert_eq!(meta.get("format").unwrap().unwrap().value(), FORMAT);
                meta.insert("format", FORMAT + 1).unwrap();
            }
            txn.commit().unwrap();
        }
        let Err(e) = DurableStore::open(dir.path()) else {
            panic!("a file of a later format opened");
        };
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        assert!(e.to_string().contains("newer hub"), "{e}");
        let e = inspect(dir.path(), None).unwrap_err();
        assert!(e.to_string().contains("newer hub"), "{e}");
    }
}

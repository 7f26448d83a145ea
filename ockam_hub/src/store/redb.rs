//! [`DurableStore`]: streams on disk in a `redb` database.

use super::tail::{Snapshot, Tail, TailBatch};
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

/// A write submitted to the store (see [`DurableStore::submit`]).
pub(super) enum Write {
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
/// so many concurrent pushes share one fsync. With `--fsync interval`, a
/// push is confirmed once the write-ahead log has it, readable at once
/// from memory, and a commit thread moves it into the database, usually
/// within 10 ms (see [`Fsync::Interval`]).
pub struct DurableStore {
    db: Arc<::redb::Database>,
    writes: Arc<Writes>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// `--fsync interval`: the commit thread (see [`commit_tail`]).
    committer: Option<std::thread::JoinHandle<()>>,
    incarnation: u64,
}

impl Drop for DurableStore {
    fn drop(&mut self) {
        // Let the writer finish what it was given, then the commit thread
        // commit it and make it durable, then close the file. The writer
        // no longer waits for room in the tail: a commit thread that
        // cannot commit (a full disk) would never make it, and what the
        // writer logs past the tail's bound is in the log all the same.
        lock(&self.writes.queue).closing = true;
        self.writes.wake.notify_one();
        if let Some(tail) = &self.writes.tail {
            lock(&tail.state).draining = true;
            tail.room.notify_all();
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        if let Some(tail) = &self.writes.tail {
            lock(&tail.state).closing = true;
            tail.wake.notify_one();
        }
        if let Some(c) = self.committer.take() {
            let _ = c.join();
        }
        // Close the file and the log now, even if the flush thread still
        // holds these writes for a moment.
        drop(lock(&self.writes.committer).take());
    }
}

/// The writes waiting for a commit (`--fsync always`) or for the log
/// (`--fsync interval`), and who takes them: one committer at a time, the
/// writer thread or (`--fsync interval`, nothing waiting) the task that
/// submits a push or a read position, which then logs it itself, without
/// the two thread hand-offs the writer thread costs (an in-process push
/// took 131 µs at p50 on this machine through the writer thread, 59 µs
/// committed by its submitter). See [`DurableStore::submit`].
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
    /// interval`: an append to the log is short; with `always`, an fsync
    /// would hold up the submitter's executor thread).
    inline: bool,
    /// `--fsync interval`: what the log has and the database not yet.
    tail: Option<Arc<Tail>>,
}

/// See [`Writes`]. When no committer is busy, nothing waits.
#[derive(Default)]
struct Queue {
    /// In the order submitted.
    writes: Vec<Write>,
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
    /// The writer thread waits for more writes before it logs them (see
    /// [`LINGER`]).
    lingering: bool,
}

/// `--fsync interval` under load: how long the writer thread lets writes
/// gather before it logs them, when few wait and it last logged many
/// (Kafka's `linger.ms`, on the side that stores). Fewer, larger appends
/// cost less per write (a system call, the tail's lock, the commit
/// thread's wake-up, each confirmation task's): measured on this machine
/// at one producer with 1,024 unconfirmed pushes, 117 k msg/s without it
/// against 125 k with it (medians of 5 alternating runs). Writes that come
/// alone or in small groups wait for it only right after a large append
/// (the latency bench's never do).
const LINGER: Duration = Duration::from_millis(1);
/// Enough writes waiting to log them without lingering.
const LINGER_WRITES: usize = 512;
/// The writes in the last append from which the next lingers.
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
        crate::metrics::store_failed(crate::metrics::StoreOp::Stopped, 1);
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
    /// Appends to the log since the last durable commit (`--fsync
    /// interval`).
    dirty: bool,
    /// `--fsync interval`: what the log has and the database not yet.
    tail: Option<Arc<Tail>>,
    /// `--fsync interval`: the index the next message of each stream
    /// pushed to since the store opened gets (the database's head, plus
    /// what the tail holds).
    heads: HashMap<String, u64>,
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
        let tail = wal.is_some().then(|| Arc::new(Tail::default()));
        let writes = Arc::new(Writes {
            queue: Mutex::new(Queue::default()),
            wake: std::sync::Condvar::new(),
            committer: Mutex::new(Some(Committer {
                db: db.clone(),
                wal,
                durability,
                dirty: false,
                tail: tail.clone(),
                heads: HashMap::new(),
            })),
            inline: matches!(fsync, Fsync::Interval(_)),
            tail,
        });
        // `--fsync interval`: the commit thread, and the flush thread,
        // which asks it for a durable commit every interval. The flush
        // thread holds the tail weakly, so that it ends once the store is
        // gone (started first: if the others cannot be, it ends at once).
        let mut committer = None;
        if let (Fsync::Interval(every), Some(tail)) = (fsync, &writes.tail) {
            let flushes = Arc::downgrade(tail);
            std::thread::Builder::new()
                .name("hub-store-flush".into())
                .spawn(move || loop {
                    std::thread::sleep(every);
                    let Some(tail) = flushes.upgrade() else {
                        return;
                    };
                    let mut st = lock(&tail.state);
                    if st.closing {
                        return;
                    }
                    st.flush = true;
                    tail.wake.notify_one();
                })
                .map_err(|e| storage_error("cannot start the flush thread", e))?;
            let (for_committer, db) = (writes.clone(), db.clone());
            committer = Some(
                std::thread::Builder::new()
                    .name("hub-store-commit".into())
                    .spawn(move || commit_tail(&for_committer, &db))
                    .map_err(|e| storage_error("cannot start the commit thread", e))?,
            );
        }
        let for_writer = writes.clone();
        let writer = std::thread::Builder::new()
            .name("hub-store-writer".into())
            .spawn(move || writer(&for_writer));
        let writer = match writer {
            Ok(w) => w,
            Err(e) => {
                // The commit thread ends with the store (see `Drop`).
                drop(DurableStore {
                    db,
                    writes,
                    writer: None,
                    committer,
                    incarnation,
                });
                return Err(storage_error("cannot start the writer thread", e));
            }
        };
        info!(path = %path.display(), ?fsync, "durable stream store open");
        Ok(DurableStore {
            db,
            writes,
            writer: Some(writer),
            committer,
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
    /// waits, no commit ended in the last [`IDLE`], the tail has room and
    /// `w` is a push or a read position, logged at once on the caller's
    /// thread (see [`Writes`]); a trim, with `--fsync interval`, to the
    /// commit thread. `w` is answered through its channel either way (a
    /// commit that panics drops it unanswered: "storage writer stopped").
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] when the store is closing, or stopped
    /// taking writes after a committer panicked.
    fn submit(&self, w: Write) -> Result<()> {
        let writes = &self.writes;
        if let (Write::Trim { .. }, Some(tail)) = (&w, &writes.tail) {
            let mut st = lock(&tail.state);
            if st.closing || st.stopped {
                return Err(Error::new(ErrorKind::Unavailable, "storage closed"));
            }
            st.trims.push(w);
            tail.wake.notify_one();
            return Ok(());
        }
        let mut q = lock(&writes.queue);
        if q.closing {
            return Err(Error::new(ErrorKind::Unavailable, "storage closed"));
        }
        if q.broken {
            return Err(Error::new(ErrorKind::Unavailable, "storage writer stopped"));
        }
        let inline = writes.inline
            && !matches!(w, Write::Trim { .. })
            && q.last_commit.is_none_or(|t| t.elapsed() >= IDLE)
            && writes.tail.as_ref().is_none_or(|t| !t.is_full());
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
                c.commit(vec![w]);
            }
        }));
        if committed.is_err() {
            // Its write's answer channel was dropped as it unwound.
            writes.stop_after_panic();
            return Ok(());
        }
        let mut q = lock(&writes.queue);
        q.last_commit = Some(std::time::Instant::now());
        if q.writes.is_empty() {
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
/// commits them together (`--fsync interval`: logs them), until none
/// waits.
fn writer(writes: &Writes) {
    let mut q = lock(&writes.queue);
    // The writes in the last commit or append (see `LINGER`).
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
        if batch.is_empty() {
            q.writer_turn = false;
            q.busy = false;
            // Idle: the next write does not linger.
            last_size = 0;
            continue;
        }
        last_size = batch.len();
        drop(q);
        // `--fsync interval`: room in the tail first, never while holding
        // the committer, which the commit thread's flush needs.
        if let Some(tail) = &writes.tail {
            tail.wait_for_room();
        }
        let committing = Committing(writes);
        if let Some(c) = lock(&writes.committer).as_mut() {
            c.commit(batch);
        }
        drop(committing);
        q = lock(&writes.queue);
        q.last_commit = Some(std::time::Instant::now());
    }
}

/// `--fsync interval`: the commit thread. Moves what the tail holds into
/// the database, all of it in one transaction without fsync, as long as
/// there is any (a commit takes what came during the last: the busier the
/// store, the larger its commits); commits trims after it; makes
/// everything durable when the flush thread asks and as the store closes,
/// then ends. A commit that fails leaves the tail as it is (the log has
/// it) and is tried again; one that panics stops the store taking writes
/// (see [`Committing`]).
fn commit_tail(writes: &Writes, db: &::redb::Database) {
    let Some(tail) = writes.tail.as_deref() else {
        return;
    };
    // Nothing waits for room or a flush once this thread is gone, however
    // it ends, and a trim left is refused, not left unanswered.
    struct Stopped<'a>(&'a Tail);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            let trims = {
                let mut st = lock(&self.0.state);
                st.stopped = true;
                std::mem::take(&mut st.trims)
            };
            self.0.room.notify_all();
            for trim in trims {
                trim.refuse(Error::new(ErrorKind::Unavailable, "storage writer stopped"));
            }
        }
    }
    let _stopped = Stopped(tail);
    let mut last_commit = std::time::Instant::now();
    loop {
        let (trims, flush, closing) = {
            let mut st = lock(&tail.state);
            loop {
                if !st.has_work() {
                    st = tail
                        .wake
                        .wait(st)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    continue;
                }
                // Only the tail to commit: let it gather (see COMMIT_EVERY).
                let wait = COMMIT_EVERY.saturating_sub(last_commit.elapsed());
                if st.trims.is_empty()
                    && !st.flush
                    && !st.closing
                    && tail.bytes() < COMMIT_BYTES
                    && !wait.is_zero()
                {
                    st = tail
                        .wake
                        .wait_timeout(st, wait)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                    continue;
                }
                break;
            }
            let flush = std::mem::take(&mut st.flush) || st.closing;
            st.flushes_started += u64::from(flush);
            (std::mem::take(&mut st.trims), flush, st.closing)
        };
        let committing = Committing(writes);
        last_commit = std::time::Instant::now();
        let committed = commit_snapshot(db, tail);
        if matches!(committed, Ok(true)) {
            metrics::histogram!(crate::metrics::COMMIT_SECONDS).record(last_commit.elapsed());
        }
        if let Err(e) = &committed {
            error!(error = %e, "committing confirmed writes to the data file failed; the write-ahead log keeps them, trying again");
            crate::metrics::store_failed(crate::metrics::StoreOp::Commit, 1);
        }
        for trim in trims {
            let done = commit(db, std::slice::from_ref(&trim), ::redb::Durability::None);
            answer(vec![trim], done);
        }
        if flush {
            let flushed = match lock(&writes.committer).as_mut() {
                Some(c) => c.flush(),
                None => false,
            };
            let mut st = lock(&tail.state);
            st.flushes_done += 1;
            st.last_flush_ok = flushed;
            drop(st);
            tail.room.notify_all();
        }
        drop(committing);
        if closing {
            return;
        }
        if committed.is_err() {
            std::thread::sleep(RETRY_COMMIT);
        }
    }
}

/// How often at most the commit thread commits the tail, unless it holds
/// [`COMMIT_BYTES`]: the fewer the commits, the less each message costs
/// (a commit rewrites its tables' pages, checksums them, and writes them
/// to the file); nobody waits for these commits, and readers find what
/// they have not committed yet in the tail.
const COMMIT_EVERY: Duration = Duration::from_millis(10);
/// Bytes in the tail that make the commit thread commit at once (8 MiB).
pub(super) const COMMIT_BYTES: usize = 8 * 1024 * 1024;

/// How long the commit thread waits before it tries again a commit that
/// failed.
const RETRY_COMMIT: Duration = Duration::from_millis(100);

/// Commits what `tail` holds now to the database (without fsync), then
/// removes it from the tail; `false` when it held nothing.
///
/// # Errors
/// A storage error when the commit fails; the tail is left as it was.
fn commit_snapshot(db: &::redb::Database, tail: &Tail) -> Result<bool> {
    let snapshot = tail.snapshot();
    if snapshot.is_empty() {
        return Ok(false);
    }
    commit_logged(db, &snapshot)?;
    tail.committed(snapshot);
    Ok(true)
}

/// Answers each write of `batch` with the index its commit gave it, or
/// refuses them all when the commit failed.
fn answer(batch: Vec<Write>, committed: Result<Vec<u64>>) {
    let n = batch.len();
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
            crate::metrics::store_failed(crate::metrics::StoreOp::Commit, 1);
            for w in batch {
                w.refuse(e.clone());
            }
        }
    }
}

impl Committer {
    /// Commits `batch` (`--fsync interval`: logs it, see [`Committer::log`]),
    /// at most [`MAX_BATCH`] writes a transaction, and answers each write.
    /// A push whose submitter failed meanwhile is left out (the gap rule);
    /// when a commit fails, every write in it is refused, and the
    /// submitters of its pushes store nothing more.
    fn commit(&mut self, batch: Vec<Write>) {
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
    }

    /// `--fsync interval`: commits what the tail holds, then makes
    /// everything committed so far durable; the log, whose records it all
    /// holds, starts over. The caller holds the committer, so that nothing
    /// is logged meanwhile; if the tail cannot be committed, the log keeps
    /// everything and the next flush tries again. `false` when it failed.
    fn flush(&mut self) -> bool {
        let (Some(wal), Some(tail)) = (self.wal.as_mut(), self.tail.as_deref()) else {
            return true;
        };
        if !std::mem::take(&mut self.dirty) {
            return true;
        }
        let started = std::time::Instant::now();
        let flushed = commit_snapshot(&self.db, tail)
            .and_then(|_| durable_commit(&self.db))
            .and_then(|()| wal.clear());
        match flushed {
            Ok(()) => {
                metrics::histogram!(crate::metrics::FLUSH_SECONDS).record(started.elapsed());
                true
            }
            Err(e) => {
                error!(error = %e, "the interval's fsync failed; trying again at the next");
                crate::metrics::store_failed(crate::metrics::StoreOp::Flush, 1);
                self.dirty = true;
                false
            }
        }
    }

    /// Commits `batch` (`--fsync always`: durably), then answers each
    /// write; `--fsync interval`: logs it instead ([`Committer::log`]).
    fn write_batch(&mut self, batch: Vec<Write>) {
        if self.tail.is_some() && !matches!(batch.first(), Some(Write::Trim { .. })) {
            self.log(batch);
            return;
        }
        let started = std::time::Instant::now();
        let committed = commit(&self.db, &batch, self.durability);
        if matches!(self.durability, ::redb::Durability::Immediate) {
            metrics::histogram!(crate::metrics::COMMIT_SECONDS).record(started.elapsed());
        }
        answer(batch, committed);
    }

    /// `--fsync interval`: gives each push of `batch` its index, appends
    /// the record batches and read positions to the write-ahead log (one
    /// write), adds them to the tail, and answers each write: confirmed,
    /// safe from a crash of the process, readable from the tail until the
    /// commit thread has moved it into the database. (The writer thread
    /// waits for room in the tail before it takes the committer, and a
    /// submitter logs its own write only when the tail has room: a tail
    /// can go past [`MAX_TAIL_BYTES`](super::tail::MAX_TAIL_BYTES) by one
    /// batch.) When the log cannot be written, every write is refused and
    /// no index is used.
    fn log(&mut self, batch: Vec<Write>) {
        let Some(tail) = self.tail.clone() else {
            return;
        };
        let logged = self.log_records(&batch, &tail);
        answer(batch, logged);
    }

    /// See [`Committer::log`]: the indexes of `batch`'s writes.
    fn log_records(&mut self, batch: &[Write], tail: &Tail) -> Result<Vec<u64>> {
        // Per stream, the record batch being built and those done, in
        // index order.
        let mut building: HashMap<&str, Building> = HashMap::new();
        let mut done: Vec<(&str, TailBatch)> = Vec::new();
        let mut indexes = Vec::with_capacity(batch.len());
        for w in batch {
            match w {
                Write::Push { stream, data, .. } => {
                    let b = match building.get_mut(stream.as_str()) {
                        Some(b) => b,
                        None => {
                            let next = self.head(stream)?;
                            building
                                .entry(stream.as_str())
                                .or_insert(Building::at(next))
                        }
                    };
                    let (index, full) = b.push(data)?;
                    if let Some(full) = full {
                        done.push((stream.as_str(), full));
                    }
                    indexes.push(index);
                }
                Write::SaveIndex { index, .. } => indexes.push(*index),
                Write::Trim { to, .. } => indexes.push(*to),
            }
        }
        let mut heads = Vec::with_capacity(building.len());
        for (stream, mut b) in building {
            heads.push((stream, b.next));
            done.push((stream, b.take()));
        }
        let saved: Vec<(&str, &str, u64)> = batch
            .iter()
            .filter_map(|w| match w {
                Write::SaveIndex {
                    client,
                    stream,
                    index,
                    ..
                } => Some((client.as_str(), stream.as_str(), *index)),
                Write::Push { .. } | Write::Trim { .. } => None,
            })
            .collect();
        let records: Vec<wal::RecordRef<'_>> = done
            .iter()
            .map(|(stream, b)| wal::RecordRef::Batch {
                stream,
                base: b.base,
                batch: b.batch.as_slice(),
            })
            .chain(
                saved
                    .iter()
                    .map(|&(client, stream, index)| wal::RecordRef::Save {
                        client,
                        stream,
                        index,
                    }),
            )
            .collect();
        if let Some(wal) = self.wal.as_mut() {
            wal.append(&records)?;
        }
        drop(records);
        self.dirty = true;
        for (stream, next) in heads {
            self.heads.insert(stream.to_string(), next);
        }
        tail.add(done, saved);
        Ok(indexes)
    }

    /// `--fsync interval`: the index the next message of `stream` gets.
    ///
    /// # Errors
    /// A storage error when the database cannot be read.
    fn head(&self, stream: &str) -> Result<u64> {
        if let Some(&next) = self.heads.get(stream) {
            return Ok(next);
        }
        // Not pushed to since the store opened: the tail holds none of it.
        let txn = self
            .db
            .begin_read()
            .map_err(|e| storage_error("begin read", e))?;
        head_in(&txn, stream)
    }
}

/// The index the next message of `stream` gets, as the database has it
/// (0 for a stream it does not know).
///
/// # Errors
/// A storage error when the table cannot be read.
fn head_in(txn: &::redb::ReadTransaction, stream: &str) -> Result<u64> {
    let table = txn
        .open_table(HEADS)
        .map_err(|e| storage_error("open", e))?;
    Ok(table
        .get(stream)
        .map_err(|e| storage_error("read head", e))?
        .map_or(0, |g| g.value()))
}

/// A stream's record batches being built from its pushes, by a commit
/// (`--fsync always`, a replay) or by [`Committer::log_records`].
struct Building {
    /// The index of the stream's first message in this commit or append.
    first: u64,
    /// The index of the batch's first message.
    base: u64,
    /// The index the next message gets.
    next: u64,
    /// The bytes of the batch's messages' data.
    data_bytes: u64,
    /// The record batch being built: messages from `base` on.
    batch: Vec<u8>,
}

impl Building {
    fn at(next: u64) -> Building {
        Building {
            first: next,
            base: next,
            next,
            data_bytes: 0,
            batch: Vec::new(),
        }
    }

    /// Adds `data` as the next message; its index, and the batch it did
    /// not fit in, if any (done: the next batch starts with `data`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when `data` is 4 GiB or more.
    fn push(&mut self, data: &[u8]) -> Result<(u64, Option<TailBatch>)> {
        let full = (!batch::fits(&self.batch, data)).then(|| self.take());
        batch::append(&mut self.batch, data)?;
        let index = self.next;
        self.next += 1;
        self.data_bytes += data.len() as u64;
        Ok((index, full))
    }

    /// The batch built so far; the next starts after it.
    fn take(&mut self) -> TailBatch {
        let b = TailBatch {
            base: self.base,
            next: self.next,
            data_bytes: std::mem::take(&mut self.data_bytes),
            batch: Arc::new(std::mem::take(&mut self.batch)),
        };
        self.base = self.next;
        b
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
        commit(db, chunk, ::redb::Durability::Immediate)?;
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

/// The tables a commit writes.
struct Tables<'t> {
    batches: ::redb::Table<'t, (&'static str, u64), &'static [u8]>,
    heads: ::redb::Table<'t, &'static str, u64>,
    indexes: ::redb::Table<'t, (&'static str, &'static str), u64>,
    stats: ::redb::Table<'t, &'static str, (u64, u64)>,
    times: ::redb::Table<'t, (&'static str, u64), u64>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t ::redb::WriteTransaction) -> Result<Tables<'t>> {
        let open = |e| storage_error("open", e);
        Ok(Tables {
            batches: txn.open_table(BATCHES).map_err(open)?,
            heads: txn.open_table(HEADS).map_err(open)?,
            indexes: txn.open_table(INDEXES).map_err(open)?,
            stats: txn.open_table(STREAM_STATS).map_err(open)?,
            times: txn.open_table(TIMES).map_err(open)?,
        })
    }

    /// Stores `b`, a record batch of `stream`; the bytes of its messages'
    /// data.
    fn insert_batch(&mut self, stream: &str, b: &TailBatch) -> Result<u64> {
        self.batches
            .insert((stream, b.base), b.batch.as_slice())
            .map_err(|e| storage_error("insert", e))?;
        Ok(b.data_bytes)
    }

    /// After a commit's record batches of `stream` (messages `first..next`,
    /// `bytes` of data) are in: its head, what it keeps, and, at most once
    /// every [`TIME_GRAIN`], when they were stored (`now`).
    fn note_pushed(
        &mut self,
        stream: &str,
        first: u64,
        next: u64,
        bytes: u64,
        now: u64,
    ) -> Result<()> {
        self.heads
            .insert(stream, next)
            .map_err(|e| storage_error("update head", e))?;
        let (oldest, kept) = self
            .stats
            .get(stream)
            .map_err(|e| storage_error("read stats", e))?
            .map_or((first, 0), |g| g.value());
        self.stats
            .insert(stream, (oldest, kept + bytes))
            .map_err(|e| storage_error("update stats", e))?;
        let last = self
            .times
            .range((stream, 0)..=(stream, u64::MAX))
            .map_err(|e| storage_error("read times", e))?
            .next_back()
            .transpose()
            .map_err(|e| storage_error("read times", e))?
            .map(|(_, t)| t.value());
        if last.is_none_or(|t| now.saturating_sub(t) >= TIME_GRAIN) {
            self.times
                .insert((stream, first), now)
                .map_err(|e| storage_error("update times", e))?;
        }
        Ok(())
    }
}

/// `--fsync interval`: commits what the tail held (`snapshot`) without
/// fsync. Each stream's batches, logged one append at a time, are joined
/// into record batches of up to [`batch::MAX_BATCH_BYTES`] (a batch's
/// bytes are its messages back to back, so batches join by
/// concatenation).
///
/// # Errors
/// A storage error when the commit fails (nothing of it is kept).
fn commit_logged(db: &::redb::Database, snapshot: &Snapshot) -> Result<()> {
    let mut txn = db.begin_write().map_err(|e| storage_error("begin", e))?;
    txn.set_durability(::redb::Durability::None)
        .map_err(|e| storage_error("durability", e))?;
    {
        let mut t = Tables::open(&txn)?;
        let now = unix_millis();
        let mut joined: Vec<u8> = Vec::new();
        for (stream, batches) in &snapshot.streams {
            let (Some(first), Some(last)) = (batches.first(), batches.last()) else {
                continue;
            };
            // Runs of batches that fit in one; a run of one is stored as
            // it is, without a copy.
            let mut rest = batches.as_slice();
            while let Some(head) = rest.first() {
                let mut len = head.batch.len();
                let n = 1 + rest[1..]
                    .iter()
                    .take_while(|b| {
                        len += b.batch.len();
                        len <= batch::MAX_BATCH_BYTES
                    })
                    .count();
                let (run, after) = rest.split_at(n);
                let stored = if let [one] = run {
                    one.batch.as_slice()
                } else {
                    joined.clear();
                    for b in run {
                        joined.extend_from_slice(&b.batch);
                    }
                    joined.as_slice()
                };
                t.batches
                    .insert((stream.as_str(), head.base), stored)
                    .map_err(|e| storage_error("insert", e))?;
                rest = after;
            }
            let bytes = batches.iter().map(|b| b.data_bytes).sum();
            t.note_pushed(stream, first.base, last.next, bytes, now)?;
        }
        for ((client, stream), index, _) in &snapshot.saved {
            t.indexes
                .insert((client.as_str(), stream.as_str()), *index)
                .map_err(|e| storage_error("save index", e))?;
        }
    }
    txn.commit().map_err(|e| storage_error("commit", e))
}

/// Commits `batch` with `durability`; the index each write got (a push's,
/// a trim's new oldest, a read position's).
fn commit(
    db: &::redb::Database,
    batch: &[Write],
    durability: ::redb::Durability,
) -> Result<Vec<u64>> {
    let mut txn = db.begin_write().map_err(|e| storage_error("begin", e))?;
    txn.set_durability(durability)
        .map_err(|e| storage_error("durability", e))?;
    let mut out = Vec::with_capacity(batch.len());
    {
        let mut t = Tables::open(&txn)?;
        // Per stream pushed to: its record batches, and the bytes of those
        // done (its head read once and written once, one stats update, one
        // time entry, and one insert per batch).
        let mut pushed: HashMap<&str, (Building, u64)> = HashMap::new();
        for w in batch {
            match w {
                Write::Push { stream, data, .. } => {
                    let (b, bytes) = match pushed.get_mut(stream.as_str()) {
                        Some(p) => p,
                        None => {
                            let next = t
                                .heads
                                .get(stream.as_str())
                                .map_err(|e| storage_error("read head", e))?
                                .map_or(0, |g| g.value());
                            pushed
                                .entry(stream.as_str())
                                .or_insert((Building::at(next), 0))
                        }
                    };
                    let (index, full) = b.push(data)?;
                    if let Some(full) = full {
                        *bytes += t.insert_batch(stream, &full)?;
                    }
                    out.push(index);
                }
                Write::Trim { stream, to, .. } => {
                    let oldest = trim(&mut t.batches, &mut t.stats, &mut t.times, stream, *to)?;
                    out.push(oldest);
                }
                Write::SaveIndex {
                    client,
                    stream,
                    index,
                    ..
                } => {
                    t.indexes
                        .insert((client.as_str(), stream.as_str()), *index)
                        .map_err(|e| storage_error("save index", e))?;
                    out.push(*index);
                }
            }
        }
        let now = unix_millis();
        for (stream, (mut b, mut bytes)) in pushed {
            bytes += t.insert_batch(stream, &b.take())?;
            t.note_pushed(stream, b.first, b.next, bytes, now)?;
        }
    }
    // Durability::Immediate: on disk when this returns; None: a trim of
    // `--fsync interval`, durable with the next flush that follows a push
    // or a saved position, or as the store closes (a trim a power cut
    // undoes, retention makes again).
    txn.commit().map_err(|e| storage_error("commit", e))?;
    Ok(out)
}

#[async_trait]
impl StreamStore for DurableStore {
    fn incarnation(&self) -> u64 {
        self.incarnation
    }

    async fn stats(&self) -> Result<Option<StoreStats>> {
        // The tail first (see `tail`): what leaves it meanwhile is in the
        // database by the time the read transaction begins.
        let in_tail = self.writes.tail.as_ref().map(|t| t.stats());
        let mut stats = self
            .read(|txn| {
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
            .await?;
        // What the tail holds is newer than what the database said.
        if let (Some(stats), Some(in_tail)) = (stats.as_mut(), in_tail) {
            for (stream, next) in in_tail.streams {
                let at = stats.streams.entry(stream).or_insert(next);
                *at = (*at).max(next);
            }
            stats.indexes.extend(in_tail.indexes);
        }
        Ok(stats)
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
        let (stream, db, tail) = (
            stream.to_string(),
            self.db.clone(),
            self.writes.tail.clone(),
        );
        tokio::task::spawn_blocking(move || {
            read_messages(&db, tail.as_deref(), &stream, from, limit, max_bytes)
        })
        .await
        .map_err(|e| storage_error("read task", e))?
    }

    /// Reads on the caller's task: the messages were just stored, so they
    /// are in the tail (`--fsync interval`) or their pages in redb's cache
    /// (no disk read to wait for).
    async fn pull_fresh(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let tail = self.writes.tail.as_deref();
        read_messages(&self.db, tail, stream, from, limit, max_bytes)
    }

    async fn next_index(&self, stream: &str) -> Result<u64> {
        if let Some(next) = self.writes.tail.as_ref().and_then(|t| t.next_index(stream)) {
            return Ok(next);
        }
        // Not in the tail: the database has all of it (a batch leaves the
        // tail only once committed).
        let stream = stream.to_string();
        self.read(move |txn| head_in(txn, &stream)).await
    }

    async fn get_index(&self, client: &str, stream: &str) -> Result<Option<u64>> {
        if let Some(at) = self
            .writes
            .tail
            .as_ref()
            .and_then(|t| t.saved_index(client, stream))
        {
            return Ok(Some(at));
        }
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
/// (see [`StreamStore::pull`]): those the `tail` holds (`--fsync
/// interval`), copied first, after those the database holds before them,
/// read from the record batch holding `from` on.
fn read_messages(
    db: &::redb::Database,
    tail: Option<&Tail>,
    stream: &str,
    from: u64,
    limit: usize,
    max_bytes: usize,
) -> Result<Vec<(u64, Vec<u8>)>> {
    // The tail first: what leaves it meanwhile is in the database by the
    // time the read transaction begins (see `tail`).
    let (end, in_tail) = match tail {
        Some(t) => t.copy(stream, from, limit, max_bytes)?,
        None => (u64::MAX, Vec::new()),
    };
    let mut within = Within::new(limit, max_bytes);
    if from < end {
        let txn = db
            .begin_read()
            .map_err(|e| storage_error("begin read", e))?;
        let table = txn
            .open_table(BATCHES)
            .map_err(|e| storage_error("open", e))?;
        let start = batch_holding(&table, stream, from)?;
        'read: for entry in table
            .range((stream, start)..(stream, end))
            .map_err(|e| storage_error("range", e))?
        {
            let (key, value) = entry.map_err(|e| storage_error("read", e))?;
            for (index, data) in (key.value().1..).zip(batch::messages(value.value())) {
                // A damaged batch is an error even before `from`: its
                // messages after the damage cannot be read.
                let data = data?;
                if index >= end {
                    break 'read;
                }
                if index >= from && !within.take(index, data) {
                    return Ok(within.out);
                }
            }
        }
    }
    for (index, data) in in_tail {
        if !within.take(index, &data) {
            break;
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
                    // Everything confirmed so far, committed first.
                    if let Some(tail) = store.writes.tail.clone() {
                        let synced = tokio::task::spawn_blocking(move || tail.sync()).await;
                        if !matches!(synced, Ok(true)) {
                            warn!("inspect: the last confirmed writes could not be committed; the answer shows the data file as it is");
                        }
                    }
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

    /// `--fsync interval`: while the commit thread moves the tail into the
    /// database, every read sees both as one. A push or a read position
    /// is readable as soon as it is confirmed; a pull returns every
    /// message before the next index it was told of, once and in order,
    /// wherever each one is (tail, database, or between them); and after
    /// a reopen, the database has it all.
    #[tokio::test(flavor = "multi_thread")]
    async fn reads_see_the_tail_and_the_database_as_one() {
        const ROUNDS: u64 = 150;
        const EACH: u64 = 20;
        let dir = tempfile::tempdir().unwrap();
        let interval = Fsync::Interval(Duration::from_millis(5));
        let store = Arc::new(DurableStore::open_with(dir.path(), interval).unwrap());
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (store, done) = (store.clone(), done.clone());
            tokio::spawn(async move {
                let mut k = 0u64;
                let mut pulls = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let next = store.next_index("s").await.unwrap();
                    let from = (k * 131) % (next + 1);
                    k += 1;
                    let got = pull_all(&store, "s", from, 7).await;
                    assert!(
                        got.len() as u64 >= next - from,
                        "a pull from {from} missed messages before {next}: {got:?}"
                    );
                    assert!(
                        got.iter().copied().eq(from..from + got.len() as u64),
                        "from {from}: {got:?}"
                    );
                    pulls += 1;
                }
                pulls
            })
        };
        for round in 0..ROUNDS {
            let (from, to) = (round * EACH, (round + 1) * EACH);
            push_all(&store, "s", from..to).await;
            let fresh = store.pull_fresh("s", from, 100, usize::MAX).await.unwrap();
            assert_eq!(
                fresh.iter().map(|m| m.0).collect::<Vec<_>>(),
                (from..to).collect::<Vec<_>>(),
                "confirmed pushes, read at once"
            );
            store.save_index("c", "s", to).await.unwrap();
            assert_eq!(store.get_index("c", "s").await.unwrap(), Some(to));
            if round % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let pulls = reader.await.unwrap();
        assert!(pulls > 0);
        let stats = store.stats().await.unwrap().unwrap();
        assert_eq!(stats.streams.get("s"), Some(&(ROUNDS * EACH)));
        assert_eq!(
            stats.indexes.get(&("c".into(), "s".into())),
            Some(&(ROUNDS * EACH))
        );
        drop(store);
        let store = DurableStore::open_with(dir.path(), interval).unwrap();
        assert_eq!(
            pull_all(&store, "s", 0, 1000).await,
            (0..ROUNDS * EACH).collect::<Vec<_>>()
        );
        assert_eq!(
            store.get_index("c", "s").await.unwrap(),
            Some(ROUNDS * EACH)
        );
        assert_eq!(kept(&store, "s").await.messages, ROUNDS * EACH);
    }

    /// `--fsync interval`: producers faster than the commit thread fill
    /// the tail, then wait for it, and every push is stored; also while
    /// the flush thread asks for a flush every millisecond (a writer that
    /// waited for room holding what the flush needs hung the store).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_full_tail_holds_producers_back_and_loses_nothing() {
        const EACH: u64 = 1500;
        let dir = tempfile::tempdir().unwrap();
        let interval = Fsync::Interval(Duration::from_millis(1));
        let store = Arc::new(DurableStore::open_with(dir.path(), interval).unwrap());
        store.writes.tail.as_ref().unwrap().set_max_bytes(64 * 1024);
        let tasks: Vec<_> = (0..4u64)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    let stream = format!("s{t}");
                    for chunk in 0..EACH / 100 {
                        push_all(&store, &stream, chunk * 100..(chunk + 1) * 100).await;
                    }
                })
            })
            .collect();
        // A hung store blocks the runtime's threads too: a watchdog of its
        // own ends the test then.
        let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watched = finished.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(120));
            if !watched.load(std::sync::atomic::Ordering::Relaxed) {
                eprintln!("the store hung with a full tail");
                std::process::abort();
            }
        });
        for t in tasks {
            t.await.unwrap();
        }
        finished.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in 0..4 {
            let stream = format!("s{t}");
            assert_eq!(
                pull_all(&store, &stream, 0, 500).await,
                (0..EACH).collect::<Vec<_>>()
            );
        }
    }

    /// `--fsync interval`: what a hub's inspect command reads (the
    /// database) has every push confirmed before it asked, also those
    /// the commit thread had not committed yet.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_sync_commits_every_confirmed_push() {
        let dir = tempfile::tempdir().unwrap();
        let interval = Fsync::Interval(Duration::from_secs(60));
        let store = DurableStore::open_with(dir.path(), interval).unwrap();
        for round in 0..5 {
            push_all(&store, "s", round * 10..(round + 1) * 10).await;
            store.save_index("c", "s", round * 10).await.unwrap();
            let tail = store.writes.tail.clone().unwrap();
            tokio::task::spawn_blocking(move || tail.sync())
                .await
                .unwrap();
            let report = kept(&store, "s").await;
            assert_eq!(report.messages, (round + 1) * 10);
            assert_eq!(report.readers[0].index, round * 10);
            assert_eq!(store.writes.tail.as_ref().unwrap().bytes(), 0);
        }
    }

    /// `--fsync interval`: a push to an idle store is logged by its
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

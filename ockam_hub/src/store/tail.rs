//! The tail of a `--fsync interval` store: pushes and read positions
//! confirmed (they are in the write-ahead log) and not yet committed to the
//! database (issue 17).
//!
//! A push used to be confirmed after its database commit, which took
//! 40 µs in a tight loop and 90 µs at p50 in a running hub, and held a
//! producer's window behind each commit of a few hundred writes. Now the
//! store confirms a push once the log has it (what `--fsync interval`
//! promises: written to the operating system, safe from a crash of the
//! process), keeps it here, and a commit thread moves what the tail holds
//! into the database in large transactions, off the path of every
//! confirmation. Readers look here for what the database does not have yet.
//!
//! The rule that keeps reads whole: the commit thread removes a batch from
//! the tail only after its commit, so a reader that copies what it needs
//! from the tail first and then reads the database finds every message in
//! one or the other.
//!
//! Plain data under one mutex, without I/O: the store's committer fills
//! it, its commit thread empties it, readers copy from it.

use super::{batch, Within};
use ockam_core::internal::sync::lock;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Most bytes of record batches the tail holds (64 MiB): past that, writes
/// wait for the commit thread instead of being confirmed at once (a
/// database slower than the log slows producers down, it does not fill
/// the hub's memory).
pub(super) const MAX_TAIL_BYTES: usize = 64 * 1024 * 1024;

/// See the [module](self).
pub(super) struct Tail {
    pub(super) state: Mutex<TailState>,
    /// Wakes the commit thread: the tail has something, or a trim, a flush
    /// or the store's closing waits.
    pub(super) wake: Condvar,
    /// Wakes a committer waiting for room ([`MAX_TAIL_BYTES`]).
    pub(super) room: Condvar,
    /// The bytes of the record batches held, readable without the lock.
    bytes: AtomicUsize,
    /// [`MAX_TAIL_BYTES`] (tests make it smaller).
    max_bytes: AtomicUsize,
}

impl Default for Tail {
    fn default() -> Tail {
        Tail {
            state: Mutex::default(),
            wake: Condvar::new(),
            room: Condvar::new(),
            bytes: AtomicUsize::new(0),
            max_bytes: AtomicUsize::new(MAX_TAIL_BYTES),
        }
    }
}

/// A record batch confirmed and not committed: messages `base..next`.
#[derive(Clone)]
pub(super) struct TailBatch {
    pub(super) base: u64,
    pub(super) next: u64,
    /// The bytes of its messages' data (without their lengths).
    pub(super) data_bytes: u64,
    pub(super) batch: Arc<Vec<u8>>,
}

/// Messages read, `(index, data)`, in index order.
pub(super) type Pulled = Vec<(u64, Vec<u8>)>;

/// See [`Tail`].
#[derive(Default)]
pub(super) struct TailState {
    /// Per stream, its batches in index order, from the first message the
    /// database does not have; a stream with none has no entry.
    streams: HashMap<String, VecDeque<TailBatch>>,
    /// Read positions saved and not committed, `(client, stream) ->
    /// (index, seq)`: `seq` tells a later save of the same position from
    /// the one a commit took.
    saved: HashMap<(String, String), (u64, u64)>,
    next_seq: u64,
    /// Trims for the commit thread (committed after what the tail holds).
    pub(super) trims: Vec<super::redb::Write>,
    /// The flush thread (or [`Tail::sync`]) asks for a durable commit.
    pub(super) flush: bool,
    /// Flushes the commit thread started, and finished (see
    /// [`Tail::sync`]).
    pub(super) flushes_started: u64,
    pub(super) flushes_done: u64,
    /// The store is closing: the commit thread commits everything, makes
    /// it durable, and ends.
    pub(super) closing: bool,
    /// The commit thread is gone (the store closed, or it panicked):
    /// nothing waits for room or a flush.
    pub(super) stopped: bool,
    /// The store is closing: the writer no longer waits for room.
    pub(super) draining: bool,
    /// Whether the last flush made everything durable.
    pub(super) last_flush_ok: bool,
}

/// What the commit thread takes from the tail for one transaction.
#[derive(Default)]
pub(super) struct Snapshot {
    /// Per stream, its batches in order.
    pub(super) streams: Vec<(String, Vec<TailBatch>)>,
    /// Read positions: `(client, stream)`, index, seq.
    pub(super) saved: Vec<((String, String), u64, u64)>,
}

impl Snapshot {
    pub(super) fn is_empty(&self) -> bool {
        self.streams.is_empty() && self.saved.is_empty()
    }
}

impl TailState {
    /// Whether the commit thread has anything to do.
    pub(super) fn has_work(&self) -> bool {
        !self.streams.is_empty()
            || !self.saved.is_empty()
            || !self.trims.is_empty()
            || self.flush
            || self.closing
    }
}

impl Tail {
    /// The bytes of the record batches held.
    pub(super) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether the tail holds [`MAX_TAIL_BYTES`] or more.
    pub(super) fn is_full(&self) -> bool {
        self.bytes() >= self.max_bytes.load(Ordering::Relaxed)
    }

    /// Sets the most bytes the tail holds (instead of [`MAX_TAIL_BYTES`]).
    #[cfg(test)]
    pub(super) fn set_max_bytes(&self, n: usize) {
        self.max_bytes.store(n, Ordering::Relaxed);
    }

    /// Asks the commit thread for a flush and waits for it: everything
    /// confirmed before the call is then in the database, durable (the
    /// inspect command's answer, which reads the database). `false` when
    /// the flush failed (see the hub's log), or the commit thread is gone.
    pub(super) fn sync(&self) -> bool {
        let mut st = lock(&self.state);
        // The next flush to start takes this request.
        let target = st.flushes_started + 1;
        st.flush = true;
        self.wake.notify_one();
        while st.flushes_done < target && !st.stopped {
            st = self
                .room
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        st.flushes_done >= target && st.last_flush_ok
    }

    /// Waits until the tail has room, the commit thread is gone, or the
    /// store is closing.
    pub(super) fn wait_for_room(&self) {
        let mut st = lock(&self.state);
        while self.is_full() && !st.stopped && !st.draining {
            st = self
                .room
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Adds what one append to the log held: `batches` (stream and batch,
    /// each stream's in index order, after what the tail has of it) and
    /// `saved` read positions; wakes the commit thread.
    pub(super) fn add<'a>(
        &self,
        batches: impl IntoIterator<Item = (&'a str, TailBatch)>,
        saved: impl IntoIterator<Item = (&'a str, &'a str, u64)>,
    ) {
        let mut st = lock(&self.state);
        let was_empty = st.streams.is_empty() && st.saved.is_empty();
        let mut added = 0;
        for (stream, b) in batches {
            added += b.batch.len();
            match st.streams.get_mut(stream) {
                Some(q) => q.push_back(b),
                None => {
                    st.streams.insert(stream.to_string(), VecDeque::from([b]));
                }
            }
        }
        for (client, stream, index) in saved {
            st.next_seq += 1;
            let seq = st.next_seq;
            st.saved
                .insert((client.to_string(), stream.to_string()), (index, seq));
        }
        let before = self.bytes.fetch_add(added, Ordering::Relaxed);
        // The commit thread waits for the tail's first write, then for
        // time or bytes (see `COMMIT_BYTES`): woken only when it matters.
        let commit_bytes = super::redb::COMMIT_BYTES;
        if was_empty || (before < commit_bytes && before + added >= commit_bytes) {
            self.wake.notify_one();
        }
    }

    /// Everything the tail holds now, for one commit.
    pub(super) fn snapshot(&self) -> Snapshot {
        let st = lock(&self.state);
        Snapshot {
            streams: st
                .streams
                .iter()
                .map(|(name, q)| (name.clone(), q.iter().cloned().collect()))
                .collect(),
            saved: st
                .saved
                .iter()
                .map(|(key, &(index, seq))| (key.clone(), index, seq))
                .collect(),
        }
    }

    /// Removes what `snapshot` took, now committed: each stream's first
    /// batches, and the read positions not saved again since; wakes a
    /// committer waiting for room.
    pub(super) fn committed(&self, snapshot: Snapshot) {
        let mut st = lock(&self.state);
        let mut freed = 0;
        for (name, batches) in snapshot.streams {
            let Some(q) = st.streams.get_mut(&name) else {
                continue;
            };
            for _ in 0..batches.len() {
                if let Some(b) = q.pop_front() {
                    freed += b.batch.len();
                }
            }
            if q.is_empty() {
                st.streams.remove(&name);
            }
        }
        for (key, _, seq) in snapshot.saved {
            if st.saved.get(&key).is_some_and(|&(_, s)| s == seq) {
                st.saved.remove(&key);
            }
        }
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
        drop(st);
        self.room.notify_all();
    }

    /// For a pull of `stream` from `from` (within `limit` messages and
    /// `max_bytes`, see [`Within`]): the first index the tail holds of
    /// `stream` (`u64::MAX` when none: the database has all of it), and
    /// the messages from `from` on that the tail holds. Call it before
    /// reading the database (see the [module](self)).
    ///
    /// # Errors
    /// Never in practice: the tail's batches are made whole by this
    /// process (a batch cut short would be an error, not a panic).
    pub(super) fn copy(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> ockam_core::Result<(u64, Pulled)> {
        let st = lock(&self.state);
        let Some(q) = st.streams.get(stream) else {
            return Ok((u64::MAX, Vec::new()));
        };
        let first = q.front().map_or(u64::MAX, |b| b.base);
        let mut within = Within::new(limit, max_bytes);
        for b in q.iter().filter(|b| b.next > from) {
            for (index, data) in (b.base..).zip(batch::messages(&b.batch)) {
                if index >= from && !within.take(index, data?) {
                    return Ok((first, within.out));
                }
            }
        }
        Ok((first, within.out))
    }

    /// The index the next message of `stream` gets, if the tail holds any
    /// of it.
    pub(super) fn next_index(&self, stream: &str) -> Option<u64> {
        let st = lock(&self.state);
        st.streams.get(stream)?.back().map(|b| b.next)
    }

    /// A read position saved and not committed yet.
    pub(super) fn saved_index(&self, client: &str, stream: &str) -> Option<u64> {
        let st = lock(&self.state);
        st.saved
            .get(&(client.to_string(), stream.to_string()))
            .map(|&(index, _)| index)
    }

    /// The streams' next indexes and the read positions the tail holds,
    /// newer than the database's (for the store's stats).
    pub(super) fn stats(&self) -> super::StoreStats {
        let st = lock(&self.state);
        let mut stats = super::StoreStats::default();
        for (name, q) in &st.streams {
            if let Some(b) = q.back() {
                stats.streams.insert(name.clone(), b.next);
            }
        }
        for (key, &(index, _)) in &st.saved {
            stats.indexes.insert(key.clone(), index);
        }
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_of(messages: &[&[u8]]) -> TailBatch {
        let mut b = Vec::new();
        for m in messages {
            batch::append(&mut b, m).unwrap();
        }
        TailBatch {
            base: 0,
            next: messages.len() as u64,
            data_bytes: messages.iter().map(|m| m.len() as u64).sum(),
            batch: Arc::new(b),
        }
    }

    fn at(base: u64, mut b: TailBatch) -> TailBatch {
        b.next += base - b.base;
        b.base = base;
        b
    }

    /// A reader copies from the tail what the database lacks, a commit
    /// removes only what it took, and a position saved again after a
    /// commit took it stays.
    #[test]
    fn the_tail_gives_what_the_database_lacks_and_lets_go_of_what_was_committed() {
        let tail = Tail::default();
        tail.add(
            [
                ("s", at(5, batch_of(&[b"5", b"6"]))),
                ("s", at(7, batch_of(&[b"7"]))),
            ],
            [("c", "s", 6)],
        );
        assert_eq!(tail.next_index("s"), Some(8));
        assert_eq!(tail.next_index("t"), None);
        let (first, got) = tail.copy("s", 6, 10, usize::MAX).unwrap();
        assert_eq!(first, 5);
        assert_eq!(got, vec![(6, b"6".to_vec()), (7, b"7".to_vec())]);
        assert_eq!(tail.copy("s", 0, 1, usize::MAX).unwrap().1.len(), 1);
        assert_eq!(
            tail.copy("t", 0, 10, usize::MAX).unwrap(),
            (u64::MAX, vec![])
        );

        let snap = tail.snapshot();
        // Meanwhile: one more batch, and the position saved again.
        tail.add([("s", at(8, batch_of(&[b"8"])))], [("c", "s", 8)]);
        tail.committed(snap);
        let (first, got) = tail.copy("s", 0, 10, usize::MAX).unwrap();
        assert_eq!((first, got), (8, vec![(8, b"8".to_vec())]));
        assert_eq!(tail.saved_index("c", "s"), Some(8));
        assert_eq!(tail.bytes(), 5);

        let snap = tail.snapshot();
        tail.committed(snap);
        assert_eq!(tail.bytes(), 0);
        assert_eq!(tail.saved_index("c", "s"), None);
        assert!(!lock(&tail.state).has_work());
    }
}

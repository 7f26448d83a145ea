//! Frame-sized byte buffers, reused across a process instead of freed.
//!
//! A node that receives a stream of large frames takes a buffer for each
//! (the TCP reader: a transport message's payload) and frees it on another
//! thread once the application has read what it holds. glibc's allocator
//! gives each thread its own arena and, when a free leaves more than its
//! trim threshold (128 KiB by default) free at the top of that arena,
//! hands the pages back to the kernel (`MADV_DONTNEED`): the next frame's
//! buffer is faulted in again, page by page. In one run of several that is
//! a quarter of a million page faults for 4 GB received, and the run
//! is a third slower (`BENCHMARKS.md`, typed streams, session 15).
//!
//! The owner of a buffer that is done with it gives it back here
//! ([`give`], or [`shared`], whose [`Bytes`] gives it back when its last
//! clone goes) instead of freeing it, and the next large frame takes it
//! ([`take`]). Only buffers of [`MIN_CAPACITY`] to [`MAX_CAPACITY`] bytes
//! are kept, [`MAX_KEPT_BYTES`] (16 MiB) in all at most: about what a
//! typed stream with a 16 MiB window has in flight (the default window is
//! 1 MiB; a receiver whose application falls behind by more than what is
//! kept frees the rest as before). Smaller buffers come from the
//! allocator's own caches, which serve them well.

use crate::internal::sync::lock;
use bytes::Bytes;
use std::sync::Mutex;

/// Buffers smaller than this are neither taken from nor given to the pool.
pub const MIN_CAPACITY: usize = 16 * 1024;

/// Buffers larger than this are not kept (a rare huge frame's buffer is
/// freed as usual).
pub const MAX_CAPACITY: usize = 256 * 1024;

/// The most bytes (of capacity) kept at once.
pub const MAX_KEPT_BYTES: usize = 16 * 1024 * 1024;

/// A pool of buffers; the process has one ([`take`], [`give`], [`shared`]).
pub struct Pool {
    kept: Mutex<Kept>,
}

/// How many size classes: class `k` holds buffers of `(k + 1) *
/// MIN_CAPACITY` bytes or more, and less than the next class's.
const CLASSES: usize = MAX_CAPACITY / MIN_CAPACITY;

struct Kept {
    classes: [Vec<Vec<u8>>; CLASSES],
    /// Their capacities' sum.
    bytes: usize,
}

/// The class of a buffer of `capacity` bytes (within the bounds).
fn class_of(capacity: usize) -> usize {
    capacity / MIN_CAPACITY - 1
}

impl Pool {
    /// An empty pool.
    pub const fn new() -> Self {
        Pool {
            kept: Mutex::new(Kept {
                classes: [const { Vec::new() }; CLASSES],
                bytes: 0,
            }),
        }
    }

    /// An empty buffer with room for at least `len` bytes. When `len` is
    /// within [`MIN_CAPACITY`] to [`MAX_CAPACITY`]: a kept one of the size
    /// class of `len` rounded up to a multiple of [`MIN_CAPACITY`], or of
    /// the classes up to a quarter above it (so that a small payload does
    /// not hold a large buffer: its capacity is under `len` rounded up,
    /// plus a quarter, plus [`MIN_CAPACITY`]), or else a new one of `len`
    /// rounded up (so that it serves frames a little larger later). Else a
    /// new one of `len`.
    pub fn take(&self, len: usize) -> Vec<u8> {
        if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&len) {
            return Vec::with_capacity(len);
        }
        let rounded = len.next_multiple_of(MIN_CAPACITY);
        let first = class_of(rounded);
        let last = (first + (first + 1) / 4).min(CLASSES - 1);
        {
            let mut kept = lock(&self.kept);
            for class in first..=last {
                if let Some(buf) = kept.classes[class].pop() {
                    kept.bytes -= buf.capacity();
                    return buf;
                }
            }
        }
        Vec::with_capacity(rounded)
    }

    /// Keeps `buf` for a later [`take`](Self::take) if its capacity is
    /// within [`MIN_CAPACITY`] to [`MAX_CAPACITY`]; else frees it. Beyond
    /// [`MAX_KEPT_BYTES`], kept buffers of other sizes are freed to make
    /// room (the size coming back is the one in use now: a burst of other
    /// sizes does not fill the pool for good), and failing that `buf`.
    pub fn give(&self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&cap) {
            return;
        }
        buf.clear();
        let class = class_of(cap);
        // Freed once the lock is released.
        let mut evicted = Vec::new();
        let mut kept = lock(&self.kept);
        while kept.bytes + cap > MAX_KEPT_BYTES {
            let Some(other) = (0..CLASSES)
                .rev()
                .find(|&c| c != class && !kept.classes[c].is_empty())
            else {
                return;
            };
            if let Some(old) = kept.classes[other].pop() {
                kept.bytes -= old.capacity();
                evicted.push(old);
            }
        }
        kept.bytes += cap;
        kept.classes[class].push(buf);
    }

    /// `buf` as [`Bytes`] (no copy) that is [given](Self::give) back once
    /// the last of its clones and slices is dropped.
    pub fn shared(&'static self, buf: Vec<u8>) -> Bytes {
        if (MIN_CAPACITY..=MAX_CAPACITY).contains(&buf.capacity()) {
            Bytes::from_owner(Recycled { buf, home: self })
        } else {
            Bytes::from(buf)
        }
    }

    /// How many buffers are kept now, and their capacities' sum.
    pub fn kept(&self) -> (usize, usize) {
        let kept = lock(&self.kept);
        (kept.classes.iter().map(Vec::len).sum(), kept.bytes)
    }
}

impl Default for Pool {
    fn default() -> Self {
        Pool::new()
    }
}

/// The process's pool.
static POOL: Pool = Pool::new();

/// [`Pool::take`] from the process's pool.
pub fn take(len: usize) -> Vec<u8> {
    POOL.take(len)
}

/// [`Pool::give`] to the process's pool.
pub fn give(buf: Vec<u8>) {
    POOL.give(buf)
}

/// [`Pool::shared`] with the process's pool.
pub fn shared(buf: Vec<u8>) -> Bytes {
    POOL.shared(buf)
}

/// A buffer that goes back to its pool when dropped.
struct Recycled {
    buf: Vec<u8>,
    home: &'static Pool,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        self.home.give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_within_the_bounds_come_back_and_others_do_not() {
        static P: Pool = Pool::new();
        let mut buf = P.take(64 * 1024);
        assert!(buf.capacity() >= 64 * 1024 && buf.is_empty());
        let at = buf.as_ptr();
        buf.extend_from_slice(&[1; 1000]);
        let bytes = P.shared(buf);
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(P.kept().0, 0, "a slice still holds it");
        assert_eq!(&slice[..], &[1; 10]);
        drop(slice);
        assert_eq!(P.kept().0, 1);
        // A larger request does not take it (a new buffer, rounded up); a
        // much smaller one neither; one a little smaller does, and it is
        // the same allocation, empty.
        assert!(P.take(100 * 1024 + 1).capacity() >= 112 * 1024);
        let small = P.take(20 * 1024);
        assert_ne!(small.as_ptr(), at);
        assert_eq!(P.kept().0, 1);
        let larger_class = P.take(48 * 1024);
        assert_ne!(larger_class.as_ptr(), at, "more than a quarter larger");
        assert_eq!(P.kept().0, 1);
        let again = P.take(60 * 1024);
        assert_eq!(again.as_ptr(), at);
        assert!(again.is_empty());
        P.give(again);
        assert_eq!(P.kept().0, 1);
        // Too small or too large: not kept, and a small take is not served
        // from the pool.
        P.give(Vec::with_capacity(MIN_CAPACITY - 1));
        P.give(Vec::with_capacity(MAX_CAPACITY + 1));
        assert_eq!(P.kept().0, 1);
        assert!(P.take(100).capacity() < MIN_CAPACITY);
        assert_eq!(P.kept().0, 1);
        // Bytes of a buffer outside the bounds are plain ones.
        drop(P.shared(vec![0; 10]));
        assert_eq!(P.kept().0, 1);
        // Never more than MAX_KEPT_BYTES; full, the 64 KiB one made room
        // for the 16 KiB ones coming back (the size in use now).
        for _ in 0..MAX_KEPT_BYTES / MIN_CAPACITY + 5 {
            P.give(Vec::with_capacity(MIN_CAPACITY));
        }
        let (n, bytes) = P.kept();
        assert!(bytes <= MAX_KEPT_BYTES && bytes + MIN_CAPACITY > MAX_KEPT_BYTES);
        assert!(lock(&P.kept).classes[class_of(64 * 1024)].is_empty());
        assert_eq!(n, lock(&P.kept).classes[0].len());
        // What is taken is no longer counted.
        let b = P.take(MIN_CAPACITY);
        assert_eq!(P.kept().1, bytes - b.capacity());
        // Full of one size, a buffer of another size takes the room of
        // those (the size in use now), and the pool stays within bounds.
        P.give(b);
        for _ in 0..10 {
            P.give(Vec::with_capacity(64 * 1024));
        }
        let (_, bytes) = P.kept();
        assert!(bytes <= MAX_KEPT_BYTES);
        let sixty_four = lock(&P.kept).classes[class_of(64 * 1024)].len();
        assert_eq!(sixty_four, 10, "kept, evicting 16 KiB ones");
        let got = P.take(64 * 1024);
        assert!(got.capacity() >= 64 * 1024 && got.capacity() < 80 * 1024);
    }
}

//! The outbox of one connection: frames waiting to be written.
//!
//! Senders on any thread append frames straight into it (no hop through a
//! worker); the connection's writer task takes everything at once and
//! writes it with vectored writes (the buffer, and the shared ends of large
//! frames, which are not copied into it; up to 256 pieces a system call),
//! so frames that arrive while a write is in progress go out together in
//! the next one. Once more than the write
//! batch size is queued, a sender that adds to it waits (as
//! [`Backpressure`]) until the writer has made room, for as long as the
//! peer keeps reading, so senders run at the speed of the peer. A peer that
//! stops reading makes each such wait end after [`STALL_WAIT`] without
//! progress (two nodes writing to each other must not hang; later senders
//! then do not wait until the writer progresses again), and
//! once [`HARD_LIMIT_BATCHES`] batches are queued the outbox refuses
//! messages and the connection is closed (the peer reads nothing: a "slow
//! consumer", which NATS disconnects too) instead of holding the backlog.

use crate::frame::{encode_frame, encode_frame_shared};
use ockam_core::internal::sync::lock;
use ockam_core::{
    Address, EncodePayload, Error, Result, TransportMessage, TRANSPORT_MESSAGE_VERSION,
};
use ockam_node::{Backpressure, PRESSURE_WAIT};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::Notify;

/// Queued output beyond which the outbox refuses messages (the peer is not
/// reading), in write batches.
pub(crate) const HARD_LIMIT_BATCHES: usize = 64;

/// How long a sender waits for a writer that makes no progress at all.
pub(crate) const STALL_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

pub(crate) struct Outbox {
    state: Mutex<State>,
    /// The writer waits here for frames.
    ready: Notify,
    /// Senders wait here for room.
    drained: Notify,
    /// Bytes the writer has handed to the socket so far (its progress).
    written: AtomicU64,
    /// `written` when a sender last gave up waiting (the writer had made
    /// no progress for [`STALL_WAIT`]); `u64::MAX` when none did. While
    /// `written` is still that, senders do not wait again: one stalled
    /// peer costs its senders one [`STALL_WAIT`], not one per message (a
    /// hub's echo service answering a peer that reads nothing kept every
    /// other client waiting 500 ms per answer, 132 s in all).
    gave_up_at: AtomicU64,
    /// Set once the backlog reached the hard limit: the connection is
    /// closed rather than kept with a backlog its peer never reads (NATS
    /// closes a "slow consumer" the same way).
    overloaded: std::sync::atomic::AtomicBool,
    /// The writer waits here (beside its write) for `overloaded`.
    abort: Notify,
    /// Bytes beyond which senders wait.
    limit: usize,
    /// Bytes beyond which messages are refused.
    hard_limit: usize,
    max_frame: usize,
}

struct State {
    /// The frames, but for the shared ends in `batch.shared`.
    batch: Batch,
    /// Frames in `batch`.
    frames: usize,
    /// No more frames are accepted (connection closing or failed).
    closed: bool,
}

/// Frames queued for one write: bytes in `buf`, and buffers shared with
/// their senders (the ends of large frames), each to be written before
/// `buf[at..]`.
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) buf: Vec<u8>,
    /// `(at, bytes)`, `at` ascending.
    pub(crate) shared: Vec<(usize, bytes::Bytes)>,
    /// The bytes in `shared`.
    shared_bytes: usize,
}

/// A frame's shared end shorter than this is copied into the buffer
/// (a copy is cheaper than another piece of a vectored write).
const SHARE_MIN: usize = 4096;

impl Batch {
    /// Bytes in all.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() + self.shared_bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties it, keeping the buffer's capacity.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.shared.clear();
        self.shared_bytes = 0;
    }

    /// The pieces to write, in order.
    pub(crate) fn pieces(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut from = 0;
        let mut shared = self.shared.iter();
        let mut next = shared.next();
        let mut done = false;
        std::iter::from_fn(move || {
            if done {
                return None;
            }
            Some(match next {
                Some((at, b)) if *at == from => {
                    next = shared.next();
                    &b[..]
                }
                Some((at, _)) => {
                    let piece = &self.buf[from..*at];
                    from = *at;
                    piece
                }
                None => {
                    done = true;
                    &self.buf[from..]
                }
            })
        })
        .filter(|p| !p.is_empty())
    }
}

/// How far the vectored writes of a batch's pieces have gone: the piece
/// the next write starts in, and the bytes of it already written. Plain
/// arithmetic, no I/O: the writer asks it what to write and tells it what
/// the socket took.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    piece: usize,
    offset: usize,
}

impl Cursor {
    /// What the next write offers: the rest of the current piece, then the
    /// pieces after it, `max` slices at most (at least one while anything
    /// is left).
    pub(crate) fn slices<'a>(&self, pieces: &[&'a [u8]], max: usize) -> Vec<std::io::IoSlice<'a>> {
        let Some(first) = pieces.get(self.piece) else {
            return Vec::new();
        };
        // (One small allocation per system call.)
        let mut iov = Vec::with_capacity((pieces.len() - self.piece).min(max.max(1)));
        iov.push(std::io::IoSlice::new(
            first.get(self.offset..).unwrap_or(&[]),
        ));
        iov.extend(
            pieces[self.piece + 1..]
                .iter()
                .take(max.saturating_sub(1))
                .map(|p| std::io::IoSlice::new(p)),
        );
        iov
    }

    /// The socket took `n` more bytes (at most what [`slices`](Self::slices)
    /// offered; beyond the last piece, the rest is ignored).
    pub(crate) fn advance(&mut self, pieces: &[&[u8]], mut n: usize) {
        while n > 0 {
            let Some(p) = pieces.get(self.piece) else {
                return;
            };
            let rest = p.len() - self.offset.min(p.len());
            if n < rest {
                self.offset += n;
                return;
            }
            n -= rest;
            self.piece += 1;
            self.offset = 0;
        }
    }
}

/// What happened to a message offered to the outbox.
pub(crate) enum Push {
    Queued,
    /// Queued, and the outbox is over its limit: the sender should wait.
    Backlog,
    Closed,
    /// Not queued: too large for a frame, or its payload failed to encode.
    Refused(Error),
    /// The peer is not reading: refused.
    Overloaded,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("Outbox")
            .field("queued_bytes", &st.batch.len())
            .field("written_bytes", &self.written.load(Ordering::Relaxed))
            .field("closed", &st.closed)
            .finish()
    }
}

impl Outbox {
    pub(crate) fn new(limit: usize, max_frame: usize) -> Self {
        Outbox {
            state: Mutex::new(State {
                batch: Batch::default(),
                frames: 0,
                closed: false,
            }),
            ready: Notify::new(),
            drained: Notify::new(),
            written: AtomicU64::new(0),
            gave_up_at: AtomicU64::new(u64::MAX),
            overloaded: std::sync::atomic::AtomicBool::new(false),
            abort: Notify::new(),
            limit,
            hard_limit: limit.saturating_mul(HARD_LIMIT_BATCHES),
            max_frame,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Appends `msg` (whose onward route no longer names this hop).
    pub(crate) fn push(&self, msg: &TransportMessage) -> Push {
        self.append(|buf, max_frame| encode_frame(msg, buf, max_frame).map(|()| None))
    }

    /// Appends a message that is not built (see [`encode_frame_shared`]);
    /// its onward route no longer names this hop.
    pub(crate) fn push_parts(
        &self,
        onward_route: &[Address],
        return_route: &[Address],
        payload: &dyn EncodePayload,
    ) -> Push {
        self.append(|buf, max_frame| {
            encode_frame_shared(
                TRANSPORT_MESSAGE_VERSION,
                onward_route,
                return_route,
                payload,
                buf,
                max_frame,
            )
        })
    }

    /// Appends one frame with `encode` (which may leave the frame's end
    /// out of the buffer and return it, shared), under the lock.
    fn append(
        &self,
        encode: impl FnOnce(&mut Vec<u8>, usize) -> Result<Option<bytes::Bytes>>,
    ) -> Push {
        let mut st = self.lock();
        if st.closed {
            return Push::Closed;
        }
        if st.batch.len() >= self.hard_limit {
            // Closed: the writer stops its write, the connection goes.
            st.closed = true;
            drop(st);
            self.overloaded.store(true, Ordering::Release);
            self.abort.notify_waiters();
            self.drained.notify_waiters();
            return Push::Overloaded;
        }
        let was_empty = st.batch.is_empty();
        match encode(&mut st.batch.buf, self.max_frame) {
            Err(e) => return Push::Refused(e),
            Ok(None) => {}
            Ok(Some(tail)) if tail.len() < SHARE_MIN => st.batch.buf.extend_from_slice(&tail),
            Ok(Some(tail)) => {
                let at = st.batch.buf.len();
                st.batch.shared_bytes += tail.len();
                st.batch.shared.push((at, tail));
            }
        }
        st.frames += 1;
        let over = st.batch.len() >= self.limit;
        drop(st);
        if was_empty {
            self.ready.notify_one();
        }
        if over {
            Push::Backlog
        } else {
            Push::Queued
        }
    }

    /// The writer handed `n` more bytes to the socket.
    pub(crate) fn wrote(&self, n: usize) {
        self.written.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Waits until the outbox is under its limit (or closed).
    async fn wait_for_room(&self) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            {
                let st = self.lock();
                if st.closed || st.batch.len() < self.limit {
                    return;
                }
            }
            drained.await;
        }
    }

    /// Resolves once the backlog reached its hard limit (see `overloaded`).
    pub(crate) async fn overloaded(&self) {
        loop {
            let aborted = self.abort.notified();
            tokio::pin!(aborted);
            aborted.as_mut().enable();
            if self.overloaded.load(Ordering::Acquire) {
                return;
            }
            aborted.await;
        }
    }

    /// Bytes queued and not yet taken by the writer.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.lock().batch.len()
    }

    /// Accepts no more frames; the writer sends what is queued and stops.
    /// Returns how many frames are queued and not yet taken by the writer
    /// (dropped, when there is no writer).
    pub(crate) fn close(&self) -> usize {
        let frames = {
            let mut st = self.lock();
            st.closed = true;
            st.frames
        };
        self.ready.notify_one();
        self.drained.notify_waiters();
        frames
    }

    /// Everything queued so far (swapped with `spare`, which must be
    /// empty), how many frames that is, and whether the outbox is closed.
    /// Waits while it is empty and open.
    pub(crate) async fn take(&self, spare: Batch) -> (Batch, usize, bool) {
        let mut spare = Some(spare);
        loop {
            let ready = self.ready.notified();
            {
                let mut st = self.lock();
                if !st.batch.is_empty() || st.closed {
                    let batch = std::mem::replace(&mut st.batch, spare.take().unwrap_or_default());
                    let frames = std::mem::take(&mut st.frames);
                    let closed = st.closed;
                    drop(st);
                    self.drained.notify_waiters();
                    return (batch, frames, closed);
                }
            }
            ready.await;
        }
    }
}

impl Backpressure for Outbox {
    /// Waits for room while the writer makes progress; gives up after
    /// [`STALL_WAIT`] in which it wrote nothing (the kernel lets a blocked
    /// writer go on only once a good part of the socket buffer is free,
    /// which takes a while with a slow reader).
    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>> {
        Box::pin(async {
            let mut before = self.written.load(Ordering::Relaxed);
            if self.gave_up_at.load(Ordering::Relaxed) == before {
                return Ok(()); // still stalled since a sender gave up
            }
            let mut stalled = std::time::Duration::ZERO;
            while stalled < STALL_WAIT {
                if tokio::time::timeout(PRESSURE_WAIT, self.wait_for_room())
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
                let now = self.written.load(Ordering::Relaxed);
                if now == before {
                    stalled += PRESSURE_WAIT;
                } else {
                    before = now;
                    stalled = std::time::Duration::ZERO;
                }
            }
            self.gave_up_at.store(before, Ordering::Relaxed);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(buf: &[u8], shared: &[(usize, &[u8])]) -> Batch {
        Batch {
            buf: buf.to_vec(),
            shared: shared
                .iter()
                .map(|(at, b)| (*at, bytes::Bytes::copy_from_slice(b)))
                .collect(),
            shared_bytes: shared.iter().map(|(_, b)| b.len()).sum(),
        }
    }

    /// The pieces are the buffer cut where each shared end goes, with the
    /// ends between: at the start, back to back, at the end; none empty.
    #[test]
    fn pieces_put_each_shared_end_where_it_belongs() {
        let b = batch(b"abcdef", &[(0, b"X"), (2, b"Y"), (2, b"Z"), (6, b"W")]);
        let pieces: Vec<&[u8]> = b.pieces().collect();
        assert_eq!(
            pieces,
            [&b"X"[..], b"ab", b"Y", b"Z", b"cdef", b"W"],
            "in order"
        );
        assert_eq!(pieces.concat().len(), b.len());
        let plain = batch(b"abc", &[]);
        assert_eq!(plain.pieces().collect::<Vec<_>>(), [&b"abc"[..]]);
        assert_eq!(batch(b"", &[]).pieces().count(), 0);
    }

    proptest::proptest! {
        /// Whatever the pieces, the cap on slices per write and how much
        /// each write takes (partial writes that stop anywhere, inside a
        /// piece or at its end), the bytes written are the pieces in order,
        /// each once.
        #[test]
        fn partial_vectored_writes_resume_where_they_stopped(
            lens in proptest::collection::vec(1usize..50, 0..40),
            max in 1usize..6,
            takes in proptest::collection::vec(1usize..120, 1..200),
        ) {
            let data: Vec<Vec<u8>> = lens
                .iter()
                .enumerate()
                .map(|(i, &n)| (0..n).map(|j| (i * 7 + j) as u8).collect())
                .collect();
            let pieces: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let want: Vec<u8> = data.concat();
            let mut cursor = Cursor::default();
            let mut out = Vec::new();
            let mut takes = takes.into_iter().cycle();
            while out.len() < want.len() {
                let iov = cursor.slices(&pieces, max);
                proptest::prop_assert!(!iov.is_empty() && iov.len() <= max);
                let offered: Vec<u8> = iov.iter().flat_map(|s| s.iter().copied()).collect();
                let n = takes.next().unwrap_or(1).min(offered.len());
                proptest::prop_assert!(n > 0, "a write offered nothing");
                out.extend_from_slice(&offered[..n]);
                cursor.advance(&pieces, n);
            }
            proptest::prop_assert_eq!(out, want);
            proptest::prop_assert!(cursor.slices(&pieces, max).is_empty());
        }
    }
}

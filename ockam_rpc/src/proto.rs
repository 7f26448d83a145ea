//! The typed streams' protocol, as plain state machines (no I/O, no clock
//! of their own, quinn-proto's way): a [`SendHalf`] at the sending end and
//! a [`RecvHalf`] at the receiving end exchange [`Frame`]s over any Ockam
//! route.
//!
//! - **Order, exactly once.** Data carries per-stream sequence numbers; the
//!   receiver delivers in order, drops duplicates (routes such as hub
//!   streams redeliver), holds what arrives early within its window, and
//!   never skips: a gap not filled within the liveness timeout ends the
//!   stream as [`End::Lost`] (or as the sender's [`End::Aborted`], after
//!   its abort, saying what is missing).
//! - **Credits, end to end.** The receiver grants credit in messages and
//!   bytes as its application takes messages (`taken + window`); the
//!   sender sends only within it. So at most one window of a stream is in
//!   flight or buffered anywhere on the route.
//! - **Endings that can't be confused.** `Close { total }` ends cleanly only
//!   once all `total` messages arrived (`CloseAck` then tells the sender);
//!   `Abort { total }` (the sender gave up, or dropped its sink: its
//!   `total` messages are delivered first), `Cancel` (the receiver gave
//!   up) and silence (no frame for the liveness timeout) each end it with
//!   their own [`End`].

use bytes::Bytes;
use ockam_core::internal::recycle;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Most item bytes (messages with their lengths) one `Data` frame carries
/// (a larger message goes alone).
pub const MAX_FRAME_BODY_BYTES: usize = 64 * 1024;

/// One frame between the two ends of a stream (BARE-encoded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// Messages `first..first + bodies.len()`.
    Data {
        /// The sequence number of the first body.
        first: u64,
        /// The messages' encodings.
        bodies: Bodies,
    },
    /// From the receiver: everything before `next` arrived; the sender may
    /// send sequence numbers below `credit_messages` and up to
    /// `credit_bytes` bytes in all (cumulative).
    Credit {
        /// The next sequence number expected.
        next: u64,
        /// Sequence numbers below this may be sent.
        credit_messages: u64,
        /// Cumulative bytes that may be sent.
        credit_bytes: u64,
    },
    /// From the sender: the stream ends cleanly after `total` messages.
    Close {
        /// How many messages were sent in all.
        total: u64,
    },
    /// From the receiver: all `total` messages arrived; the end is clean.
    CloseAck,
    /// From the sender: the stream ends without a clean end, after
    /// `total` messages (those sent before it: the receiver delivers them,
    /// then the abort, also when this frame overtook some of them).
    Abort {
        /// Why.
        reason: String,
        /// How many messages were sent in all.
        total: u64,
    },
    /// From the receiver: it wants no more.
    Cancel {
        /// Why.
        reason: String,
    },
    /// "Still here" (either way), when nothing else was sent lately.
    Ping,
}

/// The messages of a `Data` frame as they are on the wire: a BARE list of
/// byte strings (`list<data>`), whose items (each a length, then the
/// message's encoding) lie back to back in one buffer. A sender queues
/// its messages in this form (a `Data` frame is a header and one of the
/// queue's buffers), and a receiver keeps and lends them so, splitting them only
/// as they are taken: a message costs neither a buffer nor a reference
/// count of its own on its way.
///
/// Every `Bodies` holds exactly [`len`](Self::len) well-formed items (it
/// is checked where it is made: [`decode_data`], [`FromIterator`], the
/// sending queue).
#[derive(Debug, Clone, Default)]
pub struct Bodies {
    data: Bytes,
    /// Where the next message's encoding starts in `data`.
    pos: usize,
    /// Messages left.
    count: usize,
    /// Their bytes (the messages' own, without their lengths).
    bytes: u64,
}

impl Bodies {
    /// How many messages are left.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether none is left.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The bytes of the messages left (without their lengths).
    pub fn body_bytes(&self) -> u64 {
        self.bytes
    }

    /// Where the next message lies in `data`, and where the one after it
    /// starts.
    #[inline]
    fn next_range(&self) -> Option<(std::ops::Range<usize>, usize)> {
        if self.count == 0 {
            return None;
        }
        let mut r = ockam_core::internal::wire::Reader::new(self.data.get(self.pos..)?);
        let len = r.bytes().ok()?.len();
        let end = self.data.len() - r.remaining();
        Some((end - len..end, end))
    }

    /// Takes the next message: a slice of the run's buffer.
    #[inline]
    pub fn next_slice(&mut self) -> Option<&[u8]> {
        let Some((range, end)) = self.next_range() else {
            // (Only if the run was not checked: it is empty from now on.)
            self.count = 0;
            self.bytes = 0;
            return None;
        };
        self.pos = end;
        self.count -= 1;
        self.bytes -= range.len() as u64;
        Some(&self.data[range])
    }

    /// Takes the next message as a [`Bytes`] (a slice of the run's
    /// buffer: it keeps the buffer).
    pub fn next_bytes(&mut self) -> Option<Bytes> {
        let len = self.next_slice()?.len();
        Some(self.data.slice(self.pos - len..self.pos))
    }

    /// The items left as they are on the wire (each a BARE length, then
    /// the message's encoding), without the list's count.
    pub fn wire(&self) -> &[u8] {
        self.data.get(self.pos..).unwrap_or(&[])
    }

    /// [`wire`](Self::wire) as a shared buffer (no copy).
    pub fn wire_bytes(&self) -> Bytes {
        self.data.slice(self.pos.min(self.data.len())..)
    }

    /// The messages left, in order, without taking them.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut r =
            ockam_core::internal::wire::Reader::new(self.data.get(self.pos..).unwrap_or(&[]));
        (0..self.count).map_while(move |_| r.bytes().ok())
    }

    /// Splits off the first `n` messages (all if there are fewer).
    fn split_to(&mut self, n: usize) -> Bodies {
        if n >= self.count {
            return std::mem::take(self);
        }
        let start = self.pos;
        let mut bytes = 0;
        for _ in 0..n {
            bytes += self.next_slice().map_or(0, |b| b.len() as u64);
        }
        Bodies {
            data: self.data.slice(start..self.pos),
            pos: 0,
            count: n,
            bytes,
        }
    }
}

impl<B: AsRef<[u8]>> FromIterator<B> for Bodies {
    fn from_iter<I: IntoIterator<Item = B>>(iter: I) -> Self {
        let mut data = Vec::new();
        let mut count = 0;
        let mut bytes = 0;
        for b in iter {
            let b = b.as_ref();
            ockam_core::internal::wire::put_uint(&mut data, b.len() as u64);
            data.extend_from_slice(b);
            count += 1;
            bytes += b.len() as u64;
        }
        Bodies {
            data: Bytes::from(data),
            pos: 0,
            count,
            bytes,
        }
    }
}

/// The same messages, wherever they lie.
impl PartialEq for Bodies {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.iter().eq(other.iter())
    }
}

impl Eq for Bodies {}

impl Serialize for Bodies {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for body in self.iter() {
            seq.serialize_element(serde_bytes::Bytes::new(body))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Bodies {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bodies = Vec::<serde_bytes::ByteBuf>::deserialize(d)?;
        Ok(bodies.iter().map(|b| b.as_slice()).collect())
    }
}

/// How a stream ended, other than cleanly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The sender aborted (or dropped its sink without closing it).
    Aborted(String),
    /// The receiver cancelled.
    Cancelled(String),
    /// The peer, or the way to it, is gone: no frame within the liveness
    /// timeout, a gap that was never filled, or a send that failed.
    Lost(String),
}

/// Credit a receiver grants beyond what its application has taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Messages (at least 1).
    pub messages: u64,
    /// Bytes of message encodings (at least the largest message).
    pub bytes: u64,
}

impl Default for Window {
    /// 64 messages and 1 MiB.
    fn default() -> Self {
        Window {
            messages: 64,
            bytes: 1024 * 1024,
        }
    }
}

/// Timing of both halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A half that sent nothing for this long sends a `Ping` (default 2 s).
    pub ping_every: Duration,
    /// A half that heard nothing from its peer for this long ends the
    /// stream as lost (default 10 s). Also how long a receiver waits for a
    /// missing message (later ones, or the end's total, say it was sent)
    /// while none arrives in order, and how long a sender waits for the
    /// end's acknowledgement while the receiver reports no more arrived.
    /// Keep it above `ping_every`: pings are what carry that progress.
    pub liveness: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            ping_every: Duration::from_secs(2),
            liveness: Duration::from_secs(10),
        }
    }
}

/// Why a message cannot be sent now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendRefused {
    /// No credit: wait for the receiver's next `Credit`.
    NoCredit,
    /// The message is larger than the receiver's window in bytes.
    TooLarge {
        /// Its size, in bytes.
        size: u64,
        /// The window's size, in bytes.
        limit: u64,
    },
    /// The stream is closing or ended.
    Ended,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum SendState {
    /// Waiting for the receiver's first `Credit`.
    Attaching,
    Open,
    /// `Close` sent; waiting for `CloseAck`.
    Closing,
    Closed,
    Ended(End),
}

/// Queued messages that make one `Data` frame (see [`SendHalf`]).
#[derive(Debug, Default)]
struct Batch {
    /// Each message's BARE length, then its encoding.
    data: Vec<u8>,
    /// How many messages.
    count: usize,
    /// Their bytes (without their lengths).
    bytes: u64,
}

/// The sending end of one stream; see the module docs.
#[derive(Debug)]
pub struct SendHalf {
    state: SendState,
    next_seq: u64,
    sent_bytes: u64,
    credit_messages: u64,
    credit_bytes: u64,
    /// Messages the application gave, not yet sent (for batching), as
    /// `Data` frames carry them (see [`Bodies`]: each a BARE length, then
    /// its encoding), a frame's worth to a buffer: full ones, waiting for
    /// the shell (see [`SendHalf::send_encoded`])...
    sealed: VecDeque<Batch>,
    /// ... and the one being filled.
    queued: Batch,
    /// Messages, and their bytes (without their lengths), in `sealed` and
    /// `queued` together.
    queued_count: u64,
    queued_body_bytes: u64,
    /// The size of the last `Data` frame's bodies: room kept for the next.
    last_frame_bytes: usize,
    /// The size of the last queued item (length and encoding): a stream's
    /// messages are mostly alike, so the next is expected to take as much.
    last_item: usize,
    /// The bytes the last queued message's length took (see
    /// [`SendHalf::send_encoded`]).
    last_len_room: usize,
    timing: Timing,
    last_heard: Instant,
    last_sent: Instant,
    out: VecDeque<Frame>,
    /// The largest message the receiver's window allows (learnt from its
    /// first credit).
    max_message: u64,
    /// When the `Close` went out, or the receiver last said more had
    /// arrived since (`acked`): its `CloseAck` is due within the liveness
    /// timeout of that (everything before it was within the credit, so was
    /// sent already; a slow route may still carry some of it, and a lossy
    /// one may have lost some).
    close_sent: Option<Instant>,
    /// The receiver's latest `next`: everything before it arrived.
    acked: u64,
}

impl SendHalf {
    /// A sending end created at `now`, waiting for its receiver's first
    /// `Credit`.
    pub fn new(timing: Timing, now: Instant) -> Self {
        SendHalf {
            state: SendState::Attaching,
            next_seq: 0,
            sent_bytes: 0,
            credit_messages: 0,
            credit_bytes: 0,
            sealed: VecDeque::new(),
            queued: Batch::default(),
            queued_count: 0,
            queued_body_bytes: 0,
            last_frame_bytes: 0,
            last_item: 0,
            last_len_room: 1,
            close_sent: None,
            acked: 0,
            timing,
            last_heard: now,
            last_sent: now,
            out: VecDeque::new(),
            max_message: u64::MAX,
        }
    }

    /// Whether a message of `len` bytes may be queued now.
    ///
    /// # Errors
    /// [`SendRefused::Ended`] once the stream is closing or ended;
    /// [`SendRefused::TooLarge`] when `len` is over the receiver's window in
    /// bytes; [`SendRefused::NoCredit`] before the first credit or when the
    /// credit (messages or bytes) is used up.
    #[inline]
    pub fn check(&self, len: usize) -> Result<(), SendRefused> {
        self.check_at(self.queued_seq(), self.queued_bytes(), len)
    }

    /// [`check`](Self::check) of a message of `len` bytes that would be
    /// number `seq` and start at cumulative byte `bytes`.
    #[inline]
    fn check_at(&self, seq: u64, bytes: u64, len: usize) -> Result<(), SendRefused> {
        match self.state {
            SendState::Attaching | SendState::Open => {}
            _ => return Err(SendRefused::Ended),
        }
        let len = len as u64;
        if len > self.max_message {
            return Err(SendRefused::TooLarge {
                size: len,
                limit: self.max_message,
            });
        }
        if self.state == SendState::Attaching
            || seq >= self.credit_messages
            || bytes + len > self.credit_bytes
        {
            return Err(SendRefused::NoCredit);
        }
        Ok(())
    }

    /// The sequence number the next queued message gets.
    #[inline]
    fn queued_seq(&self) -> u64 {
        self.next_seq + self.queued_count
    }

    /// The cumulative bytes before the next queued message.
    #[inline]
    fn queued_bytes(&self) -> u64 {
        self.sent_bytes + self.queued_body_bytes
    }

    /// How many messages are queued and not yet in a frame.
    #[inline]
    pub fn queued(&self) -> usize {
        self.queued_count as usize
    }

    /// Queues a message's encoding.
    ///
    /// # Errors
    /// As [`check`](Self::check): nothing is queued then.
    pub fn send(&mut self, body: &[u8]) -> Result<(), SendRefused> {
        self.send_encoded(|buf| {
            buf.extend_from_slice(body);
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap_or_else(|never| match never {})
    }

    /// Queues a message that `encode` appends to the queue's buffer (so
    /// that it is encoded once, in place, with no buffer of its own; a
    /// message larger than the last that does not fit in the frame being
    /// filled is copied once, to start the next), if
    /// [`check`](Self::check) allows one of its length; otherwise takes
    /// it back out and says why.
    ///
    /// The item's length goes before the encoding, in the room the last
    /// message's length took: the encoding moves only when its length
    /// takes another number of bytes (a stream of like messages never).
    ///
    /// # Errors
    /// `encode`'s error (nothing queued); inside, as [`check`](Self::check).
    pub fn send_encoded<E>(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<Result<(), SendRefused>, E> {
        // An ended stream encodes nothing.
        if let Err(refused @ SendRefused::Ended) = self.check(0) {
            return Ok(Err(refused));
        }
        // A message like the last would make this batch more than a
        // frame's worth: the batch is a frame of its own.
        if self.queued.count > 0 && self.queued.data.len() + self.last_item > MAX_FRAME_BODY_BYTES {
            self.seal();
        }
        if self.queued.data.capacity() == 0 {
            // A reused buffer for a large batch (see `recycle`).
            self.queued.data =
                recycle::take(self.last_frame_bytes.clamp(256, MAX_FRAME_BODY_BYTES));
        }
        let buf = &mut self.queued.data;
        let start = buf.len();
        let room = self.last_len_room;
        buf.resize(start + room, 0);
        if let Err(e) = encode(buf) {
            buf.truncate(start);
            return Err(e);
        }
        let len = buf.len() - start - room;
        // `check` as it was before this message was written.
        if let Err(refused) = self.check_at(self.queued_seq(), self.queued_bytes(), len) {
            self.queued.data.truncate(start);
            return Ok(Err(refused));
        }
        let buf = &mut self.queued.data;
        let mut prefix = [0u8; 10];
        let mut n = 0;
        ockam_core::internal::wire::put_uint_with(len as u64, |b| {
            prefix[n] = b;
            n += 1;
        });
        if n == room {
            buf[start..start + n].copy_from_slice(&prefix[..n]);
        } else {
            buf.splice(start..start + room, prefix[..n].iter().copied());
            self.last_len_room = n;
        }
        self.last_item = buf.len() - start;
        if self.queued.count > 0 && buf.len() > MAX_FRAME_BODY_BYTES {
            // Larger than the last: it starts the next batch (copied, as
            // only a message larger than the one before it is).
            let mut next = recycle::take(self.last_item.max(MAX_FRAME_BODY_BYTES));
            next.extend_from_slice(&buf[start..]);
            buf.truncate(start);
            self.seal();
            self.queued.data = next;
        }
        self.queued.count += 1;
        self.queued.bytes += len as u64;
        self.queued_count += 1;
        self.queued_body_bytes += len as u64;
        Ok(Ok(()))
    }

    /// The batch being filled joins the full ones.
    fn seal(&mut self) {
        if self.queued.count > 0 {
            self.last_frame_bytes = self.queued.data.len().min(MAX_FRAME_BODY_BYTES);
            self.sealed.push_back(std::mem::take(&mut self.queued));
        }
    }

    /// Drops what is queued (the stream ended).
    fn drop_queued(&mut self) {
        self.sealed.clear();
        self.queued = Batch::default();
        self.queued_count = 0;
        self.queued_body_bytes = 0;
    }

    /// The way to the receiver is known from `now` on: liveness counts
    /// from then (an end waits, without a clock, until it knows where its
    /// other end is: a handler may take its time before answering a call).
    pub fn attached(&mut self, now: Instant) {
        self.last_heard = now;
        self.close_sent = self.close_sent.map(|_| now);
    }

    /// Ends the stream cleanly after what was queued.
    pub fn close(&mut self) {
        if matches!(self.state, SendState::Attaching | SendState::Open) {
            self.flush_data();
            self.state = SendState::Closing;
            self.out.push_back(Frame::Close {
                total: self.next_seq,
            });
        }
    }

    /// Ends the stream without a clean end, after the messages already
    /// accepted (they were within the credit): the receiver gets them, then
    /// the abort.
    pub fn abort(&mut self, reason: &str) {
        if matches!(
            self.state,
            SendState::Attaching | SendState::Open | SendState::Closing
        ) {
            if self.state == SendState::Open {
                self.flush_data();
            }
            self.drop_queued();
            self.state = SendState::Ended(End::Aborted(reason.into()));
            self.out.push_back(Frame::Abort {
                reason: reason.into(),
                total: self.next_seq,
            });
        }
    }

    /// The way to the peer failed (a send failed): the stream is lost.
    pub fn lost(&mut self, why: &str) {
        if !matches!(self.state, SendState::Closed | SendState::Ended(_)) {
            self.drop_queued();
            self.state = SendState::Ended(End::Lost(why.into()));
        }
    }

    /// A frame from the receiver, at `now`.
    pub fn handle(&mut self, frame: Frame, now: Instant) {
        self.last_heard = now;
        match frame {
            Frame::Credit {
                next,
                credit_messages,
                credit_bytes,
            } => {
                if next > self.next_seq {
                    // Acknowledges what was never sent: forged.
                    return;
                }
                if next > self.acked {
                    self.acked = next;
                    // Progress: the end is not overdue.
                    self.close_sent = self.close_sent.map(|_| now);
                }
                if self.state == SendState::Attaching {
                    self.state = SendState::Open;
                    self.max_message = credit_bytes.saturating_sub(self.sent_bytes);
                }
                self.credit_messages = self.credit_messages.max(credit_messages);
                self.credit_bytes = self.credit_bytes.max(credit_bytes);
            }
            Frame::CloseAck if self.state == SendState::Closing => {
                self.state = SendState::Closed;
            }
            Frame::Cancel { reason }
                if !matches!(self.state, SendState::Closed | SendState::Ended(_)) =>
            {
                self.drop_queued();
                self.state = SendState::Ended(End::Cancelled(reason));
            }
            _ => {}
        }
    }

    /// Moves the queued messages into `Data` frames, one a batch: at most
    /// [`MAX_FRAME_BODY_BYTES`] each (but at least one message), so that a
    /// receiver works on one while the next is on its way. Each frame's
    /// buffer goes back to the process's pool (see `recycle`) once the
    /// frame is sent and dropped.
    fn flush_data(&mut self) {
        self.seal();
        while let Some(batch) = self.sealed.pop_front() {
            let first = self.next_seq;
            self.next_seq += batch.count as u64;
            self.sent_bytes += batch.bytes;
            self.queued_count -= batch.count as u64;
            self.queued_body_bytes -= batch.bytes;
            let bodies = Bodies {
                data: recycle::shared(batch.data),
                pos: 0,
                count: batch.count,
                bytes: batch.bytes,
            };
            self.out.push_back(Frame::Data { first, bodies });
        }
    }

    /// The next frame to send, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Frame> {
        if self.state == SendState::Open {
            self.flush_data();
        }
        let f = self.out.pop_front();
        if f.is_some() {
            self.last_sent = now;
        }
        if matches!(f, Some(Frame::Close { .. })) {
            self.close_sent = Some(now);
        }
        f
    }

    /// When [`handle_timeout`](Self::handle_timeout) has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            SendState::Closed | SendState::Ended(_) => None,
            _ => {
                let t = (self.last_sent + self.timing.ping_every)
                    .min(self.last_heard + self.timing.liveness);
                Some(match self.close_sent {
                    Some(c) => t.min(c + self.timing.liveness),
                    None => t,
                })
            }
        }
    }

    /// Time passed: a `Ping` when quiet, [`End::Lost`] when the peer is,
    /// or when the end was not acknowledged within the liveness timeout of
    /// it going out, or of the receiver's last word that more arrived (the
    /// route lost some of what was sent: the receiver, which answers
    /// pings, does not have it all; an `Abort` tells it so).
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, SendState::Closed | SendState::Ended(_)) {
            return;
        }
        if now >= self.last_heard + self.timing.liveness {
            self.lost(&format!(
                "no word from the receiver for {:?}",
                self.timing.liveness
            ));
            return;
        }
        if self
            .close_sent
            .is_some_and(|c| now >= c + self.timing.liveness)
        {
            let why = format!(
                "the receiver did not acknowledge the end within {:?}",
                self.timing.liveness
            );
            self.lost(&why);
            // The receiver may have lost the `Close` only: it learns now
            // rather than after its own liveness timeout.
            self.out.push_back(Frame::Abort {
                reason: why,
                total: self.next_seq,
            });
            return;
        }
        if now >= self.last_sent + self.timing.ping_every && self.out.is_empty() {
            self.out.push_back(Frame::Ping);
        }
    }

    /// `None` while open; `Some(Ok(()))` once the receiver acknowledged the
    /// clean end; `Some(Err(end))` when it ended otherwise.
    ///
    /// # Errors
    /// `Some(Err(end))`: the [`End`] of a stream that did not close cleanly.
    pub fn outcome(&self) -> Option<Result<(), End>> {
        match &self.state {
            SendState::Closed => Some(Ok(())),
            SendState::Ended(e) => Some(Err(e.clone())),
            _ => None,
        }
    }

    /// Whether the stream is over (cleanly or not).
    pub fn is_over(&self) -> bool {
        self.outcome().is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RecvState {
    Open,
    /// `Close { total }` (`abort` `None`) or `Abort { reason, total }`
    /// (`abort` the reason) received: the end once all `total` arrived.
    Ending {
        total: u64,
        abort: Option<String>,
    },
    /// Everything arrived and the end is acknowledged.
    Closed,
    Ended(End),
}

/// The receiving end of one stream; see the module docs.
#[derive(Debug)]
pub struct RecvHalf {
    state: RecvState,
    window: Window,
    timing: Timing,
    /// The next sequence number to arrive in order.
    next: u64,
    /// Arrived early, within the window (each copied out of its frame).
    early: BTreeMap<u64, Bodies>,
    /// In order, for the application: runs of the frames they came in
    /// (none empty).
    ready: VecDeque<Bodies>,
    /// How many messages `ready` holds.
    ready_count: usize,
    taken: u64,
    taken_bytes: u64,
    /// Bytes arrived and not yet taken (ready, early and lent).
    held_bytes: u64,
    /// Messages lent to the application (see [`RecvHalf::lend`]), not yet
    /// reported taken, and their bytes.
    lent: (u64, u64),
    /// The credit last granted (messages, bytes).
    granted: (u64, u64),
    /// Since when a gap has been waiting to be filled, without messages
    /// arriving in order meanwhile...
    gap_since: Option<Instant>,
    /// ... and `next` then.
    gap_next: u64,
    timing_last_heard: Instant,
    last_sent: Instant,
    out: VecDeque<Frame>,
}

impl RecvHalf {
    /// A receiving end at `now`; its first transmit is the first credit.
    pub fn new(window: Window, timing: Timing, now: Instant) -> Self {
        let window = Window {
            messages: window.messages.max(1),
            bytes: window.bytes.max(1),
        };
        let mut r = RecvHalf {
            state: RecvState::Open,
            window,
            timing,
            next: 0,
            early: BTreeMap::new(),
            ready: VecDeque::new(),
            ready_count: 0,
            taken: 0,
            taken_bytes: 0,
            held_bytes: 0,
            lent: (0, 0),
            granted: (0, 0),
            gap_since: None,
            gap_next: 0,
            timing_last_heard: now,
            last_sent: now,
            out: VecDeque::new(),
        };
        r.grant(true);
        r
    }

    /// Sends a `Credit` if the application took enough since the last one
    /// (a quarter of the window), or `always`.
    fn grant(&mut self, always: bool) {
        if matches!(self.state, RecvState::Ending { abort: Some(_), .. }) {
            // The sender is gone: nothing more goes to it.
            return;
        }
        let credit = (
            self.taken + self.window.messages,
            self.taken_bytes + self.window.bytes,
        );
        let worth = credit.0 >= self.granted.0 + (self.window.messages / 4).max(1)
            || credit.1 >= self.granted.1 + (self.window.bytes / 4).max(1);
        if always || worth {
            self.granted = credit;
            self.out.retain(|f| !matches!(f, Frame::Credit { .. }));
            self.out.push_back(Frame::Credit {
                next: self.next,
                credit_messages: credit.0,
                credit_bytes: credit.1,
            });
        }
    }

    /// A frame from the sender, at `now`. Frames out of the window or
    /// after the end are dropped (returns `false`: a frame a correct peer
    /// never sends).
    pub fn handle(&mut self, frame: Frame, now: Instant) -> bool {
        self.timing_last_heard = now;
        if !matches!(self.state, RecvState::Open | RecvState::Ending { .. }) {
            return !matches!(frame, Frame::Data { .. });
        }
        match frame {
            Frame::Data { first, bodies } => self.handle_data(first, bodies, now),
            Frame::Close { total } => {
                if let RecvState::Ending { total: t, .. } = self.state {
                    // Again (a route that redelivers), or after an abort
                    // that overtook it: nothing changes.
                    return total == t;
                }
                if total < self.next {
                    return false;
                }
                self.state = RecvState::Ending { total, abort: None };
                self.ending(now);
                true
            }
            Frame::Abort { reason, total } => {
                // More arrived than it says were sent: forged; it ends the
                // stream all the same.
                let mut forged = total < self.next;
                let mut total = total.max(self.next);
                // After a `Close` (an abort after `close()`), the end waits
                // for no more than it did.
                if let RecvState::Ending { total: t, .. } = self.state {
                    forged |= total != t;
                    total = total.min(t);
                }
                self.state = RecvState::Ending {
                    total,
                    abort: Some(reason),
                };
                self.ending(now);
                !forged
            }
            Frame::Ping => true,
            _ => false,
        }
    }

    /// The messages of a `Data` frame (`first`, `first + 1`, ...), at
    /// `now`: [`handle`](Self::handle) with the messages already out of
    /// the frame (see [`decode_data`]: one run over the frame, no copy).
    /// Returns `false` if some were out of the credit granted (those are
    /// dropped).
    ///
    /// A run keeps its whole frame in memory: unless every message of the
    /// frame is kept (the usual case: new, in order, within the credit),
    /// the kept ones are copied out one by one, so that a frame of
    /// duplicates or of messages beyond the credit (a peer that
    /// misbehaves) holds no more memory than its kept messages.
    pub fn handle_data(&mut self, first: u64, mut run: Bodies, now: Instant) -> bool {
        self.timing_last_heard = now;
        if !matches!(self.state, RecvState::Open | RecvState::Ending { .. }) {
            return false;
        }
        let n = run.len() as u64;
        let bytes = run.body_bytes();
        let all_kept = first == self.next
            && self.early.is_empty()
            && first.saturating_add(n) <= self.granted.0
            && self.held_bytes + bytes <= self.window.bytes
            && !matches!(self.state, RecvState::Ending { total, .. } if first.saturating_add(n) > total);
        if all_kept {
            self.held_bytes += bytes;
            self.next += n;
            self.push_ready(run);
            self.check_gap(now);
            self.check_closed();
            return true;
        }
        let mut ok = true;
        let mut seq = first;
        while let Some(body) = run.next_slice() {
            let this = seq;
            seq = seq.saturating_add(1);
            if this < self.next || self.early.contains_key(&this) {
                continue; // a duplicate
            }
            let beyond = this >= self.granted.0
                || self.held_bytes + body.len() as u64 > self.window.bytes
                || matches!(self.state, RecvState::Ending { total, .. } if this >= total);
            if beyond {
                ok = false; // out of the credit granted: forged
                continue;
            }
            self.held_bytes += body.len() as u64;
            let one: Bodies = std::iter::once(body).collect();
            if this == self.next {
                self.push_ready(one);
                self.next += 1;
                while let Some(b) = self.early.remove(&self.next) {
                    self.push_ready(b);
                    self.next += 1;
                }
            } else {
                self.early.insert(this, one);
            }
        }
        self.check_gap(now);
        self.check_closed();
        ok
    }

    fn push_ready(&mut self, run: Bodies) {
        if !run.is_empty() {
            self.ready_count += run.len();
            self.ready.push_back(run);
        }
    }

    /// The end's `total` is known from `now` on: what was held early
    /// beyond it goes (a correct sender sends nothing beyond it), and the
    /// messages still missing before it are a gap.
    fn ending(&mut self, now: Instant) {
        if let RecvState::Ending { total, .. } = self.state {
            for (_, b) in self.early.split_off(&total) {
                self.held_bytes -= b.body_bytes();
            }
        }
        self.check_gap(now);
        self.check_closed();
    }

    /// Whether messages are missing: some arrived after them (held early),
    /// or the end's `total` is beyond them. A gap open for the liveness
    /// timeout without a message arriving in order meanwhile ends the
    /// stream (see [`handle_timeout`](Self::handle_timeout)): pings alone do
    /// not keep a stream with a hole in it going.
    fn check_gap(&mut self, now: Instant) {
        let missing = !self.early.is_empty()
            || matches!(self.state, RecvState::Ending { total, .. } if self.next < total);
        if !missing {
            self.gap_since = None;
        } else if self.gap_since.is_none() || self.next > self.gap_next {
            // A new gap, or progress on a slow route: counts from now.
            self.gap_since = Some(now);
            self.gap_next = self.next;
        }
    }

    fn check_closed(&mut self) {
        if let RecvState::Ending { total, abort } = &mut self.state {
            if self.next >= *total {
                self.state = match abort.take() {
                    None => {
                        self.out.push_back(Frame::CloseAck);
                        RecvState::Closed
                    }
                    Some(reason) => RecvState::Ended(End::Aborted(reason)),
                };
            }
        }
    }

    /// The next message for the application: `Some(Ok(Some(body)))`;
    /// `Some(Ok(None))` once the stream ended cleanly and everything was
    /// taken; `Some(Err(end))` once it ended otherwise (after the messages
    /// that arrived in order before); `None` when nothing is there yet.
    ///
    /// # Errors
    /// `Some(Err(end))`: the [`End`] of a stream that did not close cleanly,
    /// once the messages before it are taken.
    pub fn take(&mut self) -> Option<Result<Option<Bytes>, End>> {
        while let Some(run) = self.ready.front_mut() {
            let Some(b) = run.next_bytes() else {
                // (A run is never empty or malformed in `ready`; were it,
                // it goes, and its count with it.)
                self.ready_count -= run.len();
                self.ready.pop_front();
                continue;
            };
            if run.is_empty() {
                self.ready.pop_front();
            }
            self.ready_count -= 1;
            self.taken += 1;
            self.taken_bytes += b.len() as u64;
            self.held_bytes -= b.len() as u64;
            self.grant(false);
            return Some(Ok(Some(b)));
        }
        match &self.state {
            RecvState::Closed => Some(Ok(None)),
            RecvState::Ended(e) => Some(Err(e.clone())),
            _ => None,
        }
    }

    /// The window this end grants beyond what was taken.
    pub fn window(&self) -> Window {
        self.window
    }

    /// Lends the application up to `max` messages that arrived in order
    /// (moved into `into`, in order), so that it takes them one by one
    /// without coming back each time: they stay held (in [`held`]) and
    /// earn the sender no credit until [`took`](Self::took) reports them.
    /// Returns how many. When it lends none, [`take`](Self::take) says
    /// whether the stream is over.
    ///
    /// [`held`]: Self::held
    pub fn lend(&mut self, max: usize, into: &mut VecDeque<Bodies>) -> usize {
        let mut lent = 0;
        while lent < max {
            let Some(run) = self.ready.front_mut() else {
                break;
            };
            let part = run.split_to(max - lent);
            if run.is_empty() {
                self.ready.pop_front();
            }
            let k = part.len();
            self.ready_count -= k;
            self.lent.0 += k as u64;
            self.lent.1 += part.body_bytes();
            lent += k;
            if k > 0 {
                into.push_back(part);
            }
        }
        lent
    }

    /// The application took `messages` lent messages of `bytes` bytes in
    /// all: they are no longer held, and the sender gets credit for them
    /// as for [`take`](Self::take). More than was lent counts as what was.
    pub fn took(&mut self, messages: u64, bytes: u64) {
        let messages = messages.min(self.lent.0);
        let bytes = bytes.min(self.lent.1);
        self.lent.0 -= messages;
        self.lent.1 -= bytes;
        self.taken += messages;
        self.taken_bytes += bytes;
        self.held_bytes -= bytes;
        self.grant(false);
    }

    /// The way to the sender is known from `now` on: liveness counts from
    /// then (see [`SendHalf::attached`]).
    pub fn attached(&mut self, now: Instant) {
        self.timing_last_heard = now;
        self.gap_since = self.gap_since.map(|_| now);
    }

    /// The application wants no more.
    pub fn cancel(&mut self, reason: &str) {
        if matches!(self.state, RecvState::Open | RecvState::Ending { .. }) {
            self.state = RecvState::Ended(End::Cancelled(reason.into()));
            self.ready.clear();
            self.ready_count = 0;
            self.early.clear();
            self.out.push_back(Frame::Cancel {
                reason: reason.into(),
            });
        }
    }

    /// The way to the peer failed: the stream is lost (or, once the
    /// sender aborted it and messages sent before its abort are missing,
    /// aborted, with which are missing and `why` after the reason).
    pub fn lost(&mut self, why: &str) {
        match &self.state {
            RecvState::Ending {
                abort: Some(reason),
                total,
            } => {
                let why = format!(
                    "{reason} (not all {total} messages sent before the abort arrived: message {} never did; {why})",
                    self.next
                );
                self.state = RecvState::Ended(End::Aborted(why))
            }
            RecvState::Open | RecvState::Ending { .. } => {
                self.state = RecvState::Ended(End::Lost(why.into()))
            }
            _ => {}
        }
    }

    /// The next frame to send, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Frame> {
        let f = self.out.pop_front();
        if f.is_some() {
            self.last_sent = now;
        }
        f
    }

    /// When [`handle_timeout`](Self::handle_timeout) has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !matches!(self.state, RecvState::Open | RecvState::Ending { .. }) {
            return None;
        }
        let mut t = self.timing_last_heard + self.timing.liveness;
        // After an abort nothing more goes to the sender: no pings.
        if !matches!(self.state, RecvState::Ending { abort: Some(_), .. }) {
            t = t.min(self.last_sent + self.timing.ping_every);
        }
        if let Some(g) = self.gap_since {
            t = t.min(g + self.timing.liveness);
        }
        Some(t)
    }

    /// Time passed: a `Credit` (as a ping) when quiet, [`End::Lost`] when
    /// the peer is, or a gap stayed open too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !matches!(self.state, RecvState::Open | RecvState::Ending { .. }) {
            return;
        }
        if now >= self.timing_last_heard + self.timing.liveness {
            self.lost(&format!(
                "no word from the sender for {:?}",
                self.timing.liveness
            ));
        } else if self
            .gap_since
            .is_some_and(|g| now >= g + self.timing.liveness)
        {
            self.lost(&format!(
                "message {} never arrived within {:?} (later ones, or the end after it, did)",
                self.next, self.timing.liveness
            ));
        } else if now >= self.last_sent + self.timing.ping_every && self.out.is_empty() {
            self.grant(true);
        }
    }

    /// Whether a frame waits to be sent (a credit after a take, say).
    pub fn has_transmit(&self) -> bool {
        !self.out.is_empty()
    }

    /// Messages and bytes held for the application (arrived, not taken).
    pub fn held(&self) -> (usize, u64) {
        (
            self.ready_count + self.early.len() + self.lent.0 as usize,
            self.held_bytes,
        )
    }

    /// Whether the stream is over and everything was taken.
    pub fn is_over(&self) -> bool {
        self.ready.is_empty() && matches!(self.state, RecvState::Closed | RecvState::Ended(_))
    }
}

/// The BARE encoding of `Frame::Data { first, bodies }` up to its
/// items: the variant, `first` and the list's count (at most 19 bytes);
/// [`Bodies::wire`] follows it. A sender writes a `Data` frame as these
/// two parts, without encoding its messages again.
pub fn data_head(first: u64, bodies: &Bodies) -> ([u8; 19], usize) {
    let mut head = [0u8; 19];
    let mut len = 0;
    let mut put = |b: u8| {
        head[len] = b;
        len += 1;
    };
    // `Frame::Data` is the enum's variant 0.
    put(0);
    first.to_le_bytes().into_iter().for_each(&mut put);
    ockam_core::internal::wire::put_uint_with(bodies.len() as u64, put);
    (head, len)
}

/// The messages of a `Data` frame in `payload` (its BARE encoding), as
/// one [`Bodies`] over `payload` (no copy, nothing per message): `None` if
/// the payload is another frame, `Some(Err)` if it is a `Data` frame that
/// does not decode (truncated, a lying length, bytes left over). The same
/// frames as `Frame::decode`, without a buffer per message.
///
/// # Errors
/// `Some(Err(..))` of kind [`ErrorKind::Decoding`](ockam_core::ErrorKind::Decoding)
/// for a `Data` frame that is truncated or malformed, claims more
/// messages than it holds, or has bytes left over.
pub fn decode_data(payload: &Bytes) -> Option<ockam_core::Result<(u64, Bodies)>> {
    let mut r = ockam_core::internal::wire::Reader::new(payload);
    // `Frame::Data` is the enum's variant 0.
    if r.uint().ok()? != 0 {
        return None;
    }
    let parse = |r: &mut ockam_core::internal::wire::Reader<'_>| {
        let first = r.u64()?;
        let count = r.uint()?;
        // Each body takes at least a byte (its length): a count beyond
        // that is a lie.
        if count > r.remaining() as u64 {
            return Err(ockam_core::Error::new(
                ockam_core::ErrorKind::Decoding,
                "a Data frame claims more messages than it holds",
            ));
        }
        let start = payload.len() - r.remaining();
        let mut bytes = 0u64;
        for _ in 0..count {
            bytes += r.bytes()?.len() as u64;
        }
        if r.remaining() != 0 {
            return Err(ockam_core::Error::new(
                ockam_core::ErrorKind::Decoding,
                "bytes left over after a Data frame",
            ));
        }
        let run = Bodies {
            data: payload.slice(start..),
            pos: 0,
            // (At most the payload's length: it fits.)
            count: usize::try_from(count).unwrap_or(usize::MAX),
            bytes,
        };
        Ok((first, run))
    };
    Some(parse(&mut r))
}

#[cfg(test)]
mod tests;

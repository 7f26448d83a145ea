//! The outbox of one connection: frames waiting to be written.
//!
//! Senders on any thread append frames straight into it (no hop through a
//! worker); the connection's writer task takes everything at once and
//! writes it with one system call, so frames that arrive while a write is
//! in progress go out together in the next one. When the outbox is full, or
//! messages already wait in the connection worker's mailbox, new messages
//! are deferred to that mailbox instead (the worker appends them when there
//! is room), which keeps their order and slows senders down to the speed
//! of the peer.

use crate::frame::encode_frame;
use ockam_core::{Error, TransportMessage};
use std::sync::{Mutex, MutexGuard};
use tokio::sync::Notify;

pub(crate) struct Outbox {
    state: Mutex<State>,
    /// The writer waits here for frames.
    ready: Notify,
    /// The worker waits here for room.
    drained: Notify,
    /// Bytes beyond which new messages are deferred.
    limit: usize,
    max_frame: usize,
}

struct State {
    buf: Vec<u8>,
    /// Messages deferred to the worker's mailbox and not yet appended.
    in_mailbox: usize,
    /// No more frames are accepted (connection closing or failed).
    closed: bool,
}

/// Messages deferred to a connection worker's mailbox beyond which new
/// ones are refused: a peer that stops reading must not make this node
/// hold an unbounded backlog for it.
pub(crate) const MAX_DEFERRED: usize = 65_536;

/// What happened to a message offered to the outbox.
pub(crate) enum Push {
    Queued,
    /// Give the message to the connection worker's mailbox (counted).
    Deferred,
    Closed,
    TooLarge(Error),
    /// The peer is not reading: refused.
    Overloaded,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("Outbox")
            .field("queued_bytes", &st.buf.len())
            .field("in_mailbox", &st.in_mailbox)
            .field("closed", &st.closed)
            .finish()
    }
}

impl Outbox {
    pub(crate) fn new(limit: usize, max_frame: usize) -> Self {
        Outbox {
            state: Mutex::new(State {
                buf: Vec::new(),
                in_mailbox: 0,
                closed: false,
            }),
            ready: Notify::new(),
            drained: Notify::new(),
            limit,
            max_frame,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `msg` (whose onward route no longer names this hop) unless
    /// it has to wait its turn in the worker's mailbox.
    pub(crate) fn push(&self, msg: &TransportMessage) -> Push {
        let mut st = self.lock();
        if st.closed {
            return Push::Closed;
        }
        if st.in_mailbox > 0 || st.buf.len() >= self.limit {
            if st.in_mailbox >= MAX_DEFERRED {
                return Push::Overloaded;
            }
            st.in_mailbox += 1;
            return Push::Deferred;
        }
        let was_empty = st.buf.is_empty();
        if let Err(e) = encode_frame(msg, &mut st.buf, self.max_frame) {
            return Push::TooLarge(e);
        }
        drop(st);
        if was_empty {
            self.ready.notify_one();
        }
        Push::Queued
    }

    /// Appends a message that was deferred to the worker's mailbox, waiting
    /// for room first.
    pub(crate) async fn push_deferred(&self, msg: &TransportMessage) -> Push {
        loop {
            let drained = self.drained.notified();
            {
                let mut st = self.lock();
                if st.closed {
                    st.in_mailbox = st.in_mailbox.saturating_sub(1);
                    return Push::Closed;
                }
                if st.buf.len() < self.limit {
                    st.in_mailbox = st.in_mailbox.saturating_sub(1);
                    let was_empty = st.buf.is_empty();
                    let r = encode_frame(msg, &mut st.buf, self.max_frame);
                    drop(st);
                    if was_empty {
                        self.ready.notify_one();
                    }
                    return match r {
                        Ok(()) => Push::Queued,
                        Err(e) => Push::TooLarge(e),
                    };
                }
            }
            drained.await;
        }
    }

    /// Accepts no more frames; the writer sends what is queued and stops.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
        self.drained.notify_waiters();
    }

    /// Everything queued so far (swapped with `spare`, which must be
    /// empty), and whether the outbox is closed. Waits while it is empty
    /// and open.
    pub(crate) async fn take(&self, spare: Vec<u8>) -> (Vec<u8>, bool) {
        let mut spare = Some(spare);
        loop {
            let ready = self.ready.notified();
            {
                let mut st = self.lock();
                if !st.buf.is_empty() || st.closed {
                    let batch = std::mem::replace(&mut st.buf, spare.take().unwrap_or_default());
                    let closed = st.closed;
                    drop(st);
                    self.drained.notify_waiters();
                    return (batch, closed);
                }
            }
            ready.await;
        }
    }
}

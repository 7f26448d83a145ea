//! The outbox of one connection: frames waiting to be written.
//!
//! Senders on any thread append frames straight into it (no hop through a
//! worker); the connection's writer task takes everything at once and
//! writes it with one system call, so frames that arrive while a write is
//! in progress go out together in the next one. Once more than the write
//! batch size is queued, a sender that adds to it waits (as
//! [`Backpressure`]) until the writer has taken it, so senders run at the
//! speed of the peer; a peer that stops reading altogether makes the outbox
//! refuse messages once it holds [`HARD_LIMIT_BATCHES`] batches. Messages
//! that reached the connection worker's mailbox (through the on-demand
//! router) are appended by the worker, and while any wait there, new
//! messages queue behind them in the mailbox, which keeps their order.

use crate::frame::encode_frame;
use ockam_core::{Error, TransportMessage};
use ockam_node::{Backpressure, PRESSURE_WAIT};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::Notify;

/// Queued output beyond which the outbox refuses messages (the peer is not
/// reading), in write batches.
pub(crate) const HARD_LIMIT_BATCHES: usize = 64;

pub(crate) struct Outbox {
    state: Mutex<State>,
    /// The writer waits here for frames.
    ready: Notify,
    /// Senders and the worker wait here for room.
    drained: Notify,
    /// Bytes beyond which senders wait.
    limit: usize,
    /// Bytes beyond which messages are refused.
    hard_limit: usize,
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
    /// Queued, and the outbox is over its limit: the sender should wait.
    Backlog,
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
            hard_limit: limit.saturating_mul(HARD_LIMIT_BATCHES),
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
        if st.in_mailbox > 0 {
            if st.in_mailbox >= MAX_DEFERRED {
                return Push::Overloaded;
            }
            st.in_mailbox += 1;
            return Push::Deferred;
        }
        if st.buf.len() >= self.hard_limit {
            return Push::Overloaded;
        }
        let was_empty = st.buf.is_empty();
        if let Err(e) = encode_frame(msg, &mut st.buf, self.max_frame) {
            return Push::TooLarge(e);
        }
        let over = st.buf.len() >= self.limit;
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

    /// Waits until the outbox is under its limit (or closed).
    async fn wait_for_room(&self) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            {
                let st = self.lock();
                if st.closed || st.buf.len() < self.limit {
                    return;
                }
            }
            drained.await;
        }
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

impl Backpressure for Outbox {
    fn wait(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {
            let _ = tokio::time::timeout(PRESSURE_WAIT, self.wait_for_room()).await;
        })
    }
}

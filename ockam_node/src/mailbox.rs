//! Mailboxes: the queue of messages waiting for one worker or context.
//!
//! A mailbox never refuses a message, so two workers sending to each other
//! cannot deadlock on full queues. It is *softly* bounded: once more than
//! [`HIGH_WATER_MARK`] messages, or [`HIGH_WATER_BYTES`] of payload, wait
//! in it, a sender that is not the owner pauses after sending (for at most
//! [`PRESSURE_WAIT`]) until the owner has caught up. A fast producer
//! therefore runs at its consumer's pace instead of filling memory. A
//! transport's reader pauses again and again until the mailbox is under
//! its mark (`Context::forward_from_transport`): its remote peer, which
//! one bounded pause per message would let fill memory, is then held back
//! by TCP.
//!
//! Two owners that each wait for the other's full mailbox would only make
//! each other wait out [`PRESSURE_WAIT`] on every send (two workers
//! flooding each other): a sender does not pause for a mailbox whose owner
//! is itself pausing for the sender's own mailbox. One of the two goes on
//! at full speed, and the other's waits end as soon as it drains. (A longer
//! cycle of full mailboxes still cannot hang: each pause is bounded.)

use crate::router::Backpressure;
use ockam_core::LocalMessage;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};

/// Messages waiting in a mailbox beyond which senders pause.
pub const HIGH_WATER_MARK: usize = 4096;

/// Bytes of payload waiting in a mailbox beyond which senders pause (the
/// mark in messages alone let 4,096 messages of 64 KiB, 256 MiB, wait
/// before anyone paused).
pub const HIGH_WATER_BYTES: usize = 32 * 1024 * 1024;

/// The longest a sender pauses for one full mailbox.
pub const PRESSURE_WAIT: Duration = Duration::from_millis(10);

/// The consumer gives back credit in batches, to keep the shared counter's
/// cache line from bouncing between threads on every message.
const RELEASE_BATCH: usize = 32;

/// Shared between a mailbox and the router entries that feed it.
#[derive(Default)]
pub(crate) struct Pressure {
    queued: AtomicUsize,
    /// Payload bytes of the queued messages.
    queued_bytes: AtomicUsize,
    below_mark: Notify,
    /// The mailbox whose pressure this mailbox's owner is pausing for
    /// (its address as a number; 0 when it is not pausing).
    pausing_for: AtomicUsize,
}

impl Backpressure for Pressure {
    fn wait(&self) -> Pin<Box<dyn Future<Output = ockam_core::Result<()>> + Send + '_>> {
        Box::pin(async {
            self.wait_below_mark().await;
            Ok(())
        })
    }

    fn waits_for(&self) -> usize {
        self.pausing_for.load(Ordering::Acquire)
    }

    fn is_over(&self) -> bool {
        over(
            self.queued.load(Ordering::Acquire),
            self.queued_bytes.load(Ordering::Acquire),
        )
    }
}

/// Whether a mailbox holding `n` messages of `bytes` is over its mark.
fn over(n: usize, bytes: usize) -> bool {
    n >= HIGH_WATER_MARK || bytes >= HIGH_WATER_BYTES
}

impl Pressure {
    /// Notes that this mailbox's owner pauses for `other` (0: no longer).
    pub(crate) fn pausing_for(&self, other: usize) {
        self.pausing_for.store(other, Ordering::Release);
    }

    /// Counts one more queued message of `bytes`; true when the mailbox is
    /// over the mark.
    pub(crate) fn add(&self, bytes: usize) -> bool {
        let n = self.queued.fetch_add(1, Ordering::Relaxed);
        let b = self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        over(n, b.saturating_add(bytes))
    }

    /// Waits until the mailbox is under the mark again, or [`PRESSURE_WAIT`].
    pub(crate) async fn wait_below_mark(&self) {
        let wait = async {
            loop {
                let notified = self.below_mark.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if !Backpressure::is_over(self) {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(PRESSURE_WAIT, wait).await;
    }

    fn release(&self, n: usize, bytes: usize) {
        let before = self.queued.fetch_sub(n, Ordering::AcqRel);
        let before_bytes = self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        if over(before, before_bytes) && !over(before - n, before_bytes.saturating_sub(bytes)) {
            self.below_mark.notify_waiters();
        }
    }
}

/// The sending half, held by the router table.
#[derive(Clone)]
pub(crate) struct MailboxSender {
    tx: mpsc::UnboundedSender<LocalMessage>,
    pressure: Arc<Pressure>,
}

impl MailboxSender {
    /// Queues `msg`; `Ok(true)` when the mailbox is over its mark.
    // The message comes back whole when the mailbox is gone (rare).
    #[allow(clippy::result_large_err)]
    pub(crate) fn send(&self, msg: LocalMessage) -> Result<bool, LocalMessage> {
        let bytes = msg.transport().payload.len();
        // Counted before it is queued: the receiver may take it (and
        // uncount it) before `send` returns, and the counts must never go
        // below zero (they did, under load: `release` overflowed).
        let over = self.pressure.add(bytes);
        match self.tx.send(msg) {
            Ok(()) => Ok(over),
            Err(e) => {
                self.pressure.release(1, bytes);
                Err(e.0)
            }
        }
    }

    pub(crate) fn pressure(&self) -> &Arc<Pressure> {
        &self.pressure
    }
}

/// The receiving half, held by a worker's or context's `Context`.
pub(crate) struct Mailbox {
    rx: mpsc::UnboundedReceiver<LocalMessage>,
    pressure: Arc<Pressure>,
    taken: usize,
    taken_bytes: usize,
}

impl Mailbox {
    pub(crate) fn new() -> (MailboxSender, Mailbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        let pressure = Arc::new(Pressure::default());
        (
            MailboxSender {
                tx,
                pressure: pressure.clone(),
            },
            Mailbox {
                rx,
                pressure,
                taken: 0,
                taken_bytes: 0,
            },
        )
    }

    pub(crate) fn pressure(&self) -> &Arc<Pressure> {
        &self.pressure
    }

    fn release(&mut self) {
        if self.taken > 0 {
            self.pressure.release(self.taken, self.taken_bytes);
            self.taken = 0;
            self.taken_bytes = 0;
        }
    }

    fn took(&mut self, msg: LocalMessage) -> LocalMessage {
        self.taken += 1;
        self.taken_bytes += msg.transport().payload.len();
        if self.taken >= RELEASE_BATCH || self.taken_bytes >= HIGH_WATER_BYTES / 64 {
            self.release();
        }
        msg
    }

    /// The next message if one is waiting, without waiting.
    pub(crate) fn try_next(&mut self) -> Option<LocalMessage> {
        match self.rx.try_recv() {
            Ok(m) => Some(self.took(m)),
            Err(_) => {
                // Empty (about to wait) or closed: give all credit back.
                self.release();
                None
            }
        }
    }

    /// The next message; `None` once every sender is gone.
    pub(crate) async fn next(&mut self) -> Option<LocalMessage> {
        if let Some(m) = self.try_next() {
            return Some(m);
        }
        let m = self.rx.recv().await?;
        Some(self.took(m))
    }

    /// Messages waiting right now.
    pub(crate) fn len(&self) -> usize {
        self.rx.len()
    }
}

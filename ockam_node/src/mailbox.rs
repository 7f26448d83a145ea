//! Mailboxes: the queue of messages waiting for one worker or context.
//!
//! Mailboxes are unbounded so that two workers sending to each other can
//! never deadlock on full queues; a sender that outruns its receiver grows
//! the receiver's queue.

use ockam_core::LocalMessage;
use tokio::sync::mpsc;

/// The sending half, held by the router table.
pub(crate) type MailboxSender = mpsc::UnboundedSender<LocalMessage>;

/// The receiving half, held by a worker's or context's `Context`.
pub(crate) struct Mailbox {
    rx: mpsc::UnboundedReceiver<LocalMessage>,
}

impl Mailbox {
    pub(crate) fn new() -> (MailboxSender, Mailbox) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, Mailbox { rx })
    }

    /// The next message; `None` once every sender is gone.
    pub(crate) async fn next(&mut self) -> Option<LocalMessage> {
        self.rx.recv().await
    }

    /// Messages waiting right now.
    pub(crate) fn len(&self) -> usize {
        self.rx.len()
    }
}

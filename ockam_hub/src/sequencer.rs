//! The gap rule of the stream protocol, as one pure state machine.
//!
//! A client's pushes on one stream worker are stored in the order it sent
//! them, and it takes a confirmation of push *n* as "stored, and so is
//! everything I sent before". So once one of its pushes failed (refused
//! over the size limit, or the store could not write it), **nothing it
//! submitted after that push may be stored or confirmed**: the client opens
//! the stream again and resends everything unconfirmed, in order, and a
//! later push stored meanwhile would land before the failed one.
//!
//! Three parts of the hub apply the rule: the stream worker (refuses pushes
//! after a failure), the confirmations (never confirms a push after a gap)
//! and the stores' writers (the embedded store's group commit, the Kafka
//! writer), which learn of failures before the stream worker does and must
//! not write pushes queued behind a failed one. They share one
//! [`Sequencer`] per stream worker, through a [`Fence`], and each push
//! carries its [`Ticket`].
//!
//! The sequencer does no I/O and reads no clock; its callers hold it behind
//! a mutex only for the length of one call.

use std::sync::{Arc, Mutex, MutexGuard};

/// The gap rule of one submitter: numbers its pushes and remembers the
/// first one that failed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sequencer {
    /// The sequence number the next push gets.
    next: u64,
    /// The sequence number of the first push that failed, if any.
    failed_at: Option<u64>,
}

impl Sequencer {
    /// A submitter with no push yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Numbers a new push; `None` once a push failed: it is refused (not
    /// stored, not confirmed).
    pub fn submit(&mut self) -> Option<u64> {
        if self.failed_at.is_some() {
            return None;
        }
        let seq = self.next;
        self.next += 1;
        Some(seq)
    }

    /// Push `seq` failed (or was refused): it and every later push are
    /// neither stored nor confirmed. An earlier failure stays the first.
    pub fn fail(&mut self, seq: u64) {
        self.failed_at = Some(self.failed_at.map_or(seq, |f| f.min(seq)));
    }

    /// Whether push `seq` may still be written: no push at or before it
    /// failed.
    pub fn may_store(&self, seq: u64) -> bool {
        self.failed_at.is_none_or(|f| seq < f)
    }

    /// Whether push `seq`, now stored, may be confirmed: the same rule as
    /// [`may_store`](Self::may_store) (a push stored after a failed one
    /// must not be confirmed, or its client would take the failed one for
    /// stored too).
    pub fn may_confirm(&self, seq: u64) -> bool {
        self.may_store(seq)
    }

    /// Whether a push failed.
    pub fn has_failed(&self) -> bool {
        self.failed_at.is_some()
    }
}

/// A [`Sequencer`] shared by a stream worker, its confirmations and the
/// store's writer.
#[derive(Debug, Default, Clone)]
pub struct Fence(Arc<Mutex<Sequencer>>);

impl Fence {
    /// A fence for a new submitter.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Sequencer> {
        ockam_core::internal::sync::lock(&self.0)
    }

    /// A ticket for a new push; `None` once a push failed
    /// ([`Sequencer::submit`]).
    pub fn submit(&self) -> Option<Ticket> {
        let seq = self.lock().submit()?;
        Some(Ticket {
            fence: self.clone(),
            seq,
        })
    }

    /// Whether a push failed.
    pub fn has_failed(&self) -> bool {
        self.lock().has_failed()
    }
}

/// One push's place in its submitter's sequence.
#[derive(Debug, Clone)]
pub struct Ticket {
    fence: Fence,
    seq: u64,
}

impl Ticket {
    /// A ticket of a submitter of its own (a push outside any stream
    /// worker: nothing is fenced but itself).
    pub fn alone() -> Self {
        let fence = Fence::new();
        // A new fence has no failure: its first push is number 0.
        let seq = fence.lock().submit().unwrap_or_default();
        Ticket { fence, seq }
    }

    /// The push's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// This push failed: it and every later push of its submitter are
    /// fenced off ([`Sequencer::fail`]).
    pub fn fail(&self) {
        self.fence.lock().fail(self.seq)
    }

    /// Whether the push may still be written ([`Sequencer::may_store`]).
    pub fn may_store(&self) -> bool {
        self.fence.lock().may_store(self.seq)
    }

    /// Whether the push, stored, may be confirmed
    /// ([`Sequencer::may_confirm`]).
    pub fn may_confirm(&self) -> bool {
        self.fence.lock().may_confirm(self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nothing_after_a_failure_is_stored_or_confirmed() {
        let mut s = Sequencer::new();
        let (a, b, c) = (
            s.submit().unwrap(),
            s.submit().unwrap(),
            s.submit().unwrap(),
        );
        assert!(s.may_store(a) && s.may_store(b) && s.may_store(c));
        s.fail(b);
        assert!(s.may_confirm(a));
        assert!(!s.may_store(b) && !s.may_confirm(c));
        assert_eq!(s.submit(), None);
        // A later failure does not move the gap forward.
        s.fail(c);
        assert!(s.may_store(a) && !s.may_store(b));
        // An earlier one moves it back.
        s.fail(a);
        assert!(!s.may_confirm(a));
    }

    #[test]
    fn tickets_share_their_submitters_rule() {
        let fence = Fence::new();
        let t1 = fence.submit().unwrap();
        let t2 = fence.submit().unwrap();
        t1.fail();
        assert!(fence.has_failed());
        assert!(!t2.may_store());
        assert!(fence.submit().is_none());
        let other = Ticket::alone();
        assert!(other.may_store());
    }

    proptest! {
        /// Whatever the order failures are learnt in, what may be stored
        /// is exactly the pushes before the first failed one.
        #[test]
        fn the_first_failure_decides(n in 1u64..50, fails in proptest::collection::vec(0u64..50, 0..5)) {
            let mut s = Sequencer::new();
            for _ in 0..n { s.submit(); }
            let fails: Vec<u64> = fails.into_iter().filter(|f| *f < n).collect();
            for f in &fails { s.fail(*f); }
            let first = fails.iter().min().copied();
            for seq in 0..n {
                prop_assert_eq!(s.may_store(seq), first.is_none_or(|f| seq < f));
            }
        }
    }
}

//! The producer's rules, as a plain state machine (no I/O, no clock).
//!
//! A [`Producer`] turns messages the application sends into
//! `stream_push` requests, in order, and keeps each until the hub confirms
//! it (spec, "Streams": retries reuse the request id, in-flight pushes are
//! bounded):
//!
//! - It opens the stream (`stream_create`) and, once the stream worker
//!   answers ([`Input::Init`]), sends up to `max_in_flight` unconfirmed
//!   pushes.
//! - A confirmation of push *n* confirms every push before it too (the hub
//!   confirms in order and never past a gap, see the hub's gap rule).
//! - A refusal, or a push unconfirmed for `retry_after`, means the hub lost
//!   or refused something: the producer opens the stream again (a new stream
//!   worker) and resends everything unconfirmed, in order, with the same
//!   request ids. A message refused `max_refusals` times in a row is given
//!   up (reported as [`Event::GaveUp`]) rather than retried forever.
//!
//! The worker around it feeds it inputs ([`Producer::handle`]), sends what
//! [`Producer::poll_transmit`] gives, and calls
//! [`Producer::handle_timeout`] at [`Producer::poll_timeout`].

use crate::protocol::Uint;
use crate::protocol::{CreateStreamRequest, PushConfirm, PushRequest, PushStatus, StreamError};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// How a [`Producer`] behaves.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Pushes sent and not yet confirmed, at most (default
    /// [`crate::MAX_IN_FLIGHT`]).
    pub max_in_flight: usize,
    /// A request unanswered for this long is sent again, after opening the
    /// stream again (default [`crate::RETRY_AFTER`]).
    pub retry_after: Duration,
    /// Refusals of one message after which it is given up (default
    /// [`crate::MAX_REFUSALS`]).
    pub max_refusals: u32,
    /// After a send failed, how long until the next try (default 100 ms).
    pub resend_after: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            max_in_flight: crate::MAX_IN_FLIGHT,
            retry_after: crate::RETRY_AFTER,
            max_refusals: crate::MAX_REFUSALS,
            resend_after: Duration::from_millis(100),
        }
    }
}

/// What the producer is told.
#[derive(Debug, Clone)]
pub enum Input {
    /// The stream worker answered `stream_create` (the worker keeps the
    /// route it answered from: pushes go there).
    Init,
    /// A `stream_push` confirmation.
    Confirm(PushConfirm),
    /// A `stream_error` refusal.
    Refused(StreamError),
    /// Sending the last transmit failed (`error`: why).
    SendFailed(ockam_core::Error),
}

/// A request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// `stream_create`, to the hub's stream service.
    Create(CreateStreamRequest),
    /// `stream_push`, to the stream worker.
    Push(PushRequest),
}

/// What the producer reports.
#[derive(Debug, Clone)]
pub enum Event {
    /// The first `stream_create` was answered: the stream is open.
    Opened,
    /// The first `stream_create` failed: refused (`InvalidInput`; or
    /// `PermissionDenied` by a closed hub, issue 16), or the first request
    /// could not be sent.
    OpenFailed(ockam_core::Error),
    /// A message was refused `max_refusals` times and given up.
    GaveUp {
        /// Its request id.
        request_id: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `stream_create` to send, or sent at this time.
    Opening(Option<Instant>),
    /// The stream worker answered.
    Open,
}

#[derive(Debug)]
struct Pending {
    id: u64,
    data: Vec<u8>,
}

/// The producer of one outgoing stream; see the module docs.
#[derive(Debug)]
pub struct Producer {
    stream: String,
    config: ProducerConfig,
    state: State,
    /// Messages not yet confirmed, oldest first; the first `sent_at.len()`
    /// of them have been sent (at those times).
    queue: VecDeque<Pending>,
    sent_at: VecDeque<Instant>,
    /// Refusals of the oldest message: after a few it is given up.
    refusals: (u64, u32),
    next_id: u64,
    /// A send failed: nothing more is sent before this.
    paused_until: Option<Instant>,
    /// What was last handed out by `poll_transmit`, so a failed send can be
    /// taken back.
    last_transmit: Option<Transmitted>,
    /// Whether the first open's outcome was reported.
    reported_open: bool,
    events: VecDeque<Event>,
}

#[derive(Debug, Clone, Copy)]
enum Transmitted {
    Create,
    Push,
}

impl Producer {
    /// A producer of `stream`; its first transmit opens the stream.
    pub fn new(stream: impl Into<String>, config: ProducerConfig) -> Self {
        Producer {
            stream: stream.into(),
            config,
            state: State::Opening(None),
            queue: VecDeque::new(),
            sent_at: VecDeque::new(),
            refusals: (0, 0),
            next_id: 1,
            paused_until: None,
            last_transmit: None,
            reported_open: false,
            events: VecDeque::new(),
        }
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Messages sent to the producer and not yet confirmed.
    pub fn unconfirmed(&self) -> usize {
        self.queue.len()
    }

    /// Whether the stream worker answered and pushes go to it.
    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Whether a `stream_create` was sent and not answered yet: only then
    /// is an [`Input::Init`] taken (a late answer to an earlier one, whose
    /// stream worker the hub replaced, is ignored).
    pub fn awaits_init(&self) -> bool {
        matches!(self.state, State::Opening(Some(_)))
    }

    /// A message from the application: `data` (an encoded transport
    /// message) is pushed in order after the ones before it.
    pub fn send(&mut self, data: Vec<u8>) {
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back(Pending { id, data });
    }

    /// Takes an input at `now`.
    pub fn handle(&mut self, input: Input, now: Instant) {
        match input {
            Input::Init if !self.awaits_init() => {
                debug!(stream = %self.stream, "ignored the answer to a stream_create given up on");
            }
            Input::Init => {
                debug!(stream = %self.stream, unconfirmed = self.queue.len(), "outgoing stream open");
                self.state = State::Open;
                if !std::mem::replace(&mut self.reported_open, true) {
                    self.events.push_back(Event::Opened);
                }
                // Everything unconfirmed goes again, in order, with the
                // same request ids.
                self.sent_at.clear();
            }
            Input::Confirm(c) if c.status == PushStatus::Ok => {
                let sent = self.sent_at.len();
                if let Some(pos) = self
                    .queue
                    .iter()
                    .take(sent)
                    .position(|q| q.id == c.request_id.0)
                {
                    // Confirmations come in order; anything before is
                    // confirmed too.
                    self.queue.drain(..=pos);
                    self.sent_at.drain(..=pos);
                }
            }
            Input::Confirm(c) => {
                // The hub refuses everything after a failed push on this
                // stream worker (so nothing is stored out of order): open
                // the stream again and resend all unconfirmed. A message
                // refused again and again (too large for the hub, say) is
                // given up rather than retried forever.
                if self.queue.front().map(|q| q.id) == Some(c.request_id.0) {
                    let (id, n) = self.refusals;
                    let n = if id == c.request_id.0 { n + 1 } else { 1 };
                    self.refusals = (c.request_id.0, n);
                    if n >= self.config.max_refusals {
                        warn!(stream = %self.stream, request = c.request_id.0, dropped = 1, "the hub refused a message {} times; dropping it", n);
                        self.queue.pop_front();
                        self.events.push_back(Event::GaveUp {
                            request_id: c.request_id.0,
                        });
                    }
                }
                warn!(stream = %self.stream, request = c.request_id.0, "the hub could not store a push; reopening the stream");
                self.reopen();
            }
            Input::Refused(refusal) => {
                if refusal.protocol == crate::protocol::STREAM_CREATE && !self.reported_open {
                    self.reported_open = true;
                    self.events
                        .push_back(Event::OpenFailed(ockam_core::Error::new(
                            refusal.error_kind(),
                            format!(
                                "the hub refused to open stream {:?}: {}",
                                self.stream, refusal.reason
                            ),
                        )));
                    return;
                }
                warn!(stream = %self.stream, protocol = %refusal.protocol, reason = %refusal.reason, "the hub refused a request");
                if refusal.protocol == crate::protocol::STREAM_PUSH && self.state == State::Open {
                    // Not about the message (that is a PushConfirm with
                    // an error): about the stream worker (it serves another
                    // connection, say). A new one takes everything
                    // unconfirmed again, in order.
                    self.reopen();
                }
            }
            Input::SendFailed(e) => {
                if !self.reported_open {
                    self.reported_open = true;
                    self.events.push_back(Event::OpenFailed(e));
                    return;
                }
                // Taken back: it goes again once the pause is over (or
                // with everything else after a reopen).
                if let Some(Transmitted::Push) = self.last_transmit.take() {
                    self.sent_at.pop_back();
                }
                self.paused_until = Some(now + self.config.resend_after);
            }
        }
    }

    fn reopen(&mut self) {
        self.state = State::Opening(None);
        self.sent_at.clear();
    }

    /// The next request to send, if any, at `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.paused_until.is_some_and(|t| now < t) {
            return None;
        }
        self.paused_until = None;
        match self.state {
            State::Opening(None) => {
                self.state = State::Opening(Some(now));
                self.last_transmit = Some(Transmitted::Create);
                Some(Transmit::Create(CreateStreamRequest {
                    stream_name: Some(self.stream.clone()),
                }))
            }
            State::Opening(Some(_)) => None,
            State::Open => {
                let n = self.sent_at.len();
                if n >= self.queue.len() || n >= self.config.max_in_flight {
                    return None;
                }
                let p = &self.queue[n];
                self.sent_at.push_back(now);
                self.last_transmit = Some(Transmitted::Push);
                Some(Transmit::Push(PushRequest {
                    request_id: Uint(p.id),
                    data: p.data.clone(),
                }))
            }
        }
    }

    /// What the producer reports, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let retry = match self.state {
            State::Opening(Some(t)) => Some(t + self.config.retry_after),
            State::Opening(None) => None,
            State::Open => self.sent_at.front().map(|t| *t + self.config.retry_after),
        };
        match (retry, self.paused_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Time passed: a request unanswered for `retry_after` is sent again.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Opening(Some(t)) if now >= t + self.config.retry_after => {
                self.state = State::Opening(None);
            }
            State::Open
                if self
                    .sent_at
                    .front()
                    .is_some_and(|t| now >= *t + self.config.retry_after) =>
            {
                // The hub (or the way to it) lost our pushes: reopen the
                // stream and send everything unconfirmed again.
                info!(stream = %self.stream, unconfirmed = self.queue.len(), "pushes unconfirmed; reopening the stream");
                self.reopen();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::STREAM_PUSH;

    fn confirm(id: u64, ok: bool) -> Input {
        Input::Confirm(PushConfirm {
            request_id: Uint(id),
            status: if ok {
                PushStatus::Ok
            } else {
                PushStatus::Error
            },
            index: Uint(0),
        })
    }

    fn drain(p: &mut Producer, now: Instant) -> Vec<Transmit> {
        std::iter::from_fn(|| p.poll_transmit(now)).collect()
    }

    fn pushes(t: &[Transmit]) -> Vec<u64> {
        t.iter()
            .filter_map(|t| match t {
                Transmit::Push(p) => Some(p.request_id.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn opens_then_pushes_in_order_within_the_window() {
        let now = Instant::now();
        let config = ProducerConfig {
            max_in_flight: 2,
            ..ProducerConfig::default()
        };
        let mut p = Producer::new("s", config);
        for i in 0..3u8 {
            p.send(vec![i]);
        }
        assert!(matches!(drain(&mut p, now)[..], [Transmit::Create(_)]));
        p.handle(Input::Init, now);
        assert!(matches!(p.poll_event(), Some(Event::Opened)));
        assert_eq!(pushes(&drain(&mut p, now)), vec![1, 2]);
        // Confirming 2 confirms 1: room for 3.
        p.handle(confirm(2, true), now);
        assert_eq!(pushes(&drain(&mut p, now)), vec![3]);
        p.handle(confirm(3, true), now);
        assert_eq!(p.unconfirmed(), 0);
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn unconfirmed_pushes_go_again_with_the_same_ids_after_a_reopen() {
        let t0 = Instant::now();
        let mut p = Producer::new("s", ProducerConfig::default());
        p.send(vec![1]);
        p.send(vec![2]);
        drain(&mut p, t0);
        p.handle(Input::Init, t0);
        assert_eq!(pushes(&drain(&mut p, t0)), vec![1, 2]);
        let due = p.poll_timeout().unwrap();
        assert_eq!(due, t0 + crate::RETRY_AFTER);
        p.handle_timeout(due);
        assert!(matches!(drain(&mut p, due)[..], [Transmit::Create(_)]));
        p.handle(Input::Init, due);
        assert_eq!(pushes(&drain(&mut p, due)), vec![1, 2]);
    }

    #[test]
    fn a_refused_message_is_given_up_after_max_refusals() {
        let now = Instant::now();
        let mut p = Producer::new("s", ProducerConfig::default());
        p.send(vec![0; 10]);
        p.send(vec![1]);
        for round in 1..=crate::MAX_REFUSALS {
            drain(&mut p, now);
            p.handle(Input::Init, now);
            let sent = pushes(&drain(&mut p, now));
            assert_eq!(sent[0], 1, "round {round}");
            p.handle(confirm(1, false), now);
        }
        assert!(matches!(p.poll_event(), Some(Event::Opened)));
        assert!(matches!(
            p.poll_event(),
            Some(Event::GaveUp { request_id: 1 })
        ));
        drain(&mut p, now);
        p.handle(Input::Init, now);
        assert_eq!(pushes(&drain(&mut p, now)), vec![2]);
    }

    #[test]
    fn a_failed_send_is_taken_back_and_retried_after_a_pause() {
        let now = Instant::now();
        let mut p = Producer::new("s", ProducerConfig::default());
        drain(&mut p, now);
        p.handle(Input::Init, now);
        p.poll_event();
        p.send(vec![1]);
        assert_eq!(pushes(&drain(&mut p, now)), vec![1]);
        let e = ockam_core::Error::new(ockam_core::ErrorKind::Unavailable, "down");
        p.handle(Input::SendFailed(e), now);
        assert!(drain(&mut p, now).is_empty());
        let later = p.poll_timeout().unwrap();
        assert_eq!(pushes(&drain(&mut p, later)), vec![1]);
    }

    #[test]
    fn the_first_open_reports_its_failure() {
        let now = Instant::now();
        let mut p = Producer::new("s", ProducerConfig::default());
        drain(&mut p, now);
        p.handle(
            Input::Refused(StreamError::new(crate::protocol::STREAM_CREATE, "bad name")),
            now,
        );
        match p.poll_event() {
            Some(Event::OpenFailed(e)) => {
                assert_eq!(e.kind(), ockam_core::ErrorKind::InvalidInput)
            }
            other => panic!("{other:?}"),
        }
        // Later refusals are only logged.
        p.handle(Input::Refused(StreamError::new(STREAM_PUSH, "x")), now);
        assert!(p.poll_event().is_none());
    }
}

//! The consumer's rules, as a plain state machine (no I/O, no clock).
//!
//! A [`Consumer`] reads one incoming stream for one client id: it opens the
//! stream, asks the index service where the client stopped, pulls from
//! there and hands each message out to be delivered ([`Consumer::poll_deliver`]).
//!
//! **At-least-once up to the application.** The worker delivers each message
//! with a receipt ([`ockam_core::Receipt`]) and reports what became of it
//! ([`Input::Taken`]). The index saved for `(client_id, stream)` only ever
//! moves past messages the application has *taken* (its worker returned
//! from `handle_message`, or its `ReceiverAddress` asked for the next
//! message or acknowledged it), so a crash at any moment loses nothing: the
//! next consumer with the same client id starts at the first message not
//! taken. What may come twice after a crash: the messages taken since the
//! last save (saves are sent at most every `save_every`) and those
//! delivered but not yet taken.
//!
//! **A window.** At most `window` messages are delivered and not yet
//! taken: a slow application makes the consumer pull less, not queue more.
//!
//! **Never a silent skip.** A read position is reconciled with the log it
//! points into: when the hub says a position is past the end of the stream
//! (it lost messages: an in-memory hub restarted, say), the consumer takes
//! the index the hub gives again (which the hub keeps within the log) and
//! reports it; when the hub no longer knows a position the client had saved,
//! the consumer reads the stream from the start again rather than from a
//! position the log no longer matches. A message the application never got
//! ([`Delivery::NotHandled`]: no worker at its address) is delivered again,
//! with everything after it, after `retry_after`, then after pauses that
//! double up to [`MAX_REDELIVERY_PAUSE`] while it is still not taken: never
//! skipped.

use crate::protocol::Uint;
use crate::protocol::{
    CreateStreamRequest, IndexRequest, PullRequest, PullResponse, PullWaitRequest, StreamError,
    STREAM_CREATE, STREAM_INDEX, STREAM_PULL, STREAM_PULL_WAIT,
};
use ockam_core::Delivery;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Longest pause before delivering again a message the application never
/// got (the pause doubles from `retry_after` at each such round).
pub const MAX_REDELIVERY_PAUSE: Duration = Duration::from_secs(64);

/// Most times the time given for an answer doubles after requests lost in
/// a row (see [`Consumer::poll_timeout`]): `retry_after` × 4 at most.
pub const MAX_LOSS_DOUBLINGS: u32 = 2;

/// How a [`Consumer`] behaves.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Messages delivered and not yet taken by the application, at most
    /// (default [`crate::DEFAULT_WINDOW`]).
    pub window: usize,
    /// Messages asked for per pull, at most (default [`crate::PULL_LIMIT`]).
    pub pull_limit: u64,
    /// Whether to use waiting pulls (`stream_pull_wait`; default) or to
    /// poll every `poll_interval`.
    pub waiting_pull: bool,
    /// How long a waiting pull asks the hub to wait (default
    /// [`crate::PULL_WAIT`]).
    pub pull_wait: Duration,
    /// A request unanswered for this long (plus `pull_wait` for a waiting
    /// pull) means the hub lost it: the consumer opens the stream again
    /// (default [`crate::RETRY_AFTER`]); after requests lost in a row it
    /// waits twice, then four times as long ([`MAX_LOSS_DOUBLINGS`]),
    /// until the hub answers again. Also the pause before delivering again
    /// a message the application never got.
    pub retry_after: Duration,
    /// Without waiting pulls, the pause between two empty pulls; also the
    /// least time between two index saves (default 100 ms: the builder's
    /// interval).
    pub poll_interval: Duration,
    /// After a refusal the hub may get over (busy, store failing), the
    /// pause before asking again (default 500 ms).
    pub refused_retry: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            window: crate::DEFAULT_WINDOW,
            pull_limit: crate::PULL_LIMIT,
            waiting_pull: true,
            pull_wait: crate::PULL_WAIT,
            retry_after: crate::RETRY_AFTER,
            poll_interval: Duration::from_millis(100),
            refused_retry: Duration::from_millis(500),
        }
    }
}

/// What the consumer is told.
#[derive(Debug, Clone)]
pub enum Input {
    /// The stream worker answered `stream_create` (the worker keeps the
    /// route it answered from: pulls go there), telling the incarnation
    /// of the hub's store if it does
    /// ([`crate::protocol::store_incarnation`]).
    Init {
        /// The store's incarnation, if known.
        incarnation: Option<u64>,
    },
    /// The index service's answer to `Get`.
    Index(Option<u64>),
    /// A pull's answer.
    Pulled(PullResponse),
    /// A `stream_error` refusal.
    Refused(StreamError),
    /// Sending the last transmit failed.
    SendFailed,
    /// What became of a delivered message (from its receipt).
    Taken {
        /// The epoch it was delivered in ([`Deliver::epoch`]).
        epoch: u64,
        /// Its index.
        index: u64,
        /// Whether the application took it.
        delivery: Delivery,
    },
}

/// A request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// `stream_create`, to the hub's stream service.
    Create(CreateStreamRequest),
    /// `stream_index` (`Get` or `Save`), to the hub's index service.
    Index(IndexRequest),
    /// `stream_pull`, to the stream worker.
    Pull(PullRequest),
    /// `stream_pull_wait`, to the stream worker.
    PullWait(PullWaitRequest),
}

/// A message to deliver to the application, with a receipt that reports
/// [`Input::Taken`] with the same `epoch` and `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deliver {
    /// Increases whenever the consumer starts delivering again from an
    /// earlier position: receipts of an older epoch are ignored.
    pub epoch: u64,
    /// The message's index in the stream.
    pub index: u64,
    /// The stored message (an encoded transport message).
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Opening,
    Indexing,
    Pulling,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Create,
    Index,
    Pull { waiting: bool },
}

#[derive(Debug, Clone, Copy)]
struct Request {
    kind: Kind,
    /// When it is taken as lost if unanswered (fixed when it is sent:
    /// see [`Consumer::answer_within`]).
    lost_at: Instant,
    id: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Delivered; the application has not taken it yet.
    Delivered,
    Taken,
}

/// The consumer of one incoming stream; see the module docs.
#[derive(Debug)]
pub struct Consumer {
    stream: String,
    client_id: String,
    config: ConsumerConfig,
    state: State,
    /// The request waiting for its answer.
    request: Option<Request>,
    /// No request before this (a pause after a refusal or an empty poll).
    not_before: Option<Instant>,
    request_id: u64,
    epoch: u64,
    /// The next index to pull; `None` until the index service answered.
    next_pull: Option<u64>,
    /// Every message before this was taken: the index to save.
    acked: u64,
    /// The messages from `acked` to `next_pull`, delivered in this epoch.
    window: VecDeque<Slot>,
    /// The index last saved (or read from the hub).
    saved: Option<u64>,
    /// The last save sent and the index saved before it (taken back if
    /// the hub refuses it, or if sending it failed).
    save_in_flight: Option<(u64, Option<u64>)>,
    /// Whether the last transmit was a save.
    last_was_save: bool,
    last_save_at: Option<Instant>,
    /// The hub refused our position: take its index as it is.
    reset: bool,
    /// A message the application never got: deliver again from `acked`
    /// at this time.
    redeliver_at: Option<Instant>,
    /// The incarnation of the store the stream workers serve, once known.
    incarnation: Option<u64>,
    /// The store changed incarnation: read the new log from its start.
    other_log: bool,
    /// The hub trimmed messages before this index that the consumer had
    /// not read (retention): it continues from there once everything
    /// delivered before was taken.
    trimmed_to: Option<u64>,
    /// Messages the hub trimmed before this consumer read them, in all.
    missed: u64,
    /// The ranges missed, not yet polled ([`Consumer::poll_missed`]).
    missed_ranges: VecDeque<(u64, u64)>,
    /// Requests in a row given up on unanswered: each doubles the time the
    /// next one is given (see [`Consumer::answer_within`]). Back to 0 once
    /// the index service or a stream worker answers (a stream opened is
    /// not enough: the index service may be the slow one).
    losses: u32,
    /// Rounds of delivering again a message the application never got,
    /// since the saved position last moved (the pause doubles each round).
    redeliveries: u32,
    deliveries: VecDeque<Deliver>,
}

impl Consumer {
    /// A consumer of `stream` for `client_id`; its first transmit opens
    /// the stream.
    pub fn new(
        stream: impl Into<String>,
        client_id: impl Into<String>,
        config: ConsumerConfig,
    ) -> Self {
        let mut config = config;
        config.window = config.window.max(1);
        config.pull_limit = config.pull_limit.max(1);
        Consumer {
            stream: stream.into(),
            client_id: client_id.into(),
            config,
            state: State::Opening,
            request: None,
            not_before: None,
            request_id: 0,
            epoch: 0,
            next_pull: None,
            acked: 0,
            window: VecDeque::new(),
            saved: None,
            save_in_flight: None,
            last_was_save: false,
            last_save_at: None,
            reset: false,
            redeliver_at: None,
            redeliveries: 0,
            losses: 0,
            incarnation: None,
            other_log: false,
            trimmed_to: None,
            missed: 0,
            missed_ranges: VecDeque::new(),
            deliveries: VecDeque::new(),
        }
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Every message before this index was taken by the application.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The index last saved (or read from the hub), if any.
    pub fn saved(&self) -> Option<u64> {
        self.saved
    }

    /// Messages the hub removed (its retention) before this consumer read
    /// them, in all: skipped, each time with a warning.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// The next range of messages `from..to` the hub removed before this
    /// consumer read them (each reported once).
    pub fn poll_missed(&mut self) -> Option<(u64, u64)> {
        self.missed_ranges.pop_front()
    }

    /// Messages delivered and not yet taken.
    pub fn in_window(&self) -> usize {
        self.window.len()
    }

    /// Takes an input at `now`.
    pub fn handle(&mut self, input: Input, now: Instant) {
        match input {
            Input::Init { incarnation } if self.expects(Kind::Create) => {
                self.request = None;
                self.state = State::Indexing;
                if let Some(now_serving) = incarnation {
                    if self.incarnation.is_some_and(|was| was != now_serving) {
                        // Another log: what we hold (and what we may have
                        // saved into it since it started) means nothing there.
                        warn!(stream = %self.stream, client = %self.client_id, "the hub's store is not the one it was (it lost its contents); reading the stream from the start again");
                        self.other_log = true;
                    }
                    self.incarnation = Some(now_serving);
                }
            }
            Input::Index(h) if self.expects(Kind::Index) => {
                self.request = None;
                self.losses = 0;
                self.on_index(h);
                self.state = State::Pulling;
            }
            Input::Pulled(resp) => self.on_pulled(resp, now),
            Input::Refused(refusal) => self.on_refused(refusal, now),
            Input::SendFailed => {
                // A request that was not sent times out as a lost one;
                // a save is tried again.
                if std::mem::take(&mut self.last_was_save) {
                    self.take_back_save();
                }
            }
            Input::Taken {
                epoch,
                index,
                delivery,
            } => self.on_taken(epoch, index, delivery, now),
            Input::Init { .. } | Input::Index(_) => {
                debug!(stream = %self.stream, "ignored an answer to a request given up on")
            }
        }
    }

    fn expects(&self, kind: Kind) -> bool {
        self.request.is_some_and(|r| r.kind == kind)
    }

    fn on_index(&mut self, hub: Option<u64>) {
        if std::mem::take(&mut self.other_log) {
            self.restart_from(0);
            self.saved = None;
            self.reset = false;
            return;
        }
        let lost = hub.is_none() && self.saved.is_some();
        if self.next_pull.is_none() || self.reset || lost {
            let from = hub.unwrap_or(0);
            if lost {
                warn!(stream = %self.stream, client = %self.client_id, had = ?self.saved, "the hub has no read position for this client any more (it lost its state); reading the stream from the start again");
            } else if self.reset {
                warn!(stream = %self.stream, client = %self.client_id, was = ?self.next_pull, from, "the read position was past the end of the stream; reading from the position the hub gives");
            } else {
                debug!(stream = %self.stream, from, "incoming stream open");
            }
            self.restart_from(from);
            self.saved = hub;
            self.reset = false;
        }
    }

    /// Delivers again from `from` on: what was delivered and not taken is
    /// forgotten (its receipts are of an older epoch now).
    fn restart_from(&mut self, from: u64) {
        self.epoch += 1;
        self.window.clear();
        self.acked = from;
        self.next_pull = Some(from);
        self.redeliver_at = None;
        if matches!(
            self.request,
            Some(Request {
                kind: Kind::Pull { .. },
                ..
            })
        ) {
            // Its answer is from the old position: ignored.
            self.request = None;
        }
    }

    fn on_pulled(&mut self, resp: PullResponse, now: Instant) {
        let Some(Request {
            kind: Kind::Pull { waiting },
            id,
            ..
        }) = self.request
        else {
            return; // an answer to a pull given up on
        };
        if resp.request_id.0 != id {
            return;
        }
        self.request = None;
        self.losses = 0;
        let Some(mut next) = self.next_pull else {
            return;
        };
        let mut got = 0usize;
        for m in resp.messages {
            let index = m.index.0;
            if index < next {
                continue; // already delivered
            }
            if index > next {
                // The hub's answer skips messages: never passed over.
                warn!(stream = %self.stream, expected = next, got = index, "a pull answer skipped messages; pulling again from where it should have started");
                break;
            }
            if self.window.len() >= self.config.window {
                break; // more than asked for: pulled again later
            }
            self.window.push_back(Slot::Delivered);
            self.deliveries.push_back(Deliver {
                epoch: self.epoch,
                index,
                data: m.data,
            });
            next = index + 1;
            got += 1;
        }
        self.next_pull = Some(next);
        if got == 0 && !waiting {
            self.not_before = Some(now + self.config.poll_interval);
        }
    }

    fn on_refused(&mut self, refusal: StreamError, now: Instant) {
        let request = self.request;
        match refusal.protocol.as_str() {
            STREAM_PULL | STREAM_PULL_WAIT | STREAM_INDEX if refusal.is_past_end() => {
                warn!(stream = %self.stream, reason = %refusal.reason, "the hub refused the read position; asking for the saved one again");
                self.reset = true;
                self.save_in_flight = None;
                self.request = None;
                self.state = State::Indexing;
            }
            STREAM_PULL | STREAM_PULL_WAIT if refusal.trimmed_to().is_some() => {
                self.trimmed_to = refusal.trimmed_to();
                self.request = None;
            }
            STREAM_PULL_WAIT if self.config.waiting_pull && refusal.is_unknown_protocol() => {
                info!(stream = %self.stream, "the hub has no waiting pull; polling instead");
                self.config.waiting_pull = false;
                self.request = None;
            }
            STREAM_INDEX if self.save_in_flight.is_some() && !self.expects(Kind::Index) => {
                // A save refused (the store failed): tried again.
                warn!(stream = %self.stream, reason = %refusal.reason, "the hub could not save the read position; trying again");
                self.take_back_save();
                self.last_save_at = Some(now + self.config.refused_retry);
            }
            protocol => {
                warn!(stream = %self.stream, %protocol, reason = %refusal.reason, "the hub refused a request; asking again shortly");
                let for_ours = request.is_some_and(|r| match r.kind {
                    Kind::Create => protocol == STREAM_CREATE,
                    Kind::Index => protocol == STREAM_INDEX,
                    Kind::Pull { .. } => protocol == STREAM_PULL || protocol == STREAM_PULL_WAIT,
                });
                if protocol == STREAM_INDEX && self.save_in_flight.is_some() {
                    // Which of the two (the save, or the `Get` in flight)
                    // was refused is not said: the save is sent again
                    // later either way (a save twice is harmless).
                    self.take_back_save();
                    self.last_save_at = Some(now + self.config.refused_retry);
                }
                if for_ours {
                    self.request = None;
                    let pause = if protocol == STREAM_CREATE {
                        self.config.retry_after
                    } else {
                        self.config.refused_retry
                    };
                    self.not_before = Some(now + pause);
                }
            }
        }
    }

    /// The last save did not happen: it is sent again later.
    fn take_back_save(&mut self) {
        if let Some((index, before)) = self.save_in_flight.take() {
            if self.saved == Some(index) {
                self.saved = before;
            }
        }
    }

    fn on_taken(&mut self, epoch: u64, index: u64, delivery: Delivery, now: Instant) {
        if epoch != self.epoch || index < self.acked {
            return;
        }
        let Ok(at) = usize::try_from(index - self.acked) else {
            return;
        };
        match (self.window.get_mut(at), delivery) {
            (Some(slot), Delivery::Handled) => *slot = Slot::Taken,
            (Some(_), Delivery::NotHandled) => {
                if self.redeliver_at.is_none() {
                    let pause = self
                        .config
                        .retry_after
                        .saturating_mul(1 << self.redeliveries.min(6))
                        .min(MAX_REDELIVERY_PAUSE);
                    self.redeliveries += 1;
                    warn!(stream = %self.stream, index, ?pause, round = self.redeliveries, "the application never got a message (no worker at its address?); delivering it again, with what follows it");
                    self.redeliver_at = Some(now + pause);
                }
            }
            (None, _) => return,
        }
        while self.window.front() == Some(&Slot::Taken) {
            self.window.pop_front();
            self.acked += 1;
            self.redeliveries = 0;
        }
    }

    /// Whether a `stream_create` was sent and not answered yet (only then
    /// is an [`Input::Init`] taken).
    pub fn awaits_init(&self) -> bool {
        self.expects(Kind::Create)
    }

    /// Whether the consumer would pull now but for its full window: the
    /// application taking messages lets it go on (so receipts are wanted
    /// at once, not batched).
    pub fn waits_for_room(&self) -> bool {
        self.state == State::Pulling
            && self.request.is_none()
            && self.next_pull.is_some()
            && self.redeliver_at.is_none()
            && !self.has_room()
    }

    fn has_room(&self) -> bool {
        let room = self.config.window - self.window.len();
        let enough = (self.config.window / 4)
            .max(1)
            .min(self.config.pull_limit as usize);
        room > 0 && (room >= enough || self.window.is_empty())
    }

    /// Whether the index to save differs from the one saved (and saving
    /// makes sense now).
    fn save_wanted(&self) -> bool {
        self.next_pull.is_some()
            && self.saved != Some(self.acked)
            && (self.saved.is_some() || self.acked > 0)
            && self.state != State::Opening
            && !self.reset
    }

    /// The next request to send, if any, at `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.last_was_save = false;
        if self.redeliver_at.is_some_and(|t| now >= t) {
            let from = self.acked;
            self.restart_from(from);
        }
        if self.save_ready(now) {
            let before = self.saved;
            self.saved = Some(self.acked);
            self.save_in_flight = Some((self.acked, before));
            self.last_save_at = Some(now);
            self.last_was_save = true;
            return Some(Transmit::Index(IndexRequest::Save {
                client_id: self.client_id.clone(),
                stream_name: self.stream.clone(),
                index: Uint(self.acked),
            }));
        }
        if self.request.is_some() || self.not_before.is_some_and(|t| now < t) {
            return None;
        }
        self.not_before = None;
        let (kind, transmit) = match self.state {
            State::Opening => (
                Kind::Create,
                Transmit::Create(CreateStreamRequest {
                    stream_name: Some(self.stream.clone()),
                }),
            ),
            State::Indexing => (
                Kind::Index,
                Transmit::Index(IndexRequest::Get {
                    client_id: self.client_id.clone(),
                    stream_name: self.stream.clone(),
                }),
            ),
            State::Pulling => {
                let next = self.next_pull?;
                if let Some(to) = self.trimmed_to {
                    if !self.window.is_empty() {
                        return None; // the delivered ones are taken first
                    }
                    self.trimmed_to = None;
                    if to > next {
                        let missed = to - next;
                        self.missed += missed;
                        self.missed_ranges.push_back((next, to));
                        warn!(stream = %self.stream, missed, from = next, to, "the hub removed messages this client had not read (its retention); continuing from the oldest kept message");
                        self.acked = to;
                        self.next_pull = Some(to);
                        // Saves the new position first, if it is time.
                        return self.poll_transmit(now);
                    }
                }
                if self.redeliver_at.is_some() {
                    return None;
                }
                if !self.has_room() {
                    return None;
                }
                let room = self.config.window - self.window.len();
                let limit = Uint((room as u64).min(self.config.pull_limit));
                self.request_id += 1;
                let request_id = Uint(self.request_id);
                if self.config.waiting_pull {
                    (
                        Kind::Pull { waiting: true },
                        Transmit::PullWait(PullWaitRequest {
                            request_id,
                            index: Uint(next),
                            limit,
                            wait_ms: Uint(self.config.pull_wait.as_millis() as u64),
                        }),
                    )
                } else {
                    (
                        Kind::Pull { waiting: false },
                        Transmit::Pull(PullRequest {
                            request_id,
                            index: Uint(next),
                            limit,
                        }),
                    )
                }
            }
        };
        self.request = Some(Request {
            kind,
            lost_at: now + self.answer_within(kind),
            id: self.request_id,
        });
        Some(transmit)
    }

    /// Whether to send a save now: at most one every `poll_interval`.
    fn save_ready(&self, now: Instant) -> bool {
        self.save_wanted()
            && self
                .last_save_at
                .is_none_or(|t| now >= t + self.config.poll_interval)
    }

    /// A save of what the application took, whatever the time since the
    /// last one (when the consumer stops), if it differs from the saved
    /// index.
    pub fn final_save(&mut self) -> Option<Transmit> {
        if !self.save_wanted() {
            return None;
        }
        self.saved = Some(self.acked);
        Some(Transmit::Index(IndexRequest::Save {
            client_id: self.client_id.clone(),
            stream_name: self.stream.clone(),
            index: Uint(self.acked),
        }))
    }

    /// The next message to deliver, if any.
    pub fn poll_deliver(&mut self) -> Option<Deliver> {
        self.deliveries.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) (or
    /// [`poll_transmit`](Self::poll_transmit)) has something to do, if
    /// ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let lost = self.request.map(|r| r.lost_at);
        // (A save never sent before goes out at the next poll_transmit.)
        let save = if self.save_wanted() {
            self.last_save_at.map(|t| t + self.config.poll_interval)
        } else {
            None
        };
        [lost, self.not_before, save, self.redeliver_at]
            .into_iter()
            .flatten()
            .min()
    }

    /// Time passed: a request unanswered too long is taken as lost, and the
    /// stream opened again (keeping the read position).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(lost) = self.request {
            if now >= lost.lost_at {
                self.losses = self.losses.saturating_add(1);
                info!(stream = %self.stream, request = ?lost.kind, lost_in_a_row = self.losses, "no answer from the hub; opening the stream again");
                self.request = None;
                self.state = State::Opening;
            }
        }
    }

    /// How long a request of `kind` is given for its answer before it is
    /// taken as lost: a waiting pull's own wait, plus `retry_after`
    /// doubled for each request in a row given up on, up to
    /// [`MAX_LOSS_DOUBLINGS`] times (2, 4, 8 s by default), as TCP's
    /// retransmission timer backs off (RFC 6298, 5.5). A hub slow to
    /// answer (its back end under load) is then not sent the same requests
    /// again every `retry_after`, each opening another stream worker, the
    /// longer it is slow; an answer of the index service or a pull's sets
    /// it back to `retry_after`.
    fn answer_within(&self, kind: Kind) -> Duration {
        let wait = match kind {
            Kind::Pull { waiting: true } => self.config.pull_wait,
            _ => Duration::ZERO,
        };
        let backoff = 1u32 << self.losses.min(MAX_LOSS_DOUBLINGS);
        wait + self.config.retry_after.saturating_mul(backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::StreamMessage;

    fn config() -> ConsumerConfig {
        ConsumerConfig {
            window: 4,
            pull_limit: 4,
            ..ConsumerConfig::default()
        }
    }

    /// A consumer that opened the stream and got `index` from the hub;
    /// returns it and its first pull.
    fn opened(index: Option<u64>, now: Instant) -> (Consumer, Transmit) {
        let mut c = Consumer::new("s", "c", config());
        open_again(&mut c, Some(1), now);
        c.handle(Input::Index(index), now);
        let pull = c.poll_transmit(now).expect("a pull");
        (c, pull)
    }

    fn answer(c: &mut Consumer, pull: &Transmit, from: u64, n: u64, now: Instant) {
        let Transmit::PullWait(p) = pull else {
            panic!("{pull:?}")
        };
        assert_eq!(p.index.0, from);
        let messages = (from..from + n)
            .map(|i| StreamMessage {
                index: Uint(i),
                data: vec![i as u8],
            })
            .collect();
        c.handle(
            Input::Pulled(PullResponse {
                request_id: p.request_id,
                messages,
            }),
            now,
        );
    }

    fn take(c: &mut Consumer, d: &Deliver, now: Instant) {
        c.handle(
            Input::Taken {
                epoch: d.epoch,
                index: d.index,
                delivery: Delivery::Handled,
            },
            now,
        );
    }

    /// The request out is lost at its deadline; the stream opens again
    /// (the hub answering with `incarnation`) and the `Get` goes out.
    /// When, as an instant.
    fn lose_and_reopen(c: &mut Consumer, incarnation: Option<u64>) -> Instant {
        let lost = c.poll_timeout().unwrap();
        c.handle_timeout(lost);
        open_again(c, incarnation, lost);
        lost
    }

    /// The stream opens (the hub answering with `incarnation`) and the
    /// `Get` goes out, at `now`.
    fn open_again(c: &mut Consumer, incarnation: Option<u64>, now: Instant) {
        assert!(matches!(c.poll_transmit(now), Some(Transmit::Create(_))));
        c.handle(Input::Init { incarnation }, now);
        assert!(matches!(
            c.poll_transmit(now),
            Some(Transmit::Index(IndexRequest::Get { .. }))
        ));
    }

    fn saves(c: &mut Consumer, now: Instant) -> Vec<u64> {
        std::iter::from_fn(|| c.poll_transmit(now))
            .filter_map(|t| match t {
                Transmit::Index(IndexRequest::Save { index, .. }) => Some(index.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_saved_index_follows_what_the_application_took() {
        let t0 = Instant::now();
        let (mut c, pull) = opened(Some(10), t0);
        answer(&mut c, &pull, 10, 3, t0);
        let d: Vec<Deliver> = std::iter::from_fn(|| c.poll_deliver()).collect();
        assert_eq!(d.iter().map(|d| d.index).collect::<Vec<_>>(), [10, 11, 12]);
        // Delivered is not taken: nothing to save.
        assert!(saves(&mut c, t0).is_empty());
        // 11 taken before 10: still nothing past 10.
        take(&mut c, &d[1], t0);
        assert!(saves(&mut c, t0).is_empty());
        take(&mut c, &d[0], t0);
        assert_eq!(saves(&mut c, t0), [12]);
        // The next save waits for the interval.
        take(&mut c, &d[2], t0);
        assert!(saves(&mut c, t0).is_empty());
        let later = c.poll_timeout().unwrap();
        assert_eq!(saves(&mut c, later), [13]);
    }

    #[test]
    fn a_full_window_stops_pulling_until_messages_are_taken() {
        let t0 = Instant::now();
        let (mut c, pull) = opened(None, t0);
        answer(&mut c, &pull, 0, 4, t0);
        let d: Vec<Deliver> = std::iter::from_fn(|| c.poll_deliver()).collect();
        assert_eq!(c.in_window(), 4);
        assert!(c.poll_transmit(t0).is_none(), "no pull with a full window");
        take(&mut c, &d[0], t0);
        // One free slot of 4 is not worth a pull yet (a quarter is, with
        // nothing else in flight).
        let next =
            std::iter::from_fn(|| c.poll_transmit(t0)).find(|t| matches!(t, Transmit::PullWait(_)));
        let Some(Transmit::PullWait(p)) = next else {
            panic!("a pull once a message was taken: {next:?}")
        };
        assert_eq!((p.index.0, p.limit.0), (4, 1));
    }

    #[test]
    fn a_trimmed_position_moves_to_the_oldest_kept_once_the_delivered_are_taken() {
        let t0 = Instant::now();
        let (mut c, pull) = opened(Some(10), t0);
        answer(&mut c, &pull, 10, 2, t0);
        let d: Vec<Deliver> = std::iter::from_fn(|| c.poll_deliver()).collect();
        // The next pull, from 12, finds the stream trimmed to 50.
        let next = std::iter::from_fn(|| c.poll_transmit(t0))
            .find(|t| matches!(t, Transmit::PullWait(_)))
            .unwrap();
        let Transmit::PullWait(p) = &next else {
            unreachable!()
        };
        assert_eq!(p.index.0, 12);
        c.handle(
            Input::Refused(StreamError::trimmed(STREAM_PULL_WAIT, "s", 12, 50)),
            t0,
        );
        // Two delivered, not taken: no jump, no pull yet.
        assert!(
            std::iter::from_fn(|| c.poll_transmit(t0)).all(|t| !matches!(t, Transmit::PullWait(_)))
        );
        assert_eq!(c.missed(), 0);
        take(&mut c, &d[0], t0);
        take(&mut c, &d[1], t0);
        let later = t0 + Duration::from_secs(1);
        let sent: Vec<Transmit> = std::iter::from_fn(|| c.poll_transmit(later)).collect();
        assert!(
            sent.iter()
                .any(|t| matches!(t, Transmit::PullWait(p) if p.index.0 == 50)),
            "pulls go on from the oldest kept: {sent:?}"
        );
        // The new position is saved at the next save's time.
        let save_time = later + Duration::from_secs(1);
        let sent: Vec<Transmit> = std::iter::from_fn(|| c.poll_transmit(save_time)).collect();
        assert!(
            sent.iter().any(
                |t| matches!(t, Transmit::Index(IndexRequest::Save { index, .. }) if index.0 == 50)
            ),
            "the new position is saved: {sent:?}"
        );
        assert_eq!(c.missed(), 38);
        assert_eq!(c.poll_missed(), Some((12, 50)));
        assert_eq!(c.poll_missed(), None);
        assert_eq!(c.acked(), 50);
    }

    #[test]
    fn a_position_past_the_end_is_replaced_by_the_hubs() {
        let t0 = Instant::now();
        let (mut c, pull) = opened(Some(5), t0);
        c.handle(
            Input::Refused(StreamError::past_end(STREAM_PULL_WAIT, "s", 5, 0)),
            t0,
        );
        assert!(matches!(
            c.poll_transmit(t0),
            Some(Transmit::Index(IndexRequest::Get { .. }))
        ));
        c.handle(Input::Index(None), t0);
        let again = c.poll_transmit(t0).unwrap();
        answer(&mut c, &again, 0, 1, t0);
        assert_eq!(c.poll_deliver().map(|d| d.index), Some(0));
        drop(pull);
    }

    #[test]
    fn a_hub_that_forgot_a_saved_position_is_read_from_the_start() {
        let t0 = Instant::now();
        let (mut c, pull) = opened(Some(3), t0);
        answer(&mut c, &pull, 3, 2, t0);
        let d: Vec<Deliver> = std::iter::from_fn(|| c.poll_deliver()).collect();
        take(&mut c, &d[0], t0);
        take(&mut c, &d[1], t0);
        assert_eq!(saves(&mut c, t0), [5]);
        // The hub restarts empty: the waiting pull is lost.
        let lost = lose_and_reopen(&mut c, Some(1));
        c.handle(Input::Index(None), lost);
        let pull = c.poll_transmit(lost).unwrap();
        answer(&mut c, &pull, 0, 1, lost);
    }

    #[test]
    fn a_store_of_another_incarnation_is_read_from_its_start() {
        let t0 = Instant::now();
        let (mut c, pull) = opened(Some(3), t0);
        answer(&mut c, &pull, 3, 4, t0);
        let d: Vec<Deliver> = std::iter::from_fn(|| c.poll_deliver()).collect();
        // The hub restarts empty; the application takes what it had, and
        // the save (of 7) lands in the new store, whose log already
        // reaches 7: the index service takes it. (The next pull is lost.)
        for m in &d {
            take(&mut c, m, t0);
        }
        assert_eq!(saves(&mut c, t0), [7]);
        let lost = c.poll_timeout().unwrap();
        c.handle_timeout(lost);
        assert!(matches!(c.poll_transmit(lost), Some(Transmit::Create(_))));
        c.handle(
            Input::Init {
                incarnation: Some(2),
            },
            lost,
        );
        c.poll_transmit(lost);
        c.handle(Input::Index(Some(7)), lost);
        // Not from 7: from the start of the new log.
        let pull = c.poll_transmit(lost).unwrap();
        answer(&mut c, &pull, 0, 1, lost);
        assert_eq!(c.poll_deliver().map(|d| d.index), Some(0));
    }

    /// A refusal of `stream_index` while both a save and a `Get` are out
    /// (a busy index service): which one was refused is not said, so the
    /// save is sent again.
    #[test]
    fn an_index_refusal_with_a_get_out_sends_the_save_again() {
        let t0 = Instant::now();
        let (mut c, pull) = opened(Some(0), t0);
        answer(&mut c, &pull, 0, 2, t0);
        let d: Vec<Deliver> = std::iter::from_fn(|| c.poll_deliver()).collect();
        take(&mut c, &d[0], t0);
        take(&mut c, &d[1], t0);
        assert_eq!(saves(&mut c, t0), [2]);
        // The pull is lost; the stream opens again, its `Get` goes out.
        let lost = lose_and_reopen(&mut c, None);
        c.handle(
            Input::Refused(StreamError::new(STREAM_INDEX, "the index service is busy")),
            lost,
        );
        let later = lost + Duration::from_secs(5);
        c.handle(Input::Index(Some(0)), later);
        assert_eq!(saves(&mut c, later), [2]);
    }

    /// A hub slow to answer (its back end under load): each request lost
    /// in a row is given twice as long, up to four times `retry_after`,
    /// and the first answer sets it back.
    #[test]
    fn requests_lost_in_a_row_are_given_longer_each_time() {
        let t0 = Instant::now();
        let retry = ConsumerConfig::default().retry_after;
        let (mut c, pull) = opened(Some(0), t0);
        let pull_wait = ConsumerConfig::default().pull_wait;
        // The waiting pull: its wait, then retry_after.
        assert_eq!(c.poll_timeout(), Some(t0 + pull_wait + retry));
        drop(pull);
        let mut now = t0 + pull_wait + retry;
        c.handle_timeout(now);
        // The reopening requests, each lost: 2x, 4x, then 4x again.
        for factor in [2, 4, 4] {
            assert!(matches!(c.poll_transmit(now), Some(Transmit::Create(_))));
            let due = c.poll_timeout().unwrap();
            assert_eq!(due - now, retry * factor, "{c:?}");
            c.handle_timeout(due - Duration::from_millis(1));
            assert!(c.awaits_init(), "not lost before its time");
            now = due;
            c.handle_timeout(now);
            assert!(!c.awaits_init());
        }
        // The stream opens; the index service may be the slow one: its
        // `Get` is still given four times as long.
        open_again(&mut c, Some(1), now);
        assert_eq!(c.poll_timeout(), Some(now + retry * 4));
        // A refusal of something else meanwhile (an old pull's) moves no
        // deadline.
        c.handle(Input::Refused(StreamError::new(STREAM_PULL, "busy")), now);
        assert_eq!(c.poll_timeout(), Some(now + retry * 4));
        // It answers: back to retry_after (after the pull's own wait).
        c.handle(Input::Index(Some(0)), now);
        assert!(matches!(c.poll_transmit(now), Some(Transmit::PullWait(_))));
        assert_eq!(c.poll_timeout(), Some(now + pull_wait + retry));
    }

    #[test]
    fn a_reopen_keeps_the_position_when_the_hub_kept_its_index() {
        let t0 = Instant::now();
        let (mut c, pull) = opened(Some(3), t0);
        answer(&mut c, &pull, 3, 2, t0);
        let d: Vec<Deliver> = std::iter::from_fn(|| c.poll_deliver()).collect();
        // The next pull is lost (the stream worker went away).
        assert!(matches!(c.poll_transmit(t0), Some(Transmit::PullWait(_))));
        let lost = c.poll_timeout().unwrap();
        c.handle_timeout(lost);
        let t = c.poll_transmit(lost);
        assert!(matches!(t, Some(Transmit::Create(_))), "{t:?} {c:?}");
        c.handle(
            Input::Init {
                incarnation: Some(1),
            },
            lost,
        );
        let t = c.poll_transmit(lost);
        assert!(matches!(t, Some(Transmit::Index(_))), "{t:?} {c:?}");
        // Saved index 3 (nothing taken yet): the delivered ones are not
        // delivered again, the next pull starts at 5.
        c.handle(Input::Index(Some(3)), lost);
        let pull = c.poll_transmit(lost).unwrap();
        answer(&mut c, &pull, 5, 0, lost);
        // Their receipts still count.
        take(&mut c, &d[0], lost);
        take(&mut c, &d[1], lost);
        assert_eq!(c.acked(), 5);
    }

    #[test]
    fn a_message_nobody_got_is_delivered_again_with_what_follows() {
        let t0 = Instant::now();
        let (mut c, pull) = opened(None, t0);
        answer(&mut c, &pull, 0, 3, t0);
        let d: Vec<Deliver> = std::iter::from_fn(|| c.poll_deliver()).collect();
        take(&mut c, &d[0], t0);
        c.handle(
            Input::Taken {
                epoch: d[1].epoch,
                index: 1,
                delivery: Delivery::NotHandled,
            },
            t0,
        );
        take(&mut c, &d[2], t0);
        assert_eq!(c.acked(), 1);
        let at = c.poll_timeout().unwrap();
        let pull = std::iter::from_fn(|| c.poll_transmit(at))
            .find(|t| matches!(t, Transmit::PullWait(_)))
            .unwrap();
        answer(&mut c, &pull, 1, 2, at);
        let again: Vec<Deliver> = std::iter::from_fn(|| c.poll_deliver()).collect();
        assert_eq!(again.iter().map(|d| d.index).collect::<Vec<_>>(), [1, 2]);
        assert!(again[0].epoch > d[0].epoch);
        // Never taken, again and again: delivered again after pauses that
        // double, never skipped.
        let mut last = again;
        let mut at = at;
        for round in 2..=4u32 {
            let not = Input::Taken {
                epoch: last[0].epoch,
                index: 1,
                delivery: Delivery::NotHandled,
            };
            c.handle(not, at);
            let next = c.poll_timeout().unwrap();
            assert_eq!(next - at, crate::RETRY_AFTER * (1 << (round - 1)));
            at = next;
            let pull = std::iter::from_fn(|| c.poll_transmit(at))
                .find(|t| matches!(t, Transmit::PullWait(_)))
                .unwrap();
            answer(&mut c, &pull, 1, 2, at);
            last = std::iter::from_fn(|| c.poll_deliver()).collect();
            assert_eq!(last[0].index, 1);
        }
        assert_eq!(c.acked(), 1, "never skipped");
    }

    #[test]
    fn refusals_are_asked_again_after_a_pause_and_a_hub_without_waiting_pulls_is_polled() {
        let t0 = Instant::now();
        let (mut c, _pull) = opened(None, t0);
        c.handle(
            Input::Refused(StreamError::new(STREAM_PULL_WAIT, "busy")),
            t0,
        );
        assert!(c.poll_transmit(t0).is_none());
        let at = c.poll_timeout().unwrap();
        assert_eq!(at, t0 + Duration::from_millis(500));
        assert!(matches!(c.poll_transmit(at), Some(Transmit::PullWait(_))));
        c.handle(
            Input::Refused(StreamError::unknown_protocol(STREAM_PULL_WAIT, "a stream")),
            at,
        );
        assert!(matches!(c.poll_transmit(at), Some(Transmit::Pull(_))));
    }
}

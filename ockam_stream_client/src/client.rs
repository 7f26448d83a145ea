//! The stream client: a producer worker that turns messages sent to it into
//! confirmed pushes, and a consumer worker that pulls, delivers and saves
//! its read position.

use crate::protocol::*;
use ockam_core::{
    async_trait, Address, Any, Error, ErrorKind, LocalMessage, Message, Result, Route, Routed,
    TransportMessage, Worker,
};
use ockam_node::Context;
use serde_bare::Uint;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Pushes sent and not yet confirmed, at most.
pub const MAX_IN_FLIGHT: usize = 1024;
/// A push not confirmed within this is retried (after re-opening the stream).
pub const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Refusals of one message after which the producer gives it up.
pub const MAX_REFUSALS: u32 = 3;
/// How long a waiting pull asks the hub to wait.
pub const PULL_WAIT: Duration = Duration::from_secs(5);
/// Messages asked for per pull.
pub const PULL_LIMIT: u64 = 256;
/// How long [`Stream::connect`] waits for the hub to answer by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

const TICK: &str = "tick";

/// Sends a tick to `to` every `every`, so workers notice timeouts.
async fn ticker(ctx: Context, to: Address, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let tick = ProtocolPayload {
            protocol: TICK.into(),
            data: Vec::new(),
        };
        if ctx.send(to.clone(), tick).await.is_err() {
            return;
        }
    }
}

fn hub_route(hub: &Route, service: &str) -> Route {
    Route::new()
        .append_route(hub.clone())
        .append(service)
        .into()
}

// ---------------------------------------------------------------- producer

struct Pending {
    id: u64,
    data: Vec<u8>,
}

/// Pushes every message sent to its public address to the outgoing stream,
/// in order, retrying until the hub confirms each.
pub(crate) struct Producer {
    hub: Route,
    service: String,
    stream: String,
    public: Address,
    control: Address,
    interval: Duration,
    /// The stream worker on the hub, once it answered.
    stream_route: Option<Route>,
    create_sent: Option<Instant>,
    /// Messages not yet confirmed, oldest first; the first
    /// `sent_at.len()` of them have been sent (at those times).
    queue: VecDeque<Pending>,
    sent_at: VecDeque<Instant>,
    /// Refusals of the oldest message: after a few it is given up.
    refusals: (u64, u32),
    next_id: u64,
    ticker: Option<JoinHandle<()>>,
    /// `Stream::connect`, waiting for the outcome of the first open.
    opened: Option<oneshot::Sender<Result<()>>>,
    outage: Outage,
}

/// Whether sends to the hub have failed since it last answered: the first
/// failure of an outage is logged at warn, the rest at debug, and its end
/// at info (the producer and the consumer each keep one).
#[derive(Debug, Default)]
struct Outage(bool);

impl Outage {
    /// A send to the hub failed (`what` it was); `kept`: messages kept
    /// for a retry.
    fn send_failed(&mut self, stream: &str, what: &str, e: &Error, kept: Option<usize>) {
        if std::mem::replace(&mut self.0, true) {
            debug!(%stream, error = %e, "still cannot reach the hub ({what})");
        } else {
            warn!(%stream, error = %e, unconfirmed = ?kept, "cannot reach the hub ({what}); will retry");
        }
    }

    /// The hub answered (`protocol`: what; a tick is not an answer).
    fn answered(&mut self, stream: &str, protocol: &str) {
        if protocol != TICK && std::mem::take(&mut self.0) {
            info!(%stream, "the hub answers again");
        }
    }
}

impl Producer {
    pub(crate) fn new(
        hub: Route,
        service: String,
        stream: String,
        public: Address,
        control: Address,
        interval: Duration,
    ) -> Self {
        Producer {
            hub,
            service,
            stream,
            public,
            control,
            interval,
            stream_route: None,
            create_sent: None,
            queue: VecDeque::new(),
            sent_at: VecDeque::new(),
            refusals: (0, 0),
            next_id: 1,
            ticker: None,
            opened: None,
            outage: Outage::default(),
        }
    }

    /// A send to the hub failed: `Stream::connect` fails with it while it
    /// waits; later, it is logged (at warn once until the hub answers
    /// again) and the message is kept for a retry.
    fn send_failed(&mut self, what: &str, e: Error) {
        if let Some(opened) = self.opened.take() {
            let _ = opened.send(Err(e));
        } else {
            let kept = Some(self.queue.len());
            self.outage.send_failed(&self.stream, what, &e, kept);
        }
    }

    async fn open(&mut self, ctx: &Context) {
        self.stream_route = None;
        self.create_sent = Some(Instant::now());
        let req = CreateStreamRequest {
            stream_name: Some(self.stream.clone()),
        };
        let sent = match ProtocolPayload::new(STREAM_CREATE, &req) {
            Ok(p) => {
                ctx.send_from_address(hub_route(&self.hub, &self.service), p, self.control.clone())
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            self.send_failed("opening the stream", e);
        }
    }

    /// Sends unsent pushes, in order, up to the in-flight bound.
    async fn pump(&mut self, ctx: &Context) {
        let Some(route) = self.stream_route.clone() else {
            return;
        };
        while self.sent_at.len() < self.queue.len() && self.sent_at.len() < MAX_IN_FLIGHT {
            let p = &self.queue[self.sent_at.len()];
            let push = PushRequest {
                request_id: Uint(p.id),
                data: p.data.clone(),
            };
            let sent = match ProtocolPayload::new(STREAM_PUSH, &push) {
                Ok(m) => {
                    ctx.send_from_address(route.clone(), m, self.control.clone())
                        .await
                }
                Err(e) => Err(e),
            };
            match sent {
                Ok(()) => self.sent_at.push_back(Instant::now()),
                Err(e) => {
                    self.send_failed("pushing", e);
                    break;
                }
            }
        }
    }

    async fn on_hub_message(&mut self, ctx: &Context, p: ProtocolPayload, from: Route) {
        self.outage.answered(&self.stream, &p.protocol);
        match p.protocol.as_str() {
            STREAM_CREATE => match p.decode_data::<Init>(STREAM_CREATE) {
                Ok(init) if init.stream_name == self.stream => {
                    debug!(stream = %self.stream, "outgoing stream open");
                    self.stream_route = Some(from);
                    self.create_sent = None;
                    if let Some(opened) = self.opened.take() {
                        let _ = opened.send(Ok(()));
                    }
                    // Everything unconfirmed goes again, in order, with the
                    // same request ids.
                    self.sent_at.clear();
                    self.pump(ctx).await;
                }
                _ => warn!(stream = %self.stream, "ignored an unexpected stream_create answer"),
            },
            STREAM_PUSH => match p.decode_data::<PushConfirm>(STREAM_PUSH) {
                Ok(c) if c.status == PushStatus::Ok => {
                    let sent = self.sent_at.len();
                    if let Some(pos) = self
                        .queue
                        .iter()
                        .take(sent)
                        .position(|q| q.id == c.request_id.0)
                    {
                        // Confirmations come in order; anything before is confirmed too.
                        self.queue.drain(..=pos);
                        self.sent_at.drain(..=pos);
                    }
                    self.pump(ctx).await;
                }
                Ok(c) => {
                    // The hub refuses everything after a failed push on this
                    // stream worker (so nothing is stored out of order):
                    // open the stream again and resend all unconfirmed. A
                    // message refused again and again (too large for the
                    // hub, say) is given up rather than retried forever.
                    let front = self.queue.front().map(|q| q.id);
                    if front == Some(c.request_id.0) {
                        let (id, n) = self.refusals;
                        self.refusals =
                            (c.request_id.0, if id == c.request_id.0 { n + 1 } else { 1 });
                        if self.refusals.1 >= MAX_REFUSALS {
                            warn!(stream = %self.stream, request = c.request_id.0, dropped = 1, "the hub refused a message {MAX_REFUSALS} times; dropping it");
                            self.queue.pop_front();
                        }
                    }
                    warn!(stream = %self.stream, request = c.request_id.0, "the hub could not store a push; reopening the stream");
                    self.open(ctx).await;
                }
                Err(e) => {
                    warn!(stream = %self.stream, error = %e, "ignored a malformed push confirmation")
                }
            },
            STREAM_ERROR => {
                let refusal = p
                    .decode_data::<StreamError>(STREAM_ERROR)
                    .unwrap_or_else(|e| StreamError::new("", e.to_string()));
                if refusal.protocol == STREAM_CREATE {
                    if let Some(opened) = self.opened.take() {
                        let _ = opened.send(Err(Error::new(
                            ErrorKind::InvalidInput,
                            format!(
                                "the hub refused to open stream {:?}: {}",
                                self.stream, refusal.reason
                            ),
                        )));
                        return;
                    }
                }
                warn!(stream = %self.stream, protocol = %refusal.protocol, reason = %refusal.reason, "the hub refused a request");
            }
            TICK => self.on_tick(ctx).await,
            other => debug!(stream = %self.stream, protocol = other, "ignored a message"),
        }
    }

    async fn on_tick(&mut self, ctx: &Context) {
        let now = Instant::now();
        match (&self.stream_route, self.create_sent) {
            (None, Some(t)) if now - t < RETRY_AFTER => {}
            (None, _) => self.open(ctx).await,
            (Some(_), _) => {
                // The oldest unconfirmed push tells: were we answered?
                let stale = self.sent_at.front().is_some_and(|t| now - *t > RETRY_AFTER);
                if stale {
                    // The hub (or the way to it) lost our pushes: reopen the
                    // stream and send everything unconfirmed again.
                    info!(stream = %self.stream, unconfirmed = self.queue.len(), "pushes unconfirmed; reopening the stream");
                    self.open(ctx).await;
                } else {
                    self.pump(ctx).await;
                }
            }
        }
    }
}

#[async_trait]
impl Worker for Producer {
    type Message = Any;
    type Context = Context;

    async fn initialize(&mut self, ctx: &mut Context) -> Result<()> {
        let tick_ctx = ctx.new_context(Address::random_local()).await?;
        self.ticker = Some(tokio::spawn(ticker(
            tick_ctx,
            self.control.clone(),
            self.interval,
        )));
        self.open(ctx).await;
        Ok(())
    }

    async fn shutdown(&mut self, _ctx: &mut Context) -> Result<()> {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        if !self.queue.is_empty() {
            warn!(stream = %self.stream, dropped = self.queue.len(), "stopping with unconfirmed pushes; they are dropped");
        }
        Ok(())
    }

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        if msg.msg_addr() == Some(&self.public) {
            // A message to send through the stream: its own routes travel
            // with it, minus our hop.
            let mut t = msg.into_transport_message();
            t.onward_route.step()?;
            let id = self.next_id;
            self.next_id += 1;
            self.queue.push_back(Pending {
                id,
                data: t.encode()?,
            });
            self.pump(ctx).await;
            return Ok(());
        }
        let from = msg.return_route();
        match ProtocolPayload::decode(msg.payload()) {
            Ok(p) => self.on_hub_message(ctx, p, from).await,
            Err(e) => {
                warn!(stream = %self.stream, error = %e, "dropped a message that is not a stream protocol payload")
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- consumer

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConsumerState {
    /// Waiting for the stream worker's `Init`.
    Opening,
    /// Waiting for the saved index.
    Indexing,
    /// Pulling.
    Pulling,
}

/// Pulls the incoming stream from the saved index on, delivers each
/// message, then saves the new index.
pub(crate) struct Consumer {
    hub: Route,
    service: String,
    index_service: String,
    client_id: String,
    stream: String,
    /// Replies to delivered messages go through this producer.
    producer: Address,
    /// Where messages with nowhere else to go are delivered.
    recipient: Address,
    interval: Duration,
    waiting_pull: bool,
    state: ConsumerState,
    stream_route: Option<Route>,
    next: Option<u64>,
    request_sent: Option<Instant>,
    request_id: u64,
    ticker: Option<JoinHandle<()>>,
    outage: Outage,
}

impl Consumer {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        hub: Route,
        service: String,
        index_service: String,
        client_id: String,
        stream: String,
        producer: Address,
        recipient: Address,
        interval: Duration,
        waiting_pull: bool,
    ) -> Self {
        Consumer {
            hub,
            service,
            index_service,
            client_id,
            stream,
            producer,
            recipient,
            interval,
            waiting_pull,
            state: ConsumerState::Opening,
            stream_route: None,
            next: None,
            request_sent: None,
            request_id: 0,
            ticker: None,
            outage: Outage::default(),
        }
    }

    async fn request(&mut self, ctx: &Context, to: Route, protocol: &str, msg: ProtocolPayload) {
        self.request_sent = Some(Instant::now());
        if let Err(e) = ctx.send(to, msg).await {
            self.outage.send_failed(&self.stream, protocol, &e, None);
        }
    }

    async fn open(&mut self, ctx: &Context) {
        self.state = ConsumerState::Opening;
        let req = CreateStreamRequest {
            stream_name: Some(self.stream.clone()),
        };
        if let Ok(p) = ProtocolPayload::new(STREAM_CREATE, &req) {
            self.request(ctx, hub_route(&self.hub, &self.service), STREAM_CREATE, p)
                .await;
        }
    }

    async fn get_index(&mut self, ctx: &Context) {
        self.state = ConsumerState::Indexing;
        let req = IndexRequest::Get {
            client_id: self.client_id.clone(),
            stream_name: self.stream.clone(),
        };
        if let Ok(p) = ProtocolPayload::new(STREAM_INDEX, &req) {
            self.request(
                ctx,
                hub_route(&self.hub, &self.index_service),
                STREAM_INDEX,
                p,
            )
            .await;
        }
    }

    async fn pull(&mut self, ctx: &Context) {
        let (Some(route), Some(next)) = (self.stream_route.clone(), self.next) else {
            return;
        };
        self.request_id += 1;
        let p = if self.waiting_pull {
            ProtocolPayload::new(
                STREAM_PULL_WAIT,
                &PullWaitRequest {
                    request_id: Uint(self.request_id),
                    index: Uint(next),
                    limit: Uint(PULL_LIMIT),
                    wait_ms: Uint(PULL_WAIT.as_millis() as u64),
                },
            )
        } else {
            ProtocolPayload::new(
                STREAM_PULL,
                &PullRequest {
                    request_id: Uint(self.request_id),
                    index: Uint(next),
                    limit: Uint(PULL_LIMIT),
                },
            )
        };
        if let Ok(p) = p {
            self.request(ctx, route, STREAM_PULL, p).await;
        }
    }

    /// Delivers one stored message: its routes as the producer sent them,
    /// with replies going back through our producer.
    async fn deliver(&self, ctx: &Context, data: &[u8]) {
        let mut t = match TransportMessage::decode(data) {
            Ok(t) => t,
            Err(e) => {
                warn!(stream = %self.stream, error = %e, dropped = 1, "skipped a stream message that is not a transport message");
                return;
            }
        };
        t.return_route.modify().prepend(self.producer.clone());
        if t.onward_route.is_empty() {
            t.onward_route.modify().append(self.recipient.clone());
        }
        if let Err(e) = ctx.forward(LocalMessage::new(t)).await {
            warn!(stream = %self.stream, error = %e, dropped = 1, "dropped a message from the stream");
        }
    }

    async fn on_hub_message(&mut self, ctx: &Context, p: ProtocolPayload, from: Route) {
        self.outage.answered(&self.stream, &p.protocol);
        match (p.protocol.as_str(), self.state) {
            (STREAM_CREATE, ConsumerState::Opening)
                if p.decode_data::<Init>(STREAM_CREATE).is_ok() =>
            {
                self.stream_route = Some(from);
                self.request_sent = None;
                if self.next.is_some() {
                    self.state = ConsumerState::Pulling;
                    self.pull(ctx).await;
                } else {
                    self.get_index(ctx).await;
                }
            }
            (STREAM_INDEX, ConsumerState::Indexing) => {
                if let Ok(i) = p.decode_data::<Index>(STREAM_INDEX) {
                    self.next = Some(i.index.map_or(0, |u| u.0));
                    debug!(stream = %self.stream, from = self.next, "incoming stream open");
                    self.state = ConsumerState::Pulling;
                    self.request_sent = None;
                    self.pull(ctx).await;
                }
            }
            (STREAM_PULL, ConsumerState::Pulling) => {
                let Ok(resp) = p.decode_data::<PullResponse>(STREAM_PULL) else {
                    warn!(stream = %self.stream, "ignored a malformed pull response");
                    return;
                };
                if resp.request_id.0 != self.request_id {
                    return; // an answer to a pull we gave up on
                }
                self.request_sent = None;
                let Some(mut next) = self.next else { return };
                let got = !resp.messages.is_empty();
                for m in resp.messages {
                    if m.index.0 < next {
                        continue;
                    }
                    let Some(after) = m.index.0.checked_add(1) else {
                        warn!(stream = %self.stream, "ignored a stream message with an impossible index");
                        break;
                    };
                    self.deliver(ctx, &m.data).await;
                    next = after;
                }
                if got {
                    self.next = Some(next);
                    // Saved only after delivery: at least once.
                    let save = IndexRequest::Save {
                        client_id: self.client_id.clone(),
                        stream_name: self.stream.clone(),
                        index: Uint(next),
                    };
                    if let Ok(p) = ProtocolPayload::new(STREAM_INDEX, &save) {
                        let _ = ctx.send(hub_route(&self.hub, &self.index_service), p).await;
                    }
                }
                if got || self.waiting_pull {
                    self.pull(ctx).await;
                }
            }
            (STREAM_ERROR, _) => {
                let e = p.decode_data::<StreamError>(STREAM_ERROR);
                let no_waiting_pull = e
                    .as_ref()
                    .is_ok_and(|e| e.protocol == STREAM_PULL_WAIT && e.is_unknown_protocol());
                if self.waiting_pull && no_waiting_pull {
                    info!(stream = %self.stream, "the hub has no waiting pull; polling instead");
                    self.waiting_pull = false;
                    self.request_sent = None;
                } else {
                    warn!(stream = %self.stream, reason = ?e.map(|e| e.reason), "the hub refused a request");
                }
            }
            (TICK, _) => self.on_tick(ctx).await,
            _ => {}
        }
    }

    async fn on_tick(&mut self, ctx: &Context) {
        let timeout = if self.waiting_pull && self.state == ConsumerState::Pulling {
            PULL_WAIT + RETRY_AFTER
        } else {
            RETRY_AFTER
        };
        match self.request_sent {
            Some(t) if t.elapsed() < timeout => {}
            // Lost (hub restarted, connection gone): start over, keeping
            // our position if we have one.
            Some(_) => self.open(ctx).await,
            None => match self.state {
                ConsumerState::Pulling => self.pull(ctx).await,
                ConsumerState::Opening => self.open(ctx).await,
                ConsumerState::Indexing => self.get_index(ctx).await,
            },
        }
    }
}

#[async_trait]
impl Worker for Consumer {
    type Message = Any;
    type Context = Context;

    async fn initialize(&mut self, ctx: &mut Context) -> Result<()> {
        let tick_ctx = ctx.new_context(Address::random_local()).await?;
        self.ticker = Some(tokio::spawn(ticker(tick_ctx, ctx.address(), self.interval)));
        self.open(ctx).await;
        Ok(())
    }

    async fn shutdown(&mut self, _ctx: &mut Context) -> Result<()> {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        Ok(())
    }

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let from = msg.return_route();
        match ProtocolPayload::decode(msg.payload()) {
            Ok(p) => self.on_hub_message(ctx, p, from).await,
            Err(e) => {
                warn!(stream = %self.stream, error = %e, "dropped a message that is not a stream protocol payload")
            }
        }
        Ok(())
    }
}

/// Where `connect` put the outgoing stream: route messages through it with
/// `route![sender.clone(), "worker-on-the-other-side"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderAddress(pub(crate) Address);

impl SenderAddress {
    /// A route into the outgoing stream.
    pub fn to_route(&self) -> Route {
        Route::from(self.0.clone())
    }

    /// The producer's address.
    pub fn address(&self) -> Address {
        self.0.clone()
    }
}

impl From<SenderAddress> for Address {
    fn from(s: SenderAddress) -> Address {
        s.0
    }
}

impl From<&SenderAddress> for Address {
    fn from(s: &SenderAddress) -> Address {
        s.0.clone()
    }
}

impl From<SenderAddress> for Route {
    fn from(s: SenderAddress) -> Route {
        s.to_route()
    }
}

/// Where incoming stream messages without another destination arrive.
pub struct ReceiverAddress {
    pub(crate) ctx: Context,
}

impl ReceiverAddress {
    /// The receiving address.
    pub fn address(&self) -> Address {
        self.ctx.address()
    }

    /// The next incoming message of type `T` (waits as long as it takes).
    pub async fn next<T: Message>(&mut self) -> Result<Routed<T>> {
        self.ctx.receive_block::<T>().await
    }
}

impl std::fmt::Debug for ReceiverAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceiverAddress({})", self.ctx.address())
    }
}

/// Builds a stream connection: `Stream::new(&ctx)?.stream_service("stream")
/// .index_service("stream_index").client_id("me").connect(hub, out, in)`.
pub struct Stream<'a> {
    ctx: &'a Context,
    stream_service: String,
    index_service: String,
    client_id: Option<String>,
    interval: Duration,
    recipient: Option<Address>,
    waiting_pull: bool,
    connect_timeout: Duration,
}

impl<'a> Stream<'a> {
    /// A builder with the defaults: services `stream` / `stream_index`, a
    /// generated client id, 100 ms ticks, waiting pulls (falling back to
    /// polling if the hub lacks them).
    pub fn new(ctx: &'a Context) -> Result<Self> {
        Ok(Stream {
            ctx,
            stream_service: "stream".into(),
            index_service: "stream_index".into(),
            client_id: None,
            interval: Duration::from_millis(100),
            recipient: None,
            waiting_pull: true,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        })
    }

    /// The hub service that opens streams (`stream`, `stream_kafka`, ...).
    pub fn stream_service(mut self, name: impl Into<String>) -> Self {
        self.stream_service = name.into();
        self
    }

    /// The hub service that keeps read positions.
    pub fn index_service(mut self, name: impl Into<String>) -> Self {
        self.index_service = name.into();
        self
    }

    /// The name the hub saves this client's read position under.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// How often to poll (without waiting pulls) and check for timeouts.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Where incoming messages with no route of their own are delivered.
    pub fn with_recipient(mut self, address: impl Into<Address>) -> Self {
        self.recipient = Some(address.into());
        self
    }

    /// Whether to use waiting pulls (default) or only poll every interval.
    pub fn with_waiting_pull(mut self, enabled: bool) -> Self {
        self.waiting_pull = enabled;
        self
    }

    /// How long [`Stream::connect`] waits for the hub's first answer
    /// (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Opens `outgoing` (for sending) and `incoming` (for receiving) on the
    /// hub at `route`.
    ///
    /// The rule for an unreachable hub: `connect` reports what it finds
    /// wrong *now*, and after it returned, nothing sent is lost to an
    /// outage.
    ///
    /// - `connect` starts the producer of `outgoing` and returns once the
    ///   hub has answered its `stream_create` (so the route, the hub and its
    ///   stream service work); only then does it start the consumer of
    ///   `incoming`. The streams need not have existed, nor the other side
    ///   be up: opening a stream creates it, so two sides may start in any
    ///   order.
    /// - When it fails, nothing it started is left running.
    /// - Once it has returned, a hub that goes away (or restarts) loses
    ///   nothing: the producer keeps every message sent to the returned
    ///   [`SenderAddress`] until the hub confirms it as stored, retrying
    ///   (every [`RETRY_AFTER`]) with the same request ids, and the consumer
    ///   carries on from its saved index. Sends to the sender address do not
    ///   fail for an outage; the producer and the consumer log at warn,
    ///   once, with the cause, when they cannot reach the hub, and at info
    ///   when it answers again.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidInput`]: a stream name or the client id is not
    ///   1-249 characters of `[A-Za-z0-9._-]`, or the hub refused to open
    ///   the stream (the error gives its reason);
    /// - the error of sending the first request when the hub cannot be
    ///   reached, at once (for a TCP hop nobody listens on:
    ///   [`ErrorKind::Unavailable`], or [`ErrorKind::Timeout`] when the
    ///   connection attempt timed out; [`ErrorKind::NotFound`] without a
    ///   transport for the route's first hop), as the source of an error of
    ///   the same kind;
    /// - [`ErrorKind::Timeout`]: the hub did not answer within the connect
    ///   timeout ([`Stream::with_connect_timeout`]; no such stream service
    ///   there, say).
    pub async fn connect(
        self,
        route: impl Into<Route>,
        outgoing: impl Into<String>,
        incoming: impl Into<String>,
    ) -> Result<(SenderAddress, ReceiverAddress)> {
        let hub: Route = route.into();
        let (outgoing, incoming) = (outgoing.into(), incoming.into());
        validate_name("stream", &outgoing)?;
        validate_name("stream", &incoming)?;
        let client_id = match self.client_id {
            Some(id) => id,
            None => format!("client-{}", Address::random_local().address()),
        };
        validate_name("client", &client_id)
            .map_err(|e| Error::new(ErrorKind::InvalidInput, e.message().to_string()))?;
        let receiver = self.ctx.new_context(Address::random_local()).await?;
        let recipient = self.recipient.unwrap_or_else(|| receiver.address());
        let (public, control) = (Address::random_local(), Address::random_local());
        let mut producer = Producer::new(
            hub.clone(),
            self.stream_service.clone(),
            outgoing.clone(),
            public.clone(),
            control.clone(),
            self.interval,
        );
        let (opened_tx, opened) = oneshot::channel();
        producer.opened = Some(opened_tx);
        self.ctx
            .start_worker(vec![public.clone(), control], producer)
            .await?;
        let outcome = match tokio::time::timeout(self.connect_timeout, opened).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) if e.kind() == ErrorKind::InvalidInput => Err(e),
            Ok(Ok(Err(e))) => Err(Error::with_source(
                e.kind(),
                format!("stream {outgoing:?}: cannot reach the hub over {hub}"),
                e,
            )),
            Ok(Err(_)) => Err(Error::new(
                ErrorKind::Internal,
                format!("stream {outgoing:?}: the producer stopped before the hub answered"),
            )),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "stream {outgoing:?}: the hub's {:?} service over {hub} did not answer within {:?}",
                    self.stream_service, self.connect_timeout
                ),
            )),
        };
        if let Err(e) = outcome {
            let _ = self.ctx.stop_worker(public).await;
            return Err(e);
        }
        let consumer = Consumer::new(
            hub,
            self.stream_service,
            self.index_service,
            client_id,
            incoming,
            public.clone(),
            recipient,
            self.interval,
            self.waiting_pull,
        );
        self.ctx
            .start_worker(Address::random_local(), consumer)
            .await?;
        Ok((SenderAddress(public), ReceiverAddress { ctx: receiver }))
    }
}

//! The workers around the [`Producer`] and [`Consumer`] state machines:
//! they send what the machines say, feed them what arrives, and keep one
//! timer each (a small task that wakes the worker when the machine's
//! [`poll_timeout`](Producer::poll_timeout) is due, and that also brings it
//! the receipts of delivered messages).

use crate::consumer::{self, Consumer, Deliver};
use crate::producer::{self, Producer};
use crate::protocol::*;
use ockam_core::internal::sync::lock;
use ockam_core::{
    async_trait, Address, Any, Delivery, Error, ErrorKind, LocalMessage, Message, Receipt, Result,
    Route, Routed, TransportMessage, Worker,
};
use ockam_node::Context;
use ockam_node::HelperTask;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch, Notify};
use tracing::{debug, info, warn};

/// Internal protocol id: the timer says the machine's timeout is due.
const WAKE: &str = "wake";
/// Internal protocol id: receipts of delivered messages told something
/// ([`Receipts`]).
const TAKEN: &str = "taken";

/// What receipts of delivered messages told, `(epoch, index, delivery)`,
/// waiting for the consumer worker. The timer brings them: at once when
/// the consumer is `urgent` (its window is full), otherwise at most every
/// `coalesce` (so that a stream of deliveries does not cost one more
/// message each).
#[derive(Default)]
struct Receipts {
    told: std::sync::Mutex<Vec<(u64, u64, Delivery)>>,
    notify: Notify,
    urgent: std::sync::atomic::AtomicBool,
}

impl Receipts {
    fn tell(&self, r: (u64, u64, Delivery)) {
        lock(&self.told).push(r);
        self.notify.notify_one();
    }

    fn take(&self) -> Vec<(u64, u64, Delivery)> {
        std::mem::take(&mut *lock(&self.told))
    }

    fn set_urgent(&self, urgent: bool) {
        self.urgent
            .store(urgent, std::sync::atomic::Ordering::Relaxed);
        if urgent && !lock(&self.told).is_empty() {
            self.notify.notify_one();
        }
    }

    fn is_urgent(&self) -> bool {
        self.urgent.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The timer of one worker: wakes it at the deadline it last set (a later
/// deadline than the one armed is not sent: the worker is woken early,
/// harmlessly, and arms the timer again), and brings it receipts.
struct Timer {
    deadline: watch::Sender<Option<Instant>>,
    armed: Option<Instant>,
    /// Aborted as the timer is dropped.
    _task: HelperTask,
}

impl Timer {
    async fn start(
        ctx: &Context,
        wake: Address,
        receipts: Option<(Arc<Receipts>, Duration)>,
    ) -> Result<Timer> {
        let tctx = ctx.new_context(Address::random_local()).await?;
        let (deadline, rx) = watch::channel(None);
        let task = ctx.spawn_helper(run_timer(tctx, wake, rx, receipts));
        Ok(Timer {
            deadline,
            armed: None,
            _task: task,
        })
    }

    fn set(&mut self, at: Option<Instant>) {
        match (at, self.armed) {
            (None, _) => return,
            (Some(at), Some(armed)) if at >= armed => return,
            _ => {}
        }
        self.armed = at;
        self.deadline.send_replace(at);
    }

    /// The armed deadline went off.
    fn fired(&mut self) {
        self.armed = None;
    }
}

async fn run_timer(
    ctx: Context,
    wake: Address,
    mut deadline: watch::Receiver<Option<Instant>>,
    receipts: Option<(Arc<Receipts>, Duration)>,
) {
    let mut fired: Option<Instant> = None;
    let mut receipts_due: Option<Instant> = None;
    loop {
        let due = *deadline.borrow_and_update();
        // A deadline already fired is not fired again until it changes.
        let due = due.filter(|d| Some(*d) != fired);
        let sleep = async {
            match due {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let receipt = async {
            match receipts.as_ref() {
                Some((r, _)) => r.notify.notified().await,
                None => std::future::pending().await,
            }
        };
        let bring = async {
            match receipts_due {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let protocol = tokio::select! {
            changed = deadline.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
            () = sleep => {
                fired = due;
                WAKE
            }
            () = receipt => match receipts.as_ref() {
                Some((r, _)) if r.is_urgent() => {
                    receipts_due = None;
                    TAKEN
                }
                Some((_, coalesce)) => {
                    receipts_due.get_or_insert_with(|| Instant::now() + *coalesce);
                    continue;
                }
                None => continue,
            },
            () = bring => {
                receipts_due = None;
                TAKEN
            }
        };
        let msg = ProtocolPayload {
            protocol: protocol.into(),
            data: Vec::new(),
        };
        if ctx.send(wake.clone(), msg).await.is_err() {
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

    /// The hub answered.
    fn answered(&mut self, stream: &str) {
        if std::mem::take(&mut self.0) {
            info!(%stream, "the hub answers again");
        }
    }
}

/// Where the hub's services are.
#[derive(Debug, Clone)]
pub(crate) struct Hub {
    pub(crate) route: Route,
    pub(crate) stream_service: String,
    pub(crate) index_service: String,
}

// ---------------------------------------------------------------- producer

/// Pushes every message sent to its public address to the outgoing stream
/// (a thin shell around [`Producer`]).
pub(crate) struct ProducerWorker {
    machine: Producer,
    hub: Hub,
    public: Address,
    control: Address,
    wake: Address,
    /// The stream worker on the hub, once it answered.
    stream_route: Option<Route>,
    timer: Option<Timer>,
    /// `Stream::connect`, waiting for the outcome of the first open.
    opened: Option<oneshot::Sender<Result<()>>>,
    outage: Outage,
    events: Option<crate::EventSender>,
}

impl ProducerWorker {
    /// The worker's addresses: `[public, control, wake]`.
    pub(crate) fn new(
        machine: Producer,
        hub: Hub,
        opened: oneshot::Sender<Result<()>>,
        events: Option<crate::EventSender>,
    ) -> (Self, Vec<Address>) {
        let (public, control, wake) = (
            Address::random_local(),
            Address::random_local(),
            Address::random_local(),
        );
        let addresses = vec![public.clone(), control.clone(), wake.clone()];
        (
            ProducerWorker {
                machine,
                hub,
                public,
                control,
                wake,
                stream_route: None,
                timer: None,
                opened: Some(opened),
                outage: Outage::default(),
                events,
            },
            addresses,
        )
    }

    /// Sends what the machine has to send, reports its events, sets the
    /// timer.
    async fn flush(&mut self, ctx: &Context) {
        let now = Instant::now();
        while let Some(t) = self.machine.poll_transmit(now) {
            let (to, what, p) = match t {
                producer::Transmit::Create(req) => (
                    Some(hub_route(&self.hub.route, &self.hub.stream_service)),
                    "opening the stream",
                    ProtocolPayload::new(STREAM_CREATE, &req),
                ),
                producer::Transmit::Push(req) => (
                    self.stream_route.clone(),
                    "pushing",
                    ProtocolPayload::new(STREAM_PUSH, &req),
                ),
            };
            let sent = match (to, p) {
                (Some(to), Ok(p)) => ctx.send_from_address(to, p, self.control.clone()).await,
                (_, Err(e)) => Err(e),
                (None, _) => continue,
            };
            if let Err(e) = sent {
                let kept = self.machine.unconfirmed();
                if self.opened.is_none() {
                    self.outage
                        .send_failed(self.machine.stream(), what, &e, Some(kept));
                }
                self.machine.handle(producer::Input::SendFailed(e), now);
            }
        }
        while let Some(event) = self.machine.poll_event() {
            match event {
                producer::Event::Opened => {
                    if let Some(o) = self.opened.take() {
                        let _ = o.send(Ok(()));
                    }
                }
                producer::Event::OpenFailed(e) => {
                    if let Some(o) = self.opened.take() {
                        let _ = o.send(Err(e));
                    }
                }
                producer::Event::GaveUp { request_id } => crate::event::report(
                    &self.events,
                    crate::StreamEvent::GaveUp {
                        stream: self.machine.stream().to_string(),
                        request_id,
                    },
                ),
            }
        }
        if let Some(t) = self.timer.as_mut() {
            t.set(self.machine.poll_timeout());
        }
    }

    fn on_hub_message(&mut self, p: ProtocolPayload, from: Route, now: Instant) {
        let stream = self.machine.stream();
        let input = match p.protocol.as_str() {
            STREAM_CREATE => match answer::<Init>(&p, stream) {
                Some(init) if init.stream_name == stream => {
                    if self.machine.awaits_init() {
                        self.stream_route = Some(from);
                    }
                    producer::Input::Init
                }
                Some(init) => {
                    warn!(%stream, other = %init.stream_name, "ignored a stream_create answer for another stream");
                    return;
                }
                None => return,
            },
            STREAM_PUSH => match answer(&p, stream) {
                Some(c) => producer::Input::Confirm(c),
                None => return,
            },
            STREAM_ERROR => producer::Input::Refused(refusal(&p)),
            other => return ignored(stream, other),
        };
        self.outage.answered(self.machine.stream());
        self.machine.handle(input, now);
    }
}

/// The hub's answer `p` (of its own protocol) as a `T`; `None` after
/// logging it when it is not one.
fn answer<T: serde::de::DeserializeOwned>(p: &ProtocolPayload, stream: &str) -> Option<T> {
    p.decode_data(&p.protocol)
        .map_err(
            |e| warn!(%stream, protocol = %p.protocol, error = %e, "ignored a malformed answer"),
        )
        .ok()
}

/// The refusal in `p` (a malformed one as a refusal saying so).
fn refusal(p: &ProtocolPayload) -> StreamError {
    p.decode_data::<StreamError>(STREAM_ERROR)
        .unwrap_or_else(|e| StreamError::new("", e.to_string()))
}

fn ignored(stream: &str, protocol: &str) {
    debug!(%stream, protocol, "ignored a message");
}

#[async_trait]
impl Worker for ProducerWorker {
    type Message = Any;
    type Context = Context;

    async fn initialize(&mut self, ctx: &mut Context) -> Result<()> {
        self.timer = Some(Timer::start(ctx, self.wake.clone(), None).await?);
        self.flush(ctx).await;
        Ok(())
    }

    async fn shutdown(&mut self, _ctx: &mut Context) -> Result<()> {
        self.timer = None;
        let unconfirmed = self.machine.unconfirmed();
        if unconfirmed > 0 {
            warn!(stream = %self.machine.stream(), dropped = unconfirmed, "stopping with unconfirmed pushes; they are dropped");
        }
        Ok(())
    }

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let now = Instant::now();
        let to = msg.msg_addr().cloned();
        if to.as_ref() == Some(&self.public) {
            // A message to send through the stream: its own routes travel
            // with it, minus our hop.
            let mut t = msg.into_transport_message();
            t.onward_route.step()?;
            self.machine.send(t.encode()?);
        } else if to.as_ref() == Some(&self.wake) {
            if let Some(t) = self.timer.as_mut() {
                t.fired();
            }
            self.machine.handle_timeout(now);
        } else {
            let from = msg.return_route();
            match ProtocolPayload::decode(msg.payload()) {
                Ok(p) => self.on_hub_message(p, from, now),
                Err(e) => {
                    warn!(stream = %self.machine.stream(), error = %e, "dropped a message that is not a stream protocol payload")
                }
            }
        }
        self.flush(ctx).await;
        Ok(())
    }
}

// ---------------------------------------------------------------- consumer

/// Pulls the incoming stream and delivers each message with a receipt (a
/// thin shell around [`Consumer`]).
pub(crate) struct ConsumerWorker {
    machine: Consumer,
    hub: Hub,
    /// Replies to delivered messages go through this producer.
    producer: Address,
    /// Where messages with no route of their own are delivered.
    recipient: Address,
    wake: Address,
    stream_route: Option<Route>,
    receipts: Arc<Receipts>,
    /// How long receipts may wait while the window has room.
    coalesce: Duration,
    timer: Option<Timer>,
    outage: Outage,
    /// `Stream::connect`, told once the hub answered the read position or
    /// refused a request (`Ok`), or refused one for want of permission
    /// (issue 16).
    opened: Option<oneshot::Sender<Result<()>>>,
    events: Option<crate::EventSender>,
}

impl ConsumerWorker {
    /// The worker's addresses: `[main, wake]`.
    pub(crate) fn new(
        machine: Consumer,
        hub: Hub,
        producer: Address,
        recipient: Address,
        coalesce: Duration,
        opened: oneshot::Sender<Result<()>>,
        events: Option<crate::EventSender>,
    ) -> (Self, Vec<Address>) {
        let (main, wake) = (Address::random_local(), Address::random_local());
        (
            ConsumerWorker {
                machine,
                hub,
                producer,
                recipient,
                wake: wake.clone(),
                stream_route: None,
                receipts: Arc::new(Receipts::default()),
                coalesce,
                timer: None,
                outage: Outage::default(),
                opened: Some(opened),
                events,
            },
            vec![main, wake],
        )
    }

    async fn flush(&mut self, ctx: &Context) {
        let now = Instant::now();
        while let Some(d) = self.machine.poll_deliver() {
            self.deliver(ctx, d, now).await;
        }
        while let Some(t) = self.machine.poll_transmit(now) {
            let (to, what, p) = match t {
                consumer::Transmit::Create(req) => (
                    Some(hub_route(&self.hub.route, &self.hub.stream_service)),
                    STREAM_CREATE,
                    ProtocolPayload::new(STREAM_CREATE, &req),
                ),
                consumer::Transmit::Index(req) => (
                    Some(hub_route(&self.hub.route, &self.hub.index_service)),
                    STREAM_INDEX,
                    ProtocolPayload::new(STREAM_INDEX, &req),
                ),
                consumer::Transmit::Pull(req) => (
                    self.stream_route.clone(),
                    STREAM_PULL,
                    ProtocolPayload::new(STREAM_PULL, &req),
                ),
                consumer::Transmit::PullWait(req) => (
                    self.stream_route.clone(),
                    STREAM_PULL_WAIT,
                    ProtocolPayload::new(STREAM_PULL_WAIT, &req),
                ),
            };
            let sent = match (to, p) {
                (Some(to), Ok(p)) => ctx.send(to, p).await,
                (_, Err(e)) => Err(e),
                (None, Ok(_)) => Err(Error::new(
                    ockam_core::ErrorKind::Internal,
                    "no stream worker to pull from",
                )),
            };
            if let Err(e) = sent {
                self.outage
                    .send_failed(self.machine.stream(), what, &e, None);
                self.machine.handle(consumer::Input::SendFailed, now);
            }
        }
        while let Some((from, to)) = self.machine.poll_missed() {
            let stream = self.machine.stream().to_string();
            crate::event::report(
                &self.events,
                crate::StreamEvent::Missed { stream, from, to },
            );
        }
        self.receipts.set_urgent(self.machine.waits_for_room());
        if let Some(t) = self.timer.as_mut() {
            t.set(self.machine.poll_timeout());
        }
    }

    /// Delivers one stored message: its routes as the producer sent them,
    /// with replies going back through our producer, and a receipt.
    async fn deliver(&mut self, ctx: &Context, d: Deliver, now: Instant) {
        let mut t = match TransportMessage::decode(&d.data) {
            Ok(t) => t,
            Err(e) => {
                // Never deliverable: skipped, and counted as taken.
                warn!(stream = %self.machine.stream(), index = d.index, error = %e, dropped = 1, "skipped a stream message that is not a transport message");
                self.machine.handle(
                    consumer::Input::Taken {
                        epoch: d.epoch,
                        index: d.index,
                        delivery: Delivery::Handled,
                    },
                    now,
                );
                return;
            }
        };
        t.return_route.modify().prepend(self.producer.clone());
        if t.onward_route.is_empty() {
            t.onward_route.modify().append(self.recipient.clone());
        }
        let receipts = self.receipts.clone();
        let (epoch, index) = (d.epoch, d.index);
        let receipt = Receipt::new(move |delivery| receipts.tell((epoch, index, delivery)));
        if let Err(e) = ctx
            .forward(LocalMessage::new(t).with_receipt(receipt))
            .await
        {
            // Its receipt says NotHandled: delivered again later.
            warn!(stream = %self.machine.stream(), index, error = %e, "could not deliver a message from the stream; it is delivered again later");
        }
    }

    fn on_hub_message(&mut self, p: ProtocolPayload, from: Route, now: Instant) {
        let stream = self.machine.stream();
        let input = match p.protocol.as_str() {
            STREAM_CREATE => match answer::<Init>(&p, stream) {
                Some(_) => {
                    let worker = from.recipient().ok();
                    let incarnation = worker.and_then(|w| store_incarnation(w.address()));
                    if self.machine.awaits_init() {
                        self.stream_route = Some(from);
                    }
                    consumer::Input::Init { incarnation }
                }
                None => return,
            },
            STREAM_INDEX => match answer::<Index>(&p, stream) {
                Some(i) => {
                    if let Some(o) = self.opened.take() {
                        let _ = o.send(Ok(()));
                    }
                    consumer::Input::Index(i.index.map(|u| u.0))
                }
                None => return,
            },
            STREAM_PULL => match answer(&p, stream) {
                Some(r) => consumer::Input::Pulled(r),
                None => return,
            },
            STREAM_ERROR => {
                let refusal = refusal(&p);
                if let Some(o) = self.opened.take() {
                    // Any other refusal is asked again (as before
                    // `connect` waited for the consumer): not an error yet.
                    let _ = o.send(if refusal.is_access_denied() {
                        Err(Error::new(
                            ErrorKind::PermissionDenied,
                            format!(
                                "the hub refused to let this client read stream {stream:?}: {}",
                                refusal.reason
                            ),
                        ))
                    } else {
                        Ok(())
                    });
                }
                consumer::Input::Refused(refusal)
            }
            other => return ignored(stream, other),
        };
        self.outage.answered(self.machine.stream());
        self.machine.handle(input, now);
    }

    fn on_wake(&mut self, p: ProtocolPayload, now: Instant) {
        if p.protocol == WAKE {
            if let Some(t) = self.timer.as_mut() {
                t.fired();
            }
            self.machine.handle_timeout(now);
        }
        // (TAKEN: the receipts are taken below, as with every message.)
    }

    /// Feeds the machine what the receipts told.
    fn take_receipts(&mut self, now: Instant) {
        for (epoch, index, delivery) in self.receipts.take() {
            self.machine.handle(
                consumer::Input::Taken {
                    epoch,
                    index,
                    delivery,
                },
                now,
            );
        }
    }
}

#[async_trait]
impl Worker for ConsumerWorker {
    type Message = Any;
    type Context = Context;

    async fn initialize(&mut self, ctx: &mut Context) -> Result<()> {
        let receipts = (self.receipts.clone(), self.coalesce);
        self.timer = Some(Timer::start(ctx, self.wake.clone(), Some(receipts)).await?);
        self.flush(ctx).await;
        Ok(())
    }

    async fn shutdown(&mut self, ctx: &mut Context) -> Result<()> {
        self.timer = None;
        // What the application took up to now is saved (not left for the
        // next save, which would not come): a consumer started again with
        // the same client id starts after it.
        self.take_receipts(Instant::now());
        if let Some(consumer::Transmit::Index(save)) = self.machine.final_save() {
            let to = hub_route(&self.hub.route, &self.hub.index_service);
            if let Err(e) = ctx
                .send(to, ProtocolPayload::new(STREAM_INDEX, &save)?)
                .await
            {
                warn!(stream = %self.machine.stream(), error = %e, "could not save the read position at stop; what was taken since the last save is delivered again");
            }
        }
        Ok(())
    }

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let now = Instant::now();
        self.take_receipts(now);
        let to_wake = msg.msg_addr() == Some(&self.wake);
        let from = msg.return_route();
        match ProtocolPayload::decode(msg.payload()) {
            Ok(p) if to_wake => self.on_wake(p, now),
            Ok(p) => self.on_hub_message(p, from, now),
            Err(e) => {
                warn!(stream = %self.machine.stream(), error = %e, "dropped a message that is not a stream protocol payload")
            }
        }
        self.flush(ctx).await;
        Ok(())
    }
}

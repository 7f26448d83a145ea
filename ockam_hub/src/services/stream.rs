//! `stream`: opens stream workers, which serve pushes and pulls.

use super::*;
use crate::store::{Fence, Ticket};

/// `stream`: answers `stream_create` by starting a stream worker for the
/// requester; one that opens the same stream again gets a new stream
/// worker, and its old one is stopped (see [`CreateStreamRequest`]).
pub(crate) struct StreamService {
    pub(crate) shared: Arc<Shared>,
}

#[async_trait]
impl Worker for StreamService {
    type Message = Any;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let Some((p, back)) = request(ctx, &self.shared, msg).await? else {
            return Ok(());
        };
        let Some(req) =
            decode_or_refuse::<CreateStreamRequest>(ctx, &p, &back, STREAM_CREATE).await?
        else {
            return Ok(());
        };
        let name = match req.stream_name {
            Some(n) => n,
            None => format!("stream-{:016x}", rand::random::<u64>()),
        };
        if let Err(e) = validate_name("stream", &name) {
            let refusal = StreamError::new(STREAM_CREATE, e.message());
            return refuse(ctx, back, refusal).await;
        }
        if let Err(why) = may_open(ctx, &self.shared.access, &back, &name) {
            let refusal = StreamError::access_denied(STREAM_CREATE, &why);
            return refuse(ctx, back, refusal).await;
        }
        // Named after the store's incarnation, so that clients notice a
        // store that lost its contents (see `stream_worker_name`).
        let address = match self.shared.store.incarnation() {
            0 => Address::random_local(),
            i => Address::new(
                LOCAL,
                stream_worker_name(i, Address::random_local().address()),
            ),
        };
        debug!(stream = %name, worker = %address, "opening a stream worker");
        let key = (back.clone(), name.clone());
        let worker = StreamWorker {
            stream: name,
            shared: self.shared.clone(),
            key: key.clone(),
            requester: Some(back),
            fence: Fence::new(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(in_flight_permits(
                &self.shared.limits,
            ))),
            confirms: None,
            replier: None,
            last_used: Arc::new(AtomicU64::new(0)),
        };
        // Registered before it starts, so that a worker that fails to start
        // (its requester gone) deregisters what is there.
        let taken = lock(&self.shared.workers).insert(key.clone(), address.clone());
        let replaced = match taken {
            Ok(replaced) => replaced,
            Err(why) => {
                warn!(stream = %worker.stream, "refused a stream worker: {why}");
                let reason = format!(
                    "{why} (stream workers; the hub's Limits::max_stream_workers_per_peer)"
                );
                return refuse(ctx, key.0, StreamError::new(STREAM_CREATE, reason)).await;
            }
        };
        let started = ctx.start_worker(address.clone(), worker).await;
        if started.is_err() {
            lock(&self.shared.workers).remove_if_still(&key, &address);
        }
        if let Some(old) = replaced {
            debug!(worker = %old, "stopping a stream worker its requester replaced");
            // Not waited for here: it may be in the middle of a waiting pull.
            ctx.node_handle().request_stop(&old);
        }
        started
    }
}

/// Serves pushes and pulls of one stream for the client that opened it.
struct StreamWorker {
    stream: String,
    shared: Arc<Shared>,
    /// Its entry in `Shared::workers`.
    key: WorkerKey,
    /// Where to send the `Init`.
    requester: Option<Route>,
    /// The gap rule of this worker's pushes ([`crate::sequencer`]): once
    /// one failed, every later one is refused too; the client opens the
    /// stream again and resends.
    fence: Fence,
    /// Bytes of pushes handed to the store and not answered yet, up to
    /// `Limits::max_in_flight_push_bytes` (see [`push_cost`]).
    in_flight: Arc<tokio::sync::Semaphore>,
    /// Pushes submitted to the store, in order, for the replier to confirm.
    confirms: Option<mpsc::UnboundedSender<(Push, Route, Uint)>>,
    /// Not a [`HelperTask`](ockam_node::HelperTask): it outlives this
    /// worker on purpose, to confirm the pushes still pending when the
    /// worker stops (see `clean_up`).
    replier: Option<tokio::task::JoinHandle<()>>,
    /// Milliseconds since `started()` at the end of the last request, or
    /// [`BUSY`] while one is in progress (a waiting pull included); the
    /// service's reaper ([`reap_idle_workers`]) stops the worker after
    /// `Limits::idle_timeout` without one (clients open a new stream
    /// worker when theirs is gone).
    last_used: Arc<AtomicU64>,
}

fn started() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    started().elapsed().as_millis() as u64
}

/// `last_used` of a stream worker in the middle of a request: never idle.
const BUSY: u64 = u64::MAX;

/// Stops the stream workers of `shared` idle for `Limits::idle_timeout`
/// (one task per stream service, looking every quarter of it); ends with
/// the service.
pub(crate) async fn reap_idle_workers(ctx: Context, shared: std::sync::Weak<Shared>) {
    let Some(idle) = shared.upgrade().map(|s| s.limits.idle_timeout) else {
        return;
    };
    let check = (idle / 4).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(check).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = now_ms();
        let quiet: Vec<Address> = {
            let mut running = lock(&shared.running);
            let quiet: Vec<Address> = running
                .iter()
                .filter(|(_, used)| {
                    now.saturating_sub(used.load(Ordering::Relaxed)) >= idle.as_millis() as u64
                })
                .map(|(a, _)| a.clone())
                .collect();
            for a in &quiet {
                running.remove(a);
            }
            quiet
        };
        drop(shared);
        for address in quiet {
            debug!(worker = %address, "stopping an idle stream worker");
            let _ = ctx.stop_worker(address).await;
        }
    }
}

/// A stream worker's in-flight bytes: `Limits::max_in_flight_push_bytes`,
/// at least 1 and at most what one semaphore acquisition takes.
fn in_flight_permits(limits: &Limits) -> usize {
    limits.max_in_flight_push_bytes.clamp(1, u32::MAX as usize)
}

/// What a push of `len` bytes counts against a stream worker's in-flight
/// bytes: its size and a fixed 64 for what every push costs besides, so
/// that small pushes are counted too; at most all of them.
fn push_cost(len: usize, limits: &Limits) -> u32 {
    len.saturating_add(64).min(in_flight_permits(limits)) as u32
}

/// A push as the stream worker took it.
enum Push {
    /// Handed to the store; its share of the worker's in-flight bytes is
    /// given back once the store answered.
    Submitted(Ticket, PendingPush, tokio::sync::OwnedSemaphorePermit),
    /// Over the size limit: refused.
    TooLarge,
    /// After a push failed on this stream worker: not stored, so that
    /// nothing lands after a gap.
    AfterFailure,
}

/// A store failure that goes away by itself (the back end is away or
/// busy), as opposed to one about the message.
fn is_transient(e: &ockam_core::Error) -> bool {
    matches!(
        e.kind(),
        ockam_core::ErrorKind::Unavailable
            | ockam_core::ErrorKind::ResourceExhausted
            | ockam_core::ErrorKind::Io
    )
}

/// A store's rows as the stream protocol's messages.
fn stream_messages(rows: Vec<(u64, Vec<u8>)>) -> Vec<StreamMessage> {
    rows.into_iter()
        .map(|(index, data)| StreamMessage {
            index: Uint(index),
            data,
        })
        .collect()
}

/// Confirms pushes in the order they were submitted, as each becomes
/// durable: the stream worker keeps taking pushes meanwhile, so one
/// client's pushes share commits instead of waiting for one each.
async fn confirm_loop(
    ctx: Context,
    stream: String,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<(Push, Route, Uint)>,
) {
    let mut warned = false;
    while let Some((push, back, request_id)) = rx.recv().await {
        let (status, index) = match push {
            // Refused; its ticket failed, so nothing after it is confirmed.
            Push::TooLarge => (PushStatus::Error, 0),
            // Unanswered: the client resends everything unconfirmed, in
            // order, through a new stream worker (see below).
            Push::AfterFailure => continue,
            Push::Submitted(ticket, pending, _in_flight) => match pending.await {
                Ok(index) => {
                    shared.announce(&stream, index + 1);
                    // Stored after a failed push (the gap rule): not
                    // confirmed, or the client would take the failed one as
                    // stored; it resends both.
                    if !ticket.may_confirm() {
                        continue;
                    }
                    (PushStatus::Ok, index)
                }
                Err(e) => {
                    ticket.fail();
                    if !std::mem::replace(&mut warned, true) {
                        warn!(%stream, error = %e, "push not stored; this stream worker stores nothing more, its client resends through a new one");
                    }
                    if is_transient(&e) {
                        // Not answered: a refusal counts against the
                        // message (a client gives up on one refused again and
                        // again), while this one only waits for the back end.
                        // The client resends after its retry interval.
                        continue;
                    }
                    (PushStatus::Error, 0)
                }
            },
        };
        if status == PushStatus::Ok {
            shared.metrics.pushed.increment(1);
        }
        let confirm = PushConfirm {
            request_id,
            status,
            index: Uint(index),
        };
        if let Ok(p) = ProtocolPayload::new(STREAM_PUSH, &confirm) {
            if let Err(e) = ctx.send(back, p).await {
                debug!(%stream, error = %e, "could not confirm a push");
            }
        }
    }
}

impl StreamWorker {
    async fn pull(&self, from: u64, limit: u64) -> Result<Vec<StreamMessage>> {
        self.pull_waiting(from, limit, Duration::ZERO).await
    }

    /// A waiting pull: answers as soon as there is something from
    /// `req.index` on, or empty at its deadline.
    async fn pull_wait(&self, req: &PullWaitRequest) -> Result<Vec<StreamMessage>> {
        let from = req.index.0;
        if req.limit.0 == 0 {
            // Nothing asked for: nothing to wait for either.
            return Ok(Vec::new());
        }
        let mut head = self.shared.watch_head(&self.stream);
        let mut messages = self.pull(from, req.limit.0).await?;
        let wait = Duration::from_millis(req.wait_ms.0).min(self.shared.limits.max_wait);
        if messages.is_empty() && self.shared.store.has_other_writers() {
            // Pushes through other hubs are not announced here: the
            // store waits for them, in slices, up to the deadline.
            let deadline = Instant::now() + wait;
            while messages.is_empty() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                messages = self
                    .pull_waiting(from, req.limit.0, left.min(SHARED_WAIT_SLICE))
                    .await?;
            }
        } else if messages.is_empty() {
            // Answer as soon as something is pushed, or at the deadline.
            let announced = tokio::time::timeout(wait, head.wait_for(|next| *next > from))
                .await
                .is_ok();
            messages = if announced {
                self.pull_fresh(from, req.limit.0).await?
            } else {
                self.pull(from, req.limit.0).await?
            };
        }
        Ok(messages)
    }

    /// The end of the stream, when `from` is past it: a read position the
    /// log does not reach (the hub lost messages, or the position was
    /// never valid) is refused, never answered empty, so that the client
    /// reconciles it instead of waiting there for messages it would then
    /// take for the ones it missed.
    async fn past_end(&self, from: u64) -> Result<Option<u64>> {
        self.shared.store.end_before(&self.stream, from).await
    }

    /// Answers a pull (`protocol`: `stream_pull` or `stream_pull_wait`)
    /// with `messages`, or refuses it (the store failed, or the position is
    /// past the end).
    async fn answer_pull(
        &self,
        ctx: &Context,
        back: Route,
        protocol: &str,
        request_id: Uint,
        from: u64,
        messages: Result<Vec<StreamMessage>>,
    ) -> Result<()> {
        let messages = match messages {
            Ok(m) => m,
            Err(e) => return refuse(ctx, back, store_failed(protocol, &e)).await,
        };
        if let Some(first) = messages.first().map(|m| m.index.0).filter(|&i| i > from) {
            // Removed by retention (a log holds no other gaps): the reader
            // is told, never handed what follows as if nothing were missing.
            warn!(stream = %self.stream, from, oldest = first, missed = first - from, reader = %back, "a reader's position was trimmed by retention; told it to continue from the oldest kept message");
            let refusal = StreamError::trimmed(protocol, &self.stream, from, first);
            return refuse(ctx, back, refusal).await;
        }
        if messages.is_empty() {
            match self.past_end(from).await {
                Ok(None) => {}
                Ok(Some(end)) => {
                    let refusal = StreamError::past_end(protocol, &self.stream, from, end);
                    return refuse(ctx, back, refusal).await;
                }
                // The check could not be made (the broker did not say where
                // the stream ends): the empty answer stands; the next pull
                // checks again.
                Err(e) => {
                    debug!(stream = %self.stream, error = %e, "could not check a read position against the end of the stream")
                }
            }
        }
        self.shared.metrics.pulled.increment(messages.len() as u64);
        let resp = PullResponse {
            request_id,
            messages,
        };
        ctx.send(back, ProtocolPayload::new(STREAM_PULL, &resp)?)
            .await
    }

    /// Pulls messages just announced (see [`StreamStore::pull_fresh`]).
    async fn pull_fresh(&self, from: u64, limit: u64) -> Result<Vec<StreamMessage>> {
        let rows = self
            .shared
            .store
            .pull_fresh(&self.stream, from, self.pull_limit(limit), MAX_PULL_BYTES)
            .await?;
        Ok(stream_messages(rows))
    }

    /// A pull's limit, within the hub's.
    fn pull_limit(&self, limit: u64) -> usize {
        usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .min(self.shared.limits.max_pull)
    }

    /// Pulls; a store that can wait for messages waits up to `wait`.
    async fn pull_waiting(
        &self,
        from: u64,
        limit: u64,
        wait: Duration,
    ) -> Result<Vec<StreamMessage>> {
        let rows = self
            .shared
            .store
            .pull_waiting(
                &self.stream,
                from,
                self.pull_limit(limit),
                MAX_PULL_BYTES,
                wait,
            )
            .await?;
        Ok(stream_messages(rows))
    }
}

impl StreamWorker {
    async fn start(&mut self, ctx: &mut Context) -> Result<()> {
        // Sent from this worker's address: its return route reaches us.
        // First, so that nothing is left running when the requester is gone.
        if let Some(to) = self.requester.take() {
            let init = Init {
                stream_name: self.stream.clone(),
            };
            ctx.send(to, ProtocolPayload::new(STREAM_CREATE, &init)?)
                .await?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let replier_ctx = ctx.new_context(Address::random_local()).await?;
        self.replier = Some(tokio::spawn(confirm_loop(
            replier_ctx,
            self.stream.clone(),
            self.shared.clone(),
            rx,
        )));
        self.confirms = Some(tx);
        self.last_used.store(now_ms(), Ordering::Relaxed);
        // Watched by the service's reaper (`reap_idle_workers`).
        lock(&self.shared.running).insert(ctx.address(), self.last_used.clone());
        Ok(())
    }

    /// What `shutdown` does; also after a failed `initialize` (after which
    /// `shutdown` does not run).
    fn clean_up(&mut self, ctx: &Context) {
        lock(&self.shared.running).remove(&ctx.address());
        // The replier ends by itself once it has confirmed what is pending.
        self.confirms = None;
        lock(&self.shared.workers).remove_if_still(&self.key, &ctx.address());
    }
}

#[async_trait]
impl Worker for StreamWorker {
    type Message = Any;
    type Context = Context;

    async fn initialize(&mut self, ctx: &mut Context) -> Result<()> {
        let started = self.start(ctx).await;
        if started.is_err() {
            self.clean_up(ctx);
        }
        started
    }

    async fn shutdown(&mut self, ctx: &mut Context) -> Result<()> {
        self.clean_up(ctx);
        Ok(())
    }

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        // A request in progress (a waiting pull included) is activity: the
        // reaper leaves the worker alone until it is answered.
        self.last_used.store(BUSY, Ordering::Relaxed);
        let served = self.serve(ctx, msg).await;
        self.last_used.store(now_ms(), Ordering::Relaxed);
        served
    }
}

impl StreamWorker {
    async fn serve(&mut self, ctx: &Context, msg: Routed<Any>) -> Result<()> {
        let Some((msg, back)) = request(ctx, &self.shared, msg).await? else {
            return Ok(());
        };
        let pulling = msg.protocol == STREAM_PULL || msg.protocol == STREAM_PULL_WAIT;
        if pulling
            && denied(
                ctx,
                &self.shared.access,
                &back,
                &msg.protocol,
                Operation::Pull(&self.stream),
            )
            .await?
        {
            return Ok(());
        }
        match msg.protocol.as_str() {
            STREAM_PUSH => {
                let Some(req) =
                    decode_or_refuse::<PushRequest>(ctx, &msg, &back, STREAM_PUSH).await?
                else {
                    return Ok(());
                };
                let op = Operation::Push(&self.stream);
                if let Err(why) = permitted(ctx, &self.shared.access, &back, op) {
                    // The owner's: nothing after it is stored either (a
                    // gap otherwise, should the rules change back). Someone
                    // else's refused push changes nothing here.
                    if back == self.key.0 {
                        if let Some(ticket) = self.fence.submit() {
                            ticket.fail();
                        }
                    }
                    let refusal = StreamError::access_denied(STREAM_PUSH, &why);
                    return refuse(ctx, back, refusal).await;
                }
                if back != self.key.0 {
                    // Not over the way that opened it: pushes sent before
                    // may have been lost with a connection that broke, and
                    // storing this one would put it before them. Nothing
                    // more is stored here; the client opens the stream
                    // again (over its new way) and resends, in order.
                    if let Some(ticket) = self.fence.submit() {
                        ticket.fail();
                    }
                    let refusal = StreamError::new(
                        STREAM_PUSH,
                        "a push over another route than the one that opened this stream worker (a new connection?); open the stream again",
                    );
                    return refuse(ctx, back, refusal).await;
                }
                // Held back (the worker's mailbox fills, then the
                // connection's reader pauses) while the pushes it has
                // handed to the store and not had answered reach
                // `Limits::max_in_flight_push_bytes`.
                let in_flight = if req.data.len() > self.shared.limits.max_message_size {
                    None
                } else {
                    let cost = push_cost(req.data.len(), &self.shared.limits);
                    match self.in_flight.clone().acquire_many_owned(cost).await {
                        Ok(permit) => Some(permit),
                        Err(_) => return Ok(()), // never closed
                    }
                };
                let push = match (self.fence.submit(), in_flight) {
                    (None, _) => Push::AfterFailure,
                    (Some(ticket), None) => {
                        warn!(stream = %self.stream, size = req.data.len(), "refused a message over the size limit");
                        // Nothing after it either: the client resends from it.
                        ticket.fail();
                        Push::TooLarge
                    }
                    (Some(ticket), Some(permit)) => Push::Submitted(
                        ticket.clone(),
                        self.shared
                            .store
                            .submit_push(&self.stream, req.data, ticket),
                        permit,
                    ),
                };
                if let Some(confirms) = &self.confirms {
                    let _ = confirms.send((push, back, req.request_id));
                }
                Ok(())
            }
            STREAM_PULL => {
                let Some(req) =
                    decode_or_refuse::<PullRequest>(ctx, &msg, &back, STREAM_PULL).await?
                else {
                    return Ok(());
                };
                let messages = self.pull(req.index.0, req.limit.0).await;
                self.answer_pull(
                    ctx,
                    back,
                    STREAM_PULL,
                    req.request_id,
                    req.index.0,
                    messages,
                )
                .await
            }
            STREAM_PULL_WAIT => {
                let Some(req) =
                    decode_or_refuse::<PullWaitRequest>(ctx, &msg, &back, STREAM_PULL_WAIT).await?
                else {
                    return Ok(());
                };
                let messages = self.pull_wait(&req).await;
                self.answer_pull(
                    ctx,
                    back,
                    STREAM_PULL_WAIT,
                    req.request_id,
                    req.index.0,
                    messages,
                )
                .await
            }
            other => refuse(ctx, back, StreamError::unknown_protocol(other, "a stream")).await,
        }
    }
}

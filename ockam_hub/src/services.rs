//! The hub's services: `echo_service`, `forwarding_service` (and the
//! forwarders it starts), `stream` (and the stream workers it starts) and
//! `stream_index`.
//!
//! Every request these services refuse is answered with why (a
//! `stream_error`, see [`StreamError`]); a refusal itself is never answered,
//! so that two services cannot refuse each other's refusals forever.

use crate::storage::{PendingPush, StreamStore};
use ockam_core::{
    async_trait, check_address, Address, Any, LocalMessage, Message, Result, Route, Routed,
    TransportMessage, Worker, LOCAL,
};
use ockam_node::Context;
use ockam_stream_client::protocol::{
    validate_name, CreateStreamRequest, Index, IndexRequest, Init, ProtocolPayload, PullRequest,
    PullResponse, PullWaitRequest, PushConfirm, PushRequest, PushStatus, StreamError,
    StreamMessage, STREAM_CREATE, STREAM_ERROR, STREAM_INDEX, STREAM_PULL, STREAM_PULL_WAIT,
    STREAM_PUSH,
};
use ockam_stream_client::FORWARDING_SERVICE;
use serde::de::DeserializeOwned;
use serde_bare::Uint;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tracing::{debug, warn};

/// Most data one pull response carries, so that it fits a TCP frame
/// (16 MiB by default) with room to spare.
pub const MAX_PULL_BYTES: usize = 8 * 1024 * 1024;

/// Longest a waiting pull on a store other hubs also write to leaves the
/// store waiting at once (then it looks at its own deadline).
const SHARED_WAIT_SLICE: Duration = Duration::from_millis(500);

/// Limits the hub applies to requests.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most messages one pull returns.
    pub max_pull: usize,
    /// Longest a waiting pull waits.
    pub max_wait: Duration,
    /// Largest message a push may store, in bytes.
    pub max_message_size: usize,
    /// A stream worker with no request for this long is stopped (its client
    /// opens a new one when it needs it).
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pull: 1000,
            max_wait: Duration::from_secs(30),
            max_message_size: 1024 * 1024,
            idle_timeout: Duration::from_secs(600),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes `key` from `table` if it still maps to `value` (and not to what
/// replaced it meanwhile).
fn remove_if_still<K: Hash + Eq, V: PartialEq>(table: &Mutex<HashMap<K, V>>, key: &K, value: &V) {
    let mut t = lock(table);
    if t.get(key) == Some(value) {
        t.remove(key);
    }
}

/// Whom a stream worker serves: the return route of the `stream_create`
/// that opened it, and the stream.
type WorkerKey = (Route, String);

/// State the stream services share.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn StreamStore>,
    pub(crate) limits: Limits,
    /// Per stream: the next index, announced after every push (waiting
    /// pulls watch it).
    heads: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// The running stream worker of each requester and stream: opening a
    /// stream again replaces (and stops) the requester's earlier one.
    workers: Mutex<HashMap<WorkerKey, Address>>,
}

impl Shared {
    pub(crate) fn new(store: Arc<dyn StreamStore>, limits: Limits) -> Arc<Self> {
        Arc::new(Shared {
            store,
            limits,
            heads: Mutex::new(HashMap::new()),
            workers: Mutex::new(HashMap::new()),
        })
    }

    /// Announces that `stream` holds messages up to `next` (exclusive).
    fn announce(&self, stream: &str, next: u64) {
        self.head(stream).send_if_modified(|h| {
            let newer = next > *h;
            if newer {
                *h = next;
            }
            newer
        });
    }

    fn head(&self, stream: &str) -> watch::Sender<u64> {
        lock(&self.heads)
            .entry(stream.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .clone()
    }
}

/// Answers a refused request with why.
async fn refuse(ctx: &Context, to: Route, err: StreamError) -> Result<()> {
    warn!(protocol = %err.protocol, reason = %err.reason, to = %to, "refused a request");
    ctx.send(to, ProtocolPayload::new(STREAM_ERROR, &err)?)
        .await
}

/// The stream protocol request in `msg` and where to answer it; `None`
/// after answering why it is not one (or, for a refusal, which is never
/// answered, after logging it).
async fn request(ctx: &Context, msg: Routed<Any>) -> Result<Option<(ProtocolPayload, Route)>> {
    let back = msg.return_route();
    match ProtocolPayload::decode(msg.payload()) {
        Ok(p) if is_refusal(&p, &back) => Ok(None),
        Ok(p) => Ok(Some((p, back))),
        Err(e) => {
            let why = format!("not a stream protocol payload: {e}");
            refuse(ctx, back, StreamError::new("", why)).await?;
            Ok(None)
        }
    }
}

/// Whether `p` is a refusal (`stream_error`), which a service never
/// answers: logged as dropped.
fn is_refusal(p: &ProtocolPayload, from: &Route) -> bool {
    if p.protocol != STREAM_ERROR {
        return false;
    }
    let reason = p.decode_data::<StreamError>(STREAM_ERROR).map(|e| e.reason);
    warn!(%from, ?reason, "dropped a refusal sent to a service");
    true
}

/// Decodes a request of `protocol`, or answers `stream_error` (and gives
/// `None`) when it is not one.
async fn decode_or_refuse<T: DeserializeOwned>(
    ctx: &Context,
    p: &ProtocolPayload,
    back: &Route,
    protocol: &str,
) -> Result<Option<T>> {
    match p.decode_data(protocol) {
        Ok(r) => Ok(Some(r)),
        Err(e) => {
            refuse(
                ctx,
                back.clone(),
                StreamError::new(&p.protocol, e.to_string()),
            )
            .await?;
            Ok(None)
        }
    }
}

/// The refusal of a request that the store failed to serve.
fn store_failed(protocol: &str, e: &ockam_core::Error) -> StreamError {
    StreamError::new(protocol, format!("the hub's store failed: {e}"))
}

/// Replies to any message with the same payload.
pub(crate) struct EchoService;

#[async_trait]
impl Worker for EchoService {
    type Message = Any;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let back = msg.return_route();
        let payload = msg.into_transport_message().payload;
        ctx.forward(LocalMessage::new(TransportMessage::v1(
            back,
            ctx.address(),
            payload,
        )))
        .await
    }
}

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
        let Some((p, back)) = request(ctx, msg).await? else {
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
        let address = Address::random_local();
        debug!(stream = %name, worker = %address, "opening a stream worker");
        let key = (back.clone(), name.clone());
        let worker = StreamWorker {
            stream: name,
            shared: self.shared.clone(),
            key: key.clone(),
            requester: Some(back),
            failed: Arc::new(AtomicBool::new(false)),
            confirms: None,
            replier: None,
            last_used: Arc::new(AtomicU64::new(0)),
            reaper: None,
        };
        // Registered before it starts, so that a worker that fails to start
        // (its requester gone) deregisters what is there.
        let replaced = lock(&self.shared.workers).insert(key.clone(), address.clone());
        let started = ctx.start_worker(address.clone(), worker).await;
        if started.is_err() {
            remove_if_still(&self.shared.workers, &key, &address);
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
    /// A push failed: every later push is refused too, so that nothing is
    /// stored after a gap; the client opens the stream again and resends.
    failed: Arc<AtomicBool>,
    /// Pushes submitted to the store, in order, for the replier to confirm.
    confirms: Option<mpsc::UnboundedSender<(Push, Route, Uint)>>,
    replier: Option<tokio::task::JoinHandle<()>>,
    /// Milliseconds since `started()` at the last request; the reaper stops
    /// the worker after `Limits::idle_timeout` without one (clients open a
    /// new stream worker when theirs is gone).
    last_used: Arc<AtomicU64>,
    reaper: Option<tokio::task::JoinHandle<()>>,
}

fn started() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    started().elapsed().as_millis() as u64
}

/// Stops the worker at `address` once it has been idle for `idle`.
async fn reap_when_idle(ctx: Context, address: Address, last_used: Arc<AtomicU64>, idle: Duration) {
    let check = (idle / 4).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(check).await;
        let quiet = now_ms().saturating_sub(last_used.load(Ordering::Relaxed));
        if quiet >= idle.as_millis() as u64 {
            debug!(worker = %address, "stopping an idle stream worker");
            let _ = ctx.stop_worker(address).await;
            return;
        }
    }
}

/// A push as the stream worker took it.
enum Push {
    /// Handed to the store.
    Submitted(PendingPush),
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
        ockam_core::ErrorKind::Unavailable | ockam_core::ErrorKind::ResourceExhausted
    )
}

/// Confirms pushes in the order they were submitted, as each becomes
/// durable: the stream worker keeps taking pushes meanwhile, so one
/// client's pushes share commits instead of waiting for one each.
async fn confirm_loop(
    ctx: Context,
    stream: String,
    shared: Arc<Shared>,
    failed: Arc<AtomicBool>,
    mut rx: mpsc::UnboundedReceiver<(Push, Route, Uint)>,
) {
    // A push failed (or was refused) here: nothing after it is confirmed,
    // even if stored, or the client would take the failed one as stored.
    let mut gap = false;
    while let Some((push, back, request_id)) = rx.recv().await {
        let (status, index) = match push {
            Push::TooLarge => {
                gap = true;
                (PushStatus::Error, 0)
            }
            // Unanswered: the client resends everything unconfirmed, in
            // order, through a new stream worker (see below).
            Push::AfterFailure => continue,
            Push::Submitted(pending) => match pending.await {
                Ok(index) => {
                    shared.announce(&stream, index + 1);
                    if gap {
                        continue;
                    }
                    (PushStatus::Ok, index)
                }
                Err(e) => {
                    gap = true;
                    if !failed.swap(true, Ordering::AcqRel) {
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
        let mut head = self.shared.head(&self.stream).subscribe();
        let mut messages = self.pull(req.index.0, req.limit.0).await?;
        let wait = Duration::from_millis(req.wait_ms.0).min(self.shared.limits.max_wait);
        let from = req.index.0;
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
            let _ = tokio::time::timeout(wait, head.wait_for(|next| *next > from)).await;
            messages = self.pull(from, req.limit.0).await?;
        }
        Ok(messages)
    }

    /// Pulls; a store that can wait for messages waits up to `wait`.
    async fn pull_waiting(
        &self,
        from: u64,
        limit: u64,
        wait: Duration,
    ) -> Result<Vec<StreamMessage>> {
        let limit = usize::try_from(limit)
            .unwrap_or(usize::MAX)
            .min(self.shared.limits.max_pull);
        Ok(self
            .shared
            .store
            .pull_waiting(&self.stream, from, limit, MAX_PULL_BYTES, wait)
            .await?
            .into_iter()
            .map(|(index, data)| StreamMessage {
                index: Uint(index),
                data,
            })
            .collect())
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
            self.failed.clone(),
            rx,
        )));
        self.confirms = Some(tx);
        self.last_used.store(now_ms(), Ordering::Relaxed);
        let reaper_ctx = ctx.new_context(Address::random_local()).await?;
        self.reaper = Some(tokio::spawn(reap_when_idle(
            reaper_ctx,
            ctx.address(),
            self.last_used.clone(),
            self.shared.limits.idle_timeout,
        )));
        Ok(())
    }

    /// What `shutdown` does; also after a failed `initialize` (after which
    /// `shutdown` does not run).
    fn clean_up(&mut self, ctx: &Context) {
        if let Some(reaper) = self.reaper.take() {
            reaper.abort();
        }
        // The replier ends by itself once it has confirmed what is pending.
        self.confirms = None;
        remove_if_still(&self.shared.workers, &self.key, &ctx.address());
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
        self.last_used.store(now_ms(), Ordering::Relaxed);
        let Some((msg, back)) = request(ctx, msg).await? else {
            return Ok(());
        };
        match msg.protocol.as_str() {
            STREAM_PUSH => {
                let Some(req) =
                    decode_or_refuse::<PushRequest>(ctx, &msg, &back, STREAM_PUSH).await?
                else {
                    return Ok(());
                };
                let push = if self.failed.load(Ordering::Acquire) {
                    Push::AfterFailure
                } else if req.data.len() > self.shared.limits.max_message_size {
                    warn!(stream = %self.stream, size = req.data.len(), "refused a message over the size limit");
                    // Nothing after it either: the client resends from it.
                    self.failed.store(true, Ordering::Release);
                    Push::TooLarge
                } else {
                    Push::Submitted(self.shared.store.submit_push_fenced(
                        &self.stream,
                        req.data,
                        &self.failed,
                    ))
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
                let messages = match self.pull(req.index.0, req.limit.0).await {
                    Ok(m) => m,
                    Err(e) => return refuse(ctx, back, store_failed(STREAM_PULL, &e)).await,
                };
                let resp = PullResponse {
                    request_id: req.request_id,
                    messages,
                };
                ctx.send(back, ProtocolPayload::new(STREAM_PULL, &resp)?)
                    .await
            }
            STREAM_PULL_WAIT => {
                let Some(req) =
                    decode_or_refuse::<PullWaitRequest>(ctx, &msg, &back, STREAM_PULL_WAIT).await?
                else {
                    return Ok(());
                };
                let messages = match self.pull_wait(&req).await {
                    Ok(m) => m,
                    Err(e) => return refuse(ctx, back, store_failed(STREAM_PULL_WAIT, &e)).await,
                };
                let resp = PullResponse {
                    request_id: req.request_id,
                    messages,
                };
                ctx.send(back, ProtocolPayload::new(STREAM_PULL, &resp)?)
                    .await
            }
            other => refuse(ctx, back, StreamError::unknown_protocol(other, "a stream")).await,
        }
    }
}

fn validate_pair(client_id: &str, stream_name: &str) -> std::result::Result<(), String> {
    validate_name("client", client_id)
        .and(validate_name("stream", stream_name))
        .map_err(|e| e.message().to_string())
}

/// `stream_index`: client read positions.
pub(crate) struct IndexService {
    pub(crate) shared: Arc<Shared>,
}

#[async_trait]
impl Worker for IndexService {
    type Message = Any;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let Some((msg, back)) = request(ctx, msg).await? else {
            return Ok(());
        };
        let Some(req) = decode_or_refuse::<IndexRequest>(ctx, &msg, &back, STREAM_INDEX).await?
        else {
            return Ok(());
        };
        match req {
            IndexRequest::Get {
                client_id,
                stream_name,
            } => {
                if let Err(e) = validate_pair(&client_id, &stream_name) {
                    return refuse(ctx, back, StreamError::new(STREAM_INDEX, e)).await;
                }
                let index = match self.shared.store.get_index(&client_id, &stream_name).await {
                    Ok(i) => i,
                    Err(e) => return refuse(ctx, back, store_failed(STREAM_INDEX, &e)).await,
                };
                let resp = Index {
                    client_id,
                    stream_name,
                    index: index.map(Uint),
                };
                ctx.send(back, ProtocolPayload::new(STREAM_INDEX, &resp)?)
                    .await
            }
            IndexRequest::Save {
                client_id,
                stream_name,
                index,
            } => {
                if let Err(e) = validate_pair(&client_id, &stream_name) {
                    return refuse(ctx, back, StreamError::new(STREAM_INDEX, e)).await;
                }
                // Unanswered when saved (as the protocol has it).
                let saved = self
                    .shared
                    .store
                    .save_index(&client_id, &stream_name, index.0)
                    .await;
                match saved {
                    Ok(()) => Ok(()),
                    Err(e) => refuse(ctx, back, store_failed(STREAM_INDEX, &e)).await,
                }
            }
        }
    }
}

/// `forwarding_service`: registers forwarders (see `RemoteForwarder`). The
/// request's payload is the name of the destination worker on the
/// registrant's node, taken as it is (a local address; any UTF-8, `#`
/// included); the reply is the forwarder's address in text form (sent
/// from the forwarder when it is new). A registrant that registers the same destination again over the
/// same route gets the same forwarder. A refused registration is answered
/// with a `stream_error` saying why.
pub(crate) struct ForwardingService {
    /// The forwarder of each target route.
    pub(crate) forwarders: Arc<Mutex<HashMap<Route, Address>>>,
}

impl ForwardingService {
    pub(crate) fn new() -> Self {
        ForwardingService {
            forwarders: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

/// Where a forwarder of `destination` (a worker on the registrant's node)
/// delivers, seen from the hub; or why there is none.
fn forwarder_target(back: &Route, payload: &[u8]) -> std::result::Result<Route, String> {
    let name = match String::decode(payload) {
        Ok(name) => name,
        Err(e) => {
            return Err(format!(
                "a registration is the destination worker's name, as a string: {e}"
            ))
        }
    };
    // Taken as it is: text of another form ("1#host:port") is a local name
    // here too.
    let destination = Address::new(LOCAL, name);
    check_address(&destination).map_err(|e| format!("destination: {}", e.message()))?;
    // The registrant's last hop is its temporary context; the destination
    // lives on the same node.
    let mut target: Vec<Address> = back.iter().cloned().collect();
    if target.pop().is_none() {
        return Err("a registration needs a return route".into());
    }
    target.push(destination);
    Ok(Route::from(target))
}

#[async_trait]
impl Worker for ForwardingService {
    type Message = Any;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let back = msg.return_route();
        if ProtocolPayload::decode(msg.payload()).is_ok_and(|p| is_refusal(&p, &back)) {
            return Ok(());
        }
        let target = match forwarder_target(&back, msg.payload()) {
            Ok(t) => t,
            Err(reason) => {
                return refuse(ctx, back, StreamError::new(FORWARDING_SERVICE, reason)).await;
            }
        };
        let address = Address::random_local();
        // One forwarder per target: looked up and taken in one step.
        let existing = match lock(&self.forwarders).entry(target.clone()) {
            Entry::Occupied(e) => Some(e.get().clone()),
            Entry::Vacant(e) => {
                e.insert(address.clone());
                None
            }
        };
        if let Some(existing) = existing {
            debug!(forwarder = %existing, target = %target, "forwarder registered again");
            return ctx.send(back, existing.to_string()).await;
        }
        debug!(forwarder = %address, target = %target, "forwarder registered");
        let started = ctx
            .start_worker(
                address.clone(),
                Forwarder {
                    target: target.clone(),
                    registrant: Some((back, address.to_string())),
                    table: self.forwarders.clone(),
                },
            )
            .await;
        if started.is_err() {
            remove_if_still(&self.forwarders, &target, &address);
        }
        started
    }
}

/// Sends everything it receives on to its target route, routes otherwise
/// unchanged.
struct Forwarder {
    target: Route,
    registrant: Option<(Route, String)>,
    /// The forwarding service's table, which this forwarder leaves when it
    /// stops.
    table: Arc<Mutex<HashMap<Route, Address>>>,
}

#[async_trait]
impl Worker for Forwarder {
    type Message = Any;
    type Context = Context;

    async fn initialize(&mut self, ctx: &mut Context) -> Result<()> {
        if let Some((to, me)) = self.registrant.take() {
            if let Err(e) = ctx.send(to, me).await {
                // `shutdown` does not run after a failed `initialize`.
                remove_if_still(&self.table, &self.target, &ctx.address());
                return Err(e);
            }
        }
        Ok(())
    }

    async fn shutdown(&mut self, ctx: &mut Context) -> Result<()> {
        remove_if_still(&self.table, &self.target, &ctx.address());
        Ok(())
    }

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let mut t = msg.into_transport_message();
        t.onward_route.step()?;
        t.onward_route.modify().prepend_route(self.target.clone());
        // Not added to the return route: replies go straight back, not
        // through this forwarder (which would send them to its target again).
        if let Err(e) = ctx.forward(LocalMessage::new(t)).await {
            warn!(forwarder = %ctx.address(), error = %e, "dropped a forwarded message");
        }
        Ok(())
    }
}

//! The hub's services: `echo_service`, `forwarding_service` (and the
//! forwarders it starts), `stream` (and the stream workers it starts) and
//! `stream_index`.
//!
//! Every request these services refuse is answered with why (a
//! `stream_error`, see [`StreamError`]); a refusal itself is never answered,
//! so that two services cannot refuse each other's refusals forever.

mod echo;
mod forwarding;
mod index;
mod stream;

pub(crate) use echo::EchoService;
pub(crate) use forwarding::ForwardingService;
pub(crate) use index::{validate_pair, IndexService};
pub(crate) use stream::{reap_idle_workers, StreamService};

use crate::access::{Access, Operation};
use crate::store::{PendingPush, StreamStore};
use ockam_core::internal::sync::lock;
use ockam_core::{
    async_trait, check_address, Address, Any, LocalMessage, Message, Result, Route, Routed, Worker,
    LOCAL,
};
use ockam_node::Context;
use ockam_stream_client::protocol::Uint;
use ockam_stream_client::protocol::{
    stream_worker_name, validate_name, CreateStreamRequest, Index, IndexRequest, Init,
    ProtocolPayload, PullRequest, PullResponse, PullWaitRequest, PushConfirm, PushRequest,
    PushStatus, StreamError, StreamMessage, STREAM_CREATE, STREAM_ERROR, STREAM_INDEX, STREAM_PULL,
    STREAM_PULL_WAIT, STREAM_PUSH,
};
use ockam_stream_client::FORWARDING_SERVICE;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Most data one pull response carries, so that it fits a TCP frame
/// (16 MiB by default) with room to spare.
pub(crate) const MAX_PULL_BYTES: usize = 8 * 1024 * 1024;

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
    /// Most stream workers one remote peer may have open at once (default
    /// 1,024). A peer is the first hop of the requester's return route:
    /// one TCP connection, or one secure channel; a requester on the hub's
    /// own node is not counted. A `stream_create` past it is refused with
    /// a `stream_error` saying so, and the peer's open streams go on.
    /// Stream workers stop after `idle_timeout` without a request, so a
    /// peer that left frees its places by then.
    pub max_stream_workers_per_peer: usize,
    /// Most forwarders one remote peer may have registered at once (default
    /// 1,024; a peer as for `max_stream_workers_per_peer`). A registration
    /// past it is refused with a `stream_error`; registering an existing
    /// destination again is not a new one. A peer's forwarders stop when
    /// its connection (or channel) is gone.
    pub max_forwarders_per_peer: usize,
    /// Bytes of pushes one stream worker may have handed to the store and
    /// not had stored yet (default 32 MiB; each push counts its size plus
    /// 64 bytes). Past it the worker takes no more until the store catches up:
    /// its mailbox fills and the client's connection is read no further
    /// (back-pressure, not a refusal), so that a client pushing faster
    /// than the disk writes costs the hub a bounded amount of memory.
    pub max_in_flight_push_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pull: 1000,
            max_wait: Duration::from_secs(30),
            max_message_size: 1024 * 1024,
            idle_timeout: Duration::from_secs(600),
            max_stream_workers_per_peer: 1024,
            max_forwarders_per_peer: 1024,
            max_in_flight_push_bytes: 32 * 1024 * 1024,
        }
    }
}

/// A key of a [`PeerTable`]: a route, or a route and a name, whose route
/// names the remote peer a worker was started for.
pub(crate) trait PeerKey: Hash + Eq + Clone {
    /// The route back to whoever asked for the worker.
    fn route(&self) -> &Route;

    /// The peer: see [`Route::peer`].
    fn peer(&self, skipped: usize) -> Option<&Address> {
        self.route().peer(skipped)
    }
}

impl PeerKey for Route {
    fn route(&self) -> &Route {
        self
    }
}

impl PeerKey for (Route, String) {
    fn route(&self) -> &Route {
        &self.0
    }
}

/// The workers started for remote peers (stream workers, forwarders), one
/// per key, with a count per peer held to a cap (issue 18: a peer may not
/// make the hub start workers without bound).
pub(crate) struct PeerTable<K> {
    entries: HashMap<K, Address>,
    per_peer: HashMap<Address, usize>,
    cap: usize,
    /// Hops of every route before its peer: 0, or 1 in the Kafka child,
    /// whose requests all come through the hub's connection.
    skipped: usize,
}

impl<K: PeerKey> PeerTable<K> {
    /// An empty table allowing `cap` workers per peer, the peer being the
    /// hop after the first `skipped` of a key's route.
    pub(crate) fn new(cap: usize, skipped: usize) -> Self {
        PeerTable {
            entries: HashMap::new(),
            per_peer: HashMap::new(),
            cap,
            skipped,
        }
    }

    /// The worker of `key`.
    pub(crate) fn get(&self, key: &K) -> Option<&Address> {
        self.entries.get(key)
    }

    /// Every key and worker.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &Address)> {
        self.entries.iter()
    }

    /// How many workers the table holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table holds no worker.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Makes `worker` the worker of `key`; returns the one it replaces.
    ///
    /// # Errors
    /// A refusal to send the requester, when `key` is new and its peer has
    /// the cap's number of workers already.
    pub(crate) fn insert(
        &mut self,
        key: K,
        worker: Address,
    ) -> std::result::Result<Option<Address>, String> {
        if let Some(old) = self.entries.get_mut(&key) {
            return Ok(Some(std::mem::replace(old, worker)));
        }
        if let Some(peer) = key.peer(self.skipped) {
            let count = self.per_peer.entry(peer.clone()).or_insert(0);
            if *count >= self.cap {
                return Err(format!(
                    "{peer} has {} open here, the most one peer may have",
                    self.cap
                ));
            }
            *count += 1;
        }
        self.entries.insert(key, worker);
        Ok(None)
    }

    /// Removes `key` if its worker is still `worker` (and not one that
    /// replaced it meanwhile).
    pub(crate) fn remove_if_still(&mut self, key: &K, worker: &Address) {
        if self.entries.get(key) != Some(worker) {
            return;
        }
        self.entries.remove(key);
        if let Some(peer) = key.peer(self.skipped) {
            if let Some(count) = self.per_peer.get_mut(peer) {
                *count -= 1;
                if *count == 0 {
                    self.per_peer.remove(peer);
                }
            }
        }
    }
}

/// Whom a stream worker serves: the return route of the `stream_create`
/// that opened it, and the stream.
type WorkerKey = (Route, String);

/// State the stream services share.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn StreamStore>,
    pub(crate) limits: Limits,
    /// Who may do what (issue 16).
    pub(crate) access: Access,
    /// Per stream: the next index, announced after every push (waiting
    /// pulls watch it).
    heads: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// The running stream worker of each requester and stream: opening a
    /// stream again replaces (and stops) the requester's earlier one.
    workers: Mutex<PeerTable<WorkerKey>>,
    /// The service's counters (issue 17).
    pub(crate) metrics: crate::metrics::ServiceMetrics,
    /// When each running stream worker was last used (see
    /// [`stream::reap_idle_workers`]).
    pub(crate) running: Mutex<HashMap<Address, Arc<AtomicU64>>>,
}

impl Shared {
    /// `service`: the stream service's name (for metrics);
    /// `hops_before_peer`: see [`PeerTable::new`].
    pub(crate) fn new(
        service: &str,
        store: Arc<dyn StreamStore>,
        limits: Limits,
        hops_before_peer: usize,
        access: Access,
    ) -> Arc<Self> {
        Arc::new(Shared {
            store,
            access,
            heads: Mutex::new(HashMap::new()),
            workers: Mutex::new(PeerTable::new(
                limits.max_stream_workers_per_peer,
                hops_before_peer,
            )),
            limits,
            metrics: crate::metrics::ServiceMetrics::new(service),
            running: Mutex::new(HashMap::new()),
        })
    }

    /// Announces that `stream` holds messages up to `next` (exclusive), to
    /// the waiting pulls of `stream` if there are any.
    pub(crate) fn announce(&self, stream: &str, next: u64) {
        let heads = lock(&self.heads);
        if let Some(head) = heads.get(stream) {
            head.send_if_modified(|h| {
                let newer = next > *h;
                if newer {
                    *h = next;
                }
                newer
            });
        }
    }

    /// Watches `stream`'s announcements (for a waiting pull). A stream has
    /// an entry only while someone watches it: the last watcher to go
    /// removes it, so the map holds the streams waited on, not every stream
    /// ever pushed to.
    pub(crate) fn watch_head(self: &Arc<Self>, stream: &str) -> HeadWatch {
        let rx = lock(&self.heads)
            .entry(stream.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        HeadWatch {
            shared: self.clone(),
            stream: stream.to_string(),
            rx: Some(rx),
        }
    }

    /// How many streams have waiting pulls and how many stream workers
    /// run: what the hub keeps per stream and per client in memory.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> (usize, usize) {
        (lock(&self.heads).len(), lock(&self.workers).len())
    }
}

/// A waiting pull's view of its stream's announcements; see
/// [`Shared::watch_head`].
pub(crate) struct HeadWatch {
    shared: Arc<Shared>,
    stream: String,
    rx: Option<watch::Receiver<u64>>,
}

impl HeadWatch {
    /// Waits until the stream's announced end satisfies `f` (cancel safe).
    pub(crate) async fn wait_for(&mut self, f: impl FnMut(&u64) -> bool) {
        if let Some(rx) = self.rx.as_mut() {
            let _ = rx.wait_for(f).await;
        }
    }
}

impl Drop for HeadWatch {
    fn drop(&mut self) {
        let mut heads = lock(&self.shared.heads);
        drop(self.rx.take());
        if heads
            .get(&self.stream)
            .is_some_and(|h| h.receiver_count() == 0)
        {
            heads.remove(&self.stream);
        }
    }
}

/// The identity behind a request that came back over `back`: the peer key
/// of the secure channel it came through (the first hop of its return
/// route is that channel's end), if it came through one.
fn identity_of(ctx: &Context, back: &Route) -> Option<ockam_vault::PublicKey> {
    back.next()
        .ok()
        .and_then(|first| ockam_channel::SecureChannel::peer_identity(ctx, first))
}

/// Whether the request that came back over `back` may do `op`; if not,
/// why. An open hub allows everything without looking up who asks (this
/// runs for every push and pull). In a closed hub's Kafka child
/// ([`Access::Relayed`]) a request must come from the hub's identity and,
/// within the hub, from its gate (`back` = child's channel end, the gate,
/// then the client): anything else on the hub node could send through the
/// hub's channel to the child, but only the gate checks who asks.
pub(crate) fn permitted(
    ctx: &Context,
    access: &Access,
    back: &Route,
    op: Operation<'_>,
) -> std::result::Result<(), String> {
    match access {
        Access::Open => Ok(()),
        Access::Relayed { .. }
            if back.iter().nth(1) != Some(&Address::from(crate::kafka_child::GATE)) =>
        {
            Err(crate::access::RELAYED_ONLY.to_string())
        }
        _ => access.check(identity_of(ctx, back).as_ref(), op),
    }
}

/// Whether the request that came back over `back` may open `stream`: it
/// needs the right to push or to pull it (each push and pull is then
/// checked again); if not, why.
pub(crate) fn may_open(
    ctx: &Context,
    access: &Access,
    back: &Route,
    stream: &str,
) -> std::result::Result<(), String> {
    match (
        permitted(ctx, access, back, Operation::Push(stream)),
        permitted(ctx, access, back, Operation::Pull(stream)),
    ) {
        // One reason when both say the same (a stranger, plaintext).
        (Err(no_push), Err(no_pull)) if no_push == no_pull => Err(no_push),
        (Err(no_push), Err(no_pull)) => Err(format!("{no_push}; {no_pull}")),
        _ => Ok(()),
    }
}

/// On a closed hub, the key a client's read position is kept under: its
/// identity and its client id, so that no identity reads or moves
/// another's; on an open hub, the client id alone.
pub(crate) fn index_owner(ctx: &Context, access: &Access, back: &Route, client_id: &str) -> String {
    if access.is_closed() {
        if let Some(key) = identity_of(ctx, back) {
            return format!("{key}/{client_id}");
        }
    }
    client_id.to_string()
}

/// Refuses (answers `access_denied` for `protocol`) a request that came
/// back over `back` unless its identity may do `op`; `true` when refused.
pub(crate) async fn denied(
    ctx: &Context,
    access: &Access,
    back: &Route,
    protocol: &str,
    op: Operation<'_>,
) -> Result<bool> {
    match permitted(ctx, access, back, op) {
        Ok(()) => Ok(false),
        Err(why) => {
            refuse(
                ctx,
                back.clone(),
                StreamError::access_denied(protocol, &why),
            )
            .await?;
            Ok(true)
        }
    }
}

/// Answers a refused request with why.
pub(crate) async fn refuse(ctx: &Context, to: Route, err: StreamError) -> Result<()> {
    let refusal = refusal(&err, &to)?;
    ctx.send(to, refusal).await
}

/// [`refuse`], the answer coming from `from` (a service's address) though
/// sent through `ctx` (a task of the service's own).
pub(crate) async fn refuse_from(
    ctx: &Context,
    from: &Address,
    to: Route,
    err: StreamError,
) -> Result<()> {
    let refusal = refusal(&err, &to)?;
    answer_from(ctx, from, to, &refusal).await
}

/// A refusal, counted and logged.
fn refusal(err: &StreamError, to: &Route) -> Result<ProtocolPayload> {
    crate::metrics::refused(&err.protocol);
    warn!(protocol = %err.protocol, reason = %err.reason, to = %to, "refused a request");
    ProtocolPayload::new(STREAM_ERROR, err)
}

/// Sends `answer` to `to` with `from` as its return route, through `ctx`:
/// how a service's helper task answers for the service, so that whatever
/// the peer sends back reaches the service, not a mailbox nobody reads.
pub(crate) async fn answer_from(
    ctx: &Context,
    from: &Address,
    to: Route,
    answer: &ProtocolPayload,
) -> Result<()> {
    ctx.forward(LocalMessage::new(ockam_core::TransportMessage::v1(
        to,
        from.clone(),
        answer.encode()?,
    )))
    .await
}

/// The stream protocol request in `msg` and where to answer it; `None`
/// after answering why it is not one (or, for a refusal, which is never
/// answered, after logging it).
/// Counted in `shared`'s metrics.
async fn request(
    ctx: &Context,
    shared: &Shared,
    msg: Routed<Any>,
) -> Result<Option<(ProtocolPayload, Route)>> {
    let back = msg.return_route();
    match ProtocolPayload::decode(msg.payload()) {
        Ok(p) if is_refusal(&p, &back) => Ok(None),
        Ok(p) => {
            shared.metrics.request(&p.protocol);
            Ok(Some((p, back)))
        }
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

#[cfg(test)]
mod tests;

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
pub(crate) use index::IndexService;
pub(crate) use stream::StreamService;

use crate::store::{PendingPush, StreamStore};
use ockam_core::{
    async_trait, check_address, Address, Any, LocalMessage, Message, Result, Route, Routed, Worker,
    LOCAL,
};
use ockam_node::Context;
use ockam_stream_client::protocol::{
    stream_worker_name, validate_name, CreateStreamRequest, Index, IndexRequest, Init,
    ProtocolPayload, PullRequest, PullResponse, PullWaitRequest, PushConfirm, PushRequest,
    PushStatus, StreamError, StreamMessage, STREAM_CREATE, STREAM_ERROR, STREAM_INDEX, STREAM_PULL,
    STREAM_PULL_WAIT, STREAM_PUSH,
};
use ockam_stream_client::FORWARDING_SERVICE;
use serde::de::DeserializeOwned;
use serde_bare::Uint;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tracing::{debug, info, warn};

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

#[cfg(test)]
mod tests;

//! `stream_index`: client read positions.

use super::*;
use std::collections::VecDeque;
use tracing::error;

/// Checks the names of an index request. In a closed hub's Kafka child
/// ([`Access::Relayed`]) a client id arrives as `{identity}/{client_id}`
/// (the gate made it so; see [`index_owner`]): its identity must be a key
/// and the rest a client name.
pub(crate) fn validate_pair(
    access: &Access,
    client_id: &str,
    stream_name: &str,
) -> std::result::Result<(), String> {
    let client = match access {
        Access::Relayed { .. } => match client_id.split_once('/') {
            Some((key, client)) if key.parse::<ockam_vault::PublicKey>().is_ok() => client,
            _ => return Err(format!("client id {client_id:?} is not identity/client")),
        },
        _ => client_id,
    };
    validate_name("client", client)
        .and(validate_name("stream", stream_name))
        .map_err(|e| e.message().to_string())
}

/// How many requests of different `(client, stream)` pairs the index
/// service serves at once. A save to the Kafka store is a synchronous
/// commit to the group coordinator: served one at a time, 72 clients
/// saving after a message each kept a client's `Get` waiting longer than
/// it waits for an answer (issue 14, failing input 5, under load).
const LANES: usize = 16;

/// Requests waiting in one lane, at most; beyond that a request is
/// refused as busy (the client asks again shortly), so that a lane held up
/// by a slow store never holds up the others.
pub(super) const LANE_QUEUE: usize = 64;

/// How long a stopping service waits for its lanes to serve what they
/// hold.
const LANES_STOP: Duration = Duration::from_secs(10);

/// One index request, checked and admitted.
struct Job {
    owner: String,
    req: IndexRequest,
    back: Route,
}

impl Job {
    fn stream(&self) -> &str {
        match &self.req {
            IndexRequest::Get { stream_name, .. } | IndexRequest::Save { stream_name, .. } => {
                stream_name
            }
        }
    }

    fn same_pair(&self, other: &Job) -> bool {
        self.owner == other.owner && self.stream() == other.stream()
    }
}

/// The requests one lane serves, in order, on a task of its own.
#[derive(Default)]
struct Lane {
    queue: Mutex<VecDeque<Job>>,
    ready: tokio::sync::Notify,
    /// The service stops: the lane serves what it holds, then ends.
    closing: std::sync::atomic::AtomicBool,
}

impl Lane {
    /// Queues `job` behind the others. A save whose pair's last queued
    /// request is a save replaces that one's position (only the latest
    /// counts; nothing of the pair is reordered). Gives `job` back when
    /// the lane holds [`LANE_QUEUE`] requests.
    fn push(&self, job: Job) -> std::result::Result<(), Job> {
        let mut queue = lock(&self.queue);
        if let IndexRequest::Save { index, .. } = &job.req {
            if let Some(last) = queue.iter_mut().rev().find(|q| q.same_pair(&job)) {
                if let IndexRequest::Save { index: queued, .. } = &mut last.req {
                    *queued = *index;
                    last.back = job.back;
                    return Ok(());
                }
            }
        }
        if queue.len() >= LANE_QUEUE {
            return Err(job);
        }
        queue.push_back(job);
        drop(queue);
        self.ready.notify_one();
        Ok(())
    }

    /// The next request; `None` once the lane is closing and empty.
    async fn next(&self) -> Option<Job> {
        loop {
            let ready = self.ready.notified();
            if let Some(job) = lock(&self.queue).pop_front() {
                return Some(job);
            }
            if self.closing.load(Ordering::Acquire) {
                return None;
            }
            ready.await;
        }
    }
}

/// `stream_index`: client read positions.
///
/// The service checks each request (names, access) itself and hands it to
/// one of [`LANES`] lanes by its `(owner, stream)` pair: requests of one
/// pair are served in the order they came (a later save never overtaken by
/// an earlier one), those of different pairs side by side. Answers leave
/// with the service's address as their return route.
pub(crate) struct IndexService {
    shared: Arc<Shared>,
    lanes: Vec<Arc<Lane>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl IndexService {
    /// The service over `shared`'s store; its lanes start with it.
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        IndexService {
            shared,
            lanes: Vec::new(),
            tasks: Vec::new(),
        }
    }

    /// The lane of `(owner, stream)`.
    fn lane(&self, owner: &str, stream: &str) -> Option<&Arc<Lane>> {
        use std::hash::Hasher;
        // Fixed keys: the same pair always goes to the same lane.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        h.write(owner.as_bytes());
        h.write_u8(0xff);
        h.write(stream.as_bytes());
        let n = self.lanes.len();
        (n > 0).then(|| &self.lanes[(h.finish() % n as u64) as usize])
    }
}

#[async_trait]
impl Worker for IndexService {
    type Message = Any;
    type Context = Context;

    async fn initialize(&mut self, ctx: &mut Context) -> Result<()> {
        // One context sends for every lane (its own address is never an
        // answer's return route, so nothing arrives there).
        let sender = Arc::new(ctx.new_context(Address::random_local()).await?);
        for _ in 0..LANES {
            let lane = Arc::new(Lane::default());
            self.tasks.push(tokio::spawn(serve_lane(
                sender.clone(),
                ctx.address(),
                self.shared.clone(),
                lane.clone(),
            )));
            self.lanes.push(lane);
        }
        Ok(())
    }

    async fn shutdown(&mut self, _ctx: &mut Context) -> Result<()> {
        for lane in &self.lanes {
            lane.closing.store(true, Ordering::Release);
            lane.ready.notify_one();
        }
        let deadline = tokio::time::Instant::now() + LANES_STOP;
        for task in self.tasks.drain(..) {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
                warn!("the index service stopped before serving every request it held (the store did not answer within {LANES_STOP:?})");
            }
        }
        Ok(())
    }

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let Some((msg, back)) = request(ctx, &self.shared, msg).await? else {
            return Ok(());
        };
        let Some(req) = decode_or_refuse::<IndexRequest>(ctx, &msg, &back, STREAM_INDEX).await?
        else {
            return Ok(());
        };
        let (client, stream) = match &req {
            IndexRequest::Get {
                client_id,
                stream_name,
            }
            | IndexRequest::Save {
                client_id,
                stream_name,
                ..
            } => (client_id.clone(), stream_name.clone()),
        };
        // Checked before anything else, so that a refusal never repeats
        // whatever a stranger sent.
        if let Err(e) = validate_pair(&self.shared.access, &client, &stream) {
            return refuse(ctx, back, StreamError::new(STREAM_INDEX, e)).await;
        }
        let access = &self.shared.access;
        if denied(ctx, access, &back, STREAM_INDEX, Operation::Pull(&stream)).await? {
            return Ok(());
        }
        let owner = index_owner(ctx, access, &back, &client);
        let job = Job { owner, req, back };
        let Some(lane) = self.lane(&job.owner, &stream) else {
            // Not initialized (cannot happen once started): served here.
            return serve(ctx, &ctx.address(), &self.shared, job).await;
        };
        match lane.push(job) {
            Ok(()) => Ok(()),
            Err(job) => {
                let why = format!(
                    "the index service is busy: {LANE_QUEUE} requests wait in the lane of ({client}, {stream}); ask again shortly"
                );
                refuse(ctx, job.back, StreamError::new(STREAM_INDEX, why)).await
            }
        }
    }
}

/// Serves the requests of one lane, in order, until the service stops; a
/// request that panics is logged and the lane goes on.
async fn serve_lane(sender: Arc<Context>, service: Address, shared: Arc<Shared>, lane: Arc<Lane>) {
    while let Some(job) = lane.next().await {
        let (sender, service, shared) = (sender.clone(), service.clone(), shared.clone());
        let served =
            tokio::spawn(async move { serve(&sender, &service, &shared, job).await }).await;
        match served {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!(error = %e, "could not answer an index request"),
            Err(e) => {
                error!(error = %e, "an index request failed (a panic in the store?); it goes unanswered, its client asks again")
            }
        }
    }
}

/// Serves one checked request for `owner`.
async fn serve(ctx: &Context, service: &Address, shared: &Shared, job: Job) -> Result<()> {
    let Job { owner, req, back } = job;
    let store = &shared.store;
    match req {
        IndexRequest::Get {
            client_id,
            stream_name,
        } => {
            let index = match reconciled(store.as_ref(), &owner, &stream_name).await {
                Ok(i) => i,
                Err(e) => {
                    return refuse_from(ctx, service, back, store_failed(STREAM_INDEX, &e)).await
                }
            };
            let resp = Index {
                client_id,
                stream_name,
                index: index.map(Uint),
            };
            answer_from(
                ctx,
                service,
                back,
                &ProtocolPayload::new(STREAM_INDEX, &resp)?,
            )
            .await
        }
        IndexRequest::Save {
            stream_name, index, ..
        } => {
            // A position the log does not reach is refused: a client
            // saving it would never be given what is pushed up to it.
            match store.end_before(&stream_name, index.0).await {
                Ok(Some(end)) => {
                    let refusal = StreamError::past_end(STREAM_INDEX, &stream_name, index.0, end);
                    return refuse_from(ctx, service, back, refusal).await;
                }
                Ok(None) => {}
                Err(e) => {
                    return refuse_from(ctx, service, back, store_failed(STREAM_INDEX, &e)).await
                }
            }
            // Unanswered when saved (as the protocol has it).
            match store.save_index(&owner, &stream_name, index.0).await {
                Ok(()) => Ok(()),
                Err(e) => refuse_from(ctx, service, back, store_failed(STREAM_INDEX, &e)).await,
            }
        }
    }
}

/// The read position saved for `(client, stream)`, kept within the log: a
/// saved position past the stream's end (saved before the store lost
/// messages, or by an older hub that did not check) is answered as the
/// end, and reported. It is not saved so: one reading of the end is not
/// enough to rewind a client for good (the client saves its own position
/// as it reads on).
async fn reconciled(store: &dyn StreamStore, client: &str, stream: &str) -> Result<Option<u64>> {
    let Some(saved) = store.get_index(client, stream).await? else {
        return Ok(None);
    };
    // Asked of the store itself (not `end_before`, which may answer from
    // what a Kafka hub saw of the topic): a client opening its stream is
    // where a position the log lost is found and reconciled.
    let end = store.next_index(stream).await?;
    if saved <= end {
        return Ok(Some(saved));
    }
    warn!(%client, %stream, saved, end, "a saved read position is past the end of its stream; answered as the end");
    Ok(Some(end))
}

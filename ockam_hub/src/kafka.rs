//! Streams kept in Apache Kafka (or a Kafka-compatible broker):
//! [`KafkaStore`], behind the hub's `stream_kafka` and `stream_kafka_index`.
//!
//! - One topic per stream, named `{prefix}{stream}`, with one partition so
//!   that order holds; created through the admin API on the first push.
//! - Pushes go through librdkafka's idempotent producer (`acks=all`) and are
//!   confirmed only once the broker acknowledges them; the offset the broker
//!   gives a message is its stream index.
//! - Pulls read the topic by offset.
//! - The read position of `(client, stream)` is the committed offset of the
//!   consumer group `{prefix}{client}` on the stream's topic (the offset of
//!   the next message to read, as Kafka tools expect).
//!
//! The hub keeps no state of its own: several hubs on one Kafka cluster
//! serve the same streams.

use crate::storage::{Fence, PendingPush, StreamStore};
use async_trait::async_trait;
use ockam_core::{Error, ErrorKind, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Display;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

/// Longest topic name Kafka accepts.
const MAX_TOPIC_LEN: usize = 249;
/// Most topic readers (and, separately, consumer-group clients) kept open.
const MAX_CLIENTS: usize = 64;
/// Most pushes held for one stream while its topic is being created.
const MAX_HELD: usize = 100_000;
/// Most pushes, and bytes, handed to the producer at once for one stream:
/// within one produce request (`batch.size` below), and more than a stream
/// client keeps unconfirmed, so that a client's whole window goes in one
/// batch instead of a big one and a small one taking turns.
const MAX_BATCH: usize = 8192;
const MAX_BATCH_BYTES: usize = 3 * 1024 * 1024 + 512 * 1024;
const PRODUCER_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// How often a waiting pull looks again at a stream with nothing to read
/// yet at all (no topic, or nothing from where the client reads).
const NOTHING_YET_POLL: Duration = Duration::from_millis(20);
/// Longest wait between two attempts to create a topic.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Largest message the producer sends: above the hub's 8 MiB limit.
const MAX_MESSAGE_BYTES: usize = 9 * 1024 * 1024;

/// How to reach Kafka and name things there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of brokers to bootstrap from.
    pub bootstrap_servers: String,
    /// Put before stream names to make topic names, and before client ids
    /// to make consumer-group ids (default `ockam_`).
    pub prefix: String,
    /// Replication factor of the topics the hub creates; `-1` leaves it to
    /// the broker's default (`default.replication.factor`).
    pub replication_factor: i32,
    /// Longest the hub waits for the broker on a read or an index request.
    pub timeout: Duration,
}

impl KafkaConfig {
    /// The defaults, with these bootstrap servers.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        KafkaConfig {
            bootstrap_servers: bootstrap_servers.into(),
            prefix: "ockam_".into(),
            replication_factor: -1,
            timeout: Duration::from_secs(5),
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::new(ErrorKind::InvalidInput, m));
        if self.bootstrap_servers.trim().is_empty() {
            return bad("kafka: no bootstrap servers given".into());
        }
        if self.prefix.len() > 200
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        {
            return bad(format!(
                "kafka: topic prefix {:?} is not 0-200 characters of [A-Za-z0-9._-]",
                self.prefix
            ));
        }
        if self.replication_factor == 0 || self.replication_factor < -1 {
            return bad(format!(
                "kafka: replication factor {} is not -1 (broker default) or at least 1",
                self.replication_factor
            ));
        }
        Ok(())
    }

    /// The topic of `stream`: `{prefix}{stream}`, or, if that is longer than
    /// Kafka allows, its beginning and a hash of the whole.
    pub fn topic(&self, stream: &str) -> String {
        let full = format!("{}{}", self.prefix, stream);
        if full.len() <= MAX_TOPIC_LEN && full != "." && full != ".." {
            return full;
        }
        let hash = Sha256::digest(full.as_bytes());
        let tag: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
        // Stream names and prefixes are ASCII: any byte is a boundary.
        let keep = MAX_TOPIC_LEN - tag.len() - 1;
        format!("{}-{}", &full[..full.len().min(keep)], tag)
    }

    /// The consumer group that holds `client`'s read positions.
    pub fn group(&self, client: &str) -> String {
        format!("{}{}", self.prefix, client)
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", "ockam_hub")
            .set("allow.auto.create.topics", "false");
        c
    }
}

/// The context of the hub's Kafka clients: librdkafka's error events at
/// the level they deserve (the end of a partition is no error; a broker
/// that is away is worth a warning, and the hub waits for it).
#[derive(Clone, Copy, Default)]
pub struct HubKafkaContext;

impl ClientContext for HubKafkaContext {
    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::PartitionEOF) => debug!(%reason, "kafka: end of partition"),
            Some(
                RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::RequestTimedOut,
            ) => warn!(%error, %reason, "kafka: broker unreachable"),
            _ => tracing::error!(%error, %reason, "kafka client error"),
        }
    }
}

impl ConsumerContext for HubKafkaContext {}

type HubConsumer = BaseConsumer<HubKafkaContext>;

/// The client of one consumer group (one client id's read positions).
struct Group {
    consumer: HubConsumer,
    /// Per stream, the number of the last save committed. A save runs on a
    /// blocking thread that the hub may stop waiting for (a broker that is
    /// slow to answer): a later save may then run first, and the earlier
    /// one, when it comes, must not move the index back.
    saved: HashMap<String, u64>,
}

/// A consumer-group client, locked through each request.
type GroupClient = Arc<Mutex<Group>>;

/// Nobody uses this reader now.
fn is_idle(r: &Arc<Mutex<Reader>>) -> bool {
    Arc::strong_count(r) == 1 && r.try_lock().is_ok()
}

/// The index of an idle reader of `stream` (at `at`, if given).
fn idle_reader(all: &[Arc<Mutex<Reader>>], stream: &str, at: Option<u64>) -> Option<usize> {
    all.iter().position(|r| {
        is_idle(r) && {
            let g = lock(r);
            g.stream == stream && (at.is_none() || g.position == at)
        }
    })
}

/// The first pushes of `held`: at most `MAX_BATCH` and `MAX_BATCH_BYTES`,
/// but always one.
fn take_batch(held: &mut Held) -> Held {
    let mut bytes = 0usize;
    let n = held
        .iter()
        .take(MAX_BATCH)
        .position(|p| {
            bytes += p.data.len();
            bytes > MAX_BATCH_BYTES
        })
        .unwrap_or(held.len().min(MAX_BATCH))
        .max(1);
    held.drain(..n).collect()
}

fn new_producer(config: &KafkaConfig) -> Result<FutureProducer<HubKafkaContext>> {
    config
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        // One request at a time: a failed request is never followed by a
        // later one that succeeds (which would store messages after a gap).
        .set("max.in.flight.requests.per.connection", "1")
        .set("batch.size", PRODUCER_BATCH_BYTES.to_string())
        // A push the broker has not taken within this is refused (its
        // client resends it): pushes do not pile up while it is away.
        .set(
            "message.timeout.ms",
            (config.timeout * 2).as_millis().to_string(),
        )
        .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
        .create_with_context(HubKafkaContext)
        .map_err(|e| kafka_error("cannot create the producer", e))
}

/// A failed produce: about the message or the hub's rights (refused, the
/// client gives up on the message after a few tries) or about the broker
/// being away (unanswered, the client retries).
fn kafka_produce_error(e: &KafkaError) -> Error {
    let permanent = matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
                | RDKafkaErrorCode::PolicyViolation
        )
    );
    let kind = if permanent {
        ErrorKind::InvalidInput
    } else {
        ErrorKind::Unavailable
    };
    Error::new(kind, format!("kafka: produce: {e}"))
}

fn kafka_error(what: &str, e: impl Display) -> Error {
    Error::new(ErrorKind::Unavailable, format!("kafka: {what}: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_unknown_topic(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition)
            | Some(RDKafkaErrorCode::UnknownTopic)
            | Some(RDKafkaErrorCode::UnknownPartition)
    )
}

fn offset_of(index: u64) -> Result<Offset> {
    i64::try_from(index)
        .map(Offset::Offset)
        .map_err(|_| Error::new(ErrorKind::InvalidInput, "index beyond what Kafka can hold"))
}

/// Pushes waiting for a stream's writer.
type Held = Vec<HeldPush>;

/// A push waiting for its stream's writer.
struct HeldPush {
    data: Vec<u8>,
    done: oneshot::Sender<Result<u64>>,
    /// The submitter's failure flag, if it has one.
    fence: Option<Fence>,
}

impl HeldPush {
    /// Refuses the push and tells its submitter to store nothing more.
    fn refuse(self, e: Error) {
        if let Some(f) = &self.fence {
            f.store(true, Ordering::Release);
        }
        let _ = self.done.send(Err(e));
    }
}

/// One stream's pushes, written in order by one writer task at a time.
#[derive(Default)]
struct StreamQueue {
    /// The topic is known to exist.
    ready: bool,
    /// A writer task is at work on this stream.
    busy: bool,
    /// Pushes not yet handed to the producer, in order.
    held: Held,
}

/// A consumer reading one stream's topic, kept between pulls so that a
/// client reading on from where it stopped gets messages already fetched.
struct Reader {
    consumer: HubConsumer,
    stream: String,
    topic: String,
    /// The offset of the next message the consumer gives.
    position: Option<u64>,
    /// The consumer reported the end of the partition at `position`.
    at_end: bool,
    /// A message read but not returned (over a pull's byte cap).
    held: Option<(u64, Vec<u8>)>,
    last_used: Instant,
}

impl Reader {
    /// Up to `limit` messages from `from` on; at the end of the partition,
    /// waits up to `wait` for the first one.
    fn pull(
        &mut self,
        from: u64,
        limit: usize,
        max_bytes: usize,
        timeout: Duration,
        wait: Duration,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        self.last_used = Instant::now();
        if self.position != Some(from) {
            // (The store looked first: there is a message at `from`.)
            debug!(topic = %self.topic, from, "kafka: positioning a reader");
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.topic, 0, offset_of(from)?)
                .map_err(|e| kafka_error("assign", e))?;
            self.consumer
                .assign(&tpl)
                .map_err(|e| kafka_error("assign", e))?;
            self.position = Some(from);
            self.at_end = false;
            self.held = None;
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        if let Some((index, data)) = self.held.take() {
            bytes = data.len();
            out.push((index, data));
        }
        let deadline = Instant::now() + timeout;
        while out.len() < limit {
            // Block only for the first message: until the broker answers
            // while the end of the partition has not been seen, up to `wait`
            // once it has (a waiting pull).
            let block = if !out.is_empty() {
                Duration::ZERO
            } else if self.at_end {
                wait
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            match self.consumer.poll(block) {
                None => {
                    if self.at_end || !out.is_empty() {
                        break;
                    }
                    if Instant::now() >= deadline {
                        return Err(kafka_error(
                            "reading a topic",
                            format!("no answer from the broker within {timeout:?}"),
                        ));
                    }
                }
                Some(Ok(m)) => {
                    let Ok(index) = u64::try_from(m.offset()) else {
                        continue;
                    };
                    if index < self.position.unwrap_or(0) {
                        continue; // fetched before a reposition
                    }
                    self.position = Some(index + 1);
                    self.at_end = false;
                    let data = m.payload().unwrap_or_default().to_vec();
                    if bytes.saturating_add(data.len()) > max_bytes && !out.is_empty() {
                        self.held = Some((index, data));
                        break;
                    }
                    bytes = bytes.saturating_add(data.len());
                    out.push((index, data));
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    self.at_end = true;
                    if out.is_empty() {
                        break;
                    }
                }
                Some(Err(e)) => {
                    // Start over at the next pull.
                    self.position = None;
                    if out.is_empty() {
                        return Err(kafka_error("reading a topic", e));
                    }
                    warn!(stream = %self.stream, error = %e, "kafka: reading a topic");
                    break;
                }
            }
        }
        // What was returned plus what is held: the next pull starts there.
        if let Some((index, _)) = &self.held {
            self.position = Some(*index);
        }
        Ok(out)
    }
}

struct Inner {
    config: KafkaConfig,
    /// The producer and its generation: a new one replaces it after a
    /// failed produce (see `Inner::produce`).
    producer: std::sync::RwLock<(u64, FutureProducer<HubKafkaContext>)>,
    admin: AdminClient<HubKafkaContext>,
    streams: Mutex<HashMap<String, StreamQueue>>,
    readers: Mutex<Vec<Arc<Mutex<Reader>>>>,
    /// Per client id, the client of its consumer group.
    groups: Mutex<HashMap<String, (GroupClient, Instant)>>,
    /// Numbers index saves in the order they were asked for (see
    /// `Group::saved`).
    saves: std::sync::atomic::AtomicU64,
}

/// Streams in Kafka; see the [module documentation](self).
#[derive(Clone)]
pub struct KafkaStore {
    inner: Arc<Inner>,
}

impl KafkaStore {
    /// Sets up the Kafka clients. Nothing is sent to the broker yet: a hub
    /// starts while its broker is down, and the store waits for it.
    pub fn new(config: KafkaConfig) -> Result<KafkaStore> {
        config.validate()?;
        let producer = new_producer(&config)?;
        let admin: AdminClient<HubKafkaContext> = config
            .client_config()
            .create_with_context(HubKafkaContext)
            .map_err(|e| kafka_error("cannot create the admin client", e))?;
        Ok(KafkaStore {
            inner: Arc::new(Inner {
                config,
                producer: std::sync::RwLock::new((0, producer)),
                admin,
                streams: Mutex::new(HashMap::new()),
                readers: Mutex::new(Vec::new()),
                groups: Mutex::new(HashMap::new()),
                saves: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }

    /// Asks the cluster for its brokers; the number of brokers on success.
    pub async fn probe(&self) -> Result<usize> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            inner
                .admin
                .inner()
                .fetch_metadata(None, inner.config.timeout)
                .map(|m| m.brokers().len())
                .map_err(|e| kafka_error("cluster metadata", e))
        })
        .await
        .map_err(|e| kafka_error("probe task", e))?
    }

    /// Logs whether the broker answers, until it does.
    pub async fn report_availability(self) {
        let mut first = true;
        loop {
            match self.probe().await {
                Ok(brokers) => {
                    info!(bootstrap = %self.inner.config.bootstrap_servers, brokers, "kafka back end available");
                    return;
                }
                Err(e) => {
                    if first {
                        warn!(bootstrap = %self.inner.config.bootstrap_servers, error = %e, "kafka back end unavailable; stream_kafka requests wait for it");
                        first = false;
                    }
                    tokio::time::sleep(self.inner.config.timeout).await;
                }
            }
        }
    }

    /// Whether `stream` has a message at `from` or later.
    async fn readable(&self, stream: &str, from: u64) -> Result<bool> {
        let stream = stream.to_string();
        self.blocking(move |inner| Ok(inner.end_of(&stream)? > from))
            .await
    }

    /// Runs `f` on a blocking thread; gives up waiting for it after a few
    /// broker timeouts (librdkafka calls such as a synchronous commit can
    /// wait longer than the hub should).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        let limit = self.inner.config.timeout * 4;
        match tokio::time::timeout(limit, tokio::task::spawn_blocking(move || f(&inner))).await {
            Ok(done) => done.map_err(|e| kafka_error("task", e))?,
            Err(_) => Err(kafka_error("broker", format!("no answer within {limit:?}"))),
        }
    }
}

impl Inner {
    /// Queues a push of `stream`; starts the stream's writer if idle.
    fn submit(self: &Arc<Self>, stream: &str, data: Vec<u8>, fence: Option<Fence>) -> PendingPush {
        let (tx, rx) = oneshot::channel();
        {
            let mut streams = lock(&self.streams);
            let q = streams.entry(stream.to_string()).or_default();
            if q.held.len() >= MAX_HELD {
                return Box::pin(async {
                    Err(Error::new(
                        ErrorKind::ResourceExhausted,
                        "kafka: too many pushes waiting for the broker",
                    ))
                });
            }
            q.held.push(HeldPush {
                data,
                done: tx,
                fence,
            });
            if !q.busy {
                q.busy = true;
                tokio::spawn(self.clone().write(stream.to_string()));
            }
        }
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(kafka_error("produce", "the store stopped")))
        })
    }

    /// The writer of `stream`: creates its topic if needed, then hands the
    /// waiting pushes to the producer one batch at a time (a batch fits one
    /// produce request), the next only once the broker acknowledged the
    /// last. So when a produce fails, nothing after it is in flight: the
    /// failed batch and everything waiting are refused together, and their
    /// clients resend them in order; nothing lands after a gap.
    async fn write(self: Arc<Self>, stream: String) {
        let topic = self.config.topic(&stream);
        loop {
            let (ready, batch, fenced) = {
                let mut streams = lock(&self.streams);
                let q = streams.entry(stream.clone()).or_default();
                // Pushes of submitters that failed meanwhile are refused.
                let (fenced, held): (Held, Held) = std::mem::take(&mut q.held)
                    .into_iter()
                    .partition(|p| p.fence.as_ref().is_some_and(|f| f.load(Ordering::Acquire)));
                q.held = held;
                if q.held.is_empty() && fenced.is_empty() {
                    q.busy = false;
                    return;
                }
                let batch = if q.ready {
                    take_batch(&mut q.held)
                } else {
                    Vec::new()
                };
                (q.ready, batch, fenced)
            };
            for p in fenced {
                p.refuse(kafka_error(
                    "produce",
                    "an earlier push of this submitter failed",
                ));
            }
            if !ready {
                let outcome = self.create_topic_retrying(&topic).await;
                let mut streams = lock(&self.streams);
                let q = streams.entry(stream.clone()).or_default();
                match outcome {
                    Ok(()) => q.ready = true,
                    Err(e) => {
                        for p in q.held.drain(..) {
                            p.refuse(e.clone());
                        }
                    }
                }
                continue;
            }
            if batch.is_empty() {
                continue;
            }
            if let Err((e, topic_gone)) = self.write_batch(&topic, batch).await {
                // Everything submitted after the failed push is refused too
                // (its clients resend it), and a topic gone is made again.
                let held = {
                    let mut streams = lock(&self.streams);
                    let q = streams.entry(stream.clone()).or_default();
                    if topic_gone {
                        q.ready = false;
                    }
                    std::mem::take(&mut q.held)
                };
                debug!(%topic, refused = held.len(), "kafka: refusing the pushes after a failed one");
                for p in held {
                    p.refuse(e.clone());
                }
            }
        }
    }

    /// Produces `batch` in order and answers each push; the first error, if
    /// any push failed (then it and every later one are refused), and
    /// whether it said that the topic does not exist.
    async fn write_batch(
        &self,
        topic: &str,
        batch: Held,
    ) -> std::result::Result<(), (Error, bool)> {
        let (generation, producer) = {
            let p = self.producer.read().unwrap_or_else(|e| e.into_inner());
            (p.0, p.1.clone())
        };
        let mut failure: Option<Error> = None;
        let mut topic_gone = false;
        let mut deliveries = Vec::with_capacity(batch.len());
        let mut rest = batch.into_iter();
        for p in rest.by_ref() {
            let record = FutureRecord::<(), [u8]>::to(topic)
                .partition(0)
                .payload(&p.data);
            match producer.send_result(record) {
                Ok(delivery) => deliveries.push((delivery, p)),
                Err((e, _)) => {
                    // Not queued: neither is anything after it.
                    topic_gone |= is_unknown_topic(&e);
                    p.refuse(self.note_failure(&mut failure, &e, generation));
                    break;
                }
            }
        }
        let unsent: Held = rest.collect();
        for (delivery, p) in deliveries {
            let outcome = match delivery.await {
                Ok(Ok(d)) => Ok(d.offset),
                Ok(Err((e, _))) => Err(e),
                Err(_) => Err(KafkaError::Canceled),
            };
            match outcome {
                Ok(offset) if failure.is_none() => {
                    let _ = p.done.send(
                        u64::try_from(offset)
                            .map_err(|_| kafka_error("produce", "the broker gave no offset")),
                    );
                }
                Ok(offset) => {
                    // Stored after a failed one (the broker took a later
                    // request of the same batch): refused all the same, so
                    // its client resends it after the failed one; a
                    // consumer sees it twice, out of place once.
                    tracing::error!(%topic, offset, "kafka: a message was stored after a failed one");
                    let e = failure
                        .clone()
                        .unwrap_or_else(|| kafka_error("produce", "failed"));
                    p.refuse(e);
                }
                Err(e) => {
                    topic_gone |= is_unknown_topic(&e);
                    p.refuse(self.note_failure(&mut failure, &e, generation));
                }
            }
        }
        if let Some(e) = &failure {
            for p in unsent {
                p.refuse(e.clone());
            }
        }
        match failure {
            Some(e) => Err((e, topic_gone)),
            None => Ok(()),
        }
    }

    /// The error a batch failed with: the first one (after which the
    /// producer is renewed, unless the failure was about the message).
    fn note_failure(&self, failure: &mut Option<Error>, e: &KafkaError, generation: u64) -> Error {
        failure
            .get_or_insert_with(|| {
                if !matches!(
                    e.rdkafka_error_code(),
                    Some(RDKafkaErrorCode::QueueFull | RDKafkaErrorCode::MessageSizeTooLarge)
                ) {
                    self.renew_producer(generation);
                }
                kafka_produce_error(e)
            })
            .clone()
    }

    /// Replaces producer `generation` (once) after a produce failed on it.
    /// The idempotent producer's state on the broker may be what failed (a
    /// broker restarted without it answers every later produce with an
    /// error); a new producer gets a new producer id. The stream workers
    /// whose pushes failed store nothing more and their clients resend.
    fn renew_producer(&self, generation: u64) {
        let mut p = self.producer.write().unwrap_or_else(|e| e.into_inner());
        if p.0 != generation {
            return;
        }
        match new_producer(&self.config) {
            Ok(fresh) => {
                warn!("kafka: a produce failed; starting a new producer");
                *p = (generation + 1, fresh);
            }
            Err(e) => warn!(error = %e, "kafka: cannot start a new producer"),
        }
    }

    async fn create_topic(&self, topic: &str) -> std::result::Result<(), (bool, String)> {
        // Room for the largest message the hub takes (a broker's default
        // is about 1 MB, batch overhead included).
        let max_bytes = MAX_MESSAGE_BYTES.to_string();
        let new = NewTopic::new(
            topic,
            1,
            TopicReplication::Fixed(self.config.replication_factor),
        )
        .set("max.message.bytes", &max_bytes);
        let opts = AdminOptions::new().request_timeout(Some(self.config.timeout));
        match self.admin.create_topics([&new], &opts).await {
            Ok(results) => match results.into_iter().next() {
                Some(Ok(_)) | None => Ok(()),
                Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(()),
                Some(Err((_, code))) => {
                    let permanent = matches!(
                        code,
                        RDKafkaErrorCode::InvalidTopic
                            | RDKafkaErrorCode::InvalidReplicationFactor
                            | RDKafkaErrorCode::InvalidConfig
                            | RDKafkaErrorCode::TopicAuthorizationFailed
                            | RDKafkaErrorCode::ClusterAuthorizationFailed
                            | RDKafkaErrorCode::PolicyViolation
                    );
                    Err((permanent, code.to_string()))
                }
            },
            Err(e) => Err((false, e.to_string())),
        }
    }

    /// Creates `topic`, retrying while the broker is away; an error only
    /// when the broker refuses it for good.
    async fn create_topic_retrying(self: &Arc<Self>, topic: &str) -> Result<()> {
        let mut backoff = Duration::from_millis(100);
        let mut warned = false;
        loop {
            match self.create_topic(topic).await {
                Ok(()) => {
                    debug!(%topic, "kafka topic ready");
                    return Ok(());
                }
                Err((true, reason)) => {
                    // Not allowed to create it, say: fine if it exists.
                    if self.topic_exists(topic).await {
                        return Ok(());
                    }
                    warn!(%topic, %reason, "kafka: cannot create a topic; its pushes are refused");
                    return Err(Error::new(
                        ErrorKind::InvalidInput,
                        format!("kafka: cannot create topic {topic}: {reason}"),
                    ));
                }
                Err((false, reason)) => {
                    if !warned {
                        warn!(%topic, %reason, "kafka: cannot create a topic yet; pushes wait and it is retried");
                        warned = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn topic_exists(self: &Arc<Self>, topic: &str) -> bool {
        let topic = topic.to_string();
        let inner = self.clone();
        tokio::task::spawn_blocking(move || inner.has_topic(&topic).unwrap_or(false))
            .await
            .unwrap_or(false)
    }

    /// Whether `topic` exists, asked of the broker (which also refreshes
    /// what librdkafka knows of it).
    fn has_topic(&self, topic: &str) -> Result<bool> {
        let meta = self
            .admin
            .inner()
            .fetch_metadata(Some(topic), self.config.timeout)
            .map_err(|e| kafka_error("topic metadata", e))?;
        Ok(meta
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()))
    }

    /// The offset the next message of `stream` gets (0 for no topic). Asks
    /// for the topic's metadata first: librdkafka would otherwise go on
    /// taking a topic created since (through another hub) for unknown.
    fn end_of(&self, stream: &str) -> Result<u64> {
        let topic = self.config.topic(stream);
        if !self.has_topic(&topic)? {
            return Ok(0);
        }
        match self
            .admin
            .inner()
            .fetch_watermarks(&topic, 0, self.config.timeout)
        {
            Ok((_, high)) => Ok(u64::try_from(high).unwrap_or(0)),
            Err(e) if is_unknown_topic(&e) => Ok(0),
            Err(e) => Err(kafka_error("reading the end of a topic", e)),
        }
    }

    /// An idle reader of `stream` already at `from`, if there is one.
    fn positioned_reader(&self, stream: &str, from: u64) -> Option<Arc<Mutex<Reader>>> {
        let all = lock(&self.readers);
        idle_reader(&all, stream, Some(from)).map(|i| all[i].clone())
    }

    /// An idle reader for `stream`, preferably one already at `from`, and a
    /// reader it replaces (to be dropped on a blocking thread: closing a
    /// consumer waits for librdkafka).
    #[allow(clippy::type_complexity)]
    fn reader(
        &self,
        stream: &str,
        from: u64,
    ) -> Result<(Arc<Mutex<Reader>>, Option<Arc<Mutex<Reader>>>)> {
        let mut all = lock(&self.readers);
        if let Some(i) =
            idle_reader(&all, stream, Some(from)).or_else(|| idle_reader(&all, stream, None))
        {
            return Ok((all[i].clone(), None));
        }
        // A slot: a free one, or the idle reader unused longest.
        let slot = if all.len() < MAX_CLIENTS {
            None
        } else {
            let oldest = all
                .iter()
                .enumerate()
                .filter(|(_, r)| is_idle(r))
                .min_by_key(|(_, r)| lock(r).last_used)
                .map(|(i, _)| i);
            match oldest {
                Some(i) => Some(i),
                None => {
                    return Err(Error::new(
                        ErrorKind::ResourceExhausted,
                        "kafka: every topic reader is busy",
                    ))
                }
            }
        };
        let consumer: HubConsumer = self
            .config
            .client_config()
            // librdkafka needs a group to assign partitions; this one never
            // commits, and no client id can name it ('#' is not allowed).
            .set("group.id", format!("{}hub-reader#", self.config.prefix))
            .set("enable.partition.eof", "true")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10")
            .set("queued.max.messages.kbytes", "4096")
            .create_with_context(HubKafkaContext)
            .map_err(|e| kafka_error("cannot create a consumer", e))?;
        let reader = Arc::new(Mutex::new(Reader {
            consumer,
            stream: stream.to_string(),
            topic: self.config.topic(stream),
            position: None,
            at_end: false,
            held: None,
            last_used: Instant::now(),
        }));
        let replaced = match slot {
            Some(i) => Some(std::mem::replace(&mut all[i], reader.clone())),
            None => {
                all.push(reader.clone());
                None
            }
        };
        Ok((reader, replaced))
    }

    /// The client that commits and reads `client`'s offsets.
    fn group(&self, client: &str) -> Result<GroupClient> {
        let mut groups = lock(&self.groups);
        if let Some((c, used)) = groups.get_mut(client) {
            *used = Instant::now();
            return Ok(c.clone());
        }
        if groups.len() >= MAX_CLIENTS {
            let oldest = groups
                .iter()
                .filter(|(_, (c, _))| Arc::strong_count(c) == 1)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                groups.remove(&k);
            }
        }
        let consumer: HubConsumer = self
            .config
            .client_config()
            .set("group.id", self.config.group(client))
            .set("enable.auto.commit", "false")
            .create_with_context(HubKafkaContext)
            .map_err(|e| kafka_error("cannot create a consumer", e))?;
        let consumer = Arc::new(Mutex::new(Group {
            consumer,
            saved: HashMap::new(),
        }));
        groups.insert(client.to_string(), (consumer.clone(), Instant::now()));
        Ok(consumer)
    }

    fn partition(&self, stream: &str, offset: Offset) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.config.topic(stream), 0, offset)
            .map_err(|e| kafka_error("offsets", e))?;
        Ok(tpl)
    }
}

#[async_trait]
impl StreamStore for KafkaStore {
    fn submit_push(&self, stream: &str, data: Vec<u8>) -> PendingPush {
        self.inner.submit(stream, data, None)
    }

    fn submit_push_fenced(&self, stream: &str, data: Vec<u8>, fence: &Fence) -> PendingPush {
        self.inner.submit(stream, data, Some(fence.clone()))
    }

    async fn pull(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        self.pull_waiting(stream, from, limit, max_bytes, Duration::ZERO)
            .await
    }

    async fn pull_waiting(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
        wait: Duration,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let (reader, replaced) = match self.inner.positioned_reader(stream, from) {
            Some(r) => (r, None),
            None => {
                // Nothing positioned there: look before taking a reader, so
                // that clients waiting at the end of many streams do not
                // each cost a consumer.
                if !self.readable(stream, from).await? {
                    tokio::time::sleep(wait.min(NOTHING_YET_POLL)).await;
                    return Ok(Vec::new());
                }
                self.inner.reader(stream, from)?
            }
        };
        let timeout = self.inner.config.timeout;
        self.blocking(move |_| {
            drop(replaced);
            lock(&reader).pull(from, limit, max_bytes, timeout, wait)
        })
        .await
    }

    async fn next_index(&self, stream: &str) -> Result<u64> {
        let stream = stream.to_string();
        self.blocking(move |inner| inner.end_of(&stream)).await
    }

    async fn get_index(&self, client: &str, stream: &str) -> Result<Option<u64>> {
        let (client, stream) = (client.to_string(), stream.to_string());
        self.blocking(move |inner| {
            let group = inner.group(&client)?;
            let tpl = inner.partition(&stream, Offset::Invalid)?;
            let committed = lock(&group)
                .consumer
                .committed_offsets(tpl, inner.config.timeout);
            let committed = match committed {
                Ok(c) => c,
                Err(e) if is_unknown_topic(&e) => return Ok(None),
                Err(e) => return Err(kafka_error("committed offsets", e)),
            };
            let topic = inner.config.topic(&stream);
            Ok(committed
                .find_partition(&topic, 0)
                .and_then(|p| match p.offset() {
                    Offset::Offset(o) => u64::try_from(o).ok(),
                    _ => None,
                }))
        })
        .await
    }

    async fn save_index(&self, client: &str, stream: &str, index: u64) -> Result<()> {
        let (client, stream) = (client.to_string(), stream.to_string());
        let number = self.inner.saves.fetch_add(1, Ordering::Relaxed);
        self.blocking(move |inner| {
            let group = inner.group(&client)?;
            let tpl = inner.partition(&stream, offset_of(index)?)?;
            let mut group = lock(&group);
            if group.saved.get(&stream).is_some_and(|&last| last > number) {
                debug!(%client, %stream, index, "kafka: skipped an index save overtaken by a later one");
                return Ok(());
            }
            group
                .consumer
                .commit(&tpl, CommitMode::Sync)
                .map_err(|e| kafka_error("commit offset", e))?;
            group.saved.insert(stream, number);
            Ok(())
        })
        .await
    }

    fn has_other_writers(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_fit_kafka() {
        let c = KafkaConfig::new("127.0.0.1:9092");
        assert_eq!(c.topic("a-b"), "ockam_a-b");
        assert_eq!(c.group("client-1"), "ockam_client-1");
        let long = "x".repeat(249);
        let t = c.topic(&long);
        assert_eq!(t.len(), MAX_TOPIC_LEN);
        assert_ne!(t, c.topic(&"x".repeat(248)));
        let bare = KafkaConfig {
            prefix: String::new(),
            ..c.clone()
        };
        assert_ne!(bare.topic("."), ".");
        assert_ne!(bare.topic(".."), "..");
    }

    #[test]
    fn batches_fit_one_produce_request() {
        let held = |sizes: &[usize]| -> Held {
            sizes
                .iter()
                .map(|&n| HeldPush {
                    data: vec![0; n],
                    done: oneshot::channel().0,
                    fence: None,
                })
                .collect()
        };
        let mut h = held(&[1024; 5000]);
        assert_eq!(take_batch(&mut h).len(), MAX_BATCH_BYTES / 1024);
        let mut h = held(&[10; 10_000]);
        assert_eq!(take_batch(&mut h).len(), MAX_BATCH);
        assert_eq!(h.len(), 10_000 - MAX_BATCH);
        // A stream client's whole window of 1 KiB messages is one batch.
        let mut h = held(&[1024; ockam_stream_client::MAX_IN_FLIGHT]);
        assert_eq!(take_batch(&mut h).len(), ockam_stream_client::MAX_IN_FLIGHT);
        // One message over the byte cap still goes, alone.
        let mut h = held(&[MAX_BATCH_BYTES + 1, 1]);
        assert_eq!(take_batch(&mut h).len(), 1);
        assert_eq!(h.len(), 1);
        let mut h = held(&[3]);
        assert_eq!(take_batch(&mut h).len(), 1);
        assert!(h.is_empty());
    }

    #[test]
    fn bad_configs_are_refused() {
        let c = KafkaConfig::new("127.0.0.1:9092");
        assert!(KafkaConfig {
            prefix: "a/b".into(),
            ..c.clone()
        }
        .validate()
        .is_err());
        assert!(KafkaConfig {
            replication_factor: 0,
            ..c.clone()
        }
        .validate()
        .is_err());
        assert!(KafkaConfig {
            bootstrap_servers: " ".into(),
            ..c.clone()
        }
        .validate()
        .is_err());
        assert!(c.validate().is_ok());
    }
}

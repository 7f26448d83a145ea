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

use crate::storage::{PendingPush, StreamStore};
use async_trait::async_trait;
use ockam_core::{Error, ErrorKind, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureRecord;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Display;
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

/// A stream's topic, as far as this hub knows.
enum TopicState {
    /// Exists: pushes go straight to the producer.
    Ready,
    /// Being created: pushes wait here, in order.
    Creating(Vec<(Vec<u8>, oneshot::Sender<PendingPush>)>),
}

/// A consumer reading one stream's topic, kept between pulls so that a
/// client reading on from where it stopped gets messages already fetched.
struct Reader {
    consumer: BaseConsumer,
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
    fn pull(
        &mut self,
        from: u64,
        limit: usize,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        self.last_used = Instant::now();
        if self.position != Some(from) {
            // Reposition, unless there is nothing there to read.
            match self.consumer.fetch_watermarks(&self.topic, 0, timeout) {
                Ok((_, high)) if (from as i128) <= high as i128 => {}
                Ok(_) => return Ok(Vec::new()),
                Err(e) if is_unknown_topic(&e) => return Ok(Vec::new()),
                Err(e) => return Err(kafka_error("reading the end of a topic", e)),
            }
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
            // Block only for the first message, and only while the end of
            // the partition has not been seen: then a pull answers at once.
            let wait = if self.at_end || !out.is_empty() {
                Duration::ZERO
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            match self.consumer.poll(wait) {
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
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    topics: Mutex<HashMap<String, TopicState>>,
    readers: Mutex<Vec<Arc<Mutex<Reader>>>>,
    groups: Mutex<HashMap<String, (Arc<BaseConsumer>, Instant)>>,
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
        let producer: FutureProducer = config
            .client_config()
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            .create()
            .map_err(|e| kafka_error("cannot create the producer", e))?;
        let admin: AdminClient<DefaultClientContext> = config
            .client_config()
            .create()
            .map_err(|e| kafka_error("cannot create the admin client", e))?;
        Ok(KafkaStore {
            inner: Arc::new(Inner {
                config,
                producer,
                admin,
                topics: Mutex::new(HashMap::new()),
                readers: Mutex::new(Vec::new()),
                groups: Mutex::new(HashMap::new()),
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
                .producer
                .client()
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

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| kafka_error("task", e))?
    }
}

impl Inner {
    fn produce(&self, stream: &str, data: Vec<u8>) -> PendingPush {
        let topic = self.config.topic(stream);
        let record = FutureRecord::<(), [u8]>::to(&topic)
            .partition(0)
            .payload(&data);
        match self.producer.send_result(record) {
            Ok(delivery) => Box::pin(async move {
                match delivery.await {
                    Ok(Ok(d)) => u64::try_from(d.offset)
                        .map_err(|_| kafka_error("produce", "the broker gave no offset")),
                    Ok(Err((e, _))) => Err(kafka_error("produce", e)),
                    Err(_) => Err(kafka_error("produce", "the producer stopped")),
                }
            }),
            Err((e, _)) => {
                let e = kafka_error("produce", e);
                Box::pin(async move { Err(e) })
            }
        }
    }

    async fn create_topic(&self, topic: &str) -> std::result::Result<(), (bool, String)> {
        let new = NewTopic::new(
            topic,
            1,
            TopicReplication::Fixed(self.config.replication_factor),
        );
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

    /// Creates the topic of `stream`, retrying while the broker is away,
    /// then produces every push held meanwhile, in order.
    async fn make_ready(self: Arc<Self>, stream: String) {
        let topic = self.config.topic(&stream);
        let mut backoff = Duration::from_millis(100);
        let mut warned = false;
        let outcome = loop {
            match self.create_topic(&topic).await {
                Ok(()) => break Ok(()),
                Err((true, reason)) => break Err(reason),
                Err((false, reason)) => {
                    if !warned {
                        warn!(%topic, %reason, "kafka: cannot create a topic yet; pushes wait and it is retried");
                        warned = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        let mut topics = lock(&self.topics);
        let held = match topics.remove(&stream) {
            Some(TopicState::Creating(held)) => held,
            _ => Vec::new(),
        };
        match outcome {
            Ok(()) => {
                debug!(%topic, held = held.len(), "kafka topic ready");
                for (data, tx) in held {
                    let _ = tx.send(self.produce(&stream, data));
                }
                topics.insert(stream, TopicState::Ready);
            }
            Err(reason) => {
                warn!(%topic, %reason, "kafka: cannot create a topic; its pushes are refused");
                for (_, tx) in held {
                    let reason = reason.clone();
                    let _ = tx.send(Box::pin(
                        async move { Err(kafka_error("create topic", reason)) },
                    ));
                }
            }
        }
    }

    /// An idle reader for `stream`, preferably one already at `from`.
    fn reader(&self, stream: &str, from: u64) -> Result<Arc<Mutex<Reader>>> {
        let mut all = lock(&self.readers);
        let idle = |r: &Arc<Mutex<Reader>>| Arc::strong_count(r) == 1 && r.try_lock().is_ok();
        let mut best: Option<(usize, u8)> = None;
        for (i, r) in all.iter().enumerate() {
            if !idle(r) {
                continue;
            }
            let g = lock(r);
            if g.stream != stream {
                continue;
            }
            let rank = if g.position == Some(from) { 2 } else { 1 };
            if best.is_none_or(|(_, b)| rank > b) {
                best = Some((i, rank));
            }
        }
        if let Some((i, _)) = best {
            return Ok(all[i].clone());
        }
        let consumer: BaseConsumer = self
            .config
            .client_config()
            .set("enable.partition.eof", "true")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100")
            .set("queued.max.messages.kbytes", "16384")
            .create()
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
        if all.len() >= MAX_CLIENTS {
            // Replace the reader unused longest, if one is idle.
            let oldest = all
                .iter()
                .enumerate()
                .filter(|(_, r)| idle(r))
                .min_by_key(|(_, r)| lock(r).last_used)
                .map(|(i, _)| i);
            match oldest {
                Some(i) => all[i] = reader.clone(),
                None => return Ok(reader), // all busy: this one is not kept
            }
        } else {
            all.push(reader.clone());
        }
        Ok(reader)
    }

    /// The client that commits and reads `client`'s offsets.
    fn group(&self, client: &str) -> Result<Arc<BaseConsumer>> {
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
        let consumer: BaseConsumer = self
            .config
            .client_config()
            .set("group.id", self.config.group(client))
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| kafka_error("cannot create a consumer", e))?;
        let consumer = Arc::new(consumer);
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
        let mut topics = lock(&self.inner.topics);
        let (tx, rx) = oneshot::channel();
        match topics.get_mut(stream) {
            Some(TopicState::Ready) => return self.inner.produce(stream, data),
            Some(TopicState::Creating(held)) => {
                if held.len() >= MAX_HELD {
                    return Box::pin(async {
                        Err(Error::new(
                            ErrorKind::ResourceExhausted,
                            "kafka: too many pushes waiting for the broker",
                        ))
                    });
                }
                held.push((data, tx));
            }
            None => {
                topics.insert(stream.to_string(), TopicState::Creating(vec![(data, tx)]));
                tokio::spawn(self.inner.clone().make_ready(stream.to_string()));
            }
        }
        Box::pin(async move {
            match rx.await {
                Ok(pending) => pending.await,
                Err(_) => Err(kafka_error("produce", "the store stopped")),
            }
        })
    }

    async fn pull(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let reader = self.inner.reader(stream, from)?;
        let timeout = self.inner.config.timeout;
        self.blocking(move |_| lock(&reader).pull(from, limit, max_bytes, timeout))
            .await
    }

    async fn next_index(&self, stream: &str) -> Result<u64> {
        let stream = stream.to_string();
        self.blocking(move |inner| {
            let topic = inner.config.topic(&stream);
            match inner
                .producer
                .client()
                .fetch_watermarks(&topic, 0, inner.config.timeout)
            {
                Ok((_, high)) => Ok(u64::try_from(high).unwrap_or(0)),
                Err(e) if is_unknown_topic(&e) => Ok(0),
                Err(e) => Err(kafka_error("reading the end of a topic", e)),
            }
        })
        .await
    }

    async fn get_index(&self, client: &str, stream: &str) -> Result<Option<u64>> {
        let (client, stream) = (client.to_string(), stream.to_string());
        self.blocking(move |inner| {
            let group = inner.group(&client)?;
            let tpl = inner.partition(&stream, Offset::Invalid)?;
            let committed = match group.committed_offsets(tpl, inner.config.timeout) {
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
        self.blocking(move |inner| {
            let group = inner.group(&client)?;
            let tpl = inner.partition(&stream, offset_of(index)?)?;
            group
                .commit(&tpl, CommitMode::Sync)
                .map_err(|e| kafka_error("commit offset", e))
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

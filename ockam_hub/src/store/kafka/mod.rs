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

use crate::store::{after_gap, PendingPush, StreamStore, Ticket};
use async_trait::async_trait;
use ockam_core::internal::sync::lock;
use ockam_core::{Error, ErrorKind, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::FutureProducer;
use rdkafka::producer::FutureRecord;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::fmt::Display;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

mod ends;
mod groups;
mod reader;
mod writer;

use crate::store::kafka_config::KafkaConfig;
use ends::*;
use groups::*;
use reader::*;
use writer::*;

/// The context of the hub's Kafka clients: librdkafka's error events at
/// the level they deserve (the end of a partition is no error; a broker
/// that is away is worth a warning, and the hub waits for it).
#[derive(Clone, Copy, Default)]
pub(crate) struct HubKafkaContext;

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

/// Most topic readers (and, separately, consumer-group clients) kept open.
const MAX_CLIENTS: usize = 64;

type HubConsumer = BaseConsumer<HubKafkaContext>;

fn kafka_error(what: &str, e: impl Display) -> Error {
    Error::new(ErrorKind::Unavailable, format!("kafka: {what}: {e}"))
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

struct Inner {
    config: KafkaConfig,
    /// The producer and its generation: a new one replaces it after a
    /// failed produce (see `Inner::produce`).
    producer: std::sync::RwLock<(u64, FutureProducer<HubKafkaContext>)>,
    admin: AdminClient<HubKafkaContext>,
    streams: Mutex<HashMap<String, StreamQueue>>,
    readers: Mutex<Vec<Arc<Mutex<Reader>>>>,
    /// One per reader that may be in use at once: pulls queue for one
    /// (first come, first served) instead of being refused when every
    /// reader is taken, and hold it only while they read (never while
    /// they wait at the end of a stream: see [`Ends`]).
    reader_permits: Arc<tokio::sync::Semaphore>,
    /// Where the topics that pulls asked about end (see [`ends`]).
    ends: Ends,
    /// The client [`Ends`] asks the broker with.
    ends_client: HubConsumer,
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
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when `config` is invalid (no bootstrap
    /// servers, a bad topic prefix or replication factor);
    /// [`ErrorKind::Unavailable`] when librdkafka cannot create a client.
    pub fn new(config: KafkaConfig) -> Result<KafkaStore> {
        config.validate()?;
        let producer = new_producer(&config)?;
        let admin: AdminClient<HubKafkaContext> = config
            .client_config()
            .create_with_context(HubKafkaContext)
            .map_err(|e| kafka_error("cannot create the admin client", e))?;
        let ends_client: HubConsumer = config
            .client_config()
            // Only asks for offsets: never joins this group, never commits.
            .set("group.id", format!("{}hub-reader#", config.prefix))
            .set("enable.auto.commit", "false")
            .create_with_context(HubKafkaContext)
            .map_err(|e| kafka_error("cannot create a consumer", e))?;
        Ok(KafkaStore {
            inner: Arc::new(Inner {
                config,
                producer: std::sync::RwLock::new((0, producer)),
                admin,
                streams: Mutex::new(HashMap::new()),
                readers: Mutex::new(Vec::new()),
                reader_permits: Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS)),
                ends: Ends::default(),
                ends_client,
                groups: Mutex::new(HashMap::new()),
                saves: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &KafkaConfig {
        &self.inner.config
    }

    /// What the store keeps in memory now: see [`KafkaStats`].
    pub fn stats(&self) -> KafkaStats {
        let (readers, fetching_readers) = {
            let all = lock(&self.inner.readers);
            (
                all.len(),
                all.iter().filter(|r| reader::is_fetching(r)).count(),
            )
        };
        KafkaStats {
            streams: lock(&self.inner.streams).len(),
            readers,
            fetching_readers,
            groups: lock(&self.inner.groups).len(),
            watched: self.inner.ends.len(),
        }
    }

    /// Asks the cluster for its brokers; the number of brokers on success.
    ///
    /// # Errors
    /// [`ErrorKind::Unavailable`] when the cluster's metadata cannot be had
    /// within the configured timeout (broker down or unreachable).
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

    /// Where `stream` ends: as the end watcher read it lately, or asked of
    /// the broker now. Either way the watcher watches the stream's topic
    /// from now on.
    async fn end(&self, stream: &str) -> Result<u64> {
        let topic = self.inner.config.topic(stream);
        if let Some(end) = self.inner.ends.fresh(&topic) {
            return Ok(end);
        }
        let stream = stream.to_string();
        self.blocking(move |inner| {
            let end = inner.end_of(&stream)?;
            inner.ends.advance(&topic, end, true);
            Ok(end)
        })
        .await
    }

    /// Up to `limit` messages (`max_bytes` in all, but at least one) from
    /// `from` on, read by a topic reader, where the topic has a message at
    /// `from`: waits for the first one up to the broker timeout.
    ///
    /// # Errors
    /// Every reader stayed busy for the broker timeout
    /// (`ResourceExhausted`); the broker failed or did not answer in time.
    async fn read(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        // Pulls queue for a reader (first come, first served).
        let budget = self.inner.config.timeout;
        let permits = self.inner.reader_permits.clone();
        let Ok(Ok(permit)) = tokio::time::timeout(budget, permits.acquire_owned()).await else {
            return Err(Error::new(
                ErrorKind::ResourceExhausted,
                format!("kafka: every topic reader stayed busy for {budget:?}"),
            ));
        };
        let (reader, replaced) = self.inner.reader(stream, from)?;
        self.blocking(move |inner| {
            drop(replaced);
            let out = lock(&reader).pull(from, limit, max_bytes, inner.config.timeout);
            drop(reader);
            // Last: the reader is idle again before the next pull may take it.
            drop(permit);
            out
        })
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

/// What a [`KafkaStore`] keeps in memory (for operators and tests): entries
/// unused for the hub's idle timeout are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KafkaStats {
    /// Streams with a write queue (pushes waiting, or written lately).
    pub streams: usize,
    /// Topic readers (consumers kept positioned), at most 64.
    pub readers: usize,
    /// Readers fetching from the broker (not paused): those pulled from in
    /// the last 250 ms or so; an idle reader sends the broker nothing.
    pub fetching_readers: usize,
    /// Consumer-group clients (one per client id lately seen), at most 64.
    pub groups: usize,
    /// Topics whose end the hub watches for waiting pulls (asked about
    /// lately).
    pub watched: usize,
}

impl Inner {
    /// Drops the write queues, readers and group clients unused for
    /// `idle` (blocking: closing a consumer waits for librdkafka).
    fn forget_idle(&self, idle: Duration) {
        let now = Instant::now();
        let old = |t: Instant| now.saturating_duration_since(t) >= idle;
        self.ends.watched(idle);
        lock(&self.streams).retain(|_, q| !q.is_idle() || !old(q.last_used()));
        let readers: Vec<_> = {
            let mut all = lock(&self.readers);
            let (gone, kept) = std::mem::take(&mut *all)
                .into_iter()
                .partition(|r| is_idle(r) && old(lock(r).last_used()));
            *all = kept;
            gone
        };
        let groups: Vec<_> = {
            let mut all = lock(&self.groups);
            let gone: Vec<String> = all
                .iter()
                .filter(|(_, (c, used))| Arc::strong_count(c) == 1 && old(*used))
                .map(|(k, _)| k.clone())
                .collect();
            gone.into_iter().filter_map(|k| all.remove(&k)).collect()
        };
        if !readers.is_empty() || !groups.is_empty() {
            debug!(
                readers = readers.len(),
                groups = groups.len(),
                "kafka: closing idle clients"
            );
        }
        drop(readers);
        drop(groups);
    }

    /// Whether `topic` exists, asked of the broker (which also refreshes
    /// what librdkafka knows of it).
    fn has_topic(&self, topic: &str) -> Result<bool> {
        let meta = self
            .admin
            .inner()
            .fetch_metadata(Some(topic), self.config.timeout)
            .map_err(|e| kafka_error("topic metadata", e))?;
        let Some(t) = meta.topics().iter().find(|t| t.name() == topic) else {
            return Ok(false);
        };
        match t.error() {
            None => Ok(!t.partitions().is_empty()),
            Some(e) => {
                let code = RDKafkaErrorCode::from(e);
                if matches!(
                    code,
                    RDKafkaErrorCode::UnknownTopicOrPartition
                        | RDKafkaErrorCode::UnknownTopic
                        | RDKafkaErrorCode::UnknownPartition
                ) {
                    Ok(false)
                } else {
                    // Not "no such topic": a stream's end is not 0 for it.
                    Err(kafka_error("topic metadata", code))
                }
            }
        }
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
}

#[async_trait]
impl StreamStore for KafkaStore {
    fn submit_push(&self, stream: &str, data: Vec<u8>, ticket: Ticket) -> PendingPush {
        self.inner.submit(stream, data, ticket)
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
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.watch_ends();
        let topic = self.inner.config.topic(stream);
        let deadline = Instant::now() + wait;
        loop {
            // A reader only once there is something to read: clients
            // waiting at the end of many streams wait on the end watcher,
            // not each on a reader of its own.
            let end = self.end(stream).await?;
            if end > from {
                let out = self.read(stream, from, limit, max_bytes).await?;
                if !out.is_empty() {
                    return Ok(out);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            if end > from {
                // The broker said the topic goes on, the reader found its
                // end: look again at the next reading of the end.
                debug!(%stream, from, end, "kafka: a reader found the end of a topic before its end");
                tokio::time::sleep(left.min(END_POLL)).await;
            } else {
                self.inner.ends.wait_past(&topic, from, left).await;
            }
        }
    }

    async fn next_index(&self, stream: &str) -> Result<u64> {
        let stream = stream.to_string();
        self.blocking(move |inner| inner.end_of(&stream)).await
    }

    /// Without a broker round trip when the end watcher or a push already
    /// showed the topic reaching `index` (every waiting pull ends with
    /// this check: 72 of them asking the broker at once queued for
    /// seconds behind each other on one connection). A topic that lost
    /// records is noticed at the watcher's next poll (every
    /// 20 ms); a client's `Get` of its saved
    /// position always asks the broker.
    async fn end_before(&self, stream: &str, index: u64) -> Result<Option<u64>> {
        if self
            .inner
            .ends
            .reaches(&self.inner.config.topic(stream), index)
        {
            return Ok(None);
        }
        let end = self.next_index(stream).await?;
        Ok((index > end).then_some(end))
    }

    async fn get_index(&self, client: &str, stream: &str) -> Result<Option<u64>> {
        let (client, stream) = (client.to_string(), stream.to_string());
        self.blocking(move |inner| inner.committed(&client, &stream))
            .await
    }

    async fn save_index(&self, client: &str, stream: &str, index: u64) -> Result<()> {
        let (client, stream) = (client.to_string(), stream.to_string());
        let number = self.inner.saves.fetch_add(1, Ordering::Relaxed);
        self.blocking(move |inner| inner.commit(&client, &stream, index, number))
            .await
    }

    fn has_other_writers(&self) -> bool {
        true
    }

    async fn forget_idle(&self, idle: Duration) {
        let inner = self.inner.clone();
        // Closing consumers waits for librdkafka: not on a runtime thread.
        let _ = tokio::task::spawn_blocking(move || inner.forget_idle(idle)).await;
    }
}

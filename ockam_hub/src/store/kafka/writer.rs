//! The writer of each stream: pushes handed to the producer in order.

use super::*;
use ockam_core::internal::sync::{read, write};

/// Most pushes held for one stream while its topic is being created.
pub(super) const MAX_HELD: usize = 100_000;
/// Most pushes, and bytes, handed to the producer at once for one stream:
/// within one produce request (`batch.size` below), and more than a stream
/// client keeps unconfirmed, so that a client's whole window goes in one
/// batch instead of a big one and a small one taking turns.
pub(super) const MAX_BATCH: usize = 8192;
pub(super) const MAX_BATCH_BYTES: usize = 3 * 1024 * 1024 + 512 * 1024;
pub(super) const PRODUCER_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Longest wait between two attempts to create a topic.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Largest message the producer sends: above the hub's 8 MiB limit.
pub(super) const MAX_MESSAGE_BYTES: usize = 9 * 1024 * 1024;

/// The first pushes of `held`: at most `MAX_BATCH` and `MAX_BATCH_BYTES`,
/// but always one if there is any.
pub(super) fn take_batch(held: &mut Held) -> Held {
    if held.is_empty() {
        return Held::new();
    }
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

pub(super) fn new_producer(config: &KafkaConfig) -> Result<FutureProducer<HubKafkaContext>> {
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
pub(super) fn kafka_produce_error(e: &KafkaError) -> Error {
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

/// Pushes waiting for a stream's writer.
pub(super) type Held = Vec<HeldPush>;

/// A push waiting for its stream's writer.
pub(super) struct HeldPush {
    data: Vec<u8>,
    /// Taken when answered.
    done: Option<oneshot::Sender<Result<u64>>>,
    /// Its place in its submitter's sequence (the gap rule).
    ticket: Ticket,
}

impl HeldPush {
    /// Refuses the push and tells its submitter to store nothing more.
    pub(super) fn refuse(mut self, e: Error) {
        self.ticket.fail();
        if let Some(done) = self.done.take() {
            let _ = done.send(Err(e));
        }
    }

    /// Answers the push: stored at this offset.
    fn stored(mut self, offset: Result<u64>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(offset);
        }
    }
}

impl Drop for HeldPush {
    /// A push dropped unanswered (its writer failed with it in flight) was
    /// not stored as far as anyone knows: nothing after it from its
    /// submitter may be.
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            self.ticket.fail();
            let _ = done.send(Err(kafka_error("produce", "the stream's writer failed")));
        }
    }
}

/// One stream's pushes, written in order by one writer task at a time.
pub(super) struct StreamQueue {
    /// The topic is known to exist.
    ready: bool,
    /// A writer task is at work on this stream.
    busy: bool,
    /// Pushes not yet handed to the producer, in order.
    held: Held,
    /// When a push was last submitted: an idle queue is forgotten
    /// ([`Inner::forget_idle_queues`]).
    last_used: Instant,
}

impl Default for StreamQueue {
    fn default() -> Self {
        StreamQueue {
            ready: false,
            busy: false,
            held: Held::new(),
            last_used: Instant::now(),
        }
    }
}

impl StreamQueue {
    /// No writer at work and nothing waiting.
    pub(super) fn is_idle(&self) -> bool {
        !self.busy && self.held.is_empty()
    }

    /// When a push was last submitted.
    pub(super) fn last_used(&self) -> Instant {
        self.last_used
    }
}

/// Ends a stream's writer, whichever way its task ends: a writer that
/// returns, fails or panics frees its stream for the next writer and
/// refuses what it still holds (the gap rule: its submitters resend), so
/// that no stream is left with a writer that will never come.
struct WriterGuard<'a> {
    inner: &'a Inner,
    stream: &'a str,
    /// Set when the writer ends normally (nothing held, `busy` cleared).
    finished: bool,
}

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let held = {
            let mut streams = lock(&self.inner.streams);
            match streams.get_mut(self.stream) {
                Some(q) => {
                    q.busy = false;
                    std::mem::take(&mut q.held)
                }
                None => Held::new(),
            }
        };
        tracing::error!(stream = %self.stream, refused = held.len(), "kafka: a stream's writer ended unexpectedly; its waiting pushes are refused");
        for p in held {
            p.refuse(kafka_error("produce", "the stream's writer failed"));
        }
    }
}

impl Inner {
    /// Queues a push of `stream`; starts the stream's writer if idle.
    pub(super) fn submit(
        self: &Arc<Self>,
        stream: &str,
        data: Vec<u8>,
        ticket: Ticket,
    ) -> PendingPush {
        let (tx, rx) = oneshot::channel();
        {
            let mut streams = lock(&self.streams);
            let q = streams.entry(stream.to_string()).or_default();
            if q.held.len() >= MAX_HELD {
                // Not stored: nothing after it from its submitter either.
                ticket.fail();
                return Box::pin(async {
                    Err(Error::new(
                        ErrorKind::ResourceExhausted,
                        "kafka: too many pushes waiting for the broker",
                    ))
                });
            }
            q.last_used = Instant::now();
            q.held.push(HeldPush {
                data,
                done: Some(tx),
                ticket,
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
    pub(super) async fn write(self: Arc<Self>, stream: String) {
        let topic = self.config.topic(&stream);
        let mut guard = WriterGuard {
            inner: &self,
            stream: &stream,
            finished: false,
        };
        loop {
            let (ready, batch, fenced) = {
                let mut streams = lock(&self.streams);
                let q = streams.entry(stream.clone()).or_default();
                // Pushes of submitters that failed meanwhile are refused.
                let (held, fenced): (Held, Held) = std::mem::take(&mut q.held)
                    .into_iter()
                    .partition(|p| p.ticket.may_store());
                q.held = held;
                if q.held.is_empty() && fenced.is_empty() {
                    q.busy = false;
                    guard.finished = true;
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
                p.refuse(after_gap());
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
    pub(super) async fn write_batch(
        &self,
        topic: &str,
        batch: Held,
    ) -> std::result::Result<(), (Error, bool)> {
        let (generation, producer) = {
            let p = read(&self.producer);
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
                    let offset = u64::try_from(offset)
                        .map_err(|_| kafka_error("produce", "the broker gave no offset"));
                    if let Ok(o) = offset {
                        // Waiting pulls on this topic need not wait for the
                        // end watcher's next look.
                        self.ends.advance(topic, o + 1, false);
                    }
                    p.stored(offset);
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
    pub(super) fn note_failure(
        &self,
        failure: &mut Option<Error>,
        e: &KafkaError,
        generation: u64,
    ) -> Error {
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
    pub(super) fn renew_producer(&self, generation: u64) {
        let mut p = write(&self.producer);
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

    pub(super) async fn create_topic(
        &self,
        topic: &str,
    ) -> std::result::Result<(), (bool, String)> {
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
    pub(super) async fn create_topic_retrying(self: &Arc<Self>, topic: &str) -> Result<()> {
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

    pub(super) async fn topic_exists(self: &Arc<Self>, topic: &str) -> bool {
        let topic = topic.to_string();
        let inner = self.clone();
        tokio::task::spawn_blocking(move || inner.has_topic(&topic).unwrap_or(false))
            .await
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_fit_one_produce_request() {
        let held = |sizes: &[usize]| -> Held {
            sizes
                .iter()
                .map(|&n| HeldPush {
                    data: vec![0; n],
                    done: Some(oneshot::channel().0),
                    ticket: Ticket::alone(),
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
}

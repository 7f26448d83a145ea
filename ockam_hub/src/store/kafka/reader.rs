//! Topic readers: consumers kept positioned between pulls.

use super::*;

/// Nobody uses this reader now.
pub(super) fn is_idle(r: &Arc<Mutex<Reader>>) -> bool {
    Arc::strong_count(r) == 1 && r.try_lock().is_ok()
}

/// The index of an idle reader of `stream` (at `at`, if given).
pub(super) fn idle_reader(
    all: &[Arc<Mutex<Reader>>],
    stream: &str,
    at: Option<u64>,
) -> Option<usize> {
    all.iter().position(|r| {
        is_idle(r) && {
            let g = lock(r);
            g.stream == stream && (at.is_none() || g.position == at)
        }
    })
}

/// A consumer reading one stream's topic, kept between pulls so that a
/// client reading on from where it stopped does not make the broker look
/// the offset up again. While pulls keep coming, librdkafka fetches ahead
/// between them (the next pull finds its messages fetched already); a
/// reader unused for [`PAUSE_IDLE`] is paused, so that an idle reader
/// sends the broker nothing (librdkafka would otherwise fetch again and
/// again at the end of the partition: ~6,400 fetches/s for 64 idle
/// readers). Pausing drops what was fetched ahead, so it is not done
/// between the pulls of a busy reader: that made every pull wait for a
/// fetch round trip and cut `stream_kafka` throughput from ~10,000 to
/// ~400 msg/s.
pub(super) struct Reader {
    consumer: HubConsumer,
    stream: String,
    topic: String,
    /// The offset of the next message the consumer gives.
    position: Option<u64>,
    /// A message read but not returned (over a pull's byte cap).
    held: Option<(u64, Vec<u8>)>,
    last_used: Instant,
    /// Paused (see [`Reader`]): resumed by the next pull.
    paused: bool,
}

/// Whether `r` is not paused (a reader in use counts as fetching).
pub(super) fn is_fetching(r: &Arc<Mutex<Reader>>) -> bool {
    r.try_lock().map_or(true, |g| !g.paused)
}

/// A reader nobody pulled from for this long is paused.
pub(super) const PAUSE_IDLE: Duration = Duration::from_millis(250);

/// Pauses the readers idle for [`PAUSE_IDLE`] (see [`Reader`]).
pub(super) fn pause_idle(all: &[Arc<Mutex<Reader>>], now: Instant) {
    for r in all {
        if !is_idle(r) {
            continue;
        }
        let Ok(mut g) = r.try_lock() else { continue };
        if g.paused || now.saturating_duration_since(g.last_used) < PAUSE_IDLE {
            continue;
        }
        match g.consumer.pause(&g.partition()) {
            Ok(()) => g.paused = true,
            Err(e) => {
                debug!(topic = %g.topic, error = %e, "kafka: cannot pause a reader");
                g.position = None;
            }
        }
    }
}

/// Most times a reader steps back (1, 2, 4, ... offsets) to find the
/// record batch holding the offset asked for, when the broker answered
/// with a later one.
const MAX_STEP_BACKS: u32 = 16;

/// How a pull from one position went.
enum Fetched {
    Messages(Vec<(u64, Vec<u8>)>),
    /// The first record the broker gave is past the offset asked for.
    Skipped {
        got: u64,
    },
}

impl Reader {
    /// Its topic's partition (the only one).
    fn partition(&self) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, 0);
        tpl
    }

    /// When it last served a pull.
    pub(super) fn last_used(&self) -> Instant {
        self.last_used
    }

    /// Up to `limit` messages from `from` on, where the partition has a
    /// message at `from` (the store looked first): waits for the first one
    /// up to `timeout`, returns nothing if the consumer finds the end of
    /// the partition at `from`.
    ///
    /// The offsets of a stream's topic are contiguous (no compaction, no
    /// transactions), so a first record past `from` means the broker
    /// skipped records: Kafka answers a fetch at an offset inside a record
    /// batch with that batch, but some brokers (tansu 0.6) answer with the
    /// next one. The reader then fetches again from a little earlier (1, 2,
    /// 4, ... offsets back, dropping what comes before `from`) until it
    /// gets `from`, and fails with a clear error if it never does: it never
    /// skips silently.
    pub(super) fn pull(
        &mut self,
        from: u64,
        limit: usize,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut back = 0u64;
        let mut tries = 0;
        loop {
            match self.pull_from(from, back, limit, max_bytes, timeout)? {
                Fetched::Messages(out) => return Ok(out),
                Fetched::Skipped { got } if tries < MAX_STEP_BACKS && back < from => {
                    tries += 1;
                    back = (back * 2).max(1).min(from);
                    info!(topic = %self.topic, from, got, back, "kafka: the broker skipped records; fetching from earlier");
                }
                Fetched::Skipped { got } => {
                    self.position = None;
                    warn!(topic = %self.topic, from, got, "kafka: the broker does not return the records from an offset on");
                    return Err(kafka_error(
                        "reading a topic",
                        format!(
                            "asked for offset {from} of {}, the broker answered from offset {got} on (records {from}..{got} cannot be read)",
                            self.topic
                        ),
                    ));
                }
            }
        }
    }

    /// One attempt of [`pull`](Self::pull): reading from `from - back` on,
    /// dropping what comes before `from`.
    fn pull_from(
        &mut self,
        from: u64,
        back: u64,
        limit: usize,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<Fetched> {
        self.last_used = Instant::now();
        if self.position != Some(from) || back > 0 {
            debug!(topic = %self.topic, from, back, "kafka: positioning a reader");
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.topic, 0, offset_of(from - back)?)
                .map_err(|e| kafka_error("assign", e))?;
            self.consumer
                .assign(&tpl)
                .map_err(|e| kafka_error("assign", e))?;
            self.position = Some(from);
            self.held = None;
        }
        // Paused while idle (librdkafka then fetches again from the
        // message after the last one it gave).
        if self.paused {
            if let Err(e) = self.consumer.resume(&self.partition()) {
                self.position = None;
                return Err(kafka_error("resume", e));
            }
            self.paused = false;
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        if let Some((index, data)) = self.held.take() {
            bytes = data.len();
            out.push((index, data));
        }
        let deadline = Instant::now() + timeout;
        while out.len() < limit {
            // Block only for the first message, until the broker answers.
            let block = if out.is_empty() {
                deadline.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            match self.consumer.poll(block) {
                None => {
                    if !out.is_empty() {
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
                    let expected = self.position.unwrap_or(from);
                    if index < expected {
                        continue; // fetched before a reposition, or stepped back
                    }
                    if index > expected {
                        // Records skipped: never passed over silently.
                        self.position = None;
                        self.held = None;
                        if out.is_empty() {
                            return Ok(Fetched::Skipped { got: index });
                        }
                        // What came before the gap is good; the next pull
                        // positions the reader again, at the gap.
                        break;
                    }
                    self.position = Some(index + 1);
                    let data = m.payload().unwrap_or_default().to_vec();
                    if bytes.saturating_add(data.len()) > max_bytes && !out.is_empty() {
                        self.held = Some((index, data));
                        break;
                    }
                    bytes = bytes.saturating_add(data.len());
                    out.push((index, data));
                }
                // The end of the partition: what was read so far.
                Some(Err(KafkaError::PartitionEOF(_))) => break,
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
        Ok(Fetched::Messages(out))
    }
}

impl Inner {
    /// An idle reader for `stream`, preferably one already at `from`, and a
    /// reader it replaces (to be dropped on a blocking thread: closing a
    /// consumer waits for librdkafka).
    #[allow(clippy::type_complexity)]
    pub(super) fn reader(
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
            held: None,
            last_used: Instant::now(),
            paused: false,
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
}

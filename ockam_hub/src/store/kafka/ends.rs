//! Where each stream's topic ends, watched for every waiting pull at once.
//!
//! A pull waiting at the end of a stream neither holds a topic reader nor
//! asks the broker on its own: it waits on [`Ends`], which one task keeps
//! up to date for every topic some pull asked about lately, with one
//! `ListOffsets` request (timestamp -1, the log end offset, Kafka protocol
//! "ListOffsets") for all of them every [`END_POLL`]. Pushes through this
//! hub advance an end as soon as the broker acknowledges them. Under 72
//! clients waiting on 72 topics this is ~50 broker requests/s, where a
//! reader per waiting pull was ~100 fetches/s each (issue 14, failing
//! input 5).

use super::*;
use tokio::sync::watch;

/// How often the watcher asks the broker where the watched topics end: a
/// message that lands through another hub reaches a waiting pull about
/// this much later, plus the request's own time (for a topic created
/// meanwhile, up to [`ABSENT_POLL`] more).
pub(super) const END_POLL: Duration = Duration::from_millis(20);

/// A topic nobody asked about for this long is no longer watched.
const WATCH_FOR: Duration = Duration::from_secs(30);

/// How long an end read from the broker stands in for asking again (a
/// plain pull answered empty from it may miss a message pushed through
/// another hub since; the client pulls again).
pub(super) const END_FRESH: Duration = Duration::from_millis(100);

struct Watched {
    /// The log end offset (the offset the next message gets): the
    /// highest the broker said or a push acknowledged through this hub
    /// showed. Not lowered by an answer the broker gave before a push was
    /// acknowledged and that arrives after it; lowered only when the
    /// broker shows fewer records than were known before it was asked (the
    /// topic lost records: see [`Ends::polled`]).
    end: watch::Sender<u64>,
    /// When the watcher last read the end from the broker.
    polled: Option<Instant>,
    /// When a pull last asked.
    wanted: Instant,
}

/// The known ends of the watched topics (keyed by topic name).
#[derive(Default)]
pub(super) struct Ends {
    topics: Mutex<HashMap<String, Watched>>,
    /// The watcher task runs (started by the first pull).
    started: std::sync::atomic::AtomicBool,
}

impl Ends {
    /// The entry of `topic`, made if there is none, asked about now.
    fn wanted<'a>(all: &'a mut HashMap<String, Watched>, topic: &str) -> &'a mut Watched {
        let w = all.entry(topic.to_string()).or_insert_with(|| Watched {
            end: watch::channel(0).0,
            polled: None,
            wanted: Instant::now(),
        });
        w.wanted = Instant::now();
        w
    }

    /// The end of `topic` read from the broker within [`END_FRESH`] (or
    /// advanced by a push since), if there is one; the topic is watched
    /// from now on either way.
    pub(super) fn fresh(&self, topic: &str) -> Option<u64> {
        let mut all = lock(&self.topics);
        let w = Self::wanted(&mut all, topic);
        let fresh = w.polled.is_some_and(|t| t.elapsed() <= END_FRESH);
        fresh.then(|| *w.end.borrow())
    }

    /// Whether `topic` is known to end at `index` or later: a known end
    /// is one the broker gave or a push through this hub showed. A topic's
    /// end only grows unless it loses records, which the watcher notices
    /// at its next poll ([`Ends::polled`]): until then a `true` may stand
    /// for a position the topic lost.
    pub(super) fn reaches(&self, topic: &str, index: u64) -> bool {
        lock(&self.topics)
            .get(topic)
            .is_some_and(|w| *w.end.borrow() >= index)
    }

    /// Waits up to `wait` for `topic` to end past `from`; whether it does.
    ///
    /// Cancel safe: it only waits.
    pub(super) async fn wait_past(&self, topic: &str, from: u64, wait: Duration) -> bool {
        let mut rx = {
            let mut all = lock(&self.topics);
            Self::wanted(&mut all, topic).end.subscribe()
        };
        let past = tokio::time::timeout(wait, rx.wait_for(|end| *end > from))
            .await
            .is_ok_and(|r| r.is_ok());
        past
    }

    /// `topic` ends at `end` or later: read from the broker (`polled`: the
    /// end counts as fresh), or shown by a push acknowledged through this
    /// hub.
    pub(super) fn advance(&self, topic: &str, end: u64, polled: bool) {
        let mut all = lock(&self.topics);
        // Only topics watched now (a pull asked about them lately): not
        // pushes nobody waits for, nor answers about topics forgotten
        // while the question was on its way.
        let Some(w) = all.get_mut(topic) else {
            return;
        };
        if polled {
            w.polled = Some(Instant::now());
        }
        w.end.send_if_modified(|known| {
            let later = end > *known;
            if later {
                *known = end;
            }
            later
        });
    }

    /// The ends known now of `topics` (to tell, once the broker answers,
    /// whether a topic lost records: see [`Ends::polled`]).
    pub(super) fn known(&self, topics: &[String]) -> HashMap<String, u64> {
        let all = lock(&self.topics);
        topics
            .iter()
            .filter_map(|t| Some((t.clone(), *all.get(t)?.end.borrow())))
            .collect()
    }

    /// The broker says `topic` ends at `end` (an offset it gave, not a
    /// topic taken for absent), asked when this hub knew it to end at
    /// `before`. Less than `before` (not merely less than an end
    /// a push showed since the question left) means the topic lost records
    /// (a broker that came back empty, a topic deleted and made again):
    /// the known end goes down with it, so that read positions past the
    /// new end are refused again instead of taken for reached
    /// ([`StreamStore::end_before`]).
    pub(super) fn polled(&self, topic: &str, end: u64, before: Option<u64>) {
        let lost = {
            let mut all = lock(&self.topics);
            let Some(w) = all.get_mut(topic) else {
                return;
            };
            match before {
                Some(was) if end < was => {
                    w.polled = Some(Instant::now());
                    w.end.send_replace(end);
                    Some(was)
                }
                _ => None,
            }
        };
        match lost {
            Some(was) => {
                warn!(%topic, was, now = end, "kafka: a topic ends before where it ended (the broker lost records, or the topic was made again)");
            }
            None => self.advance(topic, end, true),
        }
    }

    /// The topics to ask about now; forgets those nobody waits on and
    /// nobody asked about for `idle`.
    pub(super) fn watched(&self, idle: Duration) -> Vec<String> {
        let mut all = lock(&self.topics);
        all.retain(|_, w| w.end.receiver_count() > 0 || w.wanted.elapsed() < idle);
        all.keys().cloned().collect()
    }

    /// How many topics are watched (for [`KafkaStats`]).
    pub(super) fn len(&self) -> usize {
        lock(&self.topics).len()
    }
}

impl KafkaStore {
    /// Starts the watcher task, once (on the runtime of the first pull).
    pub(super) fn watch_ends(&self) {
        if self.inner.ends.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut failing = false;
            let mut absent = Absent::default();
            loop {
                tokio::time::sleep(END_POLL).await;
                // Ends with the store.
                let Some(inner) = weak.upgrade() else { return };
                reader::pause_idle(&lock(&inner.readers), Instant::now());
                let topics = inner.ends.watched(WATCH_FOR);
                if topics.is_empty() {
                    continue;
                }
                let before = inner.ends.known(&topics);
                let asked = tokio::task::spawn_blocking(move || {
                    let out = inner.list_ends(&topics, &mut absent);
                    (inner, absent, out)
                })
                .await;
                let Ok((inner, kept, out)) = asked else {
                    return;
                };
                absent = kept;
                match out {
                    Ok(ends) => {
                        if std::mem::take(&mut failing) {
                            info!("kafka: topic ends readable again");
                        }
                        for (topic, end, counted) in ends {
                            if counted {
                                let was = before.get(&topic).copied();
                                inner.ends.polled(&topic, end, was);
                            } else {
                                inner.ends.advance(&topic, end, true);
                            }
                        }
                    }
                    Err(e) => {
                        // Waiting pulls wait on; their deadlines answer them.
                        if !std::mem::replace(&mut failing, true) {
                            warn!(error = %e, "kafka: cannot read where topics end");
                        }
                        tokio::time::sleep(inner.config.timeout.min(Duration::from_secs(1))).await;
                    }
                }
            }
        });
    }
}

/// Watched topics the broker said do not exist, and when the watcher last
/// looked for them.
#[derive(Default)]
pub(super) struct Absent {
    topics: std::collections::HashSet<String>,
    looked: Option<Instant>,
}

/// How often the watcher looks for watched topics that did not exist (one
/// metadata request for every topic of the cluster).
const ABSENT_POLL: Duration = Duration::from_millis(100);

impl Inner {
    /// The log end offsets of `topics`, in one `ListOffsets` request per
    /// broker (blocking), as `(topic, end, counted)`: `counted` when the
    /// broker gave the offset, not when the topic is taken for absent (0:
    /// it may be librdkafka's stale metadata, or a leader election). A
    /// topic whose end the broker did not give is left out.
    ///
    /// librdkafka keeps taking a topic it found missing for missing, even
    /// once created (through another hub): such topics are not asked about
    /// again until a metadata request for all topics (every
    /// [`ABSENT_POLL`] at most, which also refreshes what librdkafka
    /// knows) lists them.
    #[allow(clippy::type_complexity)] // (topic, end, counted), named below
    fn list_ends(
        &self,
        topics: &[String],
        absent: &mut Absent,
    ) -> Result<Vec<(String, u64, bool)>> {
        let watched: std::collections::HashSet<&str> = topics.iter().map(String::as_str).collect();
        absent.topics.retain(|t| watched.contains(t.as_str()));
        let mut out = Vec::with_capacity(topics.len());
        if !absent.topics.is_empty() && absent.looked.is_none_or(|t| t.elapsed() >= ABSENT_POLL) {
            absent.looked = Some(Instant::now());
            let meta = self
                .ends_client
                .fetch_metadata(None, self.config.timeout)
                .map_err(|e| kafka_error("topic metadata", e))?;
            let found: std::collections::HashSet<&str> = meta
                .topics()
                .iter()
                .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                .map(|t| t.name())
                .collect();
            absent.topics.retain(|t| !found.contains(t.as_str()));
        }
        out.extend(absent.topics.iter().map(|t| (t.clone(), 0, false)));
        let present: Vec<&String> = topics
            .iter()
            .filter(|t| !absent.topics.contains(*t))
            .collect();
        if present.is_empty() {
            return Ok(out);
        }
        let mut tpl = TopicPartitionList::new();
        for topic in &present {
            tpl.add_partition_offset(topic, 0, Offset::End)
                .map_err(|e| kafka_error("listing topic ends", e))?;
        }
        let answered = match self.ends_client.offsets_for_times(tpl, self.config.timeout) {
            Ok(answered) => answered,
            // No partition of the list has a leader: no topic of the list
            // exists, or leaders are being elected. Looked for with the
            // absent ones (a metadata request tells the two apart); ends
            // known meanwhile stand (an absent topic never lowers one).
            Err(e) if is_unknown_topic(&e) => {
                absent.topics.extend(present.into_iter().cloned());
                return Ok(out);
            }
            Err(e) => return Err(kafka_error("listing topic ends", e)),
        };
        for e in answered.elements() {
            match (e.error(), e.offset()) {
                (Ok(()), Offset::Offset(end)) => {
                    if let Ok(end) = u64::try_from(end) {
                        out.push((e.topic().to_string(), end, true));
                    }
                }
                (Err(err), _) if is_unknown_topic(&err) => {
                    absent.topics.insert(e.topic().to_string());
                    out.push((e.topic().to_string(), 0, false));
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `end_before` relies on to skip the broker: a known end only
    /// proves that a topic reaches an index, never that it does not; and
    /// it goes down when the broker shows the topic lost records.
    #[test]
    fn a_known_end_proves_only_what_it_reaches() {
        let ends = Ends::default();
        assert!(!ends.reaches("t", 0), "nothing known of an unwatched topic");
        assert_eq!(ends.fresh("t"), None); // watched from now on
        assert!(ends.reaches("t", 0));
        assert!(!ends.reaches("t", 1));
        ends.advance("t", 7, true);
        assert!(ends.reaches("t", 7));
        assert!(!ends.reaches("t", 8));
        // An older answer arriving late never lowers it.
        ends.advance("t", 3, true);
        assert!(ends.reaches("t", 7));
        assert!(!ends.reaches("u", 0));
        // A poll asked while the end was 7 answers 9: up.
        ends.polled("t", 9, Some(7));
        assert!(ends.reaches("t", 9));
        // One asked at 9 answering 2: the topic lost records; positions
        // past 2 are no longer taken for reached.
        ends.polled("t", 2, Some(9));
        assert!(ends.reaches("t", 2));
        assert!(!ends.reaches("t", 3));
        // One asked before a push showed 5 (asked at 2) answering 4: the
        // answer is older than the push, the end stays.
        ends.advance("t", 5, false);
        ends.polled("t", 4, Some(2));
        assert!(ends.reaches("t", 5));
    }
}

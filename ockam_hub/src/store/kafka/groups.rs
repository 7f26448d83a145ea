//! Consumer groups: where client read positions are kept.

use super::*;

/// The client of one consumer group (one client id's read positions).
pub(super) struct Group {
    consumer: HubConsumer,
    /// Per stream, the number of the last save committed. A save runs on a
    /// blocking thread that the hub may stop waiting for (a broker that is
    /// slow to answer): a later save may then run first, and the earlier
    /// one, when it comes, must not move the index back.
    saved: HashMap<String, u64>,
}

/// A consumer-group client, locked through each request.
pub(super) type GroupClient = Arc<Mutex<Group>>;

impl Inner {
    /// The client that commits and reads `client`'s offsets.
    pub(super) fn group(&self, client: &str) -> Result<GroupClient> {
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

    pub(super) fn partition(&self, stream: &str, offset: Offset) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.config.topic(stream), 0, offset)
            .map_err(|e| kafka_error("offsets", e))?;
        Ok(tpl)
    }

    /// The offset committed for `client` (its consumer group) on
    /// `stream`'s topic: the read position saved.
    pub(super) fn committed(&self, client: &str, stream: &str) -> Result<Option<u64>> {
        let group = self.group(client)?;
        let tpl = self.partition(stream, Offset::Invalid)?;
        let committed = lock(&group)
            .consumer
            .committed_offsets(tpl, self.config.timeout);
        let committed = match committed {
            Ok(c) => c,
            Err(e) if is_unknown_topic(&e) => return Ok(None),
            Err(e) => return Err(kafka_error("committed offsets", e)),
        };
        let topic = self.config.topic(stream);
        Ok(committed
            .find_partition(&topic, 0)
            .and_then(|p| match p.offset() {
                Offset::Offset(o) => u64::try_from(o).ok(),
                _ => None,
            }))
    }

    /// Commits `index` for `client` on `stream`, unless save `number` was
    /// overtaken by a later one (see [`Group::saved`]).
    pub(super) fn commit(&self, client: &str, stream: &str, index: u64, number: u64) -> Result<()> {
        let group = self.group(client)?;
        let tpl = self.partition(stream, offset_of(index)?)?;
        let mut group = lock(&group);
        if group.saved.get(stream).is_some_and(|&last| last > number) {
            debug!(%client, %stream, index, "kafka: skipped an index save overtaken by a later one");
            return Ok(());
        }
        group
            .consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| kafka_error("commit offset", e))?;
        group.saved.insert(stream.to_string(), number);
        Ok(())
    }
}

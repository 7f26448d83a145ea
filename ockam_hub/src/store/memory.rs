//! [`MemoryStore`]: streams in memory.

use super::*;
use ockam_core::internal::sync::lock;

/// Keeps everything in memory: fast, gone when the hub stops.
pub struct MemoryStore {
    streams: Mutex<HashMap<String, Vec<Vec<u8>>>>,
    indexes: Mutex<HashMap<(String, String), u64>>,
    incarnation: u64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            streams: Mutex::default(),
            indexes: Mutex::default(),
            incarnation: new_incarnation(),
        }
    }
}

impl MemoryStore {
    /// An empty store (a new incarnation: see
    /// [`StreamStore::incarnation`]).
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl StreamStore for MemoryStore {
    fn incarnation(&self) -> u64 {
        self.incarnation
    }

    fn submit_push(&self, stream: &str, data: Vec<u8>, ticket: Ticket) -> PendingPush {
        if !ticket.may_store() {
            return Box::pin(async { Err(after_gap()) });
        }
        let mut streams = lock(&self.streams);
        let log = streams.entry(stream.to_string()).or_default();
        log.push(data);
        let index = log.len() as u64 - 1;
        Box::pin(async move { Ok(index) })
    }

    async fn pull(
        &self,
        stream: &str,
        from: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let streams = lock(&self.streams);
        let Some(log) = streams.get(stream) else {
            return Ok(Vec::new());
        };
        Ok(take_within(
            log.iter()
                .enumerate()
                .skip(usize::try_from(from).unwrap_or(usize::MAX))
                .map(|(i, d)| (i as u64, d.as_slice())),
            limit,
            max_bytes,
        ))
    }

    async fn next_index(&self, stream: &str) -> Result<u64> {
        let streams = lock(&self.streams);
        Ok(streams.get(stream).map_or(0, |l| l.len() as u64))
    }

    async fn get_index(&self, client: &str, stream: &str) -> Result<Option<u64>> {
        let indexes = lock(&self.indexes);
        Ok(indexes
            .get(&(client.to_string(), stream.to_string()))
            .copied())
    }

    async fn save_index(&self, client: &str, stream: &str, index: u64) -> Result<()> {
        let mut indexes = lock(&self.indexes);
        indexes.insert((client.to_string(), stream.to_string()), index);
        Ok(())
    }

    async fn stats(&self) -> Result<Option<StoreStats>> {
        let streams = lock(&self.streams);
        let indexes = lock(&self.indexes);
        Ok(Some(StoreStats {
            streams: streams
                .iter()
                .map(|(name, log)| (name.clone(), log.len() as u64))
                .collect(),
            indexes: indexes.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }))
    }
}

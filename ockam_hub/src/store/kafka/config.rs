//! How the hub reaches Kafka and names its things there.

use super::*;

/// Longest topic name Kafka accepts.
pub(super) const MAX_TOPIC_LEN: usize = 249;

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

    pub(super) fn validate(&self) -> Result<()> {
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

    pub(super) fn client_config(&self) -> ClientConfig {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn topic_names_fit_kafka() {
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
    pub(super) fn bad_configs_are_refused() {
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

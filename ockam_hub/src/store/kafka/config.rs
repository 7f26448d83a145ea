//! How the hub reaches Kafka and names its things there: plain
//! configuration, compiled with or without the `kafka` feature (without it,
//! a hub given a [`KafkaConfig`] refuses to start and says why).

use ockam_core::{Error, ErrorKind, Result};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Longest topic name Kafka accepts.
pub(crate) const MAX_TOPIC_LEN: usize = 249;

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

    pub(crate) fn validate(&self) -> Result<()> {
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

    /// The topic of `stream`: `{prefix}{stream}` when that is a name
    /// Kafka takes as it is, and otherwise (too long, a `.` in the stream
    /// name, or a name that looks like the other form) the beginning of it,
    /// with `.` written `_`, then `-h` and 32 hex digits of a SHA-256 of the
    /// whole.
    ///
    /// The mapping is one-to-one: a name of the first form never ends like
    /// one of the second, and two of the second differ in their hashes.
    /// No topic made from a stream name has a `.` after the prefix, so no
    /// two of them collide in Kafka's metric names, where `.` and `_` are
    /// the same (Kafka refuses to create a topic that collides so).
    pub fn topic(&self, stream: &str) -> String {
        let full = format!("{}{}", self.prefix, stream);
        let plain = full.len() <= MAX_TOPIC_LEN
            && !stream.contains('.')
            && !looks_hashed(&full)
            && full != "."
            && full != "..";
        if plain {
            return full;
        }
        let hash = Sha256::digest(full.as_bytes());
        let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
        let tag = format!("-h{hex}");
        let readable = format!("{}{}", self.prefix, stream.replace('.', "_"));
        // Stream names and prefixes are ASCII: any byte is a boundary.
        let keep = MAX_TOPIC_LEN - tag.len();
        format!("{}{tag}", &readable[..readable.len().min(keep)])
    }

    /// The consumer group that holds `client`'s read positions: the prefix,
    /// then the client id. On a closed hub (issue 16) a read position is
    /// its identity's own, and `client` is `{identity}/{client_id}` (the
    /// client's secure channel static key, 64 hexadecimal digits): client
    /// `c` of identity `5f1c…` keeps its positions in group
    /// `ockam_5f1c…/c`.
    pub fn group(&self, client: &str) -> String {
        format!("{}{}", self.prefix, client)
    }

    #[cfg(feature = "kafka")]
    pub(crate) fn client_config(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", "ockam_hub")
            .set("allow.auto.create.topics", "false");
        c
    }
}

/// Whether `name` ends like a topic name of the hashed form (see
/// [`KafkaConfig::topic`]): `-h` and 32 lowercase hex digits.
fn looks_hashed(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 34
        && &b[b.len() - 34..b.len() - 32] == b"-h"
        && b[b.len() - 32..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
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
        // '.' and '_' are one in Kafka's metric names: never a '.' after
        // the prefix, and "a.b" is not "a_b".
        let dotted = c.topic("orders.eu");
        assert!(!dotted["ockam_".len()..].contains('.'), "{dotted}");
        assert_ne!(dotted, c.topic("orders_eu"));
        assert_eq!(c.topic("orders_eu"), "ockam_orders_eu");
        // A stream named like the hashed form of another is hashed too.
        let crafted = dotted["ockam_".len()..].to_string();
        assert!(looks_hashed(&crafted));
        assert_ne!(c.topic(&crafted), dotted);
    }

    proptest::proptest! {
        /// Distinct stream names make distinct topics that Kafka takes:
        /// at most 249 bytes of [A-Za-z0-9._-], no '.' after the prefix.
        #[test]
        fn topics_are_one_to_one(a in "[A-Za-z0-9._-]{1,260}", b in "[A-Za-z0-9._-]{1,260}") {
            let c = KafkaConfig::new("127.0.0.1:9092");
            let (ta, tb) = (c.topic(&a), c.topic(&b));
            proptest::prop_assert!(ta.len() <= MAX_TOPIC_LEN);
            proptest::prop_assert!(!ta["ockam_".len()..].contains('.'));
            proptest::prop_assert_eq!(a == b, ta == tb);
            proptest::prop_assert_eq!(a == b, ta.replace('.', "_") == tb.replace('.', "_"));
        }
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

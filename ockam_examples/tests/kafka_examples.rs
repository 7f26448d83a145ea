//! Seed 000's examples as the seed writes them, with `stream_kafka` and
//! `stream_kafka_index`, against a hub on 127.0.0.1:4000 backed by a real
//! Kafka-compatible broker. Skipped, saying so, without one (see
//! `ockam_hub/tests/common/kafka.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;
#[path = "../../ockam_hub/tests/common/mod.rs"]
mod hub_common;

use common::{example, LocalHub, Running};
use hub_common::kafka::{prerequisites, unique_prefix, Broker};
use ockam_hub::{HubConfig, KafkaConfig, StorageKind};
use std::time::Duration;

#[test]
fn seed_000_examples_through_kafka() {
    let Some(tansu) = prerequisites("seed_000_examples_through_kafka") else {
        return;
    };
    let broker = Broker::shared(&tansu);
    let _hub = LocalHub::start(HubConfig {
        listen: "127.0.0.1:4000".into(),
        storage: StorageKind::Memory,
        kafka: Some(KafkaConfig {
            prefix: unique_prefix("seed000"),
            ..KafkaConfig::new(broker.address.clone())
        }),
        ..HubConfig::default()
    });

    // The initiator first, the responder seconds later, as the seed runs them.
    let mut initiator = Running::start(&mut example("14-streams-kafka-initiator"));
    std::thread::sleep(Duration::from_secs(2));
    let responder = Running::start(&mut example("14-streams-kafka-responder"));
    let line = initiator.wait_for("Reply via stream:");
    assert!(line.contains("Hello World!"), "{line}");
    assert!(initiator.child.wait().unwrap().success());
    drop(responder);
}

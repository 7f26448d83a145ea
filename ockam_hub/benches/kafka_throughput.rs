//! 1 KiB messages end to end through a hub's `stream_kafka` (stream client
//! → hub → Kafka → hub → stream client) vs the same messages produced and
//! consumed directly with the Kafka client (rdkafka: idempotent producer
//! with acks=all, a consumer reading by offset), against the same broker,
//! in one run. Every message is counted at the receiving end.
//!
//! `OCKAM_BENCH_MESSAGES` sets the messages per run (default 20,000).
//!
//! The hub runs its Kafka back end in its own process, and again in a
//! child process (the `ockam_hub` binary's default, which a crash in
//! librdkafka cannot take the hub down with): the cost of that hop.
//!
//! `scripts/with-kafka.sh cargo bench -p ockam-rs-hub --bench kafka_throughput`
//! (or with `OCKAM_KAFKA_BOOTSTRAP` naming a broker; without one the bench
//! starts a tansu broker of its own if `tansu` is installed).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

#[path = "../tests/common/mod.rs"]
mod common;

use common::kafka::{prerequisites, unique_prefix, Broker};
use ockam_core::{async_trait, route, Result, Routed, Worker, TCP};
use ockam_hub::{Hub, HubConfig, KafkaConfig, KafkaProcess, StorageKind};
use ockam_node::{start_node, Context};
use ockam_stream_client::Stream;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SIZE: usize = 1024;

/// Counts deliveries; reports the time when the count reaches each mark.
struct Counter {
    marks: Vec<u64>,
    seen: u64,
    done: mpsc::Sender<Instant>,
}

#[async_trait]
impl Worker for Counter {
    type Message = Vec<u8>;
    type Context = Context;
    async fn handle_message(&mut self, _ctx: &mut Context, msg: Routed<Vec<u8>>) -> Result<()> {
        assert_eq!(msg.len(), SIZE);
        self.seen += 1;
        if self.marks.contains(&self.seen) {
            let _ = self.done.send(Instant::now());
        }
        Ok(())
    }
}

/// Messages per second through `stream_kafka`, first send to last delivery,
/// once one message went through (topics made, readers positioned: as the
/// direct run, whose topic and consumer exist before it starts).
/// `child`: the Kafka back end in a child process of the hub binary (the
/// binary's default), else in the hub's own process.
fn through_hub(broker: &str, n: u64, child: bool) -> f64 {
    let broker = broker.to_string();
    let (done_tx, done_rx) = mpsc::channel();
    let (ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let config = HubConfig {
                listen: "127.0.0.1:0".into(),
                storage: StorageKind::Memory,
                kafka: Some(KafkaConfig {
                    prefix: unique_prefix("bench"),
                    ..KafkaConfig::new(broker)
                }),
                kafka_process: if child {
                    KafkaProcess::Child {
                        program: env!("CARGO_BIN_EXE_ockam_hub").into(),
                    }
                } else {
                    KafkaProcess::InProcess
                },
                ..HubConfig::default()
            };
            let hub = Hub::start(&ctx, config).await?.to_string();
            let counter = Counter {
                marks: vec![1, n + 1],
                seen: 0,
                done: done_tx,
            };
            ctx.start_worker("counter", counter).await?;
            let (sender, _r1) = Stream::new(&ctx)?
                .stream_service("stream_kafka")
                .index_service("stream_kafka_index")
                .client_id("bench-producer")
                .connect(route![(TCP, hub.as_str())], "bench-a", "bench-b")
                .await?;
            let _consumer = Stream::new(&ctx)?
                .stream_service("stream_kafka")
                .index_service("stream_kafka_index")
                .client_id("bench-consumer")
                .connect(route![(TCP, hub.as_str())], "bench-b", "bench-a")
                .await?;
            let body = vec![b'k'; SIZE];
            let wait = |rx: mpsc::Receiver<Instant>| {
                tokio::task::spawn_blocking(move || {
                    let t = rx.recv_timeout(Duration::from_secs(600));
                    (rx, t)
                })
            };
            ctx.send(route![sender.clone(), "counter"], body.clone())
                .await?;
            let (done_rx, warm) = wait(done_rx).await.expect("waiting task");
            warm.expect("the first message delivered");
            let start = Instant::now();
            for _ in 0..n {
                ctx.send(route![sender.clone(), "counter"], body.clone())
                    .await?;
            }
            let end =
                tokio::task::spawn_blocking(move || done_rx.recv_timeout(Duration::from_secs(600)))
                    .await
                    .expect("waiting task")
                    .expect("every message delivered within 10 minutes");
            ctx.stop().await?;
            Ok(n as f64 / (end - start).as_secs_f64())
        })
        .expect("hub run")
}

/// Messages per second produced and consumed directly with rdkafka, first
/// send to last message read.
fn direct(broker: &str, n: u64) -> f64 {
    let topic = format!("{}direct", unique_prefix("bench"));
    let config = |extra: &[(&str, &str)]| {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", broker);
        for (k, v) in extra {
            c.set(*k, *v);
        }
        c
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin: AdminClient<DefaultClientContext> = config(&[]).create().unwrap();
    let new = NewTopic::new(&topic, 1, TopicReplication::Fixed(-1));
    let created = rt
        .block_on(admin.create_topics([&new], &AdminOptions::new()))
        .expect("create topic");
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");

    // The reader, by offset from 0, in its own thread.
    // (librdkafka needs a group to assign partitions; nothing is committed.)
    let consumer: BaseConsumer = config(&[
        ("group.id", &format!("{topic}-reader")),
        ("enable.auto.commit", "false"),
    ])
    .create()
    .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(600);
        while seen < n && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                use rdkafka::Message;
                assert_eq!(m.payload().map(|p| p.len()), Some(SIZE));
                seen += 1;
            }
        }
        let _ = done_tx.send(Instant::now());
        seen
    });

    let producer: FutureProducer = config(&[
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("linger.ms", "1"),
    ])
    .create()
    .unwrap();
    let body = vec![b'k'; SIZE];
    let start = Instant::now();
    rt.block_on(async {
        let mut deliveries = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let record = FutureRecord::<(), [u8]>::to(&topic)
                .partition(0)
                .payload(&body);
            deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        }
        for d in deliveries {
            d.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
    });
    let end = done_rx.recv().unwrap();
    assert_eq!(reader.join().unwrap(), n, "every message read back");
    n as f64 / (end - start).as_secs_f64()
}

fn main() {
    let Some(tansu) = prerequisites("kafka_throughput bench") else {
        return;
    };
    let quick = !std::env::args().any(|a| a == "--bench");
    let n: u64 = std::env::var("OCKAM_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 300 } else { 20_000 });
    let runs = if quick { 1 } else { 3 };
    let broker = Broker::shared(&tansu);
    println!(
        "1 KiB messages end to end against one broker ({}), {n} per run, {runs} run(s) each, median",
        broker.address
    );
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let mut d = Vec::new();
    let mut h = Vec::new();
    let mut c = Vec::new();
    for _ in 0..runs {
        d.push(direct(&broker.address, n));
        h.push(through_hub(&broker.address, n, false));
        c.push(through_hub(&broker.address, n, true));
    }
    let (d, h, c) = (median(d), median(h), median(c));
    println!(
        "{:>34} | {:>10.0} msg/s",
        "direct rdkafka produce + consume", d
    );
    println!(
        "{:>34} | {:>10.0} msg/s",
        "through the hub's stream_kafka", h
    );
    println!(
        "{:>34} | {:>10.0} msg/s",
        "the same, Kafka in a child process", c
    );
    println!("{:>34} | {:>10.2}", "ratio hub / direct", h / d);
    println!("{:>34} | {:>10.2}", "ratio child process / direct", c / d);
    println!("{:>34} | {:>10.2}", "ratio child / in-process", c / h);
}

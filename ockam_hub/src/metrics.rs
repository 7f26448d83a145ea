//! The hub's metrics (issue 17), served in Prometheus text format over
//! HTTP when the hub is given an address for them (`--metrics-listen
//! 127.0.0.1:9464`; any path answers). Counters count from the hub's
//! start; gauges are sampled every [`SAMPLE_EVERY`].
//!
//! | metric | type | labels | what |
//! | --- | --- | --- | --- |
//! | `ockam_hub_requests_total` | counter | `service`, `protocol` | stream protocol requests received (`service`: `stream` or `stream_kafka`; `protocol`: `stream_create`, `stream_push`, `stream_pull`, `stream_pull_wait`, `stream_index`, or `other`) |
//! | `ockam_hub_refusals_total` | counter | `protocol` | requests answered with a `stream_error` (access, limits, malformed, store failures) |
//! | `ockam_hub_pushed_messages_total` | counter | `service` | pushes stored and confirmed |
//! | `ockam_hub_pulled_messages_total` | counter | `service` | messages returned by pulls |
//! | `ockam_hub_store_commit_seconds` | histogram | | time of each commit to the durable store's data file: a group of writes with fsync (`--fsync always`); with `--fsync interval`, each move of writes the write-ahead log confirmed into the data file, without fsync |
//! | `ockam_hub_store_flush_seconds` | histogram | | `--fsync interval`: time of each interval's flush that succeeded (what the write-ahead log has into the data file, fsync, the log emptied) |
//! | `ockam_hub_store_errors_total` | counter | `op` | failures of the durable store, each also logged at error. `commit`: writes refused (a commit, or with `--fsync interval` an append to the write-ahead log, failed), or with `--fsync interval` a move into the data file failed (the log keeps the writes; tried again). `flush`: an interval's flush failed (tried again at the next). `stopped`: a commit panicked and the store takes no more writes (restart the hub) |
//! | `ockam_hub_connections` | gauge | | TCP connections open |
//! | `ockam_hub_workers` | gauge | | workers on the hub's node (services, stream workers, forwarders, channel ends) |
//! | `ockam_hub_streams` | gauge | `service` | streams in the store |
//! | `ockam_hub_stored_messages` | gauge | `service` | messages pushed to all streams |
//! | `ockam_hub_stored_bytes` | gauge | | size of the durable store's data file |
//! | `ockam_hub_consumer_lag_messages` | gauge | `service`, `client`, `stream` | messages between a saved read position and the end of its stream, per client with a saved position (on a closed hub the client is `identity/client_id`) |
//!
//! Rates ("pushes per second") are the counters' `rate()` in Prometheus.
//! The Kafka back end's streams and positions are Kafka's (its own tools
//! show them): only its request, refusal, push and pull counters are here.

use crate::store::StreamStore;
use metrics::{counter, gauge, Counter};
use ockam_core::{Error, ErrorKind, Result};
use ockam_node::Context;
use ockam_transport_tcp::TcpTransport;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info};

/// How often gauges are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

pub(crate) const REQUESTS: &str = "ockam_hub_requests_total";
pub(crate) const REFUSALS: &str = "ockam_hub_refusals_total";
pub(crate) const PUSHED: &str = "ockam_hub_pushed_messages_total";
pub(crate) const PULLED: &str = "ockam_hub_pulled_messages_total";
pub(crate) const COMMIT_SECONDS: &str = "ockam_hub_store_commit_seconds";
pub(crate) const FLUSH_SECONDS: &str = "ockam_hub_store_flush_seconds";
const STORE_ERRORS: &str = "ockam_hub_store_errors_total";
const CONNECTIONS: &str = "ockam_hub_connections";
const WORKERS: &str = "ockam_hub_workers";
const STREAMS: &str = "ockam_hub_streams";
const STORED_MESSAGES: &str = "ockam_hub_stored_messages";
const STORED_BYTES: &str = "ockam_hub_stored_bytes";
const CONSUMER_LAG: &str = "ockam_hub_consumer_lag_messages";

/// Installs the process's metrics recorder, a Prometheus exporter serving
/// on `listen`, on the current runtime. Once per process.
///
/// # Errors
/// [`ErrorKind::Io`] when `listen` cannot be bound or a recorder is
/// already installed.
pub(crate) fn install(listen: SocketAddr) -> Result<()> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let failed = |e: metrics_exporter_prometheus::BuildError| {
        Error::with_source(
            ErrorKind::Io,
            format!("cannot serve metrics on {listen}"),
            e,
        )
    };
    // Commit times from 100 µs to 10 s.
    let buckets = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        10.0,
    ];
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets_for_metric(Matcher::Full(COMMIT_SECONDS.into()), &buckets)
        .map_err(failed)?
        .set_buckets_for_metric(Matcher::Full(FLUSH_SECONDS.into()), &buckets)
        .map_err(failed)?
        .install()
        .map_err(failed)?;
    metrics::describe_counter!(REQUESTS, "stream protocol requests received");
    metrics::describe_counter!(REFUSALS, "requests answered with a stream_error");
    metrics::describe_counter!(PUSHED, "pushes stored and confirmed");
    metrics::describe_counter!(PULLED, "messages returned by pulls");
    metrics::describe_histogram!(
        COMMIT_SECONDS,
        metrics::Unit::Seconds,
        "commits to the data file: a group of writes with fsync (--fsync always), or writes the write-ahead log confirmed, without fsync (--fsync interval)"
    );
    metrics::describe_histogram!(
        FLUSH_SECONDS,
        metrics::Unit::Seconds,
        "--fsync interval: each interval's flush that succeeded (the log's writes into the data file, fsync, the log emptied)"
    );
    metrics::describe_counter!(
        STORE_ERRORS,
        "durable store failures (op: commit, flush, stopped); each is also logged at error"
    );
    // At 0 from the start, for alerts on any increase.
    for op in [StoreOp::Commit, StoreOp::Flush, StoreOp::Stopped] {
        store_failed(op, 0);
    }
    metrics::describe_gauge!(CONNECTIONS, "TCP connections open");
    metrics::describe_gauge!(WORKERS, "workers on the hub's node");
    metrics::describe_gauge!(STREAMS, "streams in the store");
    metrics::describe_gauge!(STORED_MESSAGES, "messages pushed to all streams");
    metrics::describe_gauge!(
        STORED_BYTES,
        metrics::Unit::Bytes,
        "size of the durable store's data file"
    );
    metrics::describe_gauge!(
        CONSUMER_LAG,
        "messages between a saved read position and the end of its stream"
    );
    info!(listen = %listen, "serving Prometheus metrics");
    Ok(())
}

/// The counters of one stream service, made once (looking a counter up by
/// its labels on every request would cost a hash of them).
pub(crate) struct ServiceMetrics {
    create: Counter,
    push: Counter,
    pull: Counter,
    pull_wait: Counter,
    index: Counter,
    other: Counter,
    pub(crate) pushed: Counter,
    pub(crate) pulled: Counter,
}

impl ServiceMetrics {
    /// The counters of `service` (`stream`, `stream_kafka`).
    pub(crate) fn new(service: &str) -> Self {
        use ockam_stream_client::protocol::*;
        let requests = |protocol: &'static str| counter!(REQUESTS, "service" => service.to_string(), "protocol" => protocol);
        ServiceMetrics {
            create: requests(STREAM_CREATE),
            push: requests(STREAM_PUSH),
            pull: requests(STREAM_PULL),
            pull_wait: requests(STREAM_PULL_WAIT),
            index: requests(STREAM_INDEX),
            other: requests("other"),
            pushed: counter!(PUSHED, "service" => service.to_string()),
            pulled: counter!(PULLED, "service" => service.to_string()),
        }
    }

    /// Counts a request of `protocol`.
    pub(crate) fn request(&self, protocol: &str) {
        use ockam_stream_client::protocol::*;
        match protocol {
            STREAM_CREATE => &self.create,
            STREAM_PUSH => &self.push,
            STREAM_PULL => &self.pull,
            STREAM_PULL_WAIT => &self.pull_wait,
            STREAM_INDEX => &self.index,
            _ => &self.other,
        }
        .increment(1);
    }
}

/// What failed in the durable store (the `op` label of
/// `ockam_hub_store_errors_total`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum StoreOp {
    /// Writes refused (their commit, or their append to the write-ahead
    /// log, failed), or a move of logged writes into the data file that
    /// failed and is tried again (`--fsync interval`).
    Commit,
    /// An interval's flush failed: the move into the data file, the fsync
    /// or emptying the log (`--fsync interval`; tried again at the next).
    Flush,
    /// A commit panicked: the store takes no more writes.
    Stopped,
}

/// Counts `n` failures of `op` in the durable store.
pub(crate) fn store_failed(op: StoreOp, n: u64) {
    let op = match op {
        StoreOp::Commit => "commit",
        StoreOp::Flush => "flush",
        StoreOp::Stopped => "stopped",
    };
    counter!(STORE_ERRORS, "op" => op).increment(n);
}

/// Counts a refusal of a request of `protocol`.
pub(crate) fn refused(protocol: &str) {
    counter!(REFUSALS, "protocol" => protocol.to_string()).increment(1);
}

/// What the gauges are sampled from.
pub(crate) struct Sources {
    pub(crate) tcp: Arc<TcpTransport>,
    /// Each stream service's name and store.
    pub(crate) stores: Vec<(String, Arc<dyn StreamStore>)>,
    /// The durable store's data file, if there is one.
    pub(crate) data_file: Option<PathBuf>,
}

/// Samples the gauges every [`SAMPLE_EVERY`], for as long as the node runs.
pub(crate) async fn sample(ctx: Context, sources: Sources) {
    loop {
        gauge!(CONNECTIONS).set(sources.tcp.connection_count() as f64);
        gauge!(WORKERS).set(ctx.list_addresses().len() as f64);
        if let Some(file) = &sources.data_file {
            if let Ok(meta) = std::fs::metadata(file) {
                gauge!(STORED_BYTES).set(meta.len() as f64);
            }
        }
        for (service, store) in &sources.stores {
            match store.stats().await {
                Ok(Some(stats)) => {
                    let labels = [("service", service.clone())];
                    gauge!(STREAMS, &labels).set(stats.streams.len() as f64);
                    let stored: u64 = stats.streams.values().sum();
                    gauge!(STORED_MESSAGES, &labels).set(stored as f64);
                    for (client, stream) in stats.indexes.keys() {
                        let lag = stats.lag(client, stream).unwrap_or(0);
                        let labels = [
                            ("service", service.clone()),
                            ("client", client.clone()),
                            ("stream", stream.clone()),
                        ];
                        gauge!(CONSUMER_LAG, &labels).set(lag as f64);
                    }
                }
                Ok(None) => {}
                Err(e) => debug!(%service, error = %e, "could not sample the store for metrics"),
            }
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

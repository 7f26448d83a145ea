//! `ockam_hub`: runs a hub node. `ockam_hub --help` for the flags.

use clap::{Parser, Subcommand, ValueEnum};
use ockam_hub::{
    Access, Fsync, Hub, HubConfig, KafkaConfig, KafkaProcess, Limits, Retention, RetentionPolicy,
    StorageKind,
};
use ockam_transport_tcp::TcpOptions;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The binary's allocator (the `mimalloc` feature, on by default). With
/// glibc's, an allocation of 1 KiB or more (a message) first merges every
/// freed small chunk (its fast bins), and allocation took a seventh of the
/// hub's time under load; see BENCHMARKS.md, "The hub's allocator".
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Storage {
    /// On disk in --data-dir (survives restarts and crashes).
    Durable,
    /// In memory (lost when the hub stops).
    Memory,
}

/// A hub node: echo, forwarding and durable stream services for other
/// nodes, over TCP; with --kafka-bootstrap-servers, also streams kept in
/// Kafka (`stream_kafka`, `stream_kafka_index`).
///
/// Stop it with Ctrl-C or SIGTERM: it finishes what it is handling and
/// exits 0. SIGHUP reads the access file again.
///
/// Open by default (anyone who reaches it may do anything; it warns at
/// start). With --access-file it is closed: its services answer only
/// requests that come through a secure channel to its listener
/// `secure_channel_listener`, from identities (channel static keys) the
/// file names, for what the file lets each do; a client's read positions
/// are its identity's own. The hub's identity (its listener's static key,
/// kept in --identity-file) is logged at start, for clients to pin.
#[derive(Debug, Parser)]
#[command(name = "ockam_hub", version)]
struct Args {
    /// Without a command: run the hub.
    #[command(subcommand)]
    command: Option<Command>,
    /// TCP address to listen on.
    #[arg(long, default_value = "127.0.0.1:4000", env = "OCKAM_HUB_LISTEN")]
    listen: String,
    /// Directory of the durable store.
    #[arg(
        long,
        default_value = "ockam_hub_data",
        env = "OCKAM_HUB_DATA_DIR",
        global = true
    )]
    data_dir: PathBuf,
    /// Where streams are kept.
    #[arg(long, value_enum, default_value = "durable")]
    storage: Storage,
    /// Most messages one pull returns.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_pull: u64,
    /// Longest a waiting pull waits, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    max_wait_ms: u64,
    /// Largest message a push may store, in bytes (at most 8 MiB, so that
    /// every stored message fits in a pull response).
    #[arg(long, default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..=8 * 1024 * 1024))]
    max_message_size: u64,
    /// Seconds after which a stream worker nobody uses is stopped.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_s: u64,
    /// Most stream workers one client (one connection, or one secure
    /// channel) may have open at once; a `stream_create` past it is refused.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_stream_workers_per_peer: u64,
    /// Most forwarders one client (one connection, or one secure channel)
    /// may have registered at once; a registration past it is refused.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_forwarders_per_peer: u64,
    /// Kafka bootstrap servers (`host:port,...`): serve `stream_kafka` and
    /// `stream_kafka_index`, kept in Kafka, next to the embedded store
    /// (needs the `kafka` cargo feature, on by default).
    #[arg(long, env = "OCKAM_HUB_KAFKA_BOOTSTRAP_SERVERS")]
    kafka_bootstrap_servers: Option<String>,
    /// Prefix of the Kafka topics (one per stream) and consumer groups (one
    /// per client id) the hub uses.
    #[arg(long, default_value = "ockam_", env = "OCKAM_HUB_KAFKA_PREFIX")]
    kafka_prefix: String,
    /// Replication factor of the topics the hub creates (-1: the broker's
    /// default).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    kafka_replication_factor: i32,
    /// Longest the hub waits for Kafka on a read or an index request, in
    /// milliseconds.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    kafka_timeout_ms: u64,
    /// Run the Kafka back end (librdkafka, C) in the hub's own process. By
    /// default it runs in a child process of the hub, restarted when it
    /// ends, so that a crash in librdkafka stops `stream_kafka` for a
    /// moment instead of the whole hub.
    #[arg(long)]
    kafka_in_process: bool,
    /// Run as the hub's Kafka child (started by the hub itself): only
    /// `stream_kafka` and `stream_kafka_index`, on --listen.
    #[arg(long, hide = true)]
    kafka_child: bool,
    /// As the Kafka child of a closed hub: the hub's identity, the only
    /// one the child serves (through a secure channel).
    #[arg(long, hide = true)]
    kafka_child_hub_identity: Option<ockam_vault::PublicKey>,
    /// How long a client may go unheard before its connection is closed as
    /// dead (it vanished without closing it: lost power or network), in
    /// milliseconds; 0: never. Its forwarders go with it.
    #[arg(long, default_value_t = 30_000, env = "OCKAM_HUB_PEER_TIMEOUT_MS")]
    peer_timeout_ms: u64,
    /// Most TCP connections the hub keeps open; a connection accepted past
    /// it is closed at once (and the refusals logged).
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Access file (TOML): closes the hub to all but the identities it
    /// names, for what it lets each do (see the `access` module's docs or
    /// the README). Read at start and again on SIGHUP; a start with a file
    /// that does not read or check fails (exit code 1).
    #[arg(long, env = "OCKAM_HUB_ACCESS_FILE")]
    access_file: Option<PathBuf>,
    /// File holding the hub's identity (the static key of its secure
    /// channel listener), made on first start [default: identity.key in
    /// --data-dir; with --storage memory, a new identity at every start].
    #[arg(long, env = "OCKAM_HUB_IDENTITY_FILE")]
    identity_file: Option<PathBuf>,
    /// Serve Prometheus metrics (text format, any path) over HTTP at this
    /// address, for example 127.0.0.1:9464: requests, refusals, pushes and
    /// pulls, store commit times, connections, workers, streams, stored
    /// bytes, consumer lag per client and stream. None by default.
    #[arg(long, env = "OCKAM_HUB_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// When pushes to the durable store become durable. `always`: a push
    /// is confirmed once fsynced (pushes that arrive together share one
    /// fsync); a power cut loses nothing confirmed. `interval=<ms>`: a push
    /// is confirmed once written to the operating system (a write-ahead
    /// log in --data-dir), and everything is fsynced every <ms>, as NATS
    /// JetStream and Kafka do by default; faster, and a power cut (or an
    /// operating system crash) loses up to <ms> of confirmed pushes. A
    /// crash or `kill -9` of the hub itself loses nothing confirmed in
    /// either mode.
    #[arg(long, default_value = "always", env = "OCKAM_HUB_FSYNC")]
    fsync: Fsync,
    /// Keep at most this many bytes of message data per stream (the oldest
    /// go first; durable store). Default: no limit.
    #[arg(long, env = "OCKAM_HUB_RETENTION_MAX_BYTES")]
    retention_max_bytes: Option<u64>,
    /// Keep at most this many messages per stream. Default: no limit.
    #[arg(long, env = "OCKAM_HUB_RETENTION_MAX_MESSAGES")]
    retention_max_messages: Option<u64>,
    /// Keep messages only this long (90s, 15m, 1h, 7d). Default: forever.
    #[arg(long, env = "OCKAM_HUB_RETENTION_MAX_AGE", value_parser = parse_age)]
    retention_max_age: Option<Duration>,
    /// Retention file (TOML): limits per stream-name pattern that override
    /// the --retention-* defaults (see the `retention` module's docs).
    /// A reader whose position was trimmed away continues from the oldest
    /// kept message and is told how many it missed.
    #[arg(long, env = "OCKAM_HUB_RETENTION_FILE")]
    retention_file: Option<PathBuf>,
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Reads the streams of a data directory (--data-dir), also while a
    /// hub runs on it: what each holds and where each reader is.
    Streams {
        #[command(subcommand)]
        action: StreamsAction,
    },
}

#[derive(Debug, Subcommand)]
enum StreamsAction {
    /// Every stream: messages, bytes, oldest and newest index, readers
    /// (saved read positions) and the largest lag among them.
    List {
        /// One JSON document (an array of streams) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One stream, with each saved read position and its lag (exit code 1
    /// when there is no such stream).
    Show {
        /// The stream's name.
        name: String,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `ockam_hub streams ...`: prints what `--data-dir` holds.
fn streams(dir: &std::path::Path, action: &StreamsAction) -> ExitCode {
    let only = match action {
        StreamsAction::List { .. } => None,
        StreamsAction::Show { name, .. } => Some(name.as_str()),
    };
    let reports = match ockam_hub::store::inspect(dir, only) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ockam_hub streams: {e}");
            return ExitCode::FAILURE;
        }
    };
    let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    match action {
        StreamsAction::List { json: true } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&reports).unwrap_or_default()
            )
        }
        StreamsAction::List { json: false } => {
            println!(
                "{:<32} {:>10} {:>12} {:>10} {:>10} {:>8} {:>10}",
                "STREAM", "MESSAGES", "BYTES", "OLDEST", "NEWEST", "READERS", "MAX LAG"
            );
            for r in &reports {
                let max_lag = r.readers.iter().map(|x| x.lag).max();
                println!(
                    "{:<32} {:>10} {:>12} {:>10} {:>10} {:>8} {:>10}",
                    r.name,
                    r.messages,
                    r.bytes,
                    show(r.oldest),
                    show(r.newest),
                    r.readers.len(),
                    show(max_lag)
                );
            }
        }
        StreamsAction::Show { name, json } => {
            let Some(r) = reports.first() else {
                eprintln!("ockam_hub streams: no stream {name:?} in {}", dir.display());
                return ExitCode::FAILURE;
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(r).unwrap_or_default());
                return ExitCode::SUCCESS;
            }
            println!(
                "stream {}: {} messages, {} bytes, oldest {}, newest {}, next {}",
                r.name,
                r.messages,
                r.bytes,
                show(r.oldest),
                show(r.newest),
                r.next
            );
            if r.readers.is_empty() {
                println!("no saved read positions");
            } else {
                println!("{:<48} {:>10} {:>10}", "CLIENT", "INDEX", "LAG");
                for x in &r.readers {
                    println!("{:<48} {:>10} {:>10}", x.client, x.index, x.lag);
                }
            }
        }
    }
    ExitCode::SUCCESS
}

fn parse_age(text: &str) -> Result<Duration, String> {
    ockam_hub::retention::parse_age(text).map_err(|e| e.message().to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Streams { action }) = &args.command {
        return streams(&args.data_dir, action);
    }
    if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY of intent: set before any thread exists.
        std::env::set_var("RUST_LOG", &args.log_level);
    }
    ockam_node::setup_tracing();
    let limits = Limits {
        max_pull: args.max_pull as usize,
        max_wait: Duration::from_millis(args.max_wait_ms),
        max_message_size: args.max_message_size as usize,
        idle_timeout: Duration::from_secs(args.idle_timeout_s),
        max_stream_workers_per_peer: usize::try_from(args.max_stream_workers_per_peer)
            .unwrap_or(usize::MAX),
        max_forwarders_per_peer: usize::try_from(args.max_forwarders_per_peer)
            .unwrap_or(usize::MAX),
        ..Limits::default()
    };
    let kafka = args.kafka_bootstrap_servers.map(|servers| KafkaConfig {
        prefix: args.kafka_prefix,
        replication_factor: args.kafka_replication_factor,
        timeout: Duration::from_millis(args.kafka_timeout_ms),
        ..KafkaConfig::new(servers)
    });
    // Each worker thread gives the memory it freed back as it goes idle,
    // when asked (see `ockam_hub::memory`).
    let (ctx, mut executor) = ockam_node::start_node_with(|runtime| {
        runtime.on_thread_park(ockam_hub::memory::collect_when_asked);
    });
    if args.kafka_child {
        let Some(kafka) = kafka else {
            eprintln!("ockam_hub: --kafka-child needs --kafka-bootstrap-servers");
            return ExitCode::from(2);
        };
        let (listen, hub) = (args.listen, args.kafka_child_hub_identity);
        return match executor.execute(async move {
            Hub::start_kafka_child(&ctx, &kafka, &limits, &listen, hub)
                .await
                .map(|_| ())
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ockam_hub (Kafka child): {e}");
                ExitCode::FAILURE
            }
        };
    }
    let kafka_process = match std::env::current_exe() {
        Ok(program) if !args.kafka_in_process => KafkaProcess::Child { program },
        _ => KafkaProcess::InProcess,
    };
    let access = match &args.access_file {
        Some(path) => match Access::closed(path) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("ockam_hub: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => Access::Open,
    };
    let default_retention = Retention {
        max_bytes: args.retention_max_bytes,
        max_messages: args.retention_max_messages,
        max_age: args.retention_max_age,
    };
    let retention = match &args.retention_file {
        Some(path) => match RetentionPolicy::load(default_retention, path) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("ockam_hub: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => RetentionPolicy::new(default_retention),
    };
    let config = HubConfig {
        retention,
        fsync: args.fsync,
        access: access.clone(),
        identity: args.identity_file,
        metrics_listen: args.metrics_listen,
        listen: args.listen,
        storage: match args.storage {
            Storage::Durable => StorageKind::Durable(args.data_dir),
            Storage::Memory => StorageKind::Memory,
        },
        limits,
        kafka,
        kafka_process,
        tcp: TcpOptions {
            peer_timeout: (args.peer_timeout_ms > 0)
                .then(|| Duration::from_millis(args.peer_timeout_ms)),
            max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
            ..TcpOptions::default()
        },
    };
    match executor.execute(async move {
        // Before the hub starts (opening a large store takes a while):
        // SIGHUP's default would end the process.
        reload_on_sighup(access);
        Hub::start(&ctx, config).await?;
        Ok(())
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ockam_hub: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the access file again on every SIGHUP (an open hub has none: it
/// says so), instead of ending as SIGHUP's default would.
fn reload_on_sighup(access: Access) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; the access file is read at start only");
            return;
        };
        while hangups.recv().await.is_some() {
            if access.is_closed() {
                access.reload();
            } else {
                tracing::info!("SIGHUP: this hub is open, it has no access file to read");
            }
        }
    });
    #[cfg(not(unix))]
    let _ = access;
}

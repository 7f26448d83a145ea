//! The hub node of the ockam-rs stack: a node other nodes reach over TCP
//! for an `echo_service` and for reliable streams (`stream`,
//! `stream_index`), kept in an embedded durable store ([`DurableStore`],
//! on `redb`, with group commit) or in memory ([`MemoryStore`]). Given Kafka
//! bootstrap servers ([`HubConfig::kafka`]), it also serves `stream_kafka`
//! and `stream_kafka_index`, kept in Kafka ([`KafkaStore`]), so that several
//! hubs in front of one Kafka cluster serve the same streams.
//!
//! ```rust
//! use ockam_core::{route, Result, TCP};
//! use ockam_hub::{Hub, HubConfig, StorageKind};
//! use ockam_node::Context;
//!
//! #[ockam_node::node]
//! async fn main(mut ctx: Context) -> Result<()> {
//!     let config = HubConfig {
//!         listen: "127.0.0.1:0".into(), // a free port
//!         storage: StorageKind::Memory,
//!         ..HubConfig::default()
//!     };
//!     let addr = Hub::start(&ctx, config).await?;
//!     // Any node reaches its services over TCP; here, its echo service.
//!     ctx.send(route![(TCP, addr.to_string()), "echo_service"], "hello".to_string()).await?;
//!     assert_eq!(*ctx.receive::<String>().await?, "hello");
//!     ctx.stop().await
//! }
//! ```
//!
//! The Kafka back end is the `kafka` cargo feature, on by default; it builds
//! librdkafka (C). Without it (`default-features = false`), [`Hub::start`]
//! refuses a [`HubConfig::kafka`] with `ErrorKind::InvalidInput`.
#![deny(missing_docs)]

pub mod access;
pub mod kafka_child;
pub mod memory;
pub mod metrics;
pub mod retention;
pub mod sequencer;
mod services;
pub mod store;

pub use access::{Access, AccessPolicy};
pub use retention::{Retention, RetentionPolicy};
pub use services::Limits;
pub use store::{DurableStore, Fsync, KafkaConfig, MemoryStore, StoreStats, StreamStore};
#[cfg(feature = "kafka")]
pub use store::{KafkaStats, KafkaStore};

use ockam_core::{Error, ErrorKind, Result};
use ockam_node::Context;
use ockam_transport_tcp::{TcpOptions, TcpTransport};
use services::{EchoService, ForwardingService, IndexService, Shared, StreamService};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{info, warn};

/// Where the hub keeps streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageKind {
    /// On disk under this directory (the default: `ockam_hub_data`).
    Durable(PathBuf),
    /// In memory: gone when the hub stops.
    Memory,
}

/// How to run a hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// TCP address to listen on (default `127.0.0.1:4000`).
    pub listen: String,
    /// Where streams are kept.
    pub storage: StorageKind,
    /// Request limits.
    pub limits: Limits,
    /// Kafka to keep `stream_kafka` streams in; `None`: no Kafka services.
    pub kafka: Option<KafkaConfig>,
    /// Where the Kafka back end runs (default: in this process).
    pub kafka_process: KafkaProcess,
    /// The TCP transport's settings: among them the connections the hub
    /// keeps open at most (`max_connections`, default 4,096) and how long
    /// a client may go unheard before its connection, and the forwarders
    /// registered over it, are dropped (`peer_timeout`, default 30 s).
    /// Used when the hub's node has no TCP transport yet.
    pub tcp: TcpOptions,
    /// Who may use the hub (issue 16): [`Access::Open`] (the default: anyone
    /// who reaches it, which the hub warns about at start) or closed by an
    /// access file ([`Access::closed`]; see [`access`]).
    pub access: Access,
    /// The file holding the hub's identity, the static key of its secure
    /// channel listener (`secure_channel_listener`), created on first
    /// start. `None` (the default): `identity.key` in the durable store's
    /// directory; with the memory store, a new identity at every start.
    pub identity: Option<PathBuf>,
    /// Where to serve Prometheus metrics over HTTP (issue 17; see
    /// [`metrics`]); `None` (the default): none. Installs the process's
    /// `metrics` recorder, so at most one hub per process may have it.
    pub metrics_listen: Option<SocketAddr>,
    /// How much of each stream the durable store keeps (issue 17; see
    /// [`retention`]); the default: everything.
    pub retention: RetentionPolicy,
    /// When the durable store's pushes become durable (issue 17): fsynced
    /// before each confirmation ([`Fsync::Always`], the default) or every
    /// interval, with a write-ahead log ([`Fsync::Interval`]).
    pub fsync: Fsync,
}

/// Where the Kafka back end (librdkafka, C) runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KafkaProcess {
    /// In the hub's own process: a crash in librdkafka ends the hub.
    #[default]
    InProcess,
    /// In a child process running `program` (the `ockam_hub` binary, with
    /// [`kafka_child::child_args`]), supervised and restarted when it ends,
    /// so that a crash in librdkafka takes down `stream_kafka` for a moment
    /// and nothing else (see [`kafka_child`]). The `ockam_hub` binary's
    /// default.
    Child {
        /// The `ockam_hub` binary.
        program: PathBuf,
    },
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            listen: "127.0.0.1:4000".into(),
            storage: StorageKind::Durable(PathBuf::from("ockam_hub_data")),
            limits: Limits::default(),
            kafka: None,
            kafka_process: KafkaProcess::InProcess,
            tcp: TcpOptions::default(),
            access: Access::Open,
            identity: None,
            metrics_listen: None,
            retention: RetentionPolicy::default(),
            fsync: Fsync::Always,
        }
    }
}

/// The hub's services on a node.
pub struct Hub;

impl Hub {
    /// Opens the store, starts `echo_service`, `forwarding_service`,
    /// `stream` and `stream_index` (and `stream_kafka`, `stream_kafka_index`
    /// when Kafka is configured) and listens for TCP connections; returns
    /// the address listened on. A Kafka cluster that is down does not stop
    /// the hub: it is reported, and `stream_kafka` requests wait for it.
    ///
    /// # Errors
    /// The store cannot be opened, the identity file cannot be read or
    /// made, the address cannot be bound, or the Kafka child (see
    /// [`kafka_child`]) cannot be started.
    pub async fn start(ctx: &Context, config: HubConfig) -> Result<SocketAddr> {
        if let Some(kafka) = &config.kafka {
            kafka.validate()?;
            if !cfg!(feature = "kafka") {
                return Err(without_kafka());
            }
        }
        let access = config.access.clone();
        // First: the services' counters are made as they start.
        if let Some(listen) = config.metrics_listen {
            metrics::install(listen)?;
        }
        let store: Arc<dyn StreamStore> = match &config.storage {
            StorageKind::Durable(dir) => {
                let durable = Arc::new(DurableStore::open_with(dir, config.fsync)?);
                // For `ockam_hub streams` while the hub has the file open.
                let socket = dir.join(store::INSPECT_SOCKET);
                if let Err(e) = durable.serve_inspect(&socket) {
                    warn!(error = %e, "`ockam_hub streams` cannot read this hub's streams while it runs");
                }
                durable.start_retention(config.retention.clone());
                durable
            }
            StorageKind::Memory => {
                if config.retention.is_limited() {
                    warn!("retention limits apply to the durable store only; the memory store keeps everything until the hub stops");
                }
                Arc::new(MemoryStore::new())
            }
        };
        let (identity, public) = start_listener(ctx, &config).await?;
        ctx.start_worker(
            "echo_service",
            EchoService {
                access: access.clone(),
            },
        )
        .await?;
        ctx.start_worker(
            "forwarding_service",
            ForwardingService::new(config.limits.max_forwarders_per_peer, access.clone()),
        )
        .await?;
        start_stream_services(
            ctx,
            "stream",
            "stream_index",
            store.clone(),
            &config.limits,
            0,
            access.clone(),
        )
        .await?;
        let tcp = Arc::new(TcpTransport::create_with_options(ctx, config.tcp.clone()).await?);
        if config.metrics_listen.is_some() {
            let sources = metrics::Sources {
                tcp: tcp.clone(),
                stores: vec![("stream".into(), store)],
                data_file: match &config.storage {
                    StorageKind::Durable(dir) => Some(dir.join(store::DATA_FILE)),
                    StorageKind::Memory => None,
                },
            };
            let sampler = ctx.new_context(ockam_core::Address::random_local()).await?;
            tokio::spawn(metrics::sample(sampler, sources));
        }
        match (&config.kafka, &config.kafka_process) {
            (None, _) => {}
            (Some(kafka), KafkaProcess::InProcess) => {
                start_kafka_services(ctx, kafka, &config.limits, 0, access.clone()).await?
            }
            (Some(kafka), KafkaProcess::Child { program }) => {
                // A closed hub's child serves the hub's identity alone,
                // through the hub's gate.
                let hub = access.is_closed().then_some(&public);
                let child = kafka_child::ChildConfig {
                    program: program.clone(),
                    args: kafka_child::child_args(kafka, &config.limits, hub),
                    hub: access.is_closed().then(|| identity.clone()),
                    access: access.clone(),
                };
                kafka_child::start(
                    ctx,
                    tcp.clone(),
                    child,
                    ["stream_kafka", "stream_kafka_index"],
                )
                .await?
            }
        }
        let addr = tcp.listen(&config.listen).await?;
        if !access.is_closed() {
            warn!(
                "this hub is open: anyone who reaches {addr} may read and push any stream, register \
                 forwarders and move any client's read position; start it with --access-file FILE \
                 to admit only the identities the file names"
            );
        }
        info!(
            listen = %addr,
            storage = ?config.storage,
            kafka = config.kafka.as_ref().map(|k| k.bootstrap_servers.as_str()),
            identity = %public,
            access = if access.is_closed() { "closed" } else { "open" },
            "hub up: echo_service, forwarding_service, stream, stream_index{}",
            if config.kafka.is_some() { ", stream_kafka, stream_kafka_index" } else { "" }
        );
        Ok(addr)
    }
}

/// `stream_kafka` and `stream_kafka_index` on `ctx`, kept in `kafka`: in
/// the hub's own process (`hops_before_peer` 0), or in its Kafka child
/// (the hops before each requester's peer: see `PeerTable::new`).
#[cfg(feature = "kafka")]
async fn start_kafka_services(
    ctx: &Context,
    kafka: &KafkaConfig,
    limits: &Limits,
    hops_before_peer: usize,
    access: Access,
) -> Result<()> {
    let store = KafkaStore::new(kafka.clone())?;
    tokio::spawn(store.clone().report_availability());
    start_stream_services(
        ctx,
        "stream_kafka",
        "stream_kafka_index",
        Arc::new(store),
        limits,
        hops_before_peer,
        access,
    )
    .await?;
    Ok(())
}

/// Without the `kafka` feature: refused (see [`without_kafka`]).
#[cfg(not(feature = "kafka"))]
async fn start_kafka_services(
    _ctx: &Context,
    _kafka: &KafkaConfig,
    _limits: &Limits,
    _hops_before_peer: usize,
    _access: Access,
) -> Result<()> {
    Err(without_kafka())
}

/// The error of a hub given Kafka bootstrap servers but built without the
/// `kafka` cargo feature (`ErrorKind::InvalidInput`).
fn without_kafka() -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        "this hub was built without the `kafka` feature of ockam-rs-hub, so it has no Kafka \
         back end; rebuild with `--features kafka` (on by default), or start it without Kafka \
         bootstrap servers",
    )
}

/// Starts the hub's secure channel listener ([`access::LISTENER`]) with
/// the hub's identity; on a closed hub it admits the identities the access
/// file names (asked at each handshake, so a reloaded file counts).
/// Returns the identity (its key, and its public key).
async fn start_listener(
    ctx: &Context,
    config: &HubConfig,
) -> Result<(kafka_child::HubIdentity, ockam_vault::PublicKey)> {
    let file = match (&config.identity, &config.storage) {
        (Some(path), _) => Some(path.clone()),
        (None, StorageKind::Durable(dir)) => Some(dir.join("identity.key")),
        (None, StorageKind::Memory) => None,
    };
    let vault = ockam_vault::Vault::create(ctx)?;
    let secret = match &file {
        Some(path) => {
            let (secret, created) = vault.load_or_create_x25519(path)?;
            if created {
                info!(file = %path.display(), "made the hub's identity");
            }
            secret
        }
        None => vault.generate_x25519(),
    };
    let access = config.access.clone();
    let admit = ockam_channel::Admit(Arc::new(move |key| access.admits(key)));
    let public = ockam_channel::SecureChannel::create_listener_with_options(
        ctx,
        access::LISTENER,
        &vault,
        ockam_channel::ListenerOptions {
            static_key: Some(secret.clone()),
            admit: Some(admit),
            ..Default::default()
        },
    )
    .await?;
    Ok((kafka_child::HubIdentity { vault, secret }, public))
}

impl Hub {
    /// The Kafka child's node (`ockam_hub --kafka-child`, see
    /// [`kafka_child`]): `stream_kafka` and `stream_kafka_index` alone,
    /// listening on `listen`; prints [`kafka_child::LISTENING`] and the
    /// address on standard output, then exits when standard input closes
    /// (the hub that started it is gone). `hub`: the identity of a closed
    /// hub, the only one served (through a secure channel to
    /// [`kafka_child::CHILD_LISTENER`], whose new key follows the address
    /// on the same line, from the hub's gate); `None`: an open hub's child,
    /// which serves whatever comes over TCP.
    ///
    /// # Errors
    /// The Kafka configuration is invalid, or `listen` cannot be bound.
    pub async fn start_kafka_child(
        ctx: &Context,
        kafka: &KafkaConfig,
        limits: &Limits,
        listen: &str,
        hub: Option<ockam_vault::PublicKey>,
    ) -> Result<SocketAddr> {
        let (access, relayed_hops) = match hub {
            // The child's channel end, the hub's gate, then the client.
            Some(hub) => (Access::Relayed { hub }, 2),
            // The hub's connection, then the client.
            None => (Access::Open, 1),
        };
        start_kafka_services(ctx, kafka, limits, relayed_hops, access).await?;
        let mut listener_key = String::new();
        if let Some(hub) = hub {
            let vault = ockam_vault::Vault::create(ctx)?;
            let key = ockam_channel::SecureChannel::create_listener_with_options(
                ctx,
                kafka_child::CHILD_LISTENER,
                &vault,
                ockam_channel::ListenerOptions {
                    trusted_peers: Some(vec![hub]),
                    ..Default::default()
                },
            )
            .await?;
            listener_key = format!(" {key}");
        }
        let tcp = TcpTransport::create(ctx).await?;
        let addr = tcp.listen(listen).await?;
        std::thread::spawn(|| {
            // Blocks until the hub's end of the pipe closes.
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            std::process::exit(0);
        });
        println!("{}{addr}{listener_key}", kafka_child::LISTENING);
        use std::io::Write;
        let _ = std::io::stdout().flush();
        info!(listen = %addr, kafka = %kafka.bootstrap_servers, "Kafka child up: stream_kafka, stream_kafka_index");
        Ok(addr)
    }
}

async fn start_stream_services(
    ctx: &Context,
    stream: &str,
    index: &str,
    store: Arc<dyn StreamStore>,
    limits: &Limits,
    hops_before_peer: usize,
    access: Access,
) -> Result<Arc<Shared>> {
    let shared = Shared::new(stream, store, limits.clone(), hops_before_peer, access);
    tokio::spawn(forget_idle(Arc::downgrade(&shared)));
    let reaper = ctx.new_context(ockam_core::Address::random_local()).await?;
    tokio::spawn(services::reap_idle_workers(reaper, Arc::downgrade(&shared)));
    ctx.start_worker(
        stream,
        StreamService {
            shared: shared.clone(),
        },
    )
    .await?;
    ctx.start_worker(index, IndexService::new(shared.clone()))
        .await?;
    Ok(shared)
}

/// Now and then, makes the store forget what it keeps for streams and
/// clients idle for `Limits::idle_timeout`; ends with the services.
async fn forget_idle(shared: std::sync::Weak<Shared>) {
    let Some(idle) = shared.upgrade().map(|s| s.limits.idle_timeout) else {
        return;
    };
    let every = (idle / 2).max(std::time::Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.store.forget_idle(idle).await;
    }
}

// The README's examples run as doc tests too, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

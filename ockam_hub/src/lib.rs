//! The hub node of the ockam-rs stack: a node other nodes reach over TCP
//! for an `echo_service` and for reliable streams (`stream`,
//! `stream_index`), kept in an embedded durable store ([`DurableStore`],
//! on `redb`, with group commit) or in memory ([`MemoryStore`]).
//!
//! ```no_run
//! use ockam_hub::{Hub, HubConfig, StorageKind};
//!
//! let (ctx, mut executor) = ockam_node::start_node();
//! executor
//!     .execute(async move {
//!         let config = HubConfig { storage: StorageKind::Memory, ..HubConfig::default() };
//!         let addr = Hub::start(&ctx, config).await?;
//!         println!("hub on {addr}");
//!         Ok(()) // the node keeps serving
//!     })
//!     .unwrap();
//! ```
#![deny(missing_docs)]

mod services;
pub mod storage;

pub use services::Limits;
pub use storage::{DurableStore, MemoryStore, StreamStore};

use ockam_core::Result;
use ockam_node::Context;
use ockam_transport_tcp::TcpTransport;
use services::{EchoService, ForwardingService, IndexService, Shared, StreamService};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::info;

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
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            listen: "127.0.0.1:4000".into(),
            storage: StorageKind::Durable(PathBuf::from("ockam_hub_data")),
            limits: Limits::default(),
        }
    }
}

/// The hub's services on a node.
pub struct Hub;

impl Hub {
    /// Opens the store, starts `echo_service`, `stream` and `stream_index`
    /// and listens for TCP connections; returns the address listened on.
    pub async fn start(ctx: &Context, config: HubConfig) -> Result<SocketAddr> {
        let store: Arc<dyn StreamStore> = match &config.storage {
            StorageKind::Durable(dir) => Arc::new(DurableStore::open(dir)?),
            StorageKind::Memory => Arc::new(MemoryStore::new()),
        };
        let shared = Shared::new(store, config.limits.clone());
        ctx.start_worker("echo_service", EchoService).await?;
        ctx.start_worker("forwarding_service", ForwardingService)
            .await?;
        ctx.start_worker(
            "stream",
            StreamService {
                shared: shared.clone(),
            },
        )
        .await?;
        ctx.start_worker("stream_index", IndexService { shared })
            .await?;
        let tcp = TcpTransport::create(ctx).await?;
        let addr = tcp.listen(&config.listen).await?;
        info!(listen = %addr, storage = ?config.storage, "hub up: echo_service, forwarding_service, stream, stream_index");
        Ok(addr)
    }
}

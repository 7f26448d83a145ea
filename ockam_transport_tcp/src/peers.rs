//! The peer table: which connection worker carries messages for each TCP
//! address, and which peers recently could not be reached. It is the node's
//! [`TransportRouter`] for transport type `TCP`.

use crate::options::TcpOptions;
use ockam_core::{Address, Error, ErrorKind, Result};
use ockam_node::TransportRouter;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};
use tracing::debug;

/// Backoff after the first failed connection attempt; doubles per failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest backoff between connection attempts to one peer.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
enum Peer {
    /// A connection worker exists (connected or connecting).
    Up { worker: Address, failures: u32 },
    /// The last attempt failed; senders get an error until `until`.
    Down {
        until: Instant,
        failures: u32,
        reason: String,
    },
}

/// What the on-demand router should do with a message for a peer.
pub(crate) enum PeerState {
    Up,
    Down(String),
    Unknown { failures: u32 },
}

/// Per-node TCP state shared by the transport's workers.
pub(crate) struct TcpShared {
    peers: RwLock<HashMap<String, Peer>>,
    pub(crate) options: TcpOptions,
    /// The worker that connects on demand.
    pub(crate) router_address: Address,
    pub(crate) started: tokio::sync::Mutex<bool>,
}

impl TcpShared {
    pub(crate) fn new(options: TcpOptions) -> Self {
        TcpShared {
            peers: RwLock::new(HashMap::new()),
            options,
            router_address: Address::random_local(),
            started: tokio::sync::Mutex::new(false),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Peer>> {
        self.peers.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Peer>> {
        self.peers.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn state(&self, peer: &str) -> PeerState {
        match self.read().get(peer) {
            Some(Peer::Up { .. }) => PeerState::Up,
            Some(Peer::Down {
                until,
                failures,
                reason,
            }) => {
                if Instant::now() < *until {
                    PeerState::Down(reason.clone())
                } else {
                    PeerState::Unknown {
                        failures: *failures,
                    }
                }
            }
            None => PeerState::Unknown { failures: 0 },
        }
    }

    /// The connection worker of `peer`, if it has one.
    pub(crate) fn worker(&self, peer: &str) -> Option<Address> {
        match self.read().get(peer) {
            Some(Peer::Up { worker, .. }) => Some(worker.clone()),
            _ => None,
        }
    }

    /// `worker` now carries messages for `peer`.
    pub(crate) fn set_up(&self, peer: &str, worker: &Address, failures: u32) {
        let old = self.write().insert(
            peer.to_string(),
            Peer::Up {
                worker: worker.clone(),
                failures,
            },
        );
        if let Some(Peer::Up { worker: old, .. }) = old {
            if &old != worker {
                debug!(peer, %old, new = %worker, "a newer connection replaces the old one for this peer");
            }
        }
    }

    /// The connection of `worker` is established: forget past failures.
    pub(crate) fn connected(&self, peer: &str, worker: &Address) {
        if let Some(Peer::Up {
            worker: w,
            failures,
        }) = self.write().get_mut(peer)
        {
            if w == worker {
                *failures = 0;
            }
        }
    }

    /// `worker` could not connect to `peer`: refuse sends for a while.
    pub(crate) fn failed(&self, peer: &str, worker: &Address, reason: String) {
        let mut peers = self.write();
        let failures = match peers.get(peer) {
            Some(Peer::Up {
                worker: w,
                failures,
            }) if w == worker => failures + 1,
            // A newer connection took over; it decides.
            _ => return,
        };
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << (failures - 1).min(16))
            .min(MAX_BACKOFF);
        peers.insert(
            peer.to_string(),
            Peer::Down {
                until: Instant::now() + backoff,
                failures,
                reason,
            },
        );
    }

    /// The connection of `worker` is over: forget it (the next message for
    /// `peer` reconnects).
    pub(crate) fn closed(&self, peer: &str, worker: &Address) {
        let mut peers = self.write();
        if matches!(peers.get(peer), Some(Peer::Up { worker: w, .. }) if w == worker) {
            peers.remove(peer);
        }
    }

    /// Number of peers with a connection worker.
    pub(crate) fn connections(&self) -> usize {
        self.read()
            .values()
            .filter(|p| matches!(p, Peer::Up { .. }))
            .count()
    }
}

impl TransportRouter for TcpShared {
    fn resolve(&self, address: &Address) -> Result<Address> {
        match self.read().get(address.address()) {
            Some(Peer::Up { worker, .. }) => Ok(worker.clone()),
            Some(Peer::Down { until, reason, .. }) if Instant::now() < *until => Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "TCP peer {address} is unreachable ({reason}); retrying in {:?}",
                    until.saturating_duration_since(Instant::now())
                ),
            )),
            _ => Ok(self.router_address.clone()),
        }
    }
}

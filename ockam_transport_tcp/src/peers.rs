//! The peer table: which connection worker carries messages for each TCP
//! address, and which peers recently could not be reached. It is the node's
//! [`TransportRouter`] for transport type `TCP`.

use crate::options::TcpOptions;
use crate::outbox::{Outbox, Push};
use ockam_core::{Address, EncodePayload, Error, ErrorKind, LocalMessage, Result, Route, TCP};
use ockam_node::{Routing, TransportRouter};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tracing::debug;

/// Backoff after the first failed connection attempt; doubles per failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How long messages for a peer that had connected to us (and left) fail
/// at once.
const ACCEPTED_GONE: Duration = Duration::from_secs(600);
/// Longest backoff between connection attempts to one peer.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
enum Peer {
    /// A connection worker exists (connected or connecting), or is about
    /// to be started by the on-demand router (`needs_start`).
    Up {
        worker: Address,
        outbox: Arc<Outbox>,
        failures: u32,
        needs_start: bool,
        /// Messages for this peer that were handed to the on-demand router
        /// and not yet passed on. While there are any, later messages take
        /// the same way, so that none overtakes another.
        via_router: Arc<AtomicUsize>,
    },
    /// The last attempt failed; senders get an error until `until`.
    Down {
        until: Instant,
        failures: u32,
        reason: String,
    },
}

/// What the on-demand router does with a message it was handed.
pub(crate) enum RouterAction {
    /// Start the connection worker (it connects), then pass the message on.
    Start {
        worker: Address,
        outbox: Arc<Outbox>,
        via_router: Arc<AtomicUsize>,
    },
    /// Pass the message on to the connection.
    Forward {
        outbox: Arc<Outbox>,
        via_router: Arc<AtomicUsize>,
    },
    /// The peer is unreachable: drop the message.
    Drop(String),
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

    /// For the on-demand router: what to do with a message for `peer`.
    pub(crate) fn router_action(&self, peer: &str) -> RouterAction {
        let mut peers = self.write();
        match peers.get_mut(peer) {
            Some(Peer::Up {
                worker,
                outbox,
                needs_start,
                via_router,
                ..
            }) => {
                let (worker, outbox, via_router) =
                    (worker.clone(), outbox.clone(), via_router.clone());
                if std::mem::take(needs_start) {
                    RouterAction::Start {
                        worker,
                        outbox,
                        via_router,
                    }
                } else {
                    RouterAction::Forward { outbox, via_router }
                }
            }
            Some(Peer::Down { reason, .. }) => RouterAction::Drop(reason.clone()),
            // The entry went away (connection closed) after this message
            // was routed here: let the next message start over.
            None => RouterAction::Drop("its connection closed".to_string()),
        }
    }

    /// The connection worker of `peer`, if it has one.
    pub(crate) fn worker(&self, peer: &str) -> Option<Address> {
        match self.read().get(peer) {
            Some(Peer::Up { worker, .. }) => Some(worker.clone()),
            _ => None,
        }
    }

    /// `worker`, about to be started by the caller, carries messages for
    /// `peer` from now on. Until the caller releases the returned hold
    /// (after starting the worker), messages for `peer` queue up in order
    /// at the on-demand router, which passes them on once the worker exists.
    pub(crate) fn set_up(&self, peer: &str, worker: &Address) -> (Arc<AtomicUsize>, Arc<Outbox>) {
        let hold = Arc::new(AtomicUsize::new(1));
        let outbox = self.new_outbox();
        let old = self.write().insert(
            peer.to_string(),
            Peer::Up {
                worker: worker.clone(),
                outbox: outbox.clone(),
                failures: 0,
                needs_start: false,
                via_router: hold.clone(),
            },
        );
        if let Some(Peer::Up { worker: old, .. }) = old {
            if &old != worker {
                debug!(peer, %old, new = %worker, "a newer connection replaces the old one for this peer");
            }
        }
        (hold, outbox)
    }

    fn new_outbox(&self) -> Arc<Outbox> {
        Arc::new(Outbox::new(
            self.options.write_batch_bytes,
            self.options.max_frame_size,
        ))
    }

    /// The connection of `worker` is established: forget past failures.
    pub(crate) fn connected(&self, peer: &str, worker: &Address) {
        if let Some(Peer::Up {
            worker: w,
            failures,
            ..
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
                ..
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

    /// The connection of `worker`, which `peer` opened to us, is over. Its
    /// address is an ephemeral port on the peer: nobody listens there, so
    /// messages for it fail at once for a while instead of dialing back.
    pub(crate) fn closed_accepted(&self, peer: &str, worker: &Address) {
        let mut peers = self.write();
        if matches!(peers.get(peer), Some(Peer::Up { worker: w, .. }) if w == worker) {
            peers.insert(
                peer.to_string(),
                Peer::Down {
                    until: Instant::now() + ACCEPTED_GONE,
                    failures: 0,
                    reason: "it had connected to this node and has disconnected".into(),
                },
            );
        }
        // Forget long-expired entries now and then, so the table stays small.
        if peers.len() > 1024 {
            let now = Instant::now();
            peers.retain(|_, p| !matches!(p, Peer::Down { until, .. } if *until < now));
        }
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

    /// The slow path of `resolve`: no usable entry for `peer`. Creates one
    /// whose worker the on-demand router will start, and counts this
    /// message as on its way through the router.
    fn route_new(&self, msg: LocalMessage) -> Result<Routing> {
        let address = msg.transport().onward_route.next()?;
        let peer = address.address();
        let mut peers = self.write();
        let failures = match peers.get(peer) {
            Some(Peer::Up { .. }) => {
                // Someone created it meanwhile: take the fast path again.
                drop(peers);
                return self.route(msg);
            }
            Some(Peer::Down {
                until,
                failures,
                reason,
            }) => {
                if Instant::now() < *until {
                    return Err(unreachable(address, reason, *until));
                }
                *failures
            }
            None => 0,
        };
        let from_remote = msg
            .transport()
            .return_route
            .next()
            .is_ok_and(|a| a.transport_type() == TCP);
        if from_remote && !self.options.connect_for_remote_senders {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "not connected to TCP peer {address}, and a message from another TCP peer \
                     may not open connections (TcpOptions::connect_for_remote_senders is off)"
                ),
            ));
        }
        peers.insert(
            peer.to_string(),
            Peer::Up {
                worker: Address::random_local(),
                outbox: self.new_outbox(),
                failures,
                needs_start: true,
                via_router: Arc::new(AtomicUsize::new(1)),
            },
        );
        Ok(Routing::Deliver(self.router_address.clone(), msg))
    }
}

fn unreachable(address: &Address, reason: &str, until: Instant) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        format!(
            "TCP peer {address} is unreachable ({reason}); retrying in {:?}",
            until.saturating_duration_since(Instant::now())
        ),
    )
}

/// What a sender learns from an outbox push.
fn routing(hop: &Address, push: Push, outbox: &Arc<Outbox>) -> Result<Routing> {
    match push {
        Push::Queued => Ok(Routing::Taken),
        Push::Backlog => Ok(Routing::Backlog(outbox.clone())),
        Push::Closed => Err(Error::new(
            ErrorKind::Unavailable,
            format!("the TCP connection to {hop} is closing"),
        )),
        Push::Refused(e) => Err(e),
        Push::Overloaded => Err(Error::new(
            ErrorKind::ResourceExhausted,
            format!("TCP peer {hop} is not reading; its backlog is full"),
        )),
    }
}

impl TransportRouter for TcpShared {
    fn route(&self, mut msg: LocalMessage) -> Result<Routing> {
        {
            let peers = self.read();
            let address = msg.transport().onward_route.next()?;
            match peers.get(address.address()) {
                Some(Peer::Up {
                    outbox, via_router, ..
                }) => {
                    // Follow earlier messages through the router while any
                    // are still there, so that none is overtaken.
                    let queued = via_router
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                            (n > 0).then_some(n + 1)
                        })
                        .is_ok();
                    if queued {
                        return Ok(Routing::Deliver(self.router_address.clone(), msg));
                    }
                    let hop = msg.transport_mut().onward_route.step()?;
                    return routing(&hop, outbox.push(msg.transport()), outbox);
                }
                Some(Peer::Down { until, reason, .. }) if Instant::now() < *until => {
                    return Err(unreachable(address, reason, *until))
                }
                _ => {}
            }
        }
        self.route_new(msg)
    }

    /// Straight into the outbox of a running connection; anything else
    /// (no connection yet, earlier messages still with the router, the
    /// peer down) takes the way of `route`.
    fn route_parts(
        &self,
        onward_route: &Route,
        return_route: &Route,
        payload: &dyn EncodePayload,
    ) -> Option<Result<Routing>> {
        let (hop, rest) = onward_route.as_slice().split_first()?;
        let peers = self.read();
        let Some(Peer::Up {
            outbox, via_router, ..
        }) = peers.get(hop.address())
        else {
            return None;
        };
        if via_router.load(Ordering::Acquire) > 0 {
            return None;
        }
        let push = outbox.push_parts(rest, return_route.as_slice(), payload);
        Some(routing(hop, push, outbox))
    }
}

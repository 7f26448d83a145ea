//! The peer table: which connection worker carries messages for each TCP
//! address, and which peers recently could not be reached; and the node's
//! [`TransportRouter`] for transport type `TCP`, which opens connections on
//! demand.

use crate::connection::TcpSendWorker;
use crate::frame::check_frame;
use crate::options::TcpOptions;
use crate::outbox::{Outbox, Push};
use ockam_core::internal::sync::{lock, read, write};
use ockam_core::{Address, EncodePayload, Error, ErrorKind, LocalMessage, Result, Route, TCP};
use ockam_node::{Backpressure, NodeHandle, Routing, TransportRouter};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{debug, warn};

/// Backoff after the first failed connection attempt; doubles per failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How long messages for a peer that had connected to us (and left) fail
/// at once, unless the application connects to it explicitly.
const ACCEPTED_GONE: Duration = Duration::from_secs(3600);
/// Longest backoff between connection attempts to one peer.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Peers remembered as down (failed, or gone after connecting to us)
/// beyond which the oldest marks are forgotten, so the table stays small.
const MAX_DOWN_PEERS: usize = 65_536;
/// Why a message for a peer in [`TcpShared::departed`] is not sent.
const DEPARTED: &str = "it had connected to this node and has disconnected";

/// Where a connection is in its life, as its senders see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Conn {
    /// Being opened: messages queue in its outbox, their senders wait.
    Connecting,
    /// Established.
    Connected,
    /// Could not be opened; messages queued for it are dropped.
    Failed(ErrorKind, String),
    /// Over.
    Closed,
}

/// The state of one connection, shared by its worker and its senders; a
/// sender that queued a message while the connection was being opened
/// waits on it (as [`Backpressure`]) and learns whether it was.
#[derive(Debug)]
pub(crate) struct ConnState {
    peer: String,
    state: watch::Sender<Conn>,
}

impl ConnState {
    fn new(peer: &str, state: Conn) -> Arc<Self> {
        Arc::new(ConnState {
            peer: peer.to_string(),
            state: watch::channel(state).0,
        })
    }

    pub(crate) fn set(&self, state: Conn) {
        self.state.send_if_modified(|s| {
            let change = *s == Conn::Connecting;
            if change {
                *s = state;
            }
            change
        });
    }

    fn is_connected(&self) -> bool {
        *self.state.borrow() == Conn::Connected
    }

    /// Waits until the connection is established (`Ok`: a message queued
    /// before is sent unless the connection later breaks, which its writer
    /// logs with a `dropped` count) or could not be (`Err`: a message
    /// queued before is not sent).
    pub(crate) async fn established(&self) -> Result<()> {
        let mut rx = self.state.subscribe();
        let state = match rx.wait_for(|c| *c != Conn::Connecting).await {
            Ok(c) => c.clone(),
            Err(_) => Conn::Closed,
        };
        match state {
            Conn::Connecting | Conn::Connected => Ok(()),
            Conn::Failed(kind, reason) => Err(Error::new(
                kind,
                format!("TCP peer {}: {reason}; the message was not sent", self.peer),
            )),
            Conn::Closed => Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "the TCP connection to {} closed while it was being set up; \
                     the message may not have been sent",
                    self.peer
                ),
            )),
        }
    }
}

impl Backpressure for ConnState {
    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>> {
        Box::pin(self.established())
    }

    fn decides_delivery(&self) -> bool {
        true
    }
}

#[derive(Debug, Clone)]
enum Peer {
    /// A connection worker exists (connected or connecting).
    Up {
        worker: Address,
        outbox: Arc<Outbox>,
        conn: Arc<ConnState>,
        /// Failed attempts before this one (sets the next backoff).
        failures: u32,
    },
    /// The last attempt failed; sends fail until `until` (an explicit
    /// `connect` tries at once). A peer that had connected to us and left
    /// is marked in [`TcpShared::departed`] instead.
    Down {
        until: Instant,
        failures: u32,
        reason: String,
    },
}

/// A connection to open: the caller starts its worker.
pub(crate) struct Opening {
    pub(crate) worker: Address,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) conn: Arc<ConnState>,
}

/// Per-node TCP state shared by the transport's workers.
pub(crate) struct TcpShared {
    peers: RwLock<HashMap<String, Peer>>,
    /// Peers that connected to this node and left, until when messages for
    /// them fail at once (see [`TcpShared::closed`]). Apart from `peers`
    /// and keyed by socket address, so that a mark allocates nothing of
    /// its own: thousands of them, made as connections close, used to pin
    /// the pages those connections' state had freed (issue 18: the hub
    /// kept 7 MiB more after 6,000 clients came and went). Locked after
    /// `peers` when both are.
    departed: Mutex<HashMap<SocketAddr, Instant>>,
    pub(crate) options: TcpOptions,
    /// Starts connection workers from inside `route` (no await there).
    node: NodeHandle,
    pub(crate) started: tokio::sync::Mutex<bool>,
}

impl TcpShared {
    pub(crate) fn new(options: TcpOptions, node: NodeHandle) -> Self {
        TcpShared {
            peers: RwLock::new(HashMap::new()),
            departed: Mutex::new(HashMap::new()),
            options,
            node,
            started: tokio::sync::Mutex::new(false),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Peer>> {
        read(&self.peers)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Peer>> {
        write(&self.peers)
    }

    fn departed(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Instant>> {
        lock(&self.departed)
    }

    /// Until when messages for `peer` fail because it connected to this
    /// node and left; `None` if it did not (or the mark expired).
    fn departed_until(&self, peer: &str) -> Option<Instant> {
        let addr: SocketAddr = peer.parse().ok()?;
        let until = *self.departed().get(&addr)?;
        (Instant::now() < until).then_some(until)
    }

    /// The connection worker of `peer`, if it has one.
    pub(crate) fn worker(&self, peer: &str) -> Option<Address> {
        match self.read().get(peer) {
            Some(Peer::Up { worker, .. }) => Some(worker.clone()),
            _ => None,
        }
    }

    fn new_outbox(&self) -> Arc<Outbox> {
        Arc::new(Outbox::new(
            self.options.write_batch_bytes,
            self.options.max_frame_size,
        ))
    }

    /// The connection to `peer`, opened (its worker started) if there is
    /// none: one lookup-and-insert under the table's lock, so concurrent
    /// callers share one connection. `explicit` (the application's
    /// `connect`) ignores a down mark; otherwise a peer in its backoff, or
    /// one that connected to us and left, is an error.
    pub(crate) fn open(
        self: &Arc<Self>,
        peer: &str,
        explicit: bool,
    ) -> Result<(Arc<Outbox>, Arc<ConnState>)> {
        let opening = {
            let mut peers = self.write();
            let failures = match peers.get(peer) {
                Some(Peer::Up { outbox, conn, .. }) => return Ok((outbox.clone(), conn.clone())),
                Some(Peer::Down {
                    until,
                    failures,
                    reason,
                }) => {
                    if !explicit && Instant::now() < *until {
                        return Err(unreachable(&Address::new(TCP, peer), reason, *until));
                    }
                    *failures
                }
                None => {
                    if explicit {
                        if let Ok(addr) = peer.parse::<SocketAddr>() {
                            self.departed().remove(&addr);
                        }
                    } else if let Some(until) = self.departed_until(peer) {
                        return Err(unreachable(&Address::new(TCP, peer), DEPARTED, until));
                    }
                    0
                }
            };
            let opening = Opening {
                worker: Address::random_local(),
                outbox: self.new_outbox(),
                conn: ConnState::new(peer, Conn::Connecting),
            };
            peers.insert(
                peer.to_string(),
                Peer::Up {
                    worker: opening.worker.clone(),
                    outbox: opening.outbox.clone(),
                    conn: opening.conn.clone(),
                    failures,
                },
            );
            opening
        };
        // Not under the table's lock: starting a worker takes the node's.
        let w = TcpSendWorker::new(
            peer.to_string(),
            None,
            opening.outbox.clone(),
            opening.conn.clone(),
            self.clone(),
        );
        if let Err(e) = self.node.start_transport_worker(opening.worker.clone(), w) {
            self.give_up(peer, &opening.worker, &opening.outbox, &opening.conn, &e);
            return Err(e);
        }
        Ok((opening.outbox, opening.conn))
    }

    /// Starts `w`, the worker of a connection, at `worker` on the node
    /// (see [`NodeHandle::start_transport_worker`]).
    ///
    /// # Errors
    /// As [`NodeHandle::start_transport_worker`]'s: `Shutdown` once the
    /// node is gone.
    pub(crate) fn start_transport_worker(&self, worker: Address, w: TcpSendWorker) -> Result<()> {
        self.node.start_transport_worker(worker, w)
    }

    /// `peer` connected to us: `worker`, about to be started by the
    /// caller, carries messages for it from now on. A connection it
    /// replaces is closed and its worker stopped.
    pub(crate) fn accepted(&self, peer: &str, worker: &Address) -> Opening {
        let opening = Opening {
            worker: worker.clone(),
            outbox: self.new_outbox(),
            conn: ConnState::new(peer, Conn::Connected),
        };
        let old = self.write().insert(
            peer.to_string(),
            Peer::Up {
                worker: worker.clone(),
                outbox: opening.outbox.clone(),
                conn: opening.conn.clone(),
                failures: 0,
            },
        );
        if let Some(Peer::Up {
            worker: old,
            outbox,
            ..
        }) = old
        {
            debug!(peer, %old, new = %worker, "a newer connection replaces the old one for this peer");
            outbox.close();
            self.node.request_stop(&old);
        }
        opening
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

    /// The connection of `worker` to `peer`, being opened, cannot be
    /// (`error`): the messages queued in its outbox are not sent and their
    /// senders, waiting on `conn`, get `error` (the outbox closes before
    /// the failure is published, so no sender gets `Ok` for one of them);
    /// sends to `peer` are refused for a backoff.
    pub(crate) fn give_up(
        &self,
        peer: &str,
        worker: &Address,
        outbox: &Outbox,
        conn: &ConnState,
        error: &Error,
    ) {
        let refused = outbox.close();
        warn!(peer, error = %error, refused, "TCP connection failed; the messages queued for it are not sent and their sends fail");
        self.failed(peer, worker, error);
        conn.set(Conn::Failed(error.kind(), error.to_string()));
    }

    /// `worker` could not connect to `peer` (`error`): refuse sends for a
    /// while.
    fn failed(&self, peer: &str, worker: &Address, error: &Error) {
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
                reason: error.to_string(),
            },
        );
        Self::forget_some(&mut peers);
    }

    /// The connection of `worker` is over. One the peer opened to us
    /// (`accepted`) came from an ephemeral port where nobody listens:
    /// messages for that address fail at once for [`ACCEPTED_GONE`]
    /// instead of dialing back. Otherwise the entry is forgotten and the
    /// next message for `peer` reconnects. Idempotent: the connection's
    /// reader and its worker both call it, whichever ends first.
    pub(crate) fn closed(&self, peer: &str, worker: &Address, accepted: bool) {
        let mut peers = self.write();
        if !matches!(peers.get(peer), Some(Peer::Up { worker: w, .. }) if w == worker) {
            return;
        }
        peers.remove(peer);
        if !accepted {
            return;
        }
        let Ok(addr) = peer.parse::<SocketAddr>() else {
            return;
        };
        let mut departed = self.departed();
        if departed.len() >= MAX_DOWN_PEERS {
            let now = Instant::now();
            departed.retain(|_, until| *until > now);
            let excess = departed.len().saturating_sub(MAX_DOWN_PEERS * 3 / 4);
            if excess > 0 {
                let mut oldest: Vec<(Instant, SocketAddr)> =
                    departed.iter().map(|(a, u)| (*u, *a)).collect();
                oldest.sort_unstable();
                for (_, a) in oldest.into_iter().take(excess) {
                    departed.remove(&a);
                }
            }
        }
        departed.insert(addr, Instant::now() + ACCEPTED_GONE);
    }

    /// Keeps the down marks from growing without bound: expired ones go
    /// first, then the oldest.
    fn forget_some(peers: &mut HashMap<String, Peer>) {
        if peers.len() <= MAX_DOWN_PEERS {
            return;
        }
        let now = Instant::now();
        peers.retain(|_, p| !matches!(p, Peer::Down { until, .. } if *until < now));
        let mut down: Vec<(Instant, String)> = peers
            .iter()
            .filter_map(|(k, p)| match p {
                Peer::Down { until, .. } => Some((*until, k.clone())),
                Peer::Up { .. } => None,
            })
            .collect();
        let excess = peers.len().saturating_sub(MAX_DOWN_PEERS * 3 / 4);
        if excess > 0 && !down.is_empty() {
            down.sort_unstable();
            for (_, k) in down.into_iter().take(excess) {
                peers.remove(&k);
            }
        }
    }

    /// Number of peers with a connection worker.
    pub(crate) fn connections(&self) -> usize {
        self.read()
            .values()
            .filter(|p| matches!(p, Peer::Up { .. }))
            .count()
    }

    /// The slow path of `route`: no usable entry for the next hop. Opens a
    /// connection (unless the message came from another TCP peer and that
    /// may not open connections) and queues the message in its outbox.
    fn route_new(self: &Arc<Self>, mut msg: LocalMessage) -> Result<Routing> {
        let address = msg.transport().onward_route.next()?.clone();
        let from_remote = msg
            .transport()
            .return_route
            .next()
            .is_ok_and(|a| a.transport_type() == TCP);
        if from_remote
            && !self.options.connect_for_remote_senders
            && self.worker(address.address()).is_none()
        {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "not connected to TCP peer {address}, and a message from another TCP peer \
                     may not open connections (TcpOptions::connect_for_remote_senders is off)"
                ),
            ));
        }
        // Refused before a connection is opened for it.
        let t = msg.transport();
        check_frame(
            &t.onward_route.as_slice()[1..],
            t.return_route.as_slice(),
            t.payload.len(),
            self.options.max_frame_size,
        )?;
        let (outbox, conn) = self.open(address.address(), false)?;
        let hop = msg.transport_mut().onward_route.step()?;
        routing(&hop, outbox.push(msg.transport()), &outbox, &conn)
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

/// What a sender learns from an outbox push. A message queued for a
/// connection that is still being opened makes its sender wait for it.
fn routing(
    hop: &Address,
    push: Push,
    outbox: &Arc<Outbox>,
    conn: &Arc<ConnState>,
) -> Result<Routing> {
    match push {
        // Checked after the push: a connection that fails meanwhile closes
        // its outbox before it says so, so the sender then hears of it.
        Push::Queued | Push::Backlog if !conn.is_connected() => Ok(Routing::Backlog(conn.clone())),
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

/// The node's [`TransportRouter`] for transport type `TCP`.
pub(crate) struct TcpRouting(pub(crate) Arc<TcpShared>);

impl TransportRouter for TcpRouting {
    fn is_connected(&self, address: &Address) -> Option<bool> {
        Some(self.0.worker(address.address()).is_some())
    }

    fn connection_worker(&self, address: &Address) -> Option<Address> {
        self.0.worker(address.address())
    }

    fn route(&self, mut msg: LocalMessage) -> Result<Routing> {
        {
            let peers = self.0.read();
            let address = msg.transport().onward_route.next()?;
            match peers.get(address.address()) {
                Some(Peer::Up { outbox, conn, .. }) => {
                    let hop = msg.transport_mut().onward_route.step()?;
                    return routing(&hop, outbox.push(msg.transport()), outbox, conn);
                }
                Some(Peer::Down { until, reason, .. }) if Instant::now() < *until => {
                    return Err(unreachable(address, reason, *until))
                }
                _ => {}
            }
        }
        self.0.route_new(msg)
    }

    /// Straight into the outbox of the connection; with none yet, the
    /// message takes the way of `route` (which opens one).
    fn route_parts(
        &self,
        onward_route: &Route,
        return_route: &Route,
        payload: &dyn EncodePayload,
    ) -> Option<Result<Routing>> {
        let (hop, rest) = onward_route.as_slice().split_first()?;
        let peers = self.0.read();
        let Some(Peer::Up { outbox, conn, .. }) = peers.get(hop.address()) else {
            return None;
        };
        let push = outbox.push_parts(rest, return_route.as_slice(), payload);
        Some(routing(hop, push, outbox, conn))
    }
}

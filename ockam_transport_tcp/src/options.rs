//! Settings of a node's TCP transport.

use crate::frame::DEFAULT_MAX_FRAME_SIZE;
use std::time::Duration;

/// Settings of a node's TCP transport, fixed when the node's first
/// [`TcpTransport`](crate::TcpTransport) is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpOptions {
    /// Largest frame sent or accepted, in bytes (default 16 MiB). A peer that
    /// announces a larger one is disconnected; a local message that encodes
    /// larger is refused to its sender (`ErrorKind::ResourceExhausted`).
    pub max_frame_size: usize,
    /// How long a connection attempt may take (default 10 s).
    pub connect_timeout: Duration,
    /// Whether a message that arrived *from a TCP peer* may make this node
    /// open a new connection to a peer it is not connected to (default
    /// false: such messages are dropped and logged, so that a remote peer
    /// cannot make this node connect anywhere it likes). Messages sent by
    /// this node's own workers always connect on demand.
    pub connect_for_remote_senders: bool,
    /// Pending output is written once this many bytes are queued even if
    /// more messages are waiting (default 256 KiB); with nothing waiting it
    /// is written at once. Senders wait (while the peer reads) once this
    /// much is queued for a connection; once 64 times this much (16 MiB by
    /// default) waits for a peer that reads nothing, the connection is
    /// closed (a slow consumer) and what waited is dropped with a log line.
    pub write_batch_bytes: usize,
    /// Most connections this node keeps open at once, accepted and opened
    /// together (default 4,096). A listener closes a connection it accepts
    /// beyond that at once, and logs the refusals (at most one line a
    /// second, with their count), so that a flood of connections costs
    /// this node a bounded amount of memory and leaves the connections it
    /// has serving. The process's open-file limit (`ulimit -n`) may be
    /// lower; raise it with this.
    pub max_connections: usize,
    /// How long a peer may go unheard before its connection is closed as
    /// dead (default 30 s; `None`: never, the operating system's defaults,
    /// which on Linux notice a peer that vanished with data unacknowledged
    /// after about 15 minutes, and one that vanished from an idle
    /// connection never).
    ///
    /// A peer that vanishes without closing its connection (it lost power
    /// or its network, or a link between is down) sends no FIN: without
    /// this, the connection would stay open, its messages queued for no
    /// one, and a hub would keep the workers of a client that is gone.
    /// Done by the kernel's TCP stack, so that it costs nothing while the
    /// peer answers and needs nothing of the peer (any TCP peer answers):
    /// `TCP_USER_TIMEOUT` (RFC 5482; Linux) closes a connection whose sent
    /// data stays unacknowledged this long, and TCP keepalive (RFC 1122,
    /// 4.2.3.6) probes an idle connection after half of it, then 3 times
    /// at a sixth of it, and closes it when none is answered. Closing it
    /// reports what it held as any closed connection does. A partition
    /// shorter than this is ridden out.
    pub peer_timeout: Option<Duration>,
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            connect_timeout: Duration::from_secs(10),
            connect_for_remote_senders: false,
            write_batch_bytes: 256 * 1024,
            max_connections: 4096,
            peer_timeout: Some(Duration::from_secs(30)),
        }
    }
}

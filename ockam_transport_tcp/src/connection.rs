//! One TCP connection: a worker that writes frames (and owns the socket)
//! and a task that reads frames and hands their messages to the node.

use crate::frame::FrameDecoder;
use crate::outbox::{Batch, Cursor, Outbox, Push};
use crate::peers::{Conn, ConnState, TcpShared};
use ockam_core::{
    async_trait, Address, Any, Error, ErrorKind, LocalMessage, Result, Routed, Worker,
    MAX_ROUTE_LEN, TCP,
};
use ockam_node::{Backpressure, Context};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// How much the reader asks the socket for at a time.
const READ_CHUNK: usize = 256 * 1024;

/// How long a closing connection waits for its reader to stop.
const READER_STOP: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a closing connection lets its writer send what is queued.
const WRITER_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Connects to `peer` within the transport's connect timeout.
pub(crate) async fn connect(peer: &str, shared: &TcpShared) -> Result<TcpStream> {
    let stream = tokio::time::timeout(shared.options.connect_timeout, TcpStream::connect(peer))
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                format!(
                    "connecting to TCP peer {peer} took longer than {:?}",
                    shared.options.connect_timeout
                ),
            )
        })?
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Unavailable,
                format!("cannot connect to TCP peer {peer}"),
                e,
            )
        })?;
    configure(&stream, &shared.options).map_err(|e| {
        Error::with_source(
            ErrorKind::Io,
            format!("cannot set the socket options of the connection to {peer}"),
            e,
        )
    })?;
    Ok(stream)
}

/// Sets a connection's socket options: `TCP_NODELAY` (frames go out when
/// written: the writer batches them itself), and the dead-peer detection
/// of [`TcpOptions::peer_timeout`](crate::TcpOptions::peer_timeout).
pub(crate) fn configure(stream: &TcpStream, options: &crate::TcpOptions) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let Some(timeout) = options.peer_timeout else {
        return Ok(());
    };
    let socket = socket2::SockRef::from(stream);
    // The kernel counts these in whole seconds; at least 1 s each.
    let idle = (timeout / 2).max(std::time::Duration::from_secs(1));
    let keepalive = socket2::TcpKeepalive::new().with_time(idle);
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_vendor = "apple",
        windows
    ))]
    let keepalive = keepalive.with_interval((timeout / 6).max(std::time::Duration::from_secs(1)));
    #[cfg(any(target_os = "linux", target_os = "android", target_vendor = "apple"))]
    let keepalive = keepalive.with_retries(3);
    socket.set_tcp_keepalive(&keepalive)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket.set_tcp_user_timeout(Some(timeout))?;
    Ok(())
}

/// Most pieces one vectored write takes (Linux takes at most 1,024).
const MAX_IOV: usize = 256;

/// Writes whatever the outbox holds, until it is closed and empty. When a
/// write fails: why, and how many frames were not (wholly) written.
async fn write_loop(
    mut writer: OwnedWriteHalf,
    outbox: Arc<Outbox>,
    peer: String,
) -> Option<(String, usize)> {
    let mut spare = Batch::default();
    loop {
        // Let the tasks that produce frames run first: what they add now
        // goes out in this write instead of costing a system call of its own.
        tokio::task::yield_now().await;
        let (mut batch, frames, closed) = outbox.take(spare).await;
        if batch.is_empty() && closed {
            let _ = writer.shutdown().await;
            return None;
        }
        // The batch's pieces (its buffer between the frames' shared ends,
        // and those), written with vectored writes: a shared end is not
        // copied again.
        let pieces: Vec<&[u8]> = batch.pieces().collect();
        let mut cursor = Cursor::default();
        let mut left = batch.len();
        while left > 0 {
            let iov = cursor.slices(&pieces, MAX_IOV);
            let written = tokio::select! {
                r = writer.write_vectored(&iov) => r,
                () = outbox.overloaded() => {
                    let waiting = left + outbox.queued_bytes();
                    let left = outbox.close();
                    return Some((
                        format!(
                            "{peer} reads nothing: {waiting} bytes waited for it (a peer that stops reading is disconnected)"
                        ),
                        frames + left,
                    ));
                }
            };
            drop(iov);
            match written {
                Ok(0) => {
                    let left = outbox.close();
                    return Some((
                        format!("write to {peer} failed: the socket took no bytes"),
                        frames + left,
                    ));
                }
                Ok(n) => {
                    left = left.saturating_sub(n);
                    // Senders waiting for room keep waiting while this moves.
                    outbox.wrote(n);
                    cursor.advance(&pieces, n);
                }
                Err(e) => {
                    let left = outbox.close();
                    return Some((format!("write to {peer} failed: {e}"), frames + left));
                }
            }
        }
        drop(pieces);
        batch.clear();
        spare = batch;
    }
}

/// Owns one TCP connection: connects (unless given a connected socket),
/// runs its writer and reader, and appends messages sent to its own address
/// to the outbox (senders normally append to the [`Outbox`] directly).
pub(crate) struct TcpSendWorker {
    /// The peer's TCP address text (`host:port`), the key in the peer table.
    peer: String,
    /// The peer connected to us (its address is not one to dial).
    accepted: bool,
    stream: Option<TcpStream>,
    outbox: Arc<Outbox>,
    conn: Arc<ConnState>,
    shared: Arc<TcpShared>,
    /// The reader's task, and how to tell it to stop. Not a
    /// [`HelperTask`](ockam_node::HelperTask): a reader whose worker is gone
    /// without a `shutdown` (a panic) sees `stop` dropped and reports the
    /// connection closed itself, so it must not be aborted with the worker.
    receiver: Option<(JoinHandle<()>, oneshot::Sender<()>)>,
    /// The writer. Not a [`HelperTask`](ockam_node::HelperTask) either: a
    /// worker gone without a `shutdown` (a panic) must not take the output
    /// already queued with it; the writer sends it.
    writer: Option<JoinHandle<Option<(String, usize)>>>,
}

impl TcpSendWorker {
    /// Marks the connection as one the peer opened to us.
    pub(crate) fn accepted(mut self) -> Self {
        self.accepted = true;
        self
    }

    pub(crate) fn new(
        peer: String,
        stream: Option<TcpStream>,
        outbox: Arc<Outbox>,
        conn: Arc<ConnState>,
        shared: Arc<TcpShared>,
    ) -> Self {
        TcpSendWorker {
            peer,
            accepted: false,
            stream,
            outbox,
            conn,
            shared,
            receiver: None,
            writer: None,
        }
    }
}

/// Logs what happened to a message offered to an outbox; true if queued.
pub(crate) fn report(peer: &str, push: Push) -> bool {
    match push {
        Push::Queued | Push::Backlog => true,
        Push::Closed => {
            warn!(%peer, dropped = 1, "dropped a message: the TCP connection is closing");
            false
        }
        Push::Refused(e) => {
            warn!(%peer, error = %e, dropped = 1, "dropped a message that cannot be sent");
            false
        }
        Push::Overloaded => {
            warn!(%peer, dropped = 1, "dropped a message: the peer is not reading and its backlog is full");
            false
        }
    }
}

#[async_trait]
impl Worker for TcpSendWorker {
    type Message = Any;
    type Context = Context;

    async fn initialize(&mut self, ctx: &mut Context) -> Result<()> {
        let me = ctx.address();
        let stream = match self.stream.take() {
            Some(s) => s,
            None => match connect(&self.peer, &self.shared).await {
                Ok(s) => s,
                Err(e) => {
                    // Expected now and then: a warning, not a worker error.
                    self.shared
                        .give_up(&self.peer, &me, &self.outbox, &self.conn, &e);
                    let _ = ctx.stop_worker(me).await;
                    return Ok(());
                }
            },
        };
        let recv_ctx = match ctx.new_context(Address::random_local()).await {
            Ok(c) => c,
            Err(e) => {
                // The node has stopped under us: nothing will carry these.
                self.shared
                    .give_up(&self.peer, &me, &self.outbox, &self.conn, &e);
                return Err(e);
            }
        };
        self.shared.connected(&self.peer, &me);
        self.conn.set(Conn::Connected);
        let local = stream.local_addr().ok();
        let (reader, writer) = stream.into_split();
        self.writer = Some(tokio::spawn(write_loop(
            writer,
            self.outbox.clone(),
            self.peer.clone(),
        )));
        let (stop, stopped) = oneshot::channel();
        let reader = tokio::spawn(receive_loop(
            recv_ctx,
            reader,
            stopped,
            self.peer.clone(),
            me,
            self.accepted,
            self.shared.clone(),
            self.outbox.clone(),
        ));
        self.receiver = Some((reader, stop));
        info!(peer = %self.peer, local = ?local, "TCP connection up");
        Ok(())
    }

    async fn handle_message(&mut self, _ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let mut transport = msg.into_transport_message();
        // Our own hop (the peer's TCP address) is done.
        transport.onward_route.step()?;
        match self.outbox.push(&transport) {
            Push::Backlog => self.outbox.wait().await?,
            other => {
                report(&self.peer, other);
            }
        }
        Ok(())
    }

    async fn shutdown(&mut self, ctx: &mut Context) -> Result<()> {
        // No new messages from now on; the writer sends what is queued,
        // then closes the socket.
        self.shared
            .closed(&self.peer, &ctx.address(), self.accepted);
        self.outbox.close();
        if let Some(mut w) = self.writer.take() {
            match tokio::time::timeout(WRITER_DRAIN, &mut w).await {
                Ok(Ok(Some((reason, dropped)))) => {
                    warn!(peer = %self.peer, %reason, dropped, "TCP output that was queued is dropped: the connection broke")
                }
                Ok(_) => {}
                Err(_) => {
                    w.abort();
                    // At least what the writer had not taken yet.
                    let dropped = self.outbox.close();
                    warn!(peer = %self.peer, dropped, "unsent TCP output dropped after {WRITER_DRAIN:?}: the peer is not reading")
                }
            }
        }
        if let Some((mut reader, stop)) = self.receiver.take() {
            // It counts what it read and will not pass on; a reader stuck
            // passing a message on is given up on. A reader that no longer
            // listens has stopped reading and is what stops this worker:
            // not waited for.
            let reading = stop.send(()).is_ok();
            if reading
                && tokio::time::timeout(READER_STOP, &mut reader)
                    .await
                    .is_err()
            {
                reader.abort();
                warn!(peer = %self.peer, "the TCP reader did not stop within {READER_STOP:?}; aborted");
            }
        }
        self.conn.set(Conn::Closed);
        info!(peer = %self.peer, "TCP connection closed");
        Ok(())
    }
}

/// Reads frames until the connection ends or breaks the protocol, then
/// stops the connection's send worker; or until that worker tells it to
/// stop (`stop`), when the whole messages it read and did not pass on are
/// counted in a logged drop.
#[allow(clippy::too_many_arguments)] // the parts of one connection, each used
async fn receive_loop(
    ctx: Context,
    mut reader: OwnedReadHalf,
    mut stop: oneshot::Receiver<()>,
    peer: String,
    sender: Address,
    accepted: bool,
    shared: Arc<TcpShared>,
    outbox: Arc<Outbox>,
) {
    let hop = Address::new(TCP, &peer);
    let mut decoder = FrameDecoder::new(shared.options.max_frame_size);
    let reason = 'conn: loop {
        let mut target = decoder.read_target(READ_CHUNK);
        let read = tokio::select! {
            biased;
            _ = &mut stop => break 'conn None,
            // What we owe the peer piled up to the outbox's hard limit
            // while it read nothing: no more reading its requests either.
            () = outbox.overloaded() => break 'conn Some(format!(
                "the peer reads nothing: {} bytes waited for it (a peer that stops reading is disconnected)",
                outbox.queued_bytes()
            )),
            r = reader.read_buf(&mut target) => r,
        };
        match read {
            Ok(0) if decoder.pending() == 0 => {
                break Some("the peer closed the connection".to_string())
            }
            Ok(0) => {
                break Some(format!(
                    "the peer closed the connection in the middle of a frame ({} bytes pending)",
                    decoder.pending()
                ))
            }
            Ok(_) => {}
            Err(e) => break Some(format!("read failed: {e}")),
        }
        loop {
            if !matches!(stop.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
                break 'conn None;
            }
            let decoded = match decoder.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => break 'conn Some(format!("invalid frame: {e}")),
            };
            // A well-framed message that does not decode is that message's
            // problem: the frames behind it are intact.
            let mut transport = match decoded {
                Ok(t) => t,
                Err(e) => {
                    warn!(%peer, error = %e, dropped = 1, "dropped a frame that is not a valid transport message");
                    continue;
                }
            };
            if transport.onward_route.is_empty() {
                warn!(%peer, dropped = 1, "dropped a message with an empty onward route");
                continue;
            }
            // Every hop adds itself to the return route: one that is full
            // could not be answered (nor sent on).
            if transport.return_route.len() >= MAX_ROUTE_LEN {
                warn!(%peer, onward = ?transport.onward_route.next().ok(), dropped = 1, "dropped a message whose return route already has {MAX_ROUTE_LEN} addresses (the most a route may have)");
                continue;
            }
            // Replies go back over this connection.
            transport.return_route.modify().prepend(hop.clone());
            if let Err(e) = ctx
                .forward_from_transport(LocalMessage::new(transport))
                .await
            {
                warn!(%peer, error = %e, dropped = 1, "dropped a message from a TCP peer");
            }
        }
    };
    let Some(reason) = reason else {
        // The connection's worker is closing it (and waits for this task),
        // or is gone (a panic): either way, no more sends to this peer.
        shared.closed(&peer, &sender, accepted);
        let mut dropped = 0;
        while let Ok(Some(_)) = decoder.next_message() {
            dropped += 1;
        }
        if dropped > 0 {
            warn!(%peer, dropped, "messages read from a TCP peer as the connection closed were not passed on");
        }
        return;
    };
    info!(%peer, %reason, "closing TCP connection");
    shared.closed(&peer, &sender, accepted);
    // Done reading: the buffer and the socket go now, and dropping `stop`
    // tells the send worker's shutdown not to wait for this task (which
    // waits for that shutdown).
    drop(decoder);
    drop(reader);
    drop(stop);
    let _ = ctx.stop_worker(sender).await;
    debug!(%peer, "TCP receiver done");
}

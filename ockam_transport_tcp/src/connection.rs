//! One TCP connection: a worker that writes frames (and owns the socket)
//! and a task that reads frames and hands their messages to the node.

use crate::frame::{encode_frame, FrameDecoder};
use crate::peers::TcpShared;
use ockam_core::{
    async_trait, Address, Any, Error, ErrorKind, LocalMessage, Result, Routed, TransportMessage,
    Worker, TCP,
};
use ockam_node::Context;
use std::sync::Arc;
use std::sync::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// How much the reader asks the socket for at a time.
const READ_CHUNK: usize = 256 * 1024;

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
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Frames waiting to be written, shared between a connection's worker
/// (which appends) and its writer task (which takes everything at once).
/// While the writer is in a system call, frames pile up and go out
/// together in the next one: batching without waiting for a timer.
struct Outbox {
    state: Mutex<OutboxState>,
    /// The writer waits here for frames.
    ready: Notify,
    /// The worker waits here when too much is queued.
    drained: Notify,
}

struct OutboxState {
    buf: Vec<u8>,
    /// Set when the writer is gone (write failed, connection closing).
    closed: bool,
}

impl Outbox {
    fn new() -> Self {
        Outbox {
            state: Mutex::new(OutboxState {
                buf: Vec::new(),
                closed: false,
            }),
            ready: Notify::new(),
            drained: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OutboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
        self.drained.notify_waiters();
    }
}

/// Writes whatever the outbox holds, until it is closed and empty.
async fn write_loop(mut writer: OwnedWriteHalf, outbox: Arc<Outbox>, peer: String) -> Option<String> {
    let mut spare = Vec::new();
    loop {
        // Let the tasks that produce frames run first: what they add now
        // goes out in this write instead of costing a system call of its own.
        tokio::task::yield_now().await;
        let (batch, closed) = {
            let mut st = outbox.lock();
            std::mem::swap(&mut st.buf, &mut spare);
            (std::mem::take(&mut spare), st.closed)
        };
        outbox.drained.notify_waiters();
        if batch.is_empty() {
            if closed {
                let _ = writer.shutdown().await;
                return None;
            }
            outbox.ready.notified().await;
            spare = batch;
            continue;
        }
        if let Err(e) = writer.write_all(&batch).await {
            outbox.close();
            return Some(format!("write to {peer} failed: {e}"));
        }
        spare = batch;
        spare.clear();
    }
}

/// Sends the messages routed to one TCP peer over its connection.
pub(crate) struct TcpSendWorker {
    /// The peer's TCP address text (`host:port`), the key in the peer table.
    peer: String,
    /// A connection made before the worker started; without one, the worker
    /// connects in `initialize` (messages wait in its mailbox meanwhile).
    stream: Option<TcpStream>,
    outbox: Arc<Outbox>,
    shared: Arc<TcpShared>,
    receiver: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<Option<String>>>,
}

impl TcpSendWorker {
    pub(crate) fn new(peer: String, stream: Option<TcpStream>, shared: Arc<TcpShared>) -> Self {
        TcpSendWorker {
            peer,
            stream,
            outbox: Arc::new(Outbox::new()),
            shared,
            receiver: None,
            writer: None,
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
                    warn!(peer = %self.peer, error = %e, "TCP connection failed; messages for this peer are dropped");
                    self.shared.failed(&self.peer, &me, e.to_string());
                    return Err(e);
                }
            },
        };
        self.shared.connected(&self.peer, &me);
        let local = stream.local_addr().ok();
        let (reader, writer) = stream.into_split();
        self.writer = Some(tokio::spawn(write_loop(
            writer,
            self.outbox.clone(),
            self.peer.clone(),
        )));
        let recv_ctx = ctx.new_context(Address::random_local()).await?;
        self.receiver = Some(tokio::spawn(receive_loop(
            recv_ctx,
            reader,
            self.peer.clone(),
            me,
            self.shared.clone(),
        )));
        info!(peer = %self.peer, local = ?local, "TCP connection up");
        Ok(())
    }

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let mut transport = msg.into_transport_message();
        // Our own hop (the peer's TCP address) is done.
        transport.onward_route.step()?;
        let limit = self.shared.options.write_batch_bytes;
        enum Outcome {
            Queued,
            Full,
            Closed,
            TooLarge(ockam_core::Error),
        }
        loop {
            let drained = self.outbox.drained.notified();
            let outcome = {
                let mut st = self.outbox.lock();
                if st.closed {
                    Outcome::Closed
                } else if st.buf.len() >= limit {
                    // Keep about `limit` bytes queued at most: beyond that
                    // wait for the writer, so a slow peer slows senders down.
                    Outcome::Full
                } else {
                    match encode_frame(&transport, &mut st.buf, self.shared.options.max_frame_size) {
                        Ok(()) => Outcome::Queued,
                        Err(e) => Outcome::TooLarge(e),
                    }
                }
            };
            match outcome {
                Outcome::Queued => break,
                Outcome::Full => drained.await,
                Outcome::Closed => {
                    warn!(peer = %self.peer, "TCP connection is closing; dropped a message");
                    let _ = ctx.stop_worker(ctx.address()).await;
                    return Ok(());
                }
                Outcome::TooLarge(e) => {
                    warn!(peer = %self.peer, error = %e, onward = %transport.onward_route, "dropped a message too large to send");
                    return Ok(());
                }
            }
        }
        self.outbox.ready.notify_one();
        Ok(())
    }

    async fn shutdown(&mut self, ctx: &mut Context) -> Result<()> {
        // Let the writer send what is queued, then close the socket.
        self.outbox.close();
        if let Some(w) = self.writer.take() {
            match tokio::time::timeout(std::time::Duration::from_secs(5), w).await {
                Ok(Ok(Some(reason))) => debug!(peer = %self.peer, %reason, "writer ended"),
                Ok(_) => {}
                Err(_) => warn!(peer = %self.peer, "unsent TCP output dropped after 5 s"),
            }
        }
        if let Some(r) = self.receiver.take() {
            r.abort();
        }
        self.shared.closed(&self.peer, &ctx.address());
        info!(peer = %self.peer, "TCP connection closed");
        Ok(())
    }
}

/// Reads frames until the connection ends or breaks the protocol, then
/// stops the connection's send worker.
async fn receive_loop(
    ctx: Context,
    mut reader: OwnedReadHalf,
    peer: String,
    sender: Address,
    shared: Arc<TcpShared>,
) {
    let hop = Address::new(TCP, &peer);
    let mut decoder = FrameDecoder::new(shared.options.max_frame_size);
    let reason = 'conn: loop {
        match reader.read_buf(decoder.read_buffer(READ_CHUNK)).await {
            Ok(0) if decoder.pending() == 0 => break "the peer closed the connection".to_string(),
            Ok(0) => {
                break format!(
                    "the peer closed the connection in the middle of a frame ({} bytes pending)",
                    decoder.pending()
                )
            }
            Ok(_) => {}
            Err(e) => break format!("read failed: {e}"),
        }
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => break 'conn format!("invalid frame: {e}"),
            };
            let mut transport = match TransportMessage::decode(frame) {
                Ok(t) => t,
                Err(e) => break 'conn format!("frame is not a transport message: {e}"),
            };
            if transport.onward_route.is_empty() {
                warn!(%peer, "dropped a message with an empty onward route");
                continue;
            }
            // Replies go back over this connection.
            transport.return_route.modify().prepend(hop.clone());
            if let Err(e) = ctx.forward(LocalMessage::new(transport)).await {
                warn!(%peer, error = %e, "dropped a message from a TCP peer");
            }
        }
    };
    info!(%peer, %reason, "closing TCP connection");
    shared.closed(&peer, &sender);
    let _ = ctx.stop_worker(sender).await;
    debug!(%peer, "TCP receiver done");
}

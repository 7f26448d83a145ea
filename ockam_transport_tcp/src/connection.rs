//! One TCP connection: a worker that writes frames (and owns the socket)
//! and a task that reads frames and hands their messages to the node.

use crate::frame::FrameDecoder;
use crate::outbox::{Outbox, Push};
use crate::peers::TcpShared;
use ockam_core::{
    async_trait, Address, Any, Error, ErrorKind, LocalMessage, Result, Routed, TransportMessage,
    Worker, TCP,
};
use ockam_node::{Backpressure, Context};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// Writes whatever the outbox holds, until it is closed and empty.
async fn write_loop(
    mut writer: OwnedWriteHalf,
    outbox: Arc<Outbox>,
    peer: String,
) -> Option<String> {
    let mut spare = Vec::new();
    loop {
        // Let the tasks that produce frames run first: what they add now
        // goes out in this write instead of costing a system call of its own.
        tokio::task::yield_now().await;
        let (mut batch, closed) = outbox.take(spare).await;
        if batch.is_empty() && closed {
            let _ = writer.shutdown().await;
            return None;
        }
        let mut done = 0;
        while done < batch.len() {
            match writer.write(&batch[done..]).await {
                Ok(0) => {
                    outbox.close();
                    return Some(format!("write to {peer} failed: the socket took no bytes"));
                }
                Ok(n) => {
                    done += n;
                    // Senders waiting for room keep waiting while this moves.
                    outbox.wrote(n);
                }
                Err(e) => {
                    outbox.close();
                    return Some(format!("write to {peer} failed: {e}"));
                }
            }
        }
        batch.clear();
        spare = batch;
    }
}

/// Owns one TCP connection: connects (unless given a connected socket),
/// runs its writer and reader, and appends the messages that were deferred
/// to its mailbox (see [`Outbox`]) to the outbox.
pub(crate) struct TcpSendWorker {
    /// The peer's TCP address text (`host:port`), the key in the peer table.
    peer: String,
    /// The peer connected to us (its address is not one to dial).
    accepted: bool,
    stream: Option<TcpStream>,
    outbox: Arc<Outbox>,
    shared: Arc<TcpShared>,
    receiver: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<Option<String>>>,
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
        shared: Arc<TcpShared>,
    ) -> Self {
        TcpSendWorker {
            peer,
            accepted: false,
            stream,
            outbox,
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
            warn!(%peer, "dropped a message: the TCP connection is closing");
            false
        }
        Push::Refused(e) => {
            warn!(%peer, error = %e, "dropped a message that cannot be sent");
            false
        }
        Push::Overloaded => {
            warn!(%peer, "dropped a message: the peer is not reading and its backlog is full");
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
                    warn!(peer = %self.peer, error = %e, "TCP connection failed; messages for this peer are dropped");
                    self.outbox.close();
                    self.shared.failed(&self.peer, &me, e.to_string());
                    let _ = ctx.stop_worker(me).await;
                    return Ok(());
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

    async fn handle_message(&mut self, _ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let mut transport = msg.into_transport_message();
        // Our own hop (the peer's TCP address) is done.
        transport.onward_route.step()?;
        match self.outbox.push(&transport) {
            Push::Backlog => self.outbox.wait().await,
            other => {
                report(&self.peer, other);
            }
        }
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
        if self.accepted {
            self.shared.closed_accepted(&self.peer, &ctx.address());
        } else {
            self.shared.closed(&self.peer, &ctx.address());
        }
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

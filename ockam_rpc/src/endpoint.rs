//! The two ends of a typed stream: [`Sink`] and [`Source`], each a handle
//! on a [`SendHalf`] / [`RecvHalf`] that a small task (the end's shell)
//! connects to the node: it sends the half's frames to the peer end, feeds
//! it the peer's frames, and keeps its one timer. A receiving end's small
//! frames are fed to its half by the task that delivers them instead
//! ([`Inline`]), which wakes the shell when it has something to send.

use crate::error::RpcError;
use crate::proto::{
    data_head, Bodies, End, Frame, RecvHalf, SendHalf, SendRefused, Timing, Window,
};
use ockam_core::internal::recycle;
use ockam_core::internal::sync::lock;
use ockam_core::{Address, Any, LocalMessage, Message, Route};
use ockam_node::{Context, InlineHandler, Onward};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Instant;
use tokio::sync::Notify;
use tracing::{debug, warn};

/// What the protocol halves have in common, for the shell.
pub(crate) trait Half: Send + 'static {
    fn handle(&mut self, frame: Frame, now: Instant);
    /// The other end's route is known from `now` on.
    fn attached(&mut self, now: Instant);
    /// A frame as it came (its encoding): decoded, then handled.
    fn handle_payload(&mut self, payload: bytes::Bytes, now: Instant) {
        decode_and_handle(self, &payload, now)
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<Frame>;
    fn poll_timeout(&self) -> Option<Instant>;
    fn handle_timeout(&mut self, now: Instant);
    fn lost(&mut self, why: &str);
    /// Nothing more to send or receive.
    fn finished(&self) -> bool;
    /// The handler that takes the end's small frames on the task that
    /// delivers them, if it has one (see [`Inline`]): a receiving end does
    /// (messages and the end: a round trip's path); a sending end does not
    /// (credits, acknowledgements: off that path, and a credit would wake
    /// a sending application from the connection's reader, moving its task
    /// onto the connection's thread).
    fn inline_handler(_shared: &Arc<Shared<Self>>) -> Option<Arc<dyn InlineHandler>>
    where
        Self: Sized,
    {
        None
    }
}

impl Half for SendHalf {
    fn handle(&mut self, frame: Frame, now: Instant) {
        SendHalf::handle(self, frame, now)
    }
    fn attached(&mut self, now: Instant) {
        SendHalf::attached(self, now)
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<Frame> {
        SendHalf::poll_transmit(self, now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        SendHalf::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        SendHalf::handle_timeout(self, now)
    }
    fn lost(&mut self, why: &str) {
        SendHalf::lost(self, why)
    }
    fn finished(&self) -> bool {
        self.is_over()
    }
}

impl Half for RecvHalf {
    fn handle(&mut self, frame: Frame, now: Instant) {
        if !RecvHalf::handle(self, frame, now) {
            warn!("typed stream: dropped a frame its sender could not have sent");
        }
    }
    fn attached(&mut self, now: Instant) {
        RecvHalf::attached(self, now)
    }
    /// `Data` frames, the many, without a buffer per message: their
    /// messages stay slices of the frame until the application decodes them.
    fn handle_payload(&mut self, payload: bytes::Bytes, now: Instant) {
        match crate::proto::decode_data(&payload) {
            Some(Ok((first, bodies))) => {
                if !self.handle_data(first, bodies, now) {
                    warn!("typed stream: dropped a frame its sender could not have sent");
                }
            }
            Some(Err(e)) => {
                warn!(error = %e, dropped = 1, "typed stream: dropped a frame that does not decode")
            }
            None => decode_and_handle(self, &payload, now),
        }
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<Frame> {
        RecvHalf::poll_transmit(self, now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        RecvHalf::poll_timeout(self)
    }
    fn handle_timeout(&mut self, now: Instant) {
        RecvHalf::handle_timeout(self, now)
    }
    fn lost(&mut self, why: &str) {
        RecvHalf::lost(self, why)
    }
    fn finished(&self) -> bool {
        self.poll_timeout().is_none()
    }
    fn inline_handler(shared: &Arc<Shared<Self>>) -> Option<Arc<dyn InlineHandler>> {
        Some(Arc::new(Inline(shared.clone())))
    }
}

/// Where the other end of a stream is.
#[derive(Default)]
struct Peer {
    /// The route to it, once known (from the call, or its answer).
    route: Option<Route>,
    /// Frames that came before the route was known, with the route each
    /// came from (at most [`EARLY_FRAMES`]): the other end's first credit
    /// can overtake the call's answer. Those from the other end are handled
    /// once it is known; the rest are dropped.
    early: Vec<(Route, bytes::Bytes)>,
    /// The frames the inline handler passed to the end's mailbox and the
    /// shell has not handled yet, in order, each known by where its
    /// payload lies (the same buffer arrives through the mailbox): while
    /// there are any, later frames take the mailbox too, so as not to
    /// overtake them (see [`Inline`]). Frames that come to the mailbox
    /// another way are not among them.
    mailed: VecDeque<usize>,
    /// A frame came to the mailbox another way: from then on every frame
    /// takes the mailbox, so that none overtakes such a frame.
    mailbox_only: bool,
}

/// Most frames an end keeps before it knows where its other end is.
const EARLY_FRAMES: usize = 16;

/// Decodes a frame from its encoding and hands it to `half`; one that does
/// not decode is dropped (logged).
fn decode_and_handle<H: Half + ?Sized>(half: &mut H, payload: &[u8], now: Instant) {
    match Frame::decode(payload) {
        Ok(frame) => half.handle(frame, now),
        Err(e) => {
            warn!(error = %e, dropped = 1, "typed stream: dropped a frame that does not decode")
        }
    }
}

/// A half shared by its handle (the application) and its shell.
pub(crate) struct Shared<H> {
    half: Mutex<H>,
    /// The route to the other end, once known, and the frames that came
    /// before it was.
    peer: Mutex<Peer>,
    /// Wakes the shell: the application changed the half, or a frame
    /// handled inline left something to send.
    kick: Notify,
    /// The application's tasks waiting for the half to change.
    wakers: Mutex<Vec<Waker>>,
}

impl<H: Half> Shared<H> {
    /// Sets the route to the other end (a call's answer says where it is),
    /// and handles the frames that came from there before.
    pub(crate) fn set_peer(&self, route: Route) {
        let early = {
            let mut peer = lock(&self.peer);
            peer.route = Some(route.clone());
            std::mem::take(&mut peer.early)
        };
        let now = Instant::now();
        self.lock().attached(now);
        for (from, payload) in early {
            if from == route {
                self.lock().handle_payload(payload, now);
            } else {
                warn!(%from, dropped = 1, "typed stream: dropped a frame from outside the stream");
            }
        }
        self.kick.notify_one();
    }
}

impl<H> Shared<H> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, H> {
        lock(&self.half)
    }

    fn peer(&self) -> Option<Route> {
        lock(&self.peer).route.clone()
    }

    fn wake_app(&self) {
        let wakers = std::mem::take(&mut *lock(&self.wakers));
        for w in wakers {
            w.wake();
        }
    }

    fn wait(&self, cx: &mut TaskContext<'_>) {
        let mut w = lock(&self.wakers);
        if !w.iter().any(|x| x.will_wake(cx.waker())) {
            w.push(cx.waker().clone());
        }
    }
}

/// The route to the end at `peer` on the node the message `via` came from:
/// its return route, with the sending context replaced by `peer`.
pub(crate) fn route_to(via: &Route, peer: &Address) -> Route {
    let mut hops: Vec<Address> = via.iter().cloned().collect();
    hops.pop();
    hops.push(peer.clone());
    Route::from(hops)
}

/// Stream ends alive in this process (each a task).
static LIVE_ENDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many stream ends (sinks and sources, each a small task with its
/// own address) are alive in this process: for tests and metrics. An end
/// lives until its stream is over (closed, aborted, cancelled, lost) and
/// its last frames are sent.
pub fn live_ends() -> usize {
    LIVE_ENDS.load(std::sync::atomic::Ordering::Acquire)
}

/// Runs its function once, when dropped: with the end's shell when the
/// end is over, or at once if no end took it (a server's per-peer count).
pub(crate) struct OnEnd(Option<Box<dyn FnOnce() + Send + Sync>>);

impl OnEnd {
    pub(crate) fn new(f: impl FnOnce() + Send + Sync + 'static) -> Self {
        OnEnd(Some(Box::new(f)))
    }
}

impl Drop for OnEnd {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

struct LiveEnd(#[allow(dead_code)] Option<OnEnd>);

impl Drop for LiveEnd {
    fn drop(&mut self) {
        LIVE_ENDS.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Starts the shell of `half` at a new address; `peer`: the route to the
/// other end, if known (else set by the call's answer: frames before it wait).
pub(crate) async fn start<H: Half>(
    ctx: &Context,
    half: H,
    peer: Option<Route>,
    on_end: Option<OnEnd>,
) -> ockam_core::Result<(Arc<Shared<H>>, Address)> {
    let address = Address::random_local();
    let end_ctx = ctx.new_context(address.clone()).await?;
    let shared = Arc::new(Shared {
        half: Mutex::new(half),
        peer: Mutex::new(Peer {
            route: peer,
            early: Vec::new(),
            mailed: VecDeque::new(),
            mailbox_only: false,
        }),
        kick: Notify::new(),
        wakers: Mutex::new(Vec::new()),
    });
    let inline = H::inline_handler(&shared);
    let inlined = inline.is_some();
    if inlined {
        end_ctx.set_inline_handler(&address, inline)?;
    }
    LIVE_ENDS.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let live = LiveEnd(on_end);
    let task_shared = shared.clone();
    tokio::spawn(async move {
        let _live = live;
        run(end_ctx, task_shared, inlined).await
    });
    Ok((shared, address))
}

/// The shell: sends, receives, keeps time, until the half is finished;
/// `inlined`: the end has an inline handler (see [`Inline`]).
async fn run<H: Half>(mut ctx: Context, shared: Arc<Shared<H>>, inlined: bool) {
    let mut unsent: Vec<Frame> = Vec::new();
    loop {
        let now = Instant::now();
        let (deadline, finished) = {
            let mut h = shared.lock();
            while let Some(f) = h.poll_transmit(now) {
                unsent.push(f);
            }
            (h.poll_timeout(), h.finished())
        };
        let peer = shared.peer();
        // No clock before the other end is known (see `Half::attached`);
        // and an end that finished before it was has nothing to tell it.
        let deadline = deadline.filter(|_| peer.is_some());
        if finished && peer.is_none() {
            break;
        }
        if let Some(p) = peer {
            for f in unsent.drain(..) {
                let sent = match &f {
                    // Its header and its items as queued: not encoded again.
                    Frame::Data { first, bodies } => {
                        let (head, len) = data_head(*first, bodies);
                        let payload = ockam_core::SharedTail {
                            head: &head[..len],
                            tail: bodies.wire_bytes(),
                        };
                        ctx.send_payload(p.clone(), &payload).await
                    }
                    _ => ctx.send(p.clone(), f).await,
                };
                if let Err(e) = sent {
                    debug!(error = %e, "typed stream: the peer cannot be reached");
                    shared
                        .lock()
                        .lost(&format!("the peer cannot be reached: {e}"));
                    break;
                }
            }
            unsent.clear();
        }
        shared.wake_app();
        if finished && unsent.is_empty() {
            break;
        }
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            m = ctx.receive_block::<Any>() => match m {
                Ok(m) => {
                    let t = m.into_transport_message();
                    let at = payload_at(&t.payload);
                    on_frame(&shared, t.return_route, t.payload);
                    // Handled: no longer one that a later frame must not
                    // overtake (a frame that came another way was never
                    // among them).
                    if inlined {
                        let mut peer = lock(&shared.peer);
                        if peer.mailed.front() == Some(&at) {
                            peer.mailed.pop_front();
                        } else {
                            peer.mailbox_only = true;
                        }
                    }
                }
                Err(_) => {
                    shared.lock().lost("the node stopped");
                    shared.wake_app();
                    break;
                }
            },
            () = shared.kick.notified() => {}
            () = sleep => shared.lock().handle_timeout(Instant::now()),
        }
    }
}

/// Frames of at most this many bytes are handled on the task that
/// delivers them (see [`Inline`]).
const INLINE_MAX: usize = 512;

/// Where a frame's payload lies: the same buffer goes through the mailbox,
/// and no other frame's can lie there while it is alive (frames are never
/// empty).
fn payload_at(payload: &[u8]) -> usize {
    payload.as_ptr() as usize
}

/// Takes a receiving end's small frames (a few small messages, the end,
/// pings: what a round trip is made of) on the task that delivers them, the TCP connection's reader or a worker of this node, instead of
/// through the end's mailbox ([`Context::set_inline_handler`]): the
/// application's task is woken from there, and the end's task only when it
/// has something to do (frames to send, the end to finish). One task
/// switch less per small frame; a round trip has two.
///
/// Larger frames go to the mailbox as before: handling a batch of many
/// messages on the reader's task would stop it reading meanwhile
/// (`BENCHMARKS.md`, typed streams, sessions 11 and 14). So that no frame
/// overtakes one still in the mailbox, frames take the mailbox while any
/// this handler put there is unhandled ([`Peer::mailed`]): the protocol
/// puts frames back in order (`Data` by sequence number, `Close` and
/// `Abort` by the total they carry), but a message that arrives early is
/// copied out of its frame and held, and an end waits. Frames that come
/// through the mailbox another way (those an inline handler passes on,
/// such as a secure channel's: handlers do not nest) are handled by the
/// shell as before, and once one has, every later frame of the end takes
/// the mailbox ([`Peer::mailbox_only`]). (Only a frame handled here while
/// the first such frame waits in the mailbox could overtake it: a route
/// whose hops pass one stream's frames on sometimes from inside an inline
/// handler and sometimes not; none in this workspace does.)
struct Inline(Arc<Shared<RecvHalf>>);

impl InlineHandler for Inline {
    fn handle(
        &self,
        msg: LocalMessage,
        _onward: &mut Onward<'_>,
    ) -> ockam_core::Result<Option<LocalMessage>> {
        let shared = &self.0;
        {
            let mut peer = lock(&shared.peer);
            let payload = &msg.transport().payload;
            if payload.len() > INLINE_MAX || !peer.mailed.is_empty() || peer.mailbox_only {
                peer.mailed.push_back(payload_at(payload));
                return Ok(Some(msg));
            }
        }
        let t = msg.into_transport_message();
        on_frame(shared, t.return_route, t.payload);
        shared.wake_app();
        // Something to send (a credit, the end's acknowledgement), or the
        // end is over: the shell's to do.
        let shell = {
            let h = shared.lock();
            h.has_transmit() || Half::finished(&*h)
        };
        if shell {
            shared.kick.notify_one();
        }
        Ok(None)
    }
}

/// A frame from `from`: handled if it comes from the other end, kept if
/// that end is not known yet (see [`Peer::early`]), else dropped.
fn on_frame<H: Half>(shared: &Shared<H>, from: Route, payload: Vec<u8>) {
    // Given back to the process's pool once read (see `recycle`).
    let payload = recycle::shared(payload);
    {
        let mut peer = lock(&shared.peer);
        match &peer.route {
            // Not known yet: kept until it is (see `Peer::early`).
            None => {
                if peer.early.len() < EARLY_FRAMES {
                    peer.early.push((from, payload));
                } else {
                    warn!(%from, dropped = 1, "typed stream: dropped a frame that came before its stream was set up");
                }
                return;
            }
            // Not from the other end (a forged frame, or a stale one from
            // another route): never part of this stream.
            Some(p) if *p != from => {
                warn!(%from, dropped = 1, "typed stream: dropped a frame from outside the stream");
                return;
            }
            Some(_) => {}
        }
    }
    shared.lock().handle_payload(payload, Instant::now());
}

/// The sending end of a typed stream of `T`s.
///
/// Created by [`make_sink`](crate::make_sink) (a client's, for a call) or
/// [`Source::make_sink`] (a server's reverse stream). Messages go in order,
/// each exactly once, and only as fast as the receiving application grants
/// credit: `send` waits for it. End it with [`close`](Self::close) (a clean
/// end the receiver sees as `Ok(None)`) or [`abort`](Self::abort); when the
/// last handle of a sink is dropped without either, the stream is aborted
/// (it never looks like a clean end). Clones are handles on the same
/// stream (a handler keeps one and returns another, as in seed 003).
pub struct Sink<T> {
    inner: Arc<SinkInner>,
    /// A message accepted by `send` or `futures::Sink::start_send`, not
    /// yet queued (encoded straight into the stream's queue once there is
    /// credit for it).
    buffered: Option<T>,
}

// The buffered message is never pinned (nothing is projected to it): a
// `Sink` may move whatever its `T`.
impl<T> Unpin for Sink<T> {}

struct SinkInner {
    shared: Arc<Shared<SendHalf>>,
    address: Address,
    ended: std::sync::atomic::AtomicBool,
}

impl Drop for SinkInner {
    fn drop(&mut self) {
        if !self.ended.load(std::sync::atomic::Ordering::Acquire) {
            self.shared
                .lock()
                .abort("the sink was dropped without close()");
            self.shared.kick.notify_one();
        }
    }
}

impl<T> Clone for Sink<T> {
    fn clone(&self) -> Self {
        Sink {
            inner: self.inner.clone(),
            buffered: None,
        }
    }
}

impl<T: Message> Sink<T> {
    /// Sets the route to the receiving end (a call's answer says where it
    /// is).
    pub(crate) fn shared_set_peer(&self, route: Route) {
        self.shared().set_peer(route);
    }

    pub(crate) async fn start(
        ctx: &Context,
        timing: Timing,
        peer: Option<Route>,
    ) -> ockam_core::Result<Self> {
        let (shared, address) =
            start(ctx, SendHalf::new(timing, Instant::now()), peer, None).await?;
        Ok(Sink {
            inner: Arc::new(SinkInner {
                shared,
                address,
                ended: std::sync::atomic::AtomicBool::new(false),
            }),
            buffered: None,
        })
    }

    /// The address of this end (what a call passes to the server).
    pub fn address(&self) -> &Address {
        &self.inner.address
    }

    fn shared(&self) -> &Shared<SendHalf> {
        &self.inner.shared
    }

    fn mark_ended(&self) {
        self.inner
            .ended
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn poll_push(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), RpcError>> {
        let Some(msg) = self.buffered.take() else {
            return Poll::Ready(Ok(()));
        };
        // Without waiting first (the common case); registered to be woken
        // only when there is no credit, then looked at again.
        let mut registered = false;
        loop {
            let mut h = self.shared().lock();
            match h.send_encoded(|buf| msg.encode_into(buf)) {
                Err(e) => return Poll::Ready(Err(RpcError::from_core(e))),
                Ok(Ok(())) => {
                    // The shell takes the whole queue when it runs: only
                    // the first message since then needs to wake it.
                    let first = h.queued() == 1;
                    drop(h);
                    if first {
                        self.shared().kick.notify_one();
                    }
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(SendRefused::NoCredit)) if !registered => {
                    drop(h);
                    self.shared().wait(cx);
                    registered = true;
                }
                Ok(Err(SendRefused::NoCredit)) => {
                    drop(h);
                    self.buffered = Some(msg);
                    return Poll::Pending;
                }
                Ok(Err(SendRefused::TooLarge { size, limit })) => {
                    return Poll::Ready(Err(RpcError::TooLarge { size, limit }))
                }
                Ok(Err(SendRefused::Ended)) => return Poll::Ready(Err(ended(h.outcome()))),
            }
        }
    }

    fn poll_outcome(&self, cx: &mut TaskContext<'_>) -> Poll<Result<(), RpcError>> {
        self.shared().wait(cx);
        let h = self.shared().lock();
        match h.outcome() {
            Some(Ok(())) => Poll::Ready(Ok(())),
            Some(Err(e)) => Poll::Ready(Err(RpcError::from(e))),
            None => Poll::Pending,
        }
    }

    fn start_close(&self) {
        self.mark_ended();
        self.shared().lock().close();
        self.shared().kick.notify_one();
    }

    /// Sends `msg`, waiting for credit from the receiving application.
    ///
    /// # Errors
    /// [`RpcError::TooLarge`] for a message over the receiver's window (the
    /// stream goes on); once the stream ended: how ([`RpcError::Cancelled`],
    /// [`RpcError::Lost`], [`RpcError::Aborted`]), or [`RpcError::Closed`]
    /// after [`close`](Self::close).
    ///
    /// # Cancel safety
    /// Not cancel safe: a `send` dropped while waiting for credit did not
    /// send `msg`, but one dropped after credit came may have.
    pub async fn send(&mut self, msg: T) -> Result<(), RpcError> {
        self.buffered = Some(msg);
        poll_fn(|cx| self.poll_push(cx)).await
    }

    /// Ends the stream cleanly, and returns once the receiver has
    /// everything sent (its end acknowledged).
    ///
    /// # Errors
    /// How the stream ended otherwise (cancelled, lost, ...): then the
    /// receiver may not have everything. [`RpcError::Lost`] when the end is
    /// not acknowledged within the liveness timeout
    /// ([`Timing::liveness`](crate::Timing::liveness), 10 s by default) of
    /// the end going out or of the receiver's last word that more arrived:
    /// the route lost some of what was sent, or the end or its
    /// acknowledgement (the receiver may then have it all).
    ///
    /// # Cancel safety
    /// Cancel safe: the stream is closing once `close` was first polled;
    /// another handle's `close` waits for the same outcome.
    pub async fn close(mut self) -> Result<(), RpcError> {
        poll_fn(|cx| futures_sink::Sink::poll_close(Pin::new(&mut self), cx)).await
    }

    /// Ends the stream without a clean end: the receiver gets
    /// [`RpcError::Aborted`] with `reason` (after what it already had).
    pub fn abort(self, reason: &str) {
        self.mark_ended();
        self.shared().lock().abort(reason);
        self.shared().kick.notify_one();
    }
}

fn ended(outcome: Option<Result<(), End>>) -> RpcError {
    match outcome {
        Some(Err(e)) => RpcError::from(e),
        _ => RpcError::Closed,
    }
}

impl<T: Message> futures_sink::Sink<T> for Sink<T> {
    type Error = RpcError;

    fn poll_ready(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Result<(), RpcError>> {
        self.poll_push(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: T) -> Result<(), RpcError> {
        self.buffered = Some(item);
        Ok(())
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Result<(), RpcError>> {
        self.poll_push(cx)
    }

    fn poll_close(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Result<(), RpcError>> {
        if !self.inner.ended.load(std::sync::atomic::Ordering::Acquire) {
            match self.poll_push(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            self.start_close();
        }
        self.poll_outcome(cx)
    }
}

/// The receiving end of a typed stream of `T`s: messages in the order sent,
/// each exactly once; `Ok(None)` only after a clean end with nothing
/// missing. Taking a message grants its sender credit for more: a source
/// takes the messages that arrived in batches of up to an eighth of its
/// window (at most 256 messages), and the credit for a batch is granted once the
/// application has taken its last message (the sender never waits on more
/// than that).
pub struct Source<T> {
    shared: Arc<Shared<RecvHalf>>,
    address: Address,
    /// For [`make_sink`](Self::make_sink): the route to the receiver of
    /// the reverse stream (on the caller's node), and its address.
    pub(crate) reverse: Option<(Route, Address)>,
    pub(crate) ctx_for_reverse: Option<Arc<Context>>,
    pub(crate) timing: Timing,
    done: bool,
    /// Messages lent by the half ([`RecvHalf::lend`]), in order, not yet
    /// given to the application: taken one by one without the lock.
    batch: VecDeque<Bodies>,
    /// Messages (and their bytes) of `batch` given to the application and
    /// not yet reported to the half (it grants credit for them then).
    used: (u64, u64),
    _t: PhantomData<fn() -> T>,
}

/// Most messages a source borrows from its half at once: an eighth of its
/// window (so credit for them comes back at most that much later), up to
/// 256.
fn lend_max(window: Window) -> usize {
    usize::try_from((window.messages / 8).clamp(1, 256)).unwrap_or(256)
}

impl<T: Message> Source<T> {
    pub(crate) async fn start(
        ctx: &Context,
        window: Window,
        timing: Timing,
        peer: Option<Route>,
        on_end: Option<OnEnd>,
    ) -> ockam_core::Result<Self> {
        let (shared, address) = start(
            ctx,
            RecvHalf::new(window, timing, Instant::now()),
            peer,
            on_end,
        )
        .await?;
        Ok(Source {
            shared,
            address,
            reverse: None,
            ctx_for_reverse: None,
            timing,
            done: false,
            batch: VecDeque::new(),
            used: (0, 0),
            _t: PhantomData,
        })
    }

    /// The address of this end.
    pub fn address(&self) -> &Address {
        &self.address
    }

    pub(crate) fn shared_set_peer(&self, route: Route) {
        self.shared.set_peer(route);
    }

    fn poll_recv(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<Option<T>, RpcError>> {
        if self.done {
            return Poll::Ready(Ok(None));
        }
        let taken = if self.batch.is_empty() {
            // Without waiting first (the common case); registered to be
            // woken only when nothing is there, then looked at again.
            let mut taken = self.refill();
            if taken.is_none() && self.batch.is_empty() {
                self.shared.wait(cx);
                taken = self.refill();
            }
            taken
        } else {
            None
        };
        let decoded = match taken {
            // The next of the batch, decoded from its slice of the frame.
            None => {
                let Some(run) = self.batch.front_mut() else {
                    return Poll::Pending;
                };
                let Some(body) = run.next_slice() else {
                    // Runs in a batch are checked and never empty: this
                    // cannot happen; were it to, the stream ends with an
                    // error rather than without its messages.
                    let why = "a received run of messages does not decode".to_string();
                    self.cancel_inner(&why);
                    return Poll::Ready(Err(RpcError::Decode(why)));
                };
                self.used.0 += 1;
                self.used.1 += body.len() as u64;
                let decoded = T::decode(body);
                if run.is_empty() {
                    self.batch.pop_front();
                    if self.batch.is_empty() {
                        // Credit as the application takes: the last of a
                        // batch reports the whole batch (and borrows the
                        // next).
                        self.refill();
                    }
                }
                decoded
            }
            Some(Ok(Some(body))) => T::decode(&body),
            Some(Ok(None)) => {
                self.done = true;
                return Poll::Ready(Ok(None));
            }
            Some(Err(e)) => {
                self.done = true;
                return Poll::Ready(Err(RpcError::from(e)));
            }
        };
        match decoded {
            Ok(t) => Poll::Ready(Ok(Some(t))),
            Err(e) => {
                let why = format!("a message does not decode: {e}");
                self.cancel_inner(&why);
                Poll::Ready(Err(RpcError::Decode(why)))
            }
        }
    }

    /// A sink of `U`s to the peer that made this stream's sink, when the
    /// call that brought this source asked for a reverse stream (seed 003:
    /// a handler turns the source it receives into a sink and returns it).
    ///
    /// # Errors
    /// [`RpcError::NoReverse`] when there is no peer to send to (a source
    /// not made by a call); [`RpcError::Node`] when the node cannot
    /// register the new end (it has stopped).
    pub async fn make_sink<U: Message>(&self) -> Result<Sink<U>, RpcError> {
        let (Some((route, _)), Some(ctx)) = (&self.reverse, &self.ctx_for_reverse) else {
            return Err(RpcError::NoReverse);
        };
        Sink::start(ctx, self.timing, Some(route.clone()))
            .await
            .map_err(RpcError::from_core)
    }

    /// The next message; `Ok(None)` once the sender closed the stream and
    /// everything arrived.
    ///
    /// # Errors
    /// How the stream ended otherwise: [`RpcError::Aborted`] (with the
    /// sender's reason), [`RpcError::Cancelled`], [`RpcError::Lost`], or
    /// [`RpcError::Decode`] for a message that is not a `T` (the stream is
    /// then cancelled). After an end, `recv` keeps answering `Ok(None)`.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is taken only when it is returned.
    pub async fn recv(&mut self) -> Result<Option<T>, RpcError> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Wants no more: the sender's `send` and `close` fail with
    /// [`RpcError::Cancelled`] and `reason`.
    pub fn cancel(mut self, reason: &str) {
        self.cancel_inner(reason);
    }

    /// Reports what the application took from the batch, and borrows
    /// the next one; when there is none, what [`RecvHalf::take`] says
    /// (the end of the stream, or `None`: nothing yet). Wakes the shell
    /// when that left a credit to send.
    fn refill(&mut self) -> Option<Result<Option<bytes::Bytes>, End>> {
        let (taken, credit) = {
            let mut h = self.shared.lock();
            let had_credit = h.has_transmit();
            if self.used != (0, 0) {
                h.took(self.used.0, self.used.1);
                self.used = (0, 0);
            }
            let max = lend_max(h.window());
            let taken = if self.batch.is_empty() && h.lend(max, &mut self.batch) == 0 {
                h.take()
            } else {
                None
            };
            (taken, !had_credit && h.has_transmit())
        };
        if credit {
            self.shared.kick.notify_one();
        }
        taken
    }

    fn cancel_inner(&mut self, reason: &str) {
        self.done = true;
        self.batch.clear();
        self.shared.lock().cancel(reason);
        self.shared.kick.notify_one();
    }
}

impl<T> Drop for Source<T> {
    fn drop(&mut self) {
        if !self.done {
            self.shared.lock().cancel("the source was dropped");
            self.shared.kick.notify_one();
        }
    }
}

impl<T: Message> futures_core::Stream for Source<T> {
    type Item = Result<T, RpcError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.poll_recv(cx) {
            Poll::Ready(Ok(Some(t))) => Poll::Ready(Some(Ok(t))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod inline_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::proto::{Frame, Timing, Window};
    use crate::RpcError;
    use ockam_core::{route, TransportMessage};
    use std::time::Duration;

    /// No timer gets in the way: wakes must come from the frames.
    const SLOW: Timing = Timing {
        ping_every: Duration::from_secs(3600),
        liveness: Duration::from_secs(7200),
    };

    fn frame(to: &Address, f: Frame) -> LocalMessage {
        LocalMessage::new(TransportMessage::v1(
            route![to.clone()],
            route!["peer"],
            f.encode().unwrap(),
        ))
    }

    fn data(first: u64, m: &str) -> Frame {
        Frame::Data {
            first,
            bodies: [m.to_string().encode().unwrap()].iter().collect(),
        }
    }

    /// A node of one worker thread (the end's task runs only when the test
    /// awaits), running `f`.
    fn node<F>(f: impl FnOnce(Context) -> F)
    where
        F: std::future::Future<Output = ockam_core::Result<()>> + Send + 'static,
    {
        let (ctx, mut executor) = ockam_node::start_node_with(|b| {
            b.worker_threads(1);
        });
        executor.execute(f(ctx)).unwrap();
    }

    /// A source whose other end is "peer" (a context of its own, to
    /// receive what the source sends), its inline handler and its address.
    async fn source(
        ctx: &Context,
    ) -> ockam_core::Result<(Context, Source<String>, Inline, Address)> {
        let peer = ctx.new_context(Address::from("peer")).await?;
        let s = Source::<String>::start(ctx, Window::default(), SLOW, Some(route!["peer"]), None)
            .await?;
        let inline = Inline(s.shared.clone());
        let to = s.address().clone();
        Ok((peer, s, inline, to))
    }

    #[test]
    fn small_frames_are_handled_inline_and_none_overtakes_one_in_the_mailbox() {
        node(|ctx| async move {
            let (_peer, mut src, inline, to) = source(&ctx).await?;
            let big = "x".repeat(4096);
            // Small: handled here, ready before any task ran.
            assert!(inline
                .handle(frame(&to, data(0, "a")), &mut ctx.onward())?
                .is_none());
            assert_eq!(src.shared.lock().held().0, 1);
            // Large: the mailbox; and the abort behind it too, so that it
            // does not overtake the large message.
            let a = inline
                .handle(frame(&to, data(1, &big)), &mut ctx.onward())?
                .expect("a large frame takes the mailbox");
            let b = inline
                .handle(
                    frame(
                        &to,
                        Frame::Abort {
                            reason: "r".into(),
                            total: 2,
                        },
                    ),
                    &mut ctx.onward(),
                )?
                .expect("behind a large frame: the mailbox");
            assert_eq!(lock(&src.shared.peer).mailed.len(), 2);
            ctx.forward_to(&to, a).await?;
            ctx.forward_to(&to, b).await?;
            assert_eq!(src.recv().await.unwrap(), Some("a".to_string()));
            assert_eq!(src.recv().await.unwrap(), Some(big));
            assert!(matches!(src.recv().await, Err(RpcError::Aborted(_))));
            assert!(lock(&src.shared.peer).mailed.is_empty());
            // Nothing waits in the mailbox: small frames are handled here
            // again.
            assert!(inline
                .handle(frame(&to, Frame::Ping), &mut ctx.onward())?
                .is_none());
            ctx.stop().await
        });
    }

    #[test]
    fn after_a_frame_that_came_another_way_every_frame_takes_the_mailbox() {
        node(|ctx| async move {
            let (_peer, mut src, inline, to) = source(&ctx).await?;
            // Straight to the mailbox, as from inside another inline
            // handler.
            ctx.forward_to(&to, frame(&to, data(0, "a"))).await?;
            assert_eq!(src.recv().await.unwrap(), Some("a".to_string()));
            assert!(lock(&src.shared.peer).mailbox_only);
            let b = inline
                .handle(frame(&to, data(1, "b")), &mut ctx.onward())?
                .expect("the mailbox, as the one before it");
            ctx.forward_to(&to, b).await?;
            assert_eq!(src.recv().await.unwrap(), Some("b".to_string()));
            ctx.stop().await
        });
    }

    #[test]
    fn inline_frames_wake_the_application_and_the_end_without_a_timer() {
        node(|ctx| async move {
            let (mut peer, src, inline, to) = source(&ctx).await?;
            let reader = tokio::spawn(async move {
                let mut s = src;
                let m = s.recv().await;
                (s, m)
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(inline
                .handle(frame(&to, data(0, "a")), &mut ctx.onward())?
                .is_none());
            let (mut src, m) = tokio::time::timeout(Duration::from_secs(5), reader)
                .await
                .expect("the application was not woken")
                .unwrap();
            assert_eq!(m.unwrap(), Some("a".to_string()));
            // The end: acknowledged by the end's task, woken from here.
            assert!(inline
                .handle(frame(&to, Frame::Close { total: 1 }), &mut ctx.onward())?
                .is_none());
            let ack = async {
                loop {
                    let m = peer.receive_block::<Frame>().await?;
                    if matches!(m.body(), Frame::CloseAck) {
                        return Ok::<_, ockam_core::Error>(());
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(5), ack)
                .await
                .expect("the acknowledgement waited for a timer")?;
            assert_eq!(src.recv().await.unwrap(), None);
            ctx.stop().await
        });
    }
}

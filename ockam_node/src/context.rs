//! `Context`: a worker's (or the application's) handle on its node: its
//! addresses, its mailbox, and the node's router.

use crate::helper::HelperTask;
use crate::mailbox::Mailbox;
use crate::relay;
use crate::router::{InlineHandler, Onward, OwnerId, Router, TransportRouter};
use ockam_core::internal::sync::{get_mut, lock};
use ockam_core::{
    Address, AddressSet, EncodePayload, Error, ErrorKind, LocalMessage, Message, Receipt, Result,
    Route, Routed, TransportType, Worker,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// How long [`Context::receive`] waits before giving up.
pub const DEFAULT_RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// A handle on the node for one worker or for application code: send and
/// receive messages, start and stop workers, stop the node.
///
/// The context given to `#[ockam::node]`'s `main` lives at address `app`.
/// Dropping a context (other than a worker's) frees its address.
pub struct Context {
    addresses: Vec<Address>,
    router: Arc<Router>,
    mailbox: Mailbox,
    id: OwnerId,
    /// The receipt of the last message `receive*` returned, told when the
    /// application asks for the next one (or calls [`Context::ack`]).
    taken: std::sync::Mutex<Option<Receipt>>,
}

impl Context {
    /// Registers a context at `addresses` with a fresh mailbox.
    pub(crate) fn new_registered(router: Arc<Router>, addresses: Vec<Address>) -> Result<Context> {
        let id = router.next_id();
        let mailbox = router.register(&addresses, id)?;
        Ok(Context {
            addresses,
            router,
            mailbox,
            id,
            taken: std::sync::Mutex::new(None),
        })
    }

    pub(crate) fn id(&self) -> OwnerId {
        self.id
    }

    pub(crate) fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// Frees this context's addresses now (senders get `NotFound`).
    pub(crate) fn deregister(&self) {
        self.router.deregister(&self.addresses, self.id);
    }

    pub(crate) async fn next_message(&mut self) -> Option<LocalMessage> {
        self.mailbox.next().await
    }

    pub(crate) fn try_next_message(&mut self) -> Option<LocalMessage> {
        self.mailbox.try_next()
    }

    /// This context's primary address.
    pub fn address(&self) -> Address {
        self.addresses[0].clone()
    }

    /// Every address of this context, primary first.
    pub fn addresses(&self) -> &[Address] {
        &self.addresses
    }

    /// Number of messages waiting in this context's mailbox.
    pub fn pending_messages(&self) -> usize {
        self.mailbox.len()
    }

    /// Sends `msg` along `route`; the return route is this context's address.
    ///
    /// `Ok` means the message was handed to the next hop: queued in a local
    /// worker's mailbox, or in the outgoing buffer of an *established*
    /// transport connection (a send that needs a new TCP connection waits
    /// for it to be set up). It does not mean a remote worker got it: a
    /// message queued for a connection that breaks before it is written,
    /// or one that the node after this one drops (no such worker there, a
    /// route over the limits on the way), is lost with a warn log line on
    /// the node that drops it, counting what it dropped. Use a reply, a
    /// secure channel's or a stream's confirmation when the sender must
    /// know.
    ///
    /// # Errors
    /// - [`ErrorKind::NotFound`]: the first hop does not exist on this
    ///   node (and no transport routes it);
    /// - [`ErrorKind::Encoding`]: `msg` cannot be encoded;
    /// - [`ErrorKind::InvalidInput`]: `route` is empty, or the message breaks a wire limit
    ///   ([`MAX_ROUTE_LEN`](ockam_core::MAX_ROUTE_LEN),
    ///   [`MAX_ADDRESS_LEN`](ockam_core::MAX_ADDRESS_LEN), the transport's
    ///   frame size) and would be refused by the peer;
    /// - [`ErrorKind::Unavailable`] / [`ErrorKind::Timeout`]: the transport
    ///   cannot reach the next hop (a connection that failed, or is in its
    ///   backoff after a failure);
    /// - [`ErrorKind::ResourceExhausted`]: the message is larger than the
    ///   transport's frame limit, or the peer is not reading and its
    ///   connection's backlog is full.
    ///
    /// # Cancel safety
    /// Cancel safe: the message is queued (or refused) before the first
    /// suspension point. Dropping the future only skips the back-pressure
    /// wait (or the wait for a TCP connection being opened, and so the
    /// report of whether it opened); the message is not taken back.
    pub async fn send<R, M>(&self, route: R, msg: M) -> Result<()>
    where
        R: Into<Route>,
        M: Message,
    {
        // The primary address is ours by construction: no membership check.
        let pressure = self.router.send(route.into(), &self.addresses[0], &msg)?;
        self.yield_to_pressure(pressure).await
    }

    /// Sends a payload that is already encoded, in parts, along `route`
    /// (this context's primary address as the return route): like
    /// [`Context::send`], but the message is not a [`Message`] to encode.
    /// When the next hop is a transport that takes messages in parts, the
    /// parts are written straight into its buffer (a shared end, see
    /// [`EncodePayload::write_payload_shared`], is kept by reference);
    /// otherwise they are joined into the message's payload. For a protocol that keeps its
    /// messages in wire form (`ockam_rpc` writes a frame's header and its
    /// queued items as two parts).
    ///
    /// # Errors
    /// As [`Context::send`]'s ([`ErrorKind::Encoding`] being what
    /// `payload` returns, if anything).
    ///
    /// # Cancel safety
    /// As [`Context::send`]'s.
    pub async fn send_payload<R>(
        &self,
        route: R,
        payload: &(dyn EncodePayload + Sync),
    ) -> Result<()>
    where
        R: Into<Route>,
    {
        let pressure = self
            .router
            .send_payload(route.into(), &self.addresses[0], payload)?;
        self.yield_to_pressure(pressure).await
    }

    /// The older name of [`Context::send`].
    ///
    /// # Errors
    /// As [`Context::send`]'s.
    ///
    /// # Cancel safety
    /// As [`Context::send`]'s.
    pub async fn send_message<R, M>(&self, route: R, msg: M) -> Result<()>
    where
        R: Into<Route>,
        M: Message,
    {
        self.send(route, msg).await
    }

    /// Sends `msg` along `route` with `sending_address` (one of this
    /// context's addresses) as the return route.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when `sending_address` is not an address
    /// of this context; otherwise as [`Context::send`]'s.
    ///
    /// # Cancel safety
    /// As [`Context::send`]'s.
    pub async fn send_from_address<R, M>(
        &self,
        route: R,
        msg: M,
        sending_address: Address,
    ) -> Result<()>
    where
        R: Into<Route>,
        M: Message,
    {
        if !self.addresses.contains(&sending_address) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "{sending_address} is not an address of this context ({:?})",
                    self.addresses
                ),
            ));
        }
        let pressure = self.router.send(route.into(), &sending_address, &msg)?;
        self.yield_to_pressure(pressure).await
    }

    /// Delivers a message as it is, to the first address of its onward route:
    /// what a hop does after updating the routes.
    ///
    /// When the receiving mailbox holds more than
    /// [`HIGH_WATER_MARK`](crate::HIGH_WATER_MARK) messages, this waits a
    /// little for the receiver to catch up (see the `mailbox` docs).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when the onward route is empty;
    /// [`ErrorKind::NotFound`] when no worker has the next hop's address and
    /// no transport routes it; else what the next hop's transport router or
    /// inline handler returns, or its [`Backpressure::wait`](crate::Backpressure::wait)
    /// (e.g. a TCP connection opened for the message that failed; see
    /// [`Context::send`]).
    ///
    /// # Cancel safety
    /// Cancel safe: the message is delivered (or refused) before the first
    /// suspension point; dropping the future only skips the wait.
    pub async fn forward(&self, msg: LocalMessage) -> Result<()> {
        let pressure = self.router.deliver(msg)?;
        self.yield_to_pressure(pressure).await
    }

    /// [`Context::forward`] for a transport's reader, which passes on the
    /// messages of many senders: it waits on the queue a message lands in
    /// until that queue is under its mark (so the peer is slowed to its
    /// receivers' pace, and held back by TCP), but not for a
    /// connection that the next transport opens for it, which would hold
    /// up every message behind it; if that connection cannot be opened,
    /// the message's loss is logged at warn with a `dropped` count.
    ///
    /// # Errors
    /// As [`Context::forward`]'s, but for the connection's outcome.
    pub async fn forward_from_transport(&self, msg: LocalMessage) -> Result<()> {
        match self.router.deliver(msg)? {
            Some(p) if p.decides_delivery() => {
                tokio::spawn(async move {
                    if let Err(e) = p.wait().await {
                        warn!(error = %e, dropped = 1, "dropped a message passed on from a transport: its next connection could not be opened");
                    }
                });
                Ok(())
            }
            // A full mailbox: wait until it is under its mark, not just
            // once. The remote peer is then held back by TCP, at its
            // receiver's pace, instead of filling this node's memory (a
            // peer sending 64 KiB echo requests and reading nothing grew a
            // hub to 1 GiB, one bounded wait per message). Each wait is
            // bounded and skipped as `yield_to_pressure` skips it, so a
            // cycle of full queues still only slows down.
            Some(p) => loop {
                if !self.wait_for_pressure(Some(p.clone())).await? || !p.is_over() {
                    return Ok(());
                }
            },
            None => Ok(()),
        }
    }

    /// Delivers a message as it is to the local worker at `address`,
    /// whatever its onward route says: for transports that have already
    /// decided which worker carries it.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when no worker or context is at `address`.
    ///
    /// # Cancel safety
    /// As [`Context::forward`]'s.
    pub async fn forward_to(&self, address: &Address, msg: LocalMessage) -> Result<()> {
        let pressure = self.router.deliver_to(address, msg)?;
        self.yield_to_pressure(pressure).await
    }

    /// A way to deliver messages synchronously, e.g. while holding a lock
    /// that keeps their order; [`Context::settle`] it afterwards.
    pub fn onward(&self) -> Onward<'_> {
        self.router.onward()
    }

    /// Waits for the back-pressure that `onward`'s deliveries met (see
    /// [`Context::forward`]).
    ///
    /// # Errors
    /// When a message that `onward` queued will not be delivered after all
    /// (see [`Backpressure::wait`](crate::Backpressure::wait)).
    pub async fn settle(&self, onward: Onward<'_>) -> Result<()> {
        self.yield_to_pressure(onward.into_pressure()).await
    }

    /// Makes `handler` take every message whose next hop is `address` (one
    /// of this context's addresses), on the sending task's thread, instead
    /// of queueing it in this context's mailbox; `None` undoes it. Messages
    /// the handler gives back, messages sent with [`Context::forward_to`],
    /// and messages that another inline handler passes on (handlers do not
    /// nest, so that their locks cannot deadlock) still come through the
    /// mailbox, so the worker must handle them the same way. Messages that
    /// take the mailbox can be overtaken by later ones that do not.
    ///
    /// This is how a hop that only transforms messages (a secure channel's
    /// encryption, say) avoids a task switch per message.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when `address` is not registered by this
    /// context.
    pub fn set_inline_handler(
        &self,
        address: &Address,
        handler: Option<Arc<dyn InlineHandler>>,
    ) -> Result<()> {
        self.router.set_inline(address, self.id, handler)
    }

    async fn yield_to_pressure(&self, pressure: crate::router::Waiting) -> Result<()> {
        self.wait_for_pressure(pressure).await.map(|_| ())
    }

    /// One bounded wait for `pressure`; `Ok(true)` if it waited, `Ok(false)`
    /// if it may not (its own mailbox, or an owner that waits for ours).
    async fn wait_for_pressure(&self, pressure: crate::router::Waiting) -> Result<bool> {
        if let Some(pressure) = pressure {
            // Never wait for one's own mailbox: only we can drain it; nor
            // for an owner that waits for ours (see the `mailbox` docs).
            if pressure.decides_delivery() {
                return pressure.wait().await.map(|()| true);
            }
            let own = self.mailbox.pressure();
            let own_id = Arc::as_ptr(own) as *const () as usize;
            let target = Arc::as_ptr(&pressure) as *const () as usize;
            if target != own_id && pressure.waits_for() != own_id {
                own.pausing_for(target);
                let r = pressure.wait().await;
                own.pausing_for(0);
                return r.map(|()| true);
            }
        }
        Ok(false)
    }

    /// The next message of type `M`, waiting at most
    /// [`DEFAULT_RECEIVE_TIMEOUT`]. Messages that do not decode as `M` are
    /// dropped with a log line.
    ///
    /// # Errors
    /// As [`Context::receive_duration`]'s.
    ///
    /// # Cancel safety
    /// As [`Context::receive_block`]'s.
    pub async fn receive<M: Message>(&mut self) -> Result<Routed<M>> {
        self.receive_duration(DEFAULT_RECEIVE_TIMEOUT).await
    }

    /// The next message of type `M`, waiting at most `secs` seconds.
    ///
    /// # Errors
    /// As [`Context::receive_duration`]'s.
    ///
    /// # Cancel safety
    /// As [`Context::receive_block`]'s.
    pub async fn receive_timeout<M: Message>(&mut self, secs: u64) -> Result<Routed<M>> {
        self.receive_duration(Duration::from_secs(secs)).await
    }

    /// The next message of type `M`, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`] when no `M` arrives within `timeout`;
    /// otherwise as [`Context::receive_block`]'s.
    ///
    /// # Cancel safety
    /// As [`Context::receive_block`]'s.
    pub async fn receive_duration<M: Message>(&mut self, timeout: Duration) -> Result<Routed<M>> {
        match tokio::time::timeout(timeout, self.receive_block()).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "no {} arrived at {} within {timeout:?}",
                    std::any::type_name::<M>(),
                    self.addresses[0]
                ),
            )),
        }
    }

    /// The next message of type `M`, waiting as long as it takes.
    ///
    /// Asking for the next message acknowledges the one returned before
    /// (see [`Context::ack`]).
    ///
    /// # Errors
    /// [`ErrorKind::Shutdown`] when the mailbox is closed (the node stopped).
    ///
    /// # Cancel safety
    /// Cancel safe: a message is only taken from the mailbox when it is
    /// returned (one that does not decode as `M` is dropped all the same).
    /// The one returned before is acknowledged on the first poll, even if
    /// the future is then dropped.
    pub async fn receive_block<M: Message>(&mut self) -> Result<Routed<M>> {
        self.ack();
        loop {
            let mut local = self.mailbox.next().await.ok_or_else(|| {
                Error::new(ErrorKind::Shutdown, "the node stopped; no more messages")
            })?;
            let receipt = local.take_receipt();
            match M::decode(&local.transport().payload) {
                Ok(body) => {
                    *get_mut(&mut self.taken) = receipt;
                    return Ok(Routed::new(body, local));
                }
                Err(e) => {
                    // Given its chance, like a worker's message it cannot decode.
                    if let Some(r) = receipt {
                        r.handled();
                    }
                    warn!(
                    address = %self.addresses[0],
                    from = ?local.transport().return_route,
                    error = %e,
                    dropped = 1,
                    "dropped a message that is not a {}",
                    std::any::type_name::<M>()
                    )
                }
            }
        }
    }

    /// Runs `task` beside this worker on the node's runtime, until it ends
    /// or the returned [`HelperTask`] is dropped or aborted: keep it in a
    /// field of the worker and the task ends with the worker. A helper that
    /// needs to send or stop workers takes a context of its own
    /// ([`Context::new_context`]).
    ///
    /// # Panics
    /// Outside a tokio runtime (a node's context is always inside one).
    pub fn spawn_helper<F>(&self, task: F) -> HelperTask<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        crate::helper::spawn(task)
    }

    /// Runs `task` after `delay` (a timer: a deadline, a retry), unless the
    /// returned [`HelperTask`] is dropped or aborted first; as
    /// [`Context::spawn_helper`] otherwise.
    ///
    /// # Panics
    /// Outside a tokio runtime (a node's context is always inside one).
    pub fn spawn_after<F>(&self, delay: Duration, task: F) -> HelperTask<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        crate::helper::spawn_after(delay, task)
    }

    /// Tells the sender of the last message `receive*` returned that the
    /// application took it (through its [`Receipt`], if it came with one:
    /// a stream consumer then counts it as handled and may save its read
    /// position past it). Receiving the next message does this too, and so
    /// do [`Context::stop`] (the application is done) and dropping the
    /// context. Messages still in the mailbox when the context is dropped
    /// tell [`Delivery::NotHandled`], and so does nothing at all when the
    /// process dies first (`kill -9`): then the message is delivered again.
    ///
    /// [`Delivery::NotHandled`]: ockam_core::Delivery::NotHandled
    pub fn ack(&self) {
        let taken = lock(&self.taken).take();
        if let Some(r) = taken {
            r.handled();
        }
    }

    /// Starts `worker` at `address` (one address or several). Messages sent
    /// there from now on wait in its mailbox; `initialize` runs first.
    ///
    /// A worker may be started while the node stops (by a worker that
    /// drains its mailbox): it is drained and stopped like the others.
    ///
    /// # Errors
    /// [`ErrorKind::AlreadyExists`] when an address is taken,
    /// [`ErrorKind::InvalidInput`] for an address that is not local, is
    /// empty or longer than [`MAX_ADDRESS_LEN`](ockam_core::MAX_ADDRESS_LEN),
    /// [`ErrorKind::Shutdown`] once the node has stopped.
    pub async fn start_worker<W>(&self, address: impl Into<AddressSet>, worker: W) -> Result<()>
    where
        W: Worker<Context = Context>,
    {
        start_worker(&self.router, address.into(), worker, false)
    }

    /// [`Context::start_worker`] for a *transport worker*: one that carries
    /// other workers' messages (a connection). When the node stops, it is
    /// drained only after every other worker has finished, so that their
    /// last messages still go out through it.
    ///
    /// # Errors
    /// As [`Context::start_worker`]'s.
    pub async fn start_transport_worker<W>(
        &self,
        address: impl Into<AddressSet>,
        worker: W,
    ) -> Result<()>
    where
        W: Worker<Context = Context>,
    {
        start_worker(&self.router, address.into(), worker, true)
    }

    /// A handle on this node that does not keep it alive, for code that
    /// must start workers synchronously (a [`TransportRouter`] that opens a
    /// connection for the message it is routing).
    pub fn node_handle(&self) -> NodeHandle {
        NodeHandle {
            router: Arc::downgrade(&self.router),
        }
    }

    /// Stops the worker at `address`: it finishes the message at hand, runs
    /// `shutdown`, and its addresses are freed. Waits for that, unless called
    /// by that worker itself.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when nothing is at `address`;
    /// [`ErrorKind::InvalidInput`] when a context, not a worker, has it.
    ///
    /// # Cancel safety
    /// The stop is requested before the first suspension point: dropping
    /// the future only stops waiting for the worker's `shutdown`.
    pub async fn stop_worker(&self, address: impl Into<Address>) -> Result<()> {
        self.router.stop_worker(&address.into(), self.id).await
    }

    /// Stops the node: every worker runs `shutdown`, then `#[ockam::node]`'s
    /// `main` (the executor) returns and the process can exit. The message
    /// this context received last counts as taken ([`Context::ack`]).
    ///
    /// # Errors
    /// None: it always returns `Ok`.
    ///
    /// # Cancel safety
    /// Not cancel safe: the stop sequence runs in this future. Dropped
    /// part-way, the workers already asked to drain go on, but the node is
    /// never marked stopped, so a later `stop()` and the [`Executor`](crate::Executor)
    /// wait for it forever.
    pub async fn stop(&self) -> Result<()> {
        // The application is done with what it received last.
        self.ack();
        self.router.stop_node(Some(self.id)).await;
        Ok(())
    }

    /// A new context at `address`, with its own mailbox: a way for code that
    /// is not a worker to send and receive.
    ///
    /// # Errors
    /// As [`Context::start_worker`]'s.
    pub async fn new_context(&self, address: impl Into<Address>) -> Result<Context> {
        Context::new_registered(self.router.clone(), vec![address.into()])
    }

    /// Makes the worker at `address` take every message whose next hop has
    /// transport type `tt` (the simplest way for a transport to plug into
    /// the node).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when `tt` is [`LOCAL`](ockam_core::LOCAL)
    /// (0); [`ErrorKind::AlreadyExists`] when `tt` already has a router.
    pub async fn register(&self, tt: TransportType, address: impl Into<Address>) -> Result<()> {
        self.router.register_transport_worker(tt, address.into())
    }

    /// Makes `router` decide, per address, which local worker takes the
    /// messages whose next hop has transport type `tt` (how TCP sends
    /// straight to the connection's worker and reports unreachable peers).
    ///
    /// # Errors
    /// As [`Context::register`]'s.
    pub fn register_transport(
        &self,
        tt: TransportType,
        router: Arc<dyn TransportRouter>,
    ) -> Result<()> {
        self.router.register_transport(tt, router)
    }

    /// The node's one value of type `T`, created by `init` the first time
    /// anyone asks: how a transport keeps per-node state.
    pub fn node_extension<T, F>(&self, init: F) -> Arc<T>
    where
        T: Send + Sync + 'static,
        F: FnOnce() -> T,
    {
        self.router.extension(init)
    }

    /// Whether the hop `address` is there now: a local address registered
    /// on this node, or a transport address whose transport has a
    /// connection for it (open or opening). `Some(false)`: gone (a worker
    /// that stopped, a connection that closed); `None`: its transport
    /// cannot tell (or none is registered). How state kept for a remote
    /// peer (a forwarder, a channel's responder) learns that the way to
    /// the peer is gone without sending to it.
    pub fn is_present(&self, address: &Address) -> Option<bool> {
        self.router.is_present(address)
    }

    /// What carries the hop `address` now: `address` itself for a local
    /// address registered on this node, the worker of its connection for
    /// a transport address (open or opening; a connection that closed and
    /// opened again has a new worker); `None` when gone, or when its
    /// transport cannot tell. A secure channel keeps the carrier of its
    /// first hop and ends when it changes: the far end's way back went
    /// with the old connection.
    pub fn carrier(&self, address: &Address) -> Option<Address> {
        self.router.carrier(address)
    }

    /// Every address registered on this node, sorted.
    pub fn list_addresses(&self) -> Vec<Address> {
        self.router.addresses()
    }
}

fn start_worker<W>(
    router: &Arc<Router>,
    address: AddressSet,
    worker: W,
    transport: bool,
) -> Result<()>
where
    W: Worker<Context = Context>,
{
    let ctx = Context::new_registered(router.clone(), address.into_vec())?;
    relay::spawn(worker, ctx, transport);
    Ok(())
}

/// A weak handle on a node (see [`Context::node_handle`]): starts workers
/// without an `await`, and does not keep the node's router alive (a
/// transport's state that holds it makes no reference cycle).
#[derive(Clone)]
pub struct NodeHandle {
    router: std::sync::Weak<Router>,
}

impl NodeHandle {
    /// [`Context::start_transport_worker`], synchronously. Must be called
    /// from within the node's tokio runtime (the worker's task is spawned
    /// on it).
    ///
    /// # Errors
    /// As [`Context::start_worker`]'s, and [`ErrorKind::Shutdown`] when the
    /// node is gone.
    pub fn start_transport_worker<W>(&self, address: impl Into<AddressSet>, worker: W) -> Result<()>
    where
        W: Worker<Context = Context>,
    {
        let router = self
            .router
            .upgrade()
            .ok_or_else(|| Error::new(ErrorKind::Shutdown, "the node is gone"))?;
        start_worker(&router, address.into(), worker, true)
    }

    /// [`Context::carrier`]: what carries messages to `address` now (for a
    /// transport address, its connection's worker); `None` when nothing
    /// does, or the node is gone.
    pub fn carrier(&self, address: &Address) -> Option<Address> {
        self.router.upgrade().and_then(|r| r.carrier(address))
    }

    /// Stops the worker at `address` (see [`Context::stop_worker`]) without
    /// waiting for its `shutdown`; nothing happens when it is not running.
    pub fn request_stop(&self, address: &Address) {
        if let Some(router) = self.router.upgrade() {
            router.request_stop_worker(address);
        }
    }
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle").finish_non_exhaustive()
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // The message returned last was the application's: let go of with
        // the context, it counts as taken (a crash drops nothing).
        self.ack();
        self.router.deregister(&self.addresses, self.id);
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("addresses", &self.addresses)
            .finish()
    }
}

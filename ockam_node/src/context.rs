//! `Context`: a worker's (or the application's) handle on its node: its
//! addresses, its mailbox, and the node's router.

use crate::mailbox::Mailbox;
use crate::relay;
use crate::router::{InlineHandler, Onward, OwnerId, Router, TransportRouter};
use ockam_core::{
    Address, AddressSet, Error, ErrorKind, LocalMessage, Message, Result, Route, Routed,
    TransportType, Worker,
};
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
        })
    }

    pub(crate) fn id(&self) -> OwnerId {
        self.id
    }

    pub(crate) fn router(&self) -> &Arc<Router> {
        &self.router
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
    /// Fails with [`ErrorKind::NotFound`] when the first hop does not exist
    /// on this node (and no transport routes it).
    pub async fn send<R, M>(&self, route: R, msg: M) -> Result<()>
    where
        R: Into<Route>,
        M: Message,
    {
        // The primary address is ours by construction: no membership check.
        let pressure = self.router.send(route.into(), &self.addresses[0], &msg)?;
        self.yield_to_pressure(pressure).await;
        Ok(())
    }

    /// The older name of [`Context::send`].
    pub async fn send_message<R, M>(&self, route: R, msg: M) -> Result<()>
    where
        R: Into<Route>,
        M: Message,
    {
        self.send(route, msg).await
    }

    /// Sends `msg` along `route` with `sending_address` (one of this
    /// context's addresses) as the return route.
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
        self.yield_to_pressure(pressure).await;
        Ok(())
    }

    /// Delivers a message as it is, to the first address of its onward route:
    /// what a hop does after updating the routes.
    ///
    /// When the receiving mailbox holds more than
    /// [`HIGH_WATER_MARK`](crate::HIGH_WATER_MARK) messages, this waits a
    /// little for the receiver to catch up (see the `mailbox` docs).
    pub async fn forward(&self, msg: LocalMessage) -> Result<()> {
        let pressure = self.router.deliver(msg)?;
        self.yield_to_pressure(pressure).await;
        Ok(())
    }

    /// Delivers a message as it is to the local worker at `address`,
    /// whatever its onward route says: for transports that have already
    /// decided which worker carries it.
    pub async fn forward_to(&self, address: &Address, msg: LocalMessage) -> Result<()> {
        let pressure = self.router.deliver_to(address, msg)?;
        self.yield_to_pressure(pressure).await;
        Ok(())
    }

    /// A way to deliver messages synchronously, e.g. while holding a lock
    /// that keeps their order; [`Context::settle`] it afterwards.
    pub fn onward(&self) -> Onward<'_> {
        self.router.onward()
    }

    /// Waits for the back-pressure that `onward`'s deliveries met (see
    /// [`Context::forward`]).
    pub async fn settle(&self, onward: Onward<'_>) {
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
    pub fn set_inline_handler(
        &self,
        address: &Address,
        handler: Option<Arc<dyn InlineHandler>>,
    ) -> Result<()> {
        self.router.set_inline(address, self.id, handler)
    }

    async fn yield_to_pressure(&self, pressure: crate::router::Waiting) {
        if let Some(pressure) = pressure {
            // Never wait for one's own mailbox: only we can drain it.
            let own = Arc::as_ptr(self.mailbox.pressure()) as *const ();
            if Arc::as_ptr(&pressure) as *const () != own {
                pressure.wait().await;
            }
        }
    }

    /// The next message of type `M`, waiting at most
    /// [`DEFAULT_RECEIVE_TIMEOUT`]. Messages that do not decode as `M` are
    /// dropped with a log line.
    pub async fn receive<M: Message>(&mut self) -> Result<Routed<M>> {
        self.receive_duration(DEFAULT_RECEIVE_TIMEOUT).await
    }

    /// The next message of type `M`, waiting at most `secs` seconds.
    pub async fn receive_timeout<M: Message>(&mut self, secs: u64) -> Result<Routed<M>> {
        self.receive_duration(Duration::from_secs(secs)).await
    }

    /// The next message of type `M`, waiting at most `timeout`.
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
    pub async fn receive_block<M: Message>(&mut self) -> Result<Routed<M>> {
        loop {
            let local = self.mailbox.next().await.ok_or_else(|| {
                Error::new(ErrorKind::Shutdown, "the node stopped; no more messages")
            })?;
            match M::decode(&local.transport().payload) {
                Ok(body) => return Ok(Routed::new(body, local)),
                Err(e) => warn!(
                    address = %self.addresses[0],
                    from = ?local.transport().return_route,
                    error = %e,
                    "dropped a message that is not a {}",
                    std::any::type_name::<M>()
                ),
            }
        }
    }

    /// Starts `worker` at `address` (one address or several). Messages sent
    /// there from now on wait in its mailbox; `initialize` runs first.
    pub async fn start_worker<W>(&self, address: impl Into<AddressSet>, worker: W) -> Result<()>
    where
        W: Worker<Context = Context>,
    {
        let addresses = address.into().into_vec();
        let ctx = Context::new_registered(self.router.clone(), addresses)?;
        relay::spawn(worker, ctx);
        Ok(())
    }

    /// Stops the worker at `address`: it finishes the message at hand, runs
    /// `shutdown`, and its addresses are freed. Waits for that, unless called
    /// by that worker itself.
    pub async fn stop_worker(&self, address: impl Into<Address>) -> Result<()> {
        self.router.stop_worker(&address.into(), self.id).await
    }

    /// Stops the node: every worker runs `shutdown`, then `#[ockam::node]`'s
    /// `main` (the executor) returns and the process can exit.
    pub async fn stop(&self) -> Result<()> {
        self.router.stop_node(Some(self.id)).await;
        Ok(())
    }

    /// A new context at `address`, with its own mailbox: a way for code that
    /// is not a worker to send and receive.
    pub async fn new_context(&self, address: impl Into<Address>) -> Result<Context> {
        Context::new_registered(self.router.clone(), vec![address.into()])
    }

    /// Makes the worker at `address` take every message whose next hop has
    /// transport type `tt` (the simplest way for a transport to plug into
    /// the node).
    pub async fn register(&self, tt: TransportType, address: impl Into<Address>) -> Result<()> {
        self.router.register_transport_worker(tt, address.into())
    }

    /// Makes `router` decide, per address, which local worker takes the
    /// messages whose next hop has transport type `tt` (how TCP sends
    /// straight to the connection's worker and reports unreachable peers).
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

    /// Every address registered on this node, sorted.
    pub fn list_addresses(&self) -> Vec<Address> {
        self.router.addresses()
    }
}

impl Drop for Context {
    fn drop(&mut self) {
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

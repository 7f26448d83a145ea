//! The router: which mailbox each address belongs to, which worker routes
//! each non-local transport type, and the node's stop sequence.
//!
//! Delivery does not go through a router task: a sender looks the next hop
//! up in the shared table and puts the message straight into that mailbox,
//! so a local send costs one read lock and one channel push.

use crate::mailbox::{Mailbox, MailboxSender};
use ockam_core::internal::sync::{lock, read, write};
use ockam_core::{
    check_address, Address, EncodePayload, EncodedMessage, Error, ErrorKind, LocalMessage, Message,
    Receipt, Result, Route, TransportMessage, TransportType, ENCODE_HEADROOM, LOCAL,
};
use std::any::{Any as StdAny, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// The stop deadline: how long stopping the node ([`Context::stop`](crate::Context::stop),
/// SIGINT/SIGTERM) lets workers drain their mailboxes and run `shutdown`,
/// including workers and connections they start while draining. Workers
/// still running then are told to stop after the message at hand; each
/// logs at warn how many messages it drops, and the node waits
/// [`STOP_GRACE`] more for their `shutdown`.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long stopping the node waits, after [`SHUTDOWN_TIMEOUT`], for the
/// workers it told to stop at once.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Identifies a context or worker registered with the router.
pub(crate) type OwnerId = u64;

// Lookups happen on every send: a fast (seeded) hasher instead of SipHash.
type Table<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A queue that is over its mark: a sender that just added to it waits on
/// this before going on, so that fast senders run at the pace of the queue's
/// consumer instead of filling memory.
pub trait Backpressure: Send + Sync + 'static {
    /// Resolves once the queue is back under its mark, or after a bounded
    /// time so that a cycle of full queues slows down instead of hanging
    /// ([`PRESSURE_WAIT`](crate::PRESSURE_WAIT) for a mailbox; a TCP
    /// connection's outbox waits while its writer makes progress, and one
    /// being opened up to the transport's connect timeout).
    ///
    /// # Errors
    /// What the sender's `send` then fails with: the message that was
    /// queued will not be delivered after all (e.g. a TCP connection that
    /// was being opened for it could not be established).
    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>>;

    /// Whether the wait tells if the message is delivered (a connection
    /// being opened for it), so that every sender must wait; `false` (the
    /// default) for a plain queue over its mark, which a sender may skip
    /// (its own mailbox; a mailbox whose owner waits for the sender's: see
    /// the `mailbox` docs).
    fn decides_delivery(&self) -> bool {
        false
    }

    /// For a mailbox: the queue its owner is pausing for right now (the
    /// address of that `Backpressure` as a number), 0 when none. A sender
    /// does not pause for a queue whose owner pauses for the sender's own
    /// mailbox (see the `mailbox` docs).
    fn waits_for(&self) -> usize {
        0
    }

    /// Whether the queue is over its mark right now (`false` by default):
    /// a transport's reader waits, one bounded wait after another, until
    /// it is not (see [`Context::forward_from_transport`](crate::Context::forward_from_transport)).
    fn is_over(&self) -> bool {
        false
    }
}

/// What a [`TransportRouter`] did with a message.
pub enum Routing {
    /// The transport took the message itself (e.g. queued it for a socket).
    Taken,
    /// The transport took the message, and its queue is over its mark (or
    /// the connection it is queued for is being opened): the sender waits
    /// on this before sending more, and fails with what the wait returns.
    Backlog(Arc<dyn Backpressure>),
    /// Deliver the message to the mailbox of this local worker.
    Deliver(Address, LocalMessage),
}

/// Decides what happens to messages whose next hop has one non-local
/// transport type (see [`Context::register_transport`](crate::Context::register_transport)).
///
/// `route` runs on the sender's thread for every such message, so it must
/// be quick and must not block: a map lookup, an append to a buffer, or
/// starting a worker that will connect ([`NodeHandle`](crate::NodeHandle)),
/// never waiting for a connection itself (return [`Routing::Backlog`] for
/// the sender to wait on instead).
pub trait TransportRouter: Send + Sync + 'static {
    /// Takes `msg` (whose next hop, `msg.transport().onward_route.next()`,
    /// has this router's transport type), or names the local worker whose
    /// mailbox it goes to; an error goes to the sender (e.g. the peer is
    /// known to be down).
    ///
    /// # Errors
    /// Whatever the implementation refuses the message with; the sender's
    /// `send` or `forward` fails with it (TCP: `Unavailable`, `Timeout`,
    /// `InvalidInput` or `ResourceExhausted`, see `Context::send`).
    fn route(&self, msg: LocalMessage) -> Result<Routing>;

    /// Takes a message that is not built: its routes and its payload (parts
    /// to be joined, or a message to encode), which the transport writes
    /// straight into its own buffer, or keeps by reference for a shared end
    /// ([`EncodePayload::write_payload_shared`]) (saves the sender building a message
    /// only for it to be encoded again). `None` when the transport does not
    /// take it this way now (the default; e.g. it has no open connection
    /// for the next hop): the sender then builds the message and calls
    /// [`TransportRouter::route`]. Never answers [`Routing::Deliver`].
    ///
    /// # Errors
    /// `Some(Err(..))`: as [`TransportRouter::route`]; the default never
    /// fails. A `Deliver` answer makes the sender fail with
    /// [`ErrorKind::Internal`].
    fn route_parts(
        &self,
        onward_route: &Route,
        return_route: &Route,
        payload: &dyn EncodePayload,
    ) -> Option<Result<Routing>> {
        let _ = (onward_route, return_route, payload);
        None
    }

    /// Whether `address` (of this router's transport type) has a
    /// connection now (open or opening): `Some(false)` once it is gone;
    /// `None` (the default) when the transport cannot tell. Quick and
    /// non-blocking, as [`TransportRouter::route`].
    fn is_connected(&self, address: &Address) -> Option<bool> {
        let _ = address;
        None
    }

    /// The worker of the connection that carries `address` now (open or
    /// opening): a connection that closes and opens again has a new one.
    /// `None` when there is no connection, or (the default) when the
    /// transport cannot tell. Quick and non-blocking, as
    /// [`TransportRouter::route`].
    fn connection_worker(&self, address: &Address) -> Option<Address> {
        let _ = address;
        None
    }
}

impl std::fmt::Debug for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Routing::Taken => f.write_str("Taken"),
            Routing::Backlog(_) => f.write_str("Backlog"),
            Routing::Deliver(a, m) => f.debug_tuple("Deliver").field(a).field(m).finish(),
        }
    }
}

/// What a sender may have to wait on after a delivery.
pub(crate) type Waiting = Option<Arc<dyn Backpressure>>;

/// The wait of a message queued for a connection still being opened, with
/// the message's receipt: told `Handled` when the wait says the message
/// goes out, `NotHandled` (dropped) when it does not, or when nobody
/// waits.
struct ReceiptAfter {
    inner: Arc<dyn Backpressure>,
    receipt: Mutex<Option<Receipt>>,
}

impl Backpressure for ReceiptAfter {
    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>> {
        Box::pin(async move {
            let outcome = self.inner.wait().await;
            let receipt = lock(&self.receipt).take();
            if let (Ok(()), Some(r)) = (&outcome, receipt) {
                r.handled();
            }
            outcome
        })
    }

    fn decides_delivery(&self) -> bool {
        true
    }

    fn waits_for(&self) -> usize {
        self.inner.waits_for()
    }

    fn is_over(&self) -> bool {
        self.inner.is_over()
    }
}

/// Routes every address of a transport type to one worker.
struct FixedRouter(Address);

impl TransportRouter for FixedRouter {
    fn route(&self, msg: LocalMessage) -> Result<Routing> {
        Ok(Routing::Deliver(self.0.clone(), msg))
    }
}

/// Handles the messages for one local address on the sender's thread,
/// instead of the address's mailbox (see
/// [`Context::set_inline_handler`](crate::Context::set_inline_handler)).
///
/// Like [`TransportRouter::route`], `handle` must be quick and must not
/// block on anything but short critical sections: it runs inside whatever
/// task sent the message (a TCP reader, another worker, `main`).
pub trait InlineHandler: Send + Sync + 'static {
    /// Takes `msg` (whose next hop is the handler's address) and passes
    /// what it makes of it on through `onward`; or gives it back, unchanged,
    /// for the address's mailbox (`Ok(Some(msg))`). An error goes to the
    /// sender.
    ///
    /// # Errors
    /// Whatever the implementation returns (e.g. a delivery through
    /// `onward` that failed); the sender's `send` or `forward` fails with it.
    fn handle(&self, msg: LocalMessage, onward: &mut Onward<'_>) -> Result<Option<LocalMessage>>;
}

/// Passes messages on from inside an [`InlineHandler`] (or a worker that
/// wants the same synchronous delivery), collecting the back-pressure of
/// the mailboxes they land in for the original sender to wait on.
pub struct Onward<'a> {
    router: &'a Router,
    pressure: Waiting,
    /// The receipt of the message an inline handler is handling: it goes
    /// with the first message the handler passes on (a hop's receipt
    /// follows the message to where the application takes it).
    receipt: Option<Receipt>,
}

impl Onward<'_> {
    /// Delivers `msg` to the first address of its onward route, now.
    ///
    /// # Errors
    /// As [`Context::forward`](crate::Context::forward)'s, but for the
    /// back-pressure wait, which is left to the original sender.
    pub fn forward(&mut self, mut msg: LocalMessage) -> Result<()> {
        if let Some(r) = self.receipt.take() {
            match msg.take_receipt() {
                None => msg = msg.with_receipt(r),
                Some(own) => {
                    msg = msg.with_receipt(own);
                    r.handled();
                }
            }
        }
        let waiting = self.router.deliver(msg)?;
        self.keep(waiting);
        Ok(())
    }

    /// Delivers the message made of these routes and the payload `head`
    /// followed by `body`, like [`Onward::forward`] of the built message.
    /// When the next hop is a transport, the message is not built: its
    /// parts are copied straight into the transport's buffer (see
    /// [`TransportRouter::route_parts`]); otherwise `head` is put in front
    /// of `body` in `body`'s buffer (no allocation when it has the room).
    ///
    /// # Errors
    /// As [`Onward::forward`]'s: the transport's or the delivery's refusal;
    /// [`ErrorKind::Internal`] if a transport answers with `Deliver`.
    pub fn forward_parts(
        &mut self,
        onward_route: &Route,
        return_route: &Route,
        head: &[u8],
        body: Vec<u8>,
    ) -> Result<()> {
        if let Some(waiting) = self
            .router
            .route_parts(onward_route, return_route, &[head, &body])
        {
            let waiting = waiting?;
            // In the transport's buffer: as far as this node takes it.
            if let Some(r) = self.receipt.take() {
                r.handled();
            }
            self.keep(waiting);
            return Ok(());
        }
        let mut payload = body;
        let len = payload.len();
        payload.resize(head.len() + len, 0);
        payload.copy_within(..len, head.len());
        payload[..head.len()].copy_from_slice(head);
        self.forward(LocalMessage::new(TransportMessage::v1(
            onward_route.clone(),
            return_route.clone(),
            payload,
        )))
    }

    /// Remembers the pressure a delivery met: the latest soft one, unless
    /// an earlier delivery met one that decides whether its message is
    /// delivered; those are all kept (the sender waits on each and fails
    /// with the first error).
    fn keep(&mut self, waiting: Waiting) {
        let Some(p) = waiting else { return };
        self.pressure = Some(match self.pressure.take() {
            Some(old) if old.decides_delivery() && p.decides_delivery() => Arc::new(AllOf(old, p)),
            Some(old) if old.decides_delivery() => old,
            _ => p,
        });
    }

    pub(crate) fn into_pressure(self) -> Waiting {
        self.pressure
    }
}

impl std::fmt::Debug for Onward<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Onward")
            .field("pressure", &self.pressure.is_some())
            .finish()
    }
}

/// Two pressures that decide delivery, met by one sender's deliveries
/// (a handler that passes messages on to two connections being opened).
struct AllOf(Arc<dyn Backpressure>, Arc<dyn Backpressure>);

impl Backpressure for AllOf {
    fn wait(&self) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>> {
        Box::pin(async {
            let (a, b) = futures_util::future::join(self.0.wait(), self.1.wait()).await;
            a.and(b)
        })
    }

    fn decides_delivery(&self) -> bool {
        true
    }
}

thread_local! {
    /// Whether an inline handler runs on this thread.
    static IN_HANDLER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread as running an inline handler while alive.
///
/// Handlers do not nest: a message that a handler passes on to another
/// inline-handled address goes to that address's mailbox instead. A handler
/// may hold a lock while it passes messages on (a secure channel does, to
/// keep its nonces in order); if handlers nested, two threads going through
/// two of them in opposite orders could each hold one lock and wait for the
/// other, and a route that loops back could wait for its own lock.
struct ActiveGuard;

impl ActiveGuard {
    /// `None` when a handler already runs on this thread.
    fn enter() -> Option<ActiveGuard> {
        IN_HANDLER.with(|h| (!h.replace(true)).then_some(ActiveGuard))
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        IN_HANDLER.with(|h| h.set(false));
    }
}

struct Entry {
    tx: MailboxSender,
    owner: OwnerId,
    inline: Option<Arc<dyn InlineHandler>>,
}

/// How a worker is asked to stop; a request only ever escalates
/// (`Run` < `Drain` < `Now`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum StopMode {
    /// Keep running.
    Run,
    /// After the messages already in its mailbox (the node stopping), so
    /// that what was sent before `stop()` (a last reply, say) still goes out.
    Drain,
    /// After the message at hand (`stop_worker`, or the stop deadline).
    Now,
}

/// What the router keeps about a running worker, to stop it.
pub(crate) struct WorkerRecord {
    pub(crate) addresses: Vec<Address>,
    pub(crate) stop: watch::Sender<StopMode>,
    pub(crate) done: watch::Receiver<bool>,
    /// A transport worker (a connection) carries other workers' messages:
    /// when the node stops it drains only once the others have finished.
    pub(crate) transport: bool,
}

impl WorkerRecord {
    /// Asks the worker to stop in `mode`, unless it was asked for more.
    fn request(&self, mode: StopMode) {
        self.stop.send_if_modified(|m| {
            let raise = *m < mode;
            if raise {
                *m = mode;
            }
            raise
        });
    }
}

pub(crate) struct Router {
    table: RwLock<Table<Address, Entry>>,
    workers: Mutex<HashMap<OwnerId, WorkerRecord>>,
    transports: RwLock<Table<TransportType, Arc<dyn TransportRouter>>>,
    extensions: Mutex<HashMap<TypeId, Arc<dyn StdAny + Send + Sync>>>,
    next_id: AtomicU64,
    stopping: AtomicBool,
    stopped: watch::Sender<bool>,
}

impl Router {
    pub(crate) fn new() -> Arc<Router> {
        Arc::new(Router {
            table: RwLock::new(Table::default()),
            workers: Mutex::new(HashMap::new()),
            transports: RwLock::new(Table::default()),
            extensions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
            stopped: watch::channel(false).0,
        })
    }

    pub(crate) fn next_id(&self) -> OwnerId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<OwnerId, WorkerRecord>> {
        lock(&self.workers)
    }

    /// Registers `addresses` for a new mailbox owned by `owner`: all or none.
    /// Allowed while the node stops (a draining worker may need a new
    /// worker or context, e.g. a TCP connection for its last messages),
    /// not once it has stopped.
    pub(crate) fn register(&self, addresses: &[Address], owner: OwnerId) -> Result<Mailbox> {
        if *self.stopped.borrow() {
            return Err(Error::new(ErrorKind::Shutdown, "the node has stopped"));
        }
        if addresses.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "a worker needs at least one address",
            ));
        }
        if let Some(a) = addresses.iter().find(|a| !a.is_local()) {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{a} is not a local address (transport type must be 0)"),
            ));
        }
        // An address that could not cross a transport (it is in every
        // return route this context sends) is refused here, at its source.
        for a in addresses {
            check_address(a).map_err(|e| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("{a:?} cannot be a worker's address: {e}"),
                )
            })?;
        }
        let (tx, mailbox) = Mailbox::new();
        let mut table = write(&self.table);
        if let Some(a) = addresses.iter().find(|a| table.contains_key(*a)) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("address {a} is already in use on this node"),
            ));
        }
        for a in addresses {
            table.insert(
                a.clone(),
                Entry {
                    tx: tx.clone(),
                    owner,
                    inline: None,
                },
            );
        }
        Ok(mailbox)
    }

    /// Makes `handler` take the messages for `address` (registered by
    /// `owner`) on the sender's thread; `None` sends them to the mailbox again.
    pub(crate) fn set_inline(
        &self,
        address: &Address,
        owner: OwnerId,
        handler: Option<Arc<dyn InlineHandler>>,
    ) -> Result<()> {
        match write(&self.table).get_mut(address) {
            Some(e) if e.owner == owner => {
                e.inline = handler;
                Ok(())
            }
            _ => Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{address} is not an address of this context"),
            )),
        }
    }

    pub(crate) fn onward(&self) -> Onward<'_> {
        Onward {
            router: self,
            pressure: None,
            receipt: None,
        }
    }

    /// Removes the addresses `owner` registered.
    pub(crate) fn deregister(&self, addresses: &[Address], owner: OwnerId) {
        let mut table = write(&self.table);
        for a in addresses {
            if table.get(a).is_some_and(|e| e.owner == owner) {
                table.remove(a);
            }
        }
    }

    /// Records a worker that was just started; one started while the node
    /// stops is asked to drain at once (and waited for like the others).
    pub(crate) fn add_worker(&self, id: OwnerId, record: WorkerRecord) {
        let mut workers = self.workers();
        // A transport worker is drained by `stop_node`'s last phase.
        if self.is_stopping() && !record.transport {
            record.request(StopMode::Drain);
        }
        workers.insert(id, record);
    }

    pub(crate) fn remove_worker(&self, id: OwnerId) {
        self.workers().remove(&id);
    }

    /// Makes `router` decide where messages for transport type `tt` go.
    pub(crate) fn register_transport(
        &self,
        tt: TransportType,
        router: Arc<dyn TransportRouter>,
    ) -> Result<()> {
        if tt == LOCAL {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "transport type 0 is the local node's own and cannot be routed elsewhere",
            ));
        }
        let mut transports = write(&self.transports);
        if transports.contains_key(&tt) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("transport type {tt} already has a router on this node"),
            ));
        }
        debug!(transport_type = tt, "registered transport router");
        transports.insert(tt, router);
        Ok(())
    }

    /// Makes the worker at `address` take every address of transport type `tt`.
    pub(crate) fn register_transport_worker(
        &self,
        tt: TransportType,
        address: Address,
    ) -> Result<()> {
        self.register_transport(tt, Arc::new(FixedRouter(address)))
    }

    /// The node's single value of type `T`, made by `init` on first use.
    pub(crate) fn extension<T, F>(&self, init: F) -> Arc<T>
    where
        T: Send + Sync + 'static,
        F: FnOnce() -> T,
    {
        let mut map = lock(&self.extensions);
        let any = map
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(init()) as Arc<dyn StdAny + Send + Sync>)
            .clone();
        match any.downcast::<T>() {
            Ok(t) => t,
            // The map is keyed by TypeId, so the value always has type T.
            Err(_) => unreachable!("node extension stored under the wrong TypeId"),
        }
    }

    /// Puts `msg` into the mailbox of the first address of its onward route
    /// (or of the router of that address's transport type, or of its
    /// inline handler). Returns the back-pressure of the queue it landed in
    /// (a mailbox over its high-water mark, a transport's full outbox), for
    /// the sender to wait on.
    pub(crate) fn deliver(&self, mut msg: LocalMessage) -> Result<Waiting> {
        let next = msg.transport().onward_route.next()?;
        if !next.is_local() {
            let tt = next.transport_type();
            let receipt = msg.take_receipt();
            let routing = match read(&self.transports).get(&tt) {
                Some(router) => match (router.route(msg)?, receipt) {
                    // Queued for a connection still being opened: taken
                    // once it is open (the wait says).
                    (Routing::Backlog(p), Some(r)) if p.decides_delivery() => {
                        Routing::Backlog(Arc::new(ReceiptAfter {
                            inner: p,
                            receipt: Mutex::new(Some(r)),
                        }))
                    }
                    // Taken by the transport: as far as this node takes it.
                    (taken @ (Routing::Taken | Routing::Backlog(_)), Some(r)) => {
                        r.handled();
                        taken
                    }
                    (Routing::Deliver(worker, m), Some(r)) => {
                        Routing::Deliver(worker, m.with_receipt(r))
                    }
                    (routing, None) => routing,
                },
                None => {
                    let next = msg.transport().onward_route.next()?;
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!(
                            "no router for transport type {tt} (needed for {next}); \
                             create that transport first, e.g. TcpTransport::create"
                        ),
                    ));
                }
            };
            return self.settle_routing(routing);
        }
        // Sending never blocks (mailboxes are unbounded), so it happens
        // under the read lock instead of cloning the sender.
        let table = read(&self.table);
        let handler = match table.get(next) {
            Some(Entry {
                inline: Some(h), ..
            }) => h.clone(),
            Some(entry) => return push(entry, msg),
            None => return Err(not_found(next)),
        };
        // The handler may deliver onwards: not under the table's lock.
        drop(table);
        let Some(_active) = ActiveGuard::enter() else {
            let next = next.clone();
            return self.deliver_to(&next, msg);
        };
        let mut onward = self.onward();
        let mut msg = msg;
        onward.receipt = msg.take_receipt();
        let handled = handler.handle(msg, &mut onward);
        // Not passed on: the handler consumed it (or failed with it, and
        // the receipt goes with the error).
        let receipt = onward.receipt.take();
        match handled? {
            None => {
                if let Some(r) = receipt {
                    r.handled();
                }
                Ok(onward.pressure)
            }
            Some(mut msg) => {
                if let Some(r) = receipt {
                    msg = msg.with_receipt(r);
                }
                let next = msg.transport().onward_route.next()?.clone();
                let pressure = self.deliver_to(&next, msg)?;
                onward.keep(pressure);
                Ok(onward.pressure)
            }
        }
    }

    /// Sends `msg` from `from` along `onward_route`. When the next hop is a
    /// transport that takes messages in parts, `msg` is encoded straight into
    /// its buffer; otherwise the message is built and delivered.
    pub(crate) fn send<M: Message>(
        &self,
        onward_route: Route,
        from: &Address,
        msg: &M,
    ) -> Result<Waiting> {
        // Measured only for a transport: a local worker gets it built.
        if matches!(onward_route.next(), Ok(next) if !next.is_local()) {
            return self.send_payload(onward_route, from, &EncodedMessage::new(msg)?);
        }
        let payload = msg.encode()?;
        self.deliver(LocalMessage::new(TransportMessage::v1(
            onward_route,
            Route::from(from.clone()),
            payload,
        )))
    }

    /// Sends a payload already encoded (in parts) from `from` along
    /// `onward_route`: straight into a transport's buffer when the next hop
    /// takes parts, else joined and delivered.
    pub(crate) fn send_payload(
        &self,
        onward_route: Route,
        from: &Address,
        payload: &dyn EncodePayload,
    ) -> Result<Waiting> {
        let return_route = Route::from(from.clone());
        if let Some(waiting) = self.route_parts(&onward_route, &return_route, payload) {
            return waiting;
        }
        let mut joined = Vec::with_capacity(payload.payload_len() + ENCODE_HEADROOM);
        payload.write_payload(&mut joined)?;
        self.deliver(LocalMessage::new(TransportMessage::v1(
            onward_route,
            return_route,
            joined,
        )))
    }

    /// Hands an unbuilt message to the transport router of its next hop
    /// (see [`TransportRouter::route_parts`]); `None` when the next hop is
    /// local or the router does not take it this way now.
    fn route_parts(
        &self,
        onward_route: &Route,
        return_route: &Route,
        payload: &dyn EncodePayload,
    ) -> Option<Result<Waiting>> {
        let next = match onward_route.next() {
            Ok(next) if !next.is_local() => next,
            Ok(_) => return None,
            Err(e) => return Some(Err(e)),
        };
        // Like `deliver`, under the read lock (routers do not block).
        let routing = read(&self.transports)
            .get(&next.transport_type())?
            .route_parts(onward_route, return_route, payload)?;
        Some(match routing {
            Ok(Routing::Deliver(..)) => Err(Error::new(
                ErrorKind::Internal,
                "a transport router answered route_parts with Deliver",
            )),
            Ok(routing) => self.settle_routing(routing),
            Err(e) => Err(e),
        })
    }

    /// Carries out what a transport router decided.
    fn settle_routing(&self, routing: Routing) -> Result<Waiting> {
        match routing {
            Routing::Taken => Ok(None),
            Routing::Backlog(p) => Ok(Some(p)),
            Routing::Deliver(worker, msg) => self.deliver_to(&worker, msg),
        }
    }

    /// Puts `msg` into the mailbox of the local address `address`, whatever
    /// its onward route says.
    pub(crate) fn deliver_to(&self, address: &Address, msg: LocalMessage) -> Result<Waiting> {
        match read(&self.table).get(address) {
            Some(entry) => push(entry, msg),
            None => Err(not_found(address)),
        }
    }

    /// Whether the hop `address` is there: see [`Context::is_present`](crate::Context::is_present).
    pub(crate) fn is_present(&self, address: &Address) -> Option<bool> {
        if address.transport_type() == LOCAL {
            return Some(read(&self.table).contains_key(address));
        }
        let router = read(&self.transports)
            .get(&address.transport_type())
            .cloned();
        router.and_then(|r| r.is_connected(address))
    }

    /// What carries the hop `address`: see [`Context::carrier`](crate::Context::carrier).
    pub(crate) fn carrier(&self, address: &Address) -> Option<Address> {
        if address.transport_type() == LOCAL {
            return read(&self.table)
                .contains_key(address)
                .then(|| address.clone());
        }
        let router = read(&self.transports)
            .get(&address.transport_type())
            .cloned();
        router.and_then(|r| r.connection_worker(address))
    }

    /// Every registered address, sorted.
    pub(crate) fn addresses(&self) -> Vec<Address> {
        let mut v: Vec<Address> = read(&self.table).keys().cloned().collect();
        v.sort();
        v
    }

    /// Stops the worker at `address` and waits for its `shutdown`, unless the
    /// caller is that worker (it stops once its current message is handled).
    pub(crate) async fn stop_worker(&self, address: &Address, caller: OwnerId) -> Result<()> {
        let owner = read(&self.table).get(address).map(|e| e.owner);
        let owner = owner.ok_or_else(|| not_found(address))?;
        let mut done = {
            let workers = self.workers();
            let record = workers.get(&owner).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{address} belongs to a context, not a worker; drop the context instead"
                    ),
                )
            })?;
            record.request(StopMode::Now);
            record.done.clone()
        };
        if owner != caller {
            let _ = done.wait_for(|d| *d).await;
        }
        Ok(())
    }

    /// Asks the worker at `address` to stop after the message at hand,
    /// without waiting; nothing happens when no worker has that address.
    pub(crate) fn request_stop_worker(&self, address: &Address) {
        let Some(owner) = read(&self.table).get(address).map(|e| e.owner) else {
            return;
        };
        if let Some(record) = self.workers().get(&owner) {
            record.request(StopMode::Now);
        }
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Stops every worker once it has handled the messages already in its
    /// mailbox, waits for their `shutdown` (not the caller's own, which runs
    /// after its current message) and marks the node stopped.
    ///
    /// Workers started while this runs (by draining workers) are drained
    /// and waited for too. At [`SHUTDOWN_TIMEOUT`] the workers still
    /// running are told to stop after the message at hand (each logs how
    /// many messages it drops), and given [`STOP_GRACE`] more.
    pub(crate) async fn stop_node(&self, caller: Option<OwnerId>) {
        if self.stopping.swap(true, Ordering::AcqRel) {
            let mut stopped = self.stopped.subscribe();
            let _ = stopped.wait_for(|s| *s).await;
            return;
        }
        let started = Instant::now();
        info!(workers = self.workers().len(), "stopping node");
        let deadline = tokio::time::Instant::now() + SHUTDOWN_TIMEOUT;
        let mut in_time = true;
        // Draining workers may start others: wait until none is left. The
        // transport workers (connections) that carry their last messages
        // drain once the others are done.
        loop {
            let mut waits = self.request_stop(StopMode::Drain, caller, false);
            if waits.is_empty() {
                waits = self.request_stop(StopMode::Drain, caller, true);
            }
            if waits.is_empty() {
                break;
            }
            if tokio::time::timeout_at(deadline, wait_all(waits))
                .await
                .is_err()
            {
                in_time = false;
                break;
            }
        }
        if !in_time {
            let waits = self.request_stop(StopMode::Now, caller, true);
            warn!(
                workers = waits.len(),
                "workers still running at the stop deadline ({:?}); stopping them after \
                 the message at hand (each logs the messages it drops)",
                SHUTDOWN_TIMEOUT
            );
            if tokio::time::timeout(STOP_GRACE, wait_all(waits))
                .await
                .is_err()
            {
                let workers = self.workers();
                let left: Vec<String> = workers
                    .iter()
                    .filter(|(id, r)| Some(**id) != caller && !*r.done.borrow())
                    .map(|(_, r)| format!("{:?}", r.addresses))
                    .collect();
                warn!(
                    ?left,
                    "workers did not finish shutdown; left behind as the node stops"
                );
            }
        }
        info!(elapsed = ?started.elapsed(), "node stopped");
        self.stopped.send_replace(true);
    }

    /// Asks every running worker (transport workers only if `transports`)
    /// to stop in `mode` (`caller` too: it stops after its current
    /// message); what to wait on for each but `caller`.
    fn request_stop(
        &self,
        mode: StopMode,
        caller: Option<OwnerId>,
        transports: bool,
    ) -> Vec<watch::Receiver<bool>> {
        self.workers()
            .iter()
            .filter(|(_, r)| !*r.done.borrow() && (transports || !r.transport))
            .filter_map(|(id, r)| {
                r.request(mode);
                (Some(*id) != caller).then(|| r.done.clone())
            })
            .collect()
    }

    /// Waits (at most `timeout`) until every worker's task has finished,
    /// including one that stopped the node from its own `handle_message`.
    pub(crate) async fn wait_workers_finished(&self, timeout: Duration) {
        let waits: Vec<watch::Receiver<bool>> =
            self.workers().values().map(|r| r.done.clone()).collect();
        if tokio::time::timeout(timeout, wait_all(waits))
            .await
            .is_err()
        {
            warn!("some workers did not finish within {:?}", timeout);
        }
    }

    pub(crate) fn stopped(&self) -> watch::Receiver<bool> {
        self.stopped.subscribe()
    }
}

/// Resolves once every worker behind `done` has finished.
async fn wait_all(done: Vec<watch::Receiver<bool>>) {
    futures_util::future::join_all(done.into_iter().map(|mut d| async move {
        let _ = d.wait_for(|d| *d).await;
    }))
    .await;
}

fn push(entry: &Entry, msg: LocalMessage) -> Result<Waiting> {
    match entry.tx.send(msg) {
        Ok(false) => Ok(None),
        Ok(true) => Ok(Some(entry.tx.pressure().clone())),
        // The owner is gone but not yet deregistered.
        Err(msg) => Err(match msg.transport().onward_route.next() {
            Ok(a) => not_found(a),
            Err(e) => e,
        }),
    }
}

fn not_found(address: &Address) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("no worker at address {address} on this node"),
    )
}

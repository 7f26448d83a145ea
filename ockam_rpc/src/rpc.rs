//! Calls that carry streams (seed 003): a server registers handlers by
//! name; a client makes a [`Sink`] and calls a handler with auxiliary
//! arguments and that sink; the handler receives them and a [`Source`], can
//! turn it into a reverse [`Sink`] ([`Source::make_sink`]) and return it;
//! the client receives the reverse stream as a [`Source`].
//!
//! Many streams share the routes and connections that already exist: a
//! stream is a pair of ends (addresses) on the two nodes, nothing more.
//!
//! Plain calls (a request, one answer, no stream) go to the same servers:
//! [`RpcServer::request_handler`] and [`request`].

use crate::endpoint::{route_to, OnEnd};
use crate::error::RpcError;
use crate::proto::{Timing, Window};
use crate::{Sink, Source};
use ockam_core::internal::sync::lock;
use ockam_core::{async_trait, Address, Any, Message, Result, Route, Routed, Worker};
use ockam_node::Context;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tracing::warn;

/// How long [`call`] waits for the server's answer by default.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A call, from client to server.
#[derive(Debug, Serialize, Deserialize)]
struct Call {
    handler: String,
    #[serde(with = "serde_bytes")]
    aux: Vec<u8>,
    /// The address of the caller's sink (on the caller's node).
    sink: String,
    /// The address of the caller's source for the reverse stream.
    reverse: String,
    /// The window the caller's reverse source grants.
    window_messages: u64,
    window_bytes: u64,
}

/// What a client sends a server.
#[derive(Debug, Serialize, Deserialize)]
enum Request {
    /// A call that carries the caller's stream.
    Stream(Call),
    /// A plain request: the handler's answer comes back in the reply.
    Plain {
        handler: String,
        #[serde(with = "serde_bytes")]
        aux: Vec<u8>,
    },
}

/// The server's answer.
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    /// First, as soon as the handler's source exists (before the handler
    /// runs): its address, where the caller's sink sends. The final answer
    /// follows.
    Attached(String),
    /// Accepted: the address of the source that reads the caller's
    /// stream (the caller's sink sends there, and takes frames from there
    /// only), and of the reverse stream's sink, if the handler made one.
    Accepted {
        source: String,
        sink: Option<String>,
    },
    /// Refused, saying why.
    Refused(String),
    /// A limit was reached.
    Limit(String, u64),
    /// A plain request's answer.
    Answer(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// What a stream handler gave: the address of its source, and of the
/// reverse sink if it made one.
type Handled =
    Pin<Box<dyn Future<Output = std::result::Result<(Address, Option<Address>), RpcError>> + Send>>;

/// A handler with its types erased: (aux, route back, call, node, limits,
/// the end guard, where to say the source's address once it exists) → the
/// source's and the reverse sink's addresses.
type Erased = Arc<
    dyn Fn(Vec<u8>, Route, &Call, Arc<Context>, Limits, OnEnd, Attached) -> Handled + Send + Sync,
>;

/// Where a stream handler says its source's address, before it runs.
type Attached = tokio::sync::oneshot::Sender<Address>;

type Answered = Pin<Box<dyn Future<Output = std::result::Result<Vec<u8>, RpcError>> + Send>>;

/// A plain request handler with its types erased: aux → the encoded answer.
type ErasedPlain = Arc<dyn Fn(Vec<u8>) -> Answered + Send + Sync>;

/// A registered handler: one that takes a stream, or a plain one.
#[derive(Clone)]
enum Handler {
    Stream(Erased),
    Plain(ErasedPlain),
}

#[derive(Clone, Copy)]
struct Limits {
    window: Window,
    timing: Timing,
}

/// A server of named handlers that receive streams; see the
/// [crate docs](crate).
pub struct RpcServer {
    handlers: HashMap<String, Handler>,
    window: Window,
    timing: Timing,
    max_streams: usize,
    max_requests: usize,
}

impl Default for RpcServer {
    fn default() -> Self {
        RpcServer {
            handlers: HashMap::new(),
            window: Window::default(),
            timing: Timing::default(),
            max_streams: 10_000,
            max_requests: 1024,
        }
    }
}

impl RpcServer {
    /// A server with no handlers yet: windows of [`Window::default`],
    /// timing of [`Timing::default`], at most 10,000 streams at once per
    /// peer and 1,024 plain requests in progress.
    pub fn new() -> Self {
        Self::default()
    }

    /// The credit each source the server makes grants its sender.
    pub fn with_window(mut self, window: Window) -> Self {
        self.window = window;
        self
    }

    /// The pings and liveness of the streams the server's handlers get
    /// (default [`Timing::default`]: a ping every 2 s, lost after 10 s of
    /// silence). Routes that can pause for a while (a hub stream whose hub
    /// restarts) want a longer liveness.
    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// Most streams the server holds at once for one peer (the route the
    /// calls come over, less the calling context): calls beyond it are
    /// refused with [`RpcError::Limit`] naming it (retryable once a stream
    /// of that peer ended). Default 10,000.
    pub fn with_max_streams(mut self, n: usize) -> Self {
        self.max_streams = n;
        self
    }

    /// Most plain requests the server works on at once (all peers): one
    /// beyond it is refused at once with [`RpcError::Limit`] naming it
    /// (retryable once one is answered). Default 1,024.
    pub fn with_max_requests(mut self, n: usize) -> Self {
        self.max_requests = n;
        self
    }

    /// Registers handler `name`: called with the call's auxiliary value
    /// (an `A`) and a [`Source`] of the caller's stream (of `X`s); it
    /// returns the reverse [`Sink`] (of `Y`s, made with
    /// [`Source::make_sink`]) or `None`.
    pub fn handler<A, X, Y, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        A: Message,
        X: Message,
        Y: Message,
        F: Fn(A, Source<X>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<Option<Sink<Y>>, RpcError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let erased: Erased = Arc::new(move |aux, back, call, ctx, limits, on_end, attached| {
            let f = f.clone();
            let sink_addr = Address::parse(&call.sink);
            let reverse_addr = Address::parse(&call.reverse);
            Box::pin(async move {
                let aux = A::decode(&aux).map_err(|e| {
                    RpcError::Refused(format!("the auxiliary value does not decode: {e}"))
                })?;
                let (sink_addr, reverse_addr) = match (sink_addr, reverse_addr) {
                    (Ok(s), Ok(r)) => (s, r),
                    _ => return Err(RpcError::Refused("a call names bad addresses".into())),
                };
                let mut source: Source<X> = Source::start(
                    &ctx,
                    limits.window,
                    limits.timing,
                    Some(route_to(&back, &sink_addr)),
                    Some(on_end),
                )
                .await
                .map_err(RpcError::from_core)?;
                source.reverse = Some((route_to(&back, &reverse_addr), reverse_addr));
                source.ctx_for_reverse = Some(ctx);
                let source_addr = source.address().clone();
                let _ = attached.send(source_addr.clone());
                let sink = f(aux, source).await?;
                Ok((source_addr, sink.map(|s| s.address().clone())))
            })
        });
        self.handlers
            .insert(name.to_string(), Handler::Stream(erased));
        self
    }

    /// Registers plain handler `name`: called with a [`request`]'s value
    /// (an `A`), it answers with an `R`, or an error the caller receives
    /// as [`RpcError::Refused`] with its text. No stream, no credit: one
    /// request, one answer (each request runs in a task of its own, so a
    /// slow one does not hold the others up).
    ///
    /// A name holds one handler: registering `name` again, plain or with
    /// a stream, replaces the one before.
    pub fn request_handler<A, R, F, Fut>(mut self, name: &str, f: F) -> Self
    where
        A: Message,
        R: Message,
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<R, RpcError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let erased: ErasedPlain = Arc::new(move |aux| {
            let f = f.clone();
            Box::pin(async move {
                let aux = A::decode(&aux)
                    .map_err(|e| RpcError::Refused(format!("the request does not decode: {e}")))?;
                f(aux).await?.encode().map_err(RpcError::from_core)
            })
        });
        self.handlers
            .insert(name.to_string(), Handler::Plain(erased));
        self
    }

    /// Starts the server at `address` on the node of `ctx`.
    ///
    /// # Errors
    /// The errors of [`Context::start_worker`]: `AlreadyExists` when
    /// `address` is taken, `InvalidInput` for an address that is not
    /// local, `Shutdown` once the node has stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: it never suspends, so it completes on its first poll.
    pub async fn start(self, ctx: &Context, address: impl Into<Address>) -> Result<()> {
        let ends = Arc::new(ctx.new_context(Address::random_local()).await?);
        ctx.start_worker(
            address.into(),
            ServerWorker {
                handlers: Arc::new(self.handlers),
                limits: Limits {
                    window: self.window,
                    timing: self.timing,
                },
                ends,
                streams: Arc::new(std::sync::Mutex::new(HashMap::new())),
                max_streams: self.max_streams,
                requests: Arc::new(tokio::sync::Semaphore::new(self.max_requests)),
                max_requests: self.max_requests,
            },
        )
        .await
    }
}

struct ServerWorker {
    handlers: Arc<HashMap<String, Handler>>,
    limits: Limits,
    /// The context new stream ends register through.
    ends: Arc<Context>,
    /// Streams held per peer (see [`RpcServer::with_max_streams`]).
    streams: Arc<std::sync::Mutex<HashMap<Route, usize>>>,
    max_streams: usize,
    /// Plain requests in progress (see [`RpcServer::with_max_requests`]).
    requests: Arc<tokio::sync::Semaphore>,
    max_requests: usize,
}

#[async_trait]
impl Worker for ServerWorker {
    type Message = Any;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let back = msg.return_route();
        let request = match Request::decode(msg.payload()) {
            Ok(r) => r,
            Err(e) => {
                warn!(from = %back, error = %e, "rpc: dropped a message that is not a call");
                return Ok(());
            }
        };
        let (name, plain_aux, call) = match request {
            Request::Stream(call) => (call.handler.clone(), None, Some(call)),
            Request::Plain { handler, aux } => (handler, Some(aux), None),
        };
        let handler = match (self.handlers.get(&name), plain_aux, call) {
            (None, _, _) => {
                let why = format!("no handler {name:?}");
                return ctx.send(back, Reply::Refused(why)).await;
            }
            (Some(Handler::Plain(f)), Some(aux), None) => {
                let Ok(permit) = self.requests.clone().try_acquire_owned() else {
                    let reply =
                        Reply::Limit("requests in progress".into(), self.max_requests as u64);
                    return ctx.send(back, reply).await;
                };
                let answered = f(aux);
                let reply_ctx = ctx.new_context(Address::random_local()).await?;
                tokio::spawn(async move {
                    let reply = match answered.await {
                        Ok(answer) => Reply::Answer(answer),
                        Err(e) => Reply::Refused(e.to_string()),
                    };
                    drop(permit);
                    if let Err(e) = reply_ctx.send(back, reply).await {
                        warn!(error = %e, "rpc: could not answer a request");
                    }
                });
                return Ok(());
            }
            (Some(Handler::Stream(h)), None, Some(call)) => (h.clone(), call),
            (Some(Handler::Stream(_)), ..) => {
                let why = format!("handler {name:?} takes a stream: use call, not request");
                return ctx.send(back, Reply::Refused(why)).await;
            }
            (Some(Handler::Plain(_)), ..) => {
                let why = format!("handler {name:?} takes no stream: use request, not call");
                return ctx.send(back, Reply::Refused(why)).await;
            }
        };
        let (handler, call) = handler;
        let peer: Route = {
            let mut hops: Vec<Address> = back.iter().cloned().collect();
            hops.pop();
            Route::from(hops)
        };
        let admitted = {
            let mut streams = lock(&self.streams);
            let held = streams.entry(peer.clone()).or_insert(0);
            let admitted = *held < self.max_streams;
            if admitted {
                *held += 1;
            }
            admitted
        };
        if !admitted {
            let reply = Reply::Limit("streams per peer".into(), self.max_streams as u64);
            return ctx.send(back, reply).await;
        }
        let streams = self.streams.clone();
        let on_end = OnEnd::new(move || {
            let mut streams = lock(&streams);
            if let Some(held) = streams.get_mut(&peer) {
                *held -= 1;
                if *held == 0 {
                    streams.remove(&peer);
                }
            }
        });
        let (ends, limits) = (self.ends.clone(), self.limits);
        let aux = call.aux.clone();
        let (attached, source_known) = tokio::sync::oneshot::channel();
        let handled = handler(aux, back.clone(), &call, ends, limits, on_end, attached);
        let handled = tokio::spawn(handled);
        let reply_ctx = ctx.new_context(Address::random_local()).await?;
        tokio::spawn(async move {
            // The source's address first (the caller's sink can then start,
            // however long the handler takes), then the final answer.
            if let Ok(source) = source_known.await {
                if let Err(e) = reply_ctx
                    .send(back.clone(), Reply::Attached(source.to_string()))
                    .await
                {
                    warn!(error = %e, "rpc: could not answer a call");
                    return;
                }
            }
            let handled = handled
                .await
                .unwrap_or_else(|e| Err(RpcError::Refused(format!("the handler failed: {e}"))));
            let reply = match handled {
                Ok((source, sink)) => Reply::Accepted {
                    source: source.to_string(),
                    sink: sink.map(|a| a.to_string()),
                },
                Err(e) => Reply::Refused(e.to_string()),
            };
            if let Err(e) = reply_ctx.send(back, reply).await {
                warn!(error = %e, "rpc: could not answer a call");
            }
        });
        Ok(())
    }
}

/// Makes a sink of `T`s for a call to a server on the other end of
/// `route` (seed 003's `make_stream_sink`): it sends once the handler's
/// source grants it credit.
///
/// # Errors
/// [`RpcError::Node`] when the node cannot register the new end (it has
/// stopped).
pub async fn make_sink<T: Message>(ctx: &Context) -> std::result::Result<Sink<T>, RpcError> {
    make_sink_with(ctx, Timing::default()).await
}

/// [`make_sink`] with a [`Timing`] of its own.
///
/// # Errors
/// As [`make_sink`]'s.
pub async fn make_sink_with<T: Message>(
    ctx: &Context,
    timing: Timing,
) -> std::result::Result<Sink<T>, RpcError> {
    Sink::start(ctx, timing, None)
        .await
        .map_err(RpcError::from_core)
}

/// Calls handler `handler` of the server at `route` with `aux` and the
/// stream of `sink`; returns the reverse stream the handler made (a source
/// that ends at once, cleanly, if it made none... see below).
///
/// # Errors
/// [`RpcError::Refused`] (no such handler, the handler failed),
/// [`RpcError::Limit`], [`RpcError::Lost`] when the server does not answer
/// within [`CALL_TIMEOUT`], or the node's error sending the call.
///
/// # Cancel safety
/// Not cancel safe: the server may run the handler all the same.
pub async fn call<A: Message, X: Message, Y: Message>(
    ctx: &Context,
    route: impl Into<Route>,
    handler: &str,
    aux: A,
    sink: &Sink<X>,
) -> std::result::Result<Option<Source<Y>>, RpcError> {
    call_with(ctx, route, handler, aux, sink, CallOptions::default()).await
}

/// How [`call_with`] calls.
#[derive(Debug, Clone, Copy)]
pub struct CallOptions {
    /// The credit the reverse source grants (default [`Window::default`]).
    pub window: Window,
    /// The reverse source's pings and liveness (default
    /// [`Timing::default`]).
    pub timing: Timing,
    /// How long to wait for the server's answer (default [`CALL_TIMEOUT`]).
    pub timeout: Duration,
}

impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            window: Window::default(),
            timing: Timing::default(),
            timeout: CALL_TIMEOUT,
        }
    }
}

/// [`call`] with options.
///
/// # Errors
/// As [`call`]'s (the answer's wait is `options.timeout`).
///
/// # Cancel safety
/// As [`call`]'s.
pub async fn call_with<A: Message, X: Message, Y: Message>(
    ctx: &Context,
    route: impl Into<Route>,
    handler: &str,
    aux: A,
    sink: &Sink<X>,
    options: CallOptions,
) -> std::result::Result<Option<Source<Y>>, RpcError> {
    let window = options.window;
    let source: Source<Y> = Source::start(ctx, window, options.timing, None, None)
        .await
        .map_err(RpcError::from_core)?;
    let call = Call {
        handler: handler.into(),
        aux: aux.encode().map_err(RpcError::from_core)?,
        sink: sink.address().to_string(),
        reverse: source.address().to_string(),
        window_messages: window.messages,
        window_bytes: window.bytes,
    };
    // The ends answer from where the call came: make them the caller's
    // neighbours (same node), by sending the call from a context there.
    let mut caller = send_request(ctx, route.into(), Request::Stream(call)).await?;
    let deadline = tokio::time::Instant::now() + options.timeout;
    let reply = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let reply = receive_reply(&mut caller, left, "call").await?;
        let Reply::Attached(at) = reply.as_body() else {
            break reply;
        };
        // The handler's source exists: the sink may send while it runs.
        match Address::parse(at) {
            Ok(at) => sink.shared_set_peer(route_to(&reply.return_route(), &at)),
            Err(_) => {
                source.cancel("the answer names a bad address");
                return Err(RpcError::Refused("the answer names a bad address".into()));
            }
        }
    };
    let back = reply.return_route();
    match reply.body() {
        Reply::Accepted {
            source: at_source,
            sink: reverse_sink,
        } => {
            let Ok(at_source) = Address::parse(&at_source) else {
                source.cancel("the answer names a bad address");
                return Err(RpcError::Refused("the answer names a bad address".into()));
            };
            // The caller's sink sends to the handler's source, and takes
            // frames from it only (not from whoever wrote to it first).
            sink.shared_set_peer(route_to(&back, &at_source));
            match reverse_sink.map(|a| Address::parse(&a)) {
                Some(Ok(at)) => {
                    source.shared_set_peer(route_to(&back, &at));
                    Ok(Some(source))
                }
                Some(Err(_)) => {
                    source.cancel("the answer names a bad address");
                    Err(RpcError::Refused("the answer names a bad address".into()))
                }
                None => {
                    source.cancel("the handler made no reverse stream");
                    Ok(None)
                }
            }
        }
        Reply::Refused(why) => Err(RpcError::Refused(why)),
        Reply::Limit(what, limit) => Err(RpcError::Limit { what, limit }),
        // (The loop above takes those.)
        Reply::Attached(_) => Err(RpcError::Refused("the server answered twice".into())),
        Reply::Answer(_) => {
            source.cancel("the server answered a plain request");
            Err(RpcError::Refused(
                "the server answered the call as a plain request".into(),
            ))
        }
    }
}

/// Sends a plain request to handler `handler` of the server at `route` (one
/// registered with [`RpcServer::request_handler`]) and returns its answer;
/// waits up to [`CALL_TIMEOUT`].
///
/// # Errors
/// [`RpcError::Refused`] (no such handler, a handler that takes a stream,
/// the handler's own error), [`RpcError::Decode`] when the answer is not an
/// `R`, [`RpcError::Lost`] when no answer comes in time, or the node's error
/// sending the request.
///
/// # Cancel safety
/// Not cancel safe: the server may run the handler all the same.
pub async fn request<A: Message, R: Message>(
    ctx: &Context,
    route: impl Into<Route>,
    handler: &str,
    aux: A,
) -> std::result::Result<R, RpcError> {
    request_with(ctx, route, handler, aux, CALL_TIMEOUT).await
}

/// [`request`], waiting up to `timeout` for the answer.
///
/// # Errors
/// As [`request`]'s.
///
/// # Cancel safety
/// As [`request`]'s.
pub async fn request_with<A: Message, R: Message>(
    ctx: &Context,
    route: impl Into<Route>,
    handler: &str,
    aux: A,
    timeout: Duration,
) -> std::result::Result<R, RpcError> {
    let request = Request::Plain {
        handler: handler.into(),
        aux: aux.encode().map_err(RpcError::from_core)?,
    };
    let mut caller = send_request(ctx, route.into(), request).await?;
    let reply = receive_reply(&mut caller, timeout, "request").await?;
    match reply.body() {
        Reply::Answer(answer) => R::decode(&answer).map_err(|e| RpcError::Decode(e.to_string())),
        Reply::Refused(why) => Err(RpcError::Refused(why)),
        Reply::Limit(what, limit) => Err(RpcError::Limit { what, limit }),
        Reply::Accepted { .. } | Reply::Attached(_) => Err(RpcError::Refused(
            "the server answered the request as a call".into(),
        )),
    }
}

/// Sends `request` to `route` from a new context on the node of `ctx`,
/// which the answers then come to.
async fn send_request(
    ctx: &Context,
    route: Route,
    request: Request,
) -> std::result::Result<Context, RpcError> {
    let caller = ctx
        .new_context(Address::random_local())
        .await
        .map_err(RpcError::from_core)?;
    caller
        .send(route, request)
        .await
        .map_err(RpcError::from_core)?;
    Ok(caller)
}

/// The server's next answer to `caller`'s `what` (a call, a request),
/// within `wait`; [`RpcError::Lost`] if none comes.
async fn receive_reply(
    caller: &mut Context,
    wait: Duration,
    what: &str,
) -> std::result::Result<Routed<Reply>, RpcError> {
    caller
        .receive_duration::<Reply>(wait)
        .await
        .map_err(|e| RpcError::Lost(format!("no answer to the {what}: {e}")))
}

/// What a server does with a request's bytes, and a caller with a reply's,
/// before any handler or stream is involved: for the fuzz targets (see
/// [`crate::internal`]).
pub(crate) fn decode_call_messages(bytes: &[u8]) {
    if let Ok(request) = Request::decode(bytes) {
        if let Request::Stream(call) = &request {
            let _ = Address::parse(&call.sink);
            let _ = Address::parse(&call.reverse);
        }
        let again = request
            .encode()
            .unwrap_or_else(|e| panic!("a decoded request does not encode: {e}"));
        Request::decode(&again).unwrap_or_else(|e| panic!("a request does not round-trip: {e}"));
    }
    if let Ok(reply) = Reply::decode(bytes) {
        match reply {
            Reply::Attached(at) => {
                let _ = Address::parse(&at);
            }
            Reply::Accepted { source, sink } => {
                let _ = Address::parse(&source);
                let _ = sink.map(|s| Address::parse(&s));
            }
            _ => {}
        }
    }
}

/// Encodings of each kind of request and reply (see [`crate::internal`]).
pub(crate) fn seed_call_messages() -> Vec<Vec<u8>> {
    let call = Call {
        handler: "h".into(),
        aux: vec![0],
        sink: "0#a1".into(),
        reverse: "0#b2".into(),
        window_messages: 64,
        window_bytes: 1 << 20,
    };
    let encodings = [
        Request::Stream(call).encode(),
        Request::Plain {
            handler: "h".into(),
            aux: vec![1, 2],
        }
        .encode(),
        Reply::Attached("0#c3".into()).encode(),
        Reply::Accepted {
            source: "0#c3".into(),
            sink: Some("0#d4".into()),
        }
        .encode(),
        Reply::Limit("requests".into(), 8).encode(),
    ];
    encodings.into_iter().filter_map(|e| e.ok()).collect()
}

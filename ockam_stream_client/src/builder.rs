//! [`Stream`]: the builder of a stream connection.

use crate::address::{ReceiverAddress, SenderAddress};
use crate::consumer::{Consumer, ConsumerConfig};
use crate::producer::{Producer, ProducerConfig};
use crate::protocol::validate_name;
use crate::worker::{ConsumerWorker, Hub, ProducerWorker};
use crate::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_WINDOW};
use ockam_core::{Address, Error, ErrorKind, Result, Route};
use ockam_node::Context;
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::debug;

/// Builds a stream connection: `Stream::new(&ctx)?.stream_service("stream")
/// .index_service("stream_index").client_id("me").connect(hub, out, in)`.
pub struct Stream<'a> {
    ctx: &'a Context,
    stream_service: String,
    index_service: String,
    client_id: Option<String>,
    interval: Duration,
    recipient: Option<Address>,
    waiting_pull: bool,
    connect_timeout: Duration,
    window: usize,
    events: Option<crate::EventSender>,
}

impl<'a> Stream<'a> {
    /// A builder with the defaults: services `stream` / `stream_index`, a
    /// generated client id, 100 ms ticks, waiting pulls (falling back to
    /// polling if the hub lacks them).
    ///
    /// # Errors
    /// None: it always returns `Ok`.
    pub fn new(ctx: &'a Context) -> Result<Self> {
        Ok(Stream {
            ctx,
            stream_service: "stream".into(),
            index_service: "stream_index".into(),
            client_id: None,
            interval: Duration::from_millis(100),
            recipient: None,
            waiting_pull: true,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            window: DEFAULT_WINDOW,
            events: None,
        })
    }

    /// The hub service that opens streams (`stream`, `stream_kafka`, ...).
    pub fn stream_service(mut self, name: impl Into<String>) -> Self {
        self.stream_service = name.into();
        self
    }

    /// The hub service that keeps read positions.
    pub fn index_service(mut self, name: impl Into<String>) -> Self {
        self.index_service = name.into();
        self
    }

    /// The name the hub saves this client's read position under.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// How often to poll (without waiting pulls) and check for timeouts.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Where incoming messages with no route of their own are delivered.
    pub fn with_recipient(mut self, address: impl Into<Address>) -> Self {
        self.recipient = Some(address.into());
        self
    }

    /// Whether to use waiting pulls (default) or only poll every interval.
    pub fn with_waiting_pull(mut self, enabled: bool) -> Self {
        self.waiting_pull = enabled;
        self
    }

    /// Messages delivered to the application and not yet taken, at most
    /// (default [`DEFAULT_WINDOW`]; at least 1): how far the consumer pulls
    /// ahead of a slow application. See [`ReceiverAddress`] for when a
    /// message counts as taken.
    pub fn with_window(mut self, messages: usize) -> Self {
        self.window = messages.max(1);
        self
    }

    /// Where to send the connection's [`StreamEvent`](crate::StreamEvent)s:
    /// messages of the incoming stream the hub removed before this client
    /// read them, a sent message the hub refused until the producer gave it
    /// up. Without it they are logged (at warn) only.
    ///
    /// ```no_run
    /// # async fn f(ctx: &ockam_node::Context) -> ockam_core::Result<()> {
    /// use ockam_core::route;
    /// let (events, mut seen) = tokio::sync::mpsc::unbounded_channel();
    /// let (sender, receiver) = ockam_stream_client::Stream::new(ctx)?
    ///     .with_events(events)
    ///     .connect(route![(ockam_core::TCP, "127.0.0.1:4000")], "out", "in")
    ///     .await?;
    /// tokio::spawn(async move {
    ///     while let Some(event) = seen.recv().await {
    ///         eprintln!("stream: {event:?}");
    ///     }
    /// });
    /// # Ok(()) }
    /// ```
    pub fn with_events(mut self, events: crate::EventSender) -> Self {
        self.events = Some(events);
        self
    }

    /// How long [`Stream::connect`] waits for the hub's first answer
    /// (default [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Opens `outgoing` (for sending) and `incoming` (for receiving) on the
    /// hub at `route`.
    ///
    /// The rule for an unreachable hub: `connect` reports what it finds
    /// wrong *now*, and after it returned, nothing sent is lost to an
    /// outage.
    ///
    /// - `connect` starts the producer of `outgoing` and returns once the
    ///   hub has answered its `stream_create` (so the route, the hub and its
    ///   stream service work); only then does it start the consumer of
    ///   `incoming`. The streams need not have existed, nor the other side
    ///   be up: opening a stream creates it, so two sides may start in any
    ///   order.
    /// - When it fails, nothing it started is left running.
    /// - Once it has returned, a hub that goes away (or restarts) loses
    ///   nothing: the producer keeps every message sent to the returned
    ///   [`SenderAddress`] until the hub confirms it as stored, retrying
    ///   (every [`RETRY_AFTER`](crate::RETRY_AFTER)) with the same request ids, and the consumer
    ///   carries on from its saved index. Sends to the sender address do not
    ///   fail for an outage; the producer and the consumer log at warn,
    ///   once, with the cause, when they cannot reach the hub, and at info
    ///   when it answers again.
    ///
    /// # Errors
    /// - [`ErrorKind::InvalidInput`]: a stream name or the client id is not
    ///   1-249 characters of `[A-Za-z0-9._-]`, or the hub refused to open
    ///   the stream (the error gives its reason);
    /// - [`ErrorKind::PermissionDenied`]: a closed hub refused the
    ///   outgoing stream (this identity may not push it) or the incoming
    ///   one (may not read it), or the route does not go through a secure
    ///   channel to the hub (issue 16);
    /// - the error of sending the first request when the hub cannot be
    ///   reached, at once (for a TCP hop nobody listens on:
    ///   [`ErrorKind::Unavailable`], or [`ErrorKind::Timeout`] when the
    ///   connection attempt timed out; [`ErrorKind::NotFound`] without a
    ///   transport for the route's first hop), as the source of an error of
    ///   the same kind;
    /// - [`ErrorKind::Timeout`]: the hub did not answer within the connect
    ///   timeout ([`Stream::with_connect_timeout`]; no such stream service
    ///   there, say).
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped while it waits for the hub, the producer
    /// (and, in its second wait, the consumer) it started keeps running
    /// with no [`SenderAddress`] handed out; the clean-up it does on failure
    /// is skipped.
    pub async fn connect(
        self,
        route: impl Into<Route>,
        outgoing: impl Into<String>,
        incoming: impl Into<String>,
    ) -> Result<(SenderAddress, ReceiverAddress)> {
        let hub: Route = route.into();
        let (outgoing, incoming) = (outgoing.into(), incoming.into());
        validate_name("stream", &outgoing)?;
        validate_name("stream", &incoming)?;
        let client_id = match self.client_id {
            Some(id) => id,
            None => format!("client-{}", Address::random_local().address()),
        };
        validate_name("client", &client_id)
            .map_err(|e| Error::new(ErrorKind::InvalidInput, e.message().to_string()))?;
        let receiver = self.ctx.new_context(Address::random_local()).await?;
        let recipient = self.recipient.unwrap_or_else(|| receiver.address());
        let hub = Hub {
            route: hub,
            stream_service: self.stream_service,
            index_service: self.index_service,
        };
        let producer = Producer::new(
            outgoing.clone(),
            ProducerConfig {
                resend_after: self.interval,
                ..ProducerConfig::default()
            },
        );
        let (opened_tx, opened) = oneshot::channel();
        let (producer, addresses) =
            ProducerWorker::new(producer, hub.clone(), opened_tx, self.events.clone());
        let public = addresses[0].clone();
        self.ctx.start_worker(addresses, producer).await?;
        let outcome = match tokio::time::timeout(self.connect_timeout, opened).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e)))
                if matches!(
                    e.kind(),
                    ErrorKind::InvalidInput | ErrorKind::PermissionDenied
                ) =>
            {
                Err(e)
            }
            Ok(Ok(Err(e))) => Err(Error::with_source(
                e.kind(),
                format!("stream {outgoing:?}: cannot reach the hub over {}", hub.route),
                e,
            )),
            Ok(Err(_)) => Err(Error::new(
                ErrorKind::Internal,
                format!("stream {outgoing:?}: the producer stopped before the hub answered"),
            )),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "stream {outgoing:?}: the hub's {:?} service over {} did not answer within {:?}",
                    hub.stream_service, hub.route, self.connect_timeout
                ),
            )),
        };
        if let Err(e) = outcome {
            let _ = self.ctx.stop_worker(public).await;
            return Err(e);
        }
        let incoming_name = incoming.clone();
        let consumer = Consumer::new(
            incoming,
            client_id,
            ConsumerConfig {
                window: self.window,
                waiting_pull: self.waiting_pull,
                poll_interval: self.interval,
                ..ConsumerConfig::default()
            },
        );
        let (opened_tx, opened) = oneshot::channel();
        let (consumer, addresses) = ConsumerWorker::new(
            consumer,
            hub.clone(),
            public.clone(),
            recipient,
            self.interval,
            opened_tx,
            self.events.clone(),
        );
        let consumer_address = addresses[0].clone();
        self.ctx.start_worker(addresses, consumer).await?;
        // Until the hub answered the incoming stream's read position, or
        // refused a request: a client that may push and not read (a closed
        // hub's access file, issue 16) learns it here. Otherwise, as
        // before, the consumer carries on asking on its own.
        let outcome = match tokio::time::timeout(self.connect_timeout, opened).await {
            Ok(Ok(Err(e))) => Err(e),
            Ok(Ok(Ok(()))) | Ok(Err(_)) => Ok(()),
            Err(_) => {
                debug!(stream = %incoming_name, "the hub did not answer the read position in time; the consumer goes on asking");
                Ok(())
            }
        };
        if let Err(e) = outcome {
            let _ = self.ctx.stop_worker(consumer_address).await;
            let _ = self.ctx.stop_worker(public).await;
            return Err(e);
        }
        Ok((SenderAddress(public), ReceiverAddress { ctx: receiver }))
    }
}

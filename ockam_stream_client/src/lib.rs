//! The Ockam stream protocol (and, as it lands, the stream client) of the
//! ockam-rs stack.
//!
//! ```
//! use ockam_stream_client::protocol::{CreateStreamRequest, ProtocolPayload, STREAM_CREATE};
//!
//! let req = CreateStreamRequest { stream_name: Some("orders".into()) };
//! let p = ProtocolPayload::new(STREAM_CREATE, &req)?;
//! assert_eq!(p.protocol, "stream_create");
//! # Ok::<(), ockam_core::Error>(())
//! ```
//!
//! Streams are ordered, durable logs kept by a hub node. Clients talk to
//! the hub's `stream` service (create a stream, then push and pull through
//! the stream worker that answers) and its `stream_index` service (save and
//! fetch how far a client has read). See [`protocol`].
//!
//! [`Stream::connect`] starts a producer and a consumer: workers that are
//! thin shells around the state machines [`producer::Producer`] and
//! [`consumer::Consumer`], which hold every rule and do no I/O.
//!
//! # The delivery guarantee
//!
//! - **Pushes**: a message sent to the [`SenderAddress`] (after `connect`
//!   returned) is kept by the producer until the hub confirms it stored,
//!   retried in order with the same request id across outages and hub
//!   restarts. A message the hub refuses [`MAX_REFUSALS`] times in a row
//!   (over its size limit, say) is given up and logged with a `dropped`
//!   count, and reported as [`StreamEvent::GaveUp`] to an application that
//!   asked for events ([`Stream::with_events`]); one still unconfirmed
//!   when the producer stops is logged so too.
//! - **Trimmed by the hub**: messages of the incoming stream the hub's
//!   retention removed before the consumer read them are skipped, logged,
//!   and reported as [`StreamEvent::Missed`].
//! - **Deliveries: at least once, up to the application.** The index saved
//!   for `(client_id, stream)` never passes a message the application has
//!   not *taken*: read with [`ReceiverAddress::next`], a message is taken
//!   when the application calls `next` again or [`ReceiverAddress::ack`];
//!   delivered to a worker on this node, when its `handle_message` for it
//!   returned; routed on to another node, when the transport took it
//!   (through [`ockam_core::Receipt`]). A message no worker takes is
//!   delivered again (with what follows it) after growing pauses, never
//!   skipped. At most [`Stream::with_window`]
//!   messages are delivered and not taken. The index is saved at most every
//!   interval, and when the consumer stops.
//! - **After a crash** of the consuming process, the next consumer with
//!   the same client id starts at the saved index: it gets again the
//!   messages taken since the last save and those delivered but not yet
//!   taken. Nothing is skipped, and first deliveries come in stream order.
//! - **Positions are reconciled with the log**: a position the hub says is
//!   past the end of the stream is replaced by the saved one the hub
//!   gives; a hub that no longer knows a saved position, or whose store is
//!   not the one it was (its stream workers' names carry the store's
//!   incarnation: [`protocol::stream_worker_name`]), makes the consumer
//!   read the stream from its start again. Both are logged at warn.
#![deny(missing_docs)]

mod address;
mod builder;
mod consumer;
mod event;
mod forwarder;
mod producer;
pub mod protocol;
mod worker;

pub use address::{ReceiverAddress, SenderAddress};
pub use builder::Stream;
pub use event::{EventSender, StreamEvent};

use std::time::Duration;

/// Pushes sent and not yet confirmed, at most.
pub const MAX_IN_FLIGHT: usize = 1024;
/// A request unanswered for this long is sent again (after opening the
/// stream again). A consumer gives twice, then four times as long after
/// requests lost in a row, until the hub answers again (see
/// `ConsumerConfig::retry_after`).
pub const RETRY_AFTER: Duration = Duration::from_secs(2);
/// Refusals of one message after which the producer gives it up.
pub const MAX_REFUSALS: u32 = 3;
/// How long a waiting pull asks the hub to wait.
pub const PULL_WAIT: Duration = Duration::from_secs(5);
/// Messages asked for per pull, at most.
pub const PULL_LIMIT: u64 = 256;
/// Messages delivered to the application and not yet taken, at most, by
/// default ([`Stream::with_window`]).
pub const DEFAULT_WINDOW: usize = 1024;
/// How long [`Stream::connect`] waits for the hub to answer by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
pub use forwarder::{
    HubAddress, RemoteForwarder, FORWARDING_SERVICE, FORWARDING_UNREGISTER, REGISTRATION_TIMEOUT,
};

/// What tests and the fuzz targets (`fuzz/`, `ockam_fuzz`) use of this crate
/// outside its API: the consumer's and the producer's state machines (no
/// I/O, no clock), which the stream's workers drive. Hidden from the docs,
/// no stability promise; applications use [`Stream`].
#[doc(hidden)]
pub mod internal {
    /// The consumer's state machine.
    pub mod consumer {
        pub use crate::consumer::*;
    }
    /// The producer's state machine.
    pub mod producer {
        pub use crate::producer::*;
    }
}

// The README's examples run as doc tests too, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

//! The Ockam stream protocol (and, as it lands, the stream client) of the
//! ockam-rs stack.
//!
//! Streams are ordered, durable logs kept by a hub node. Clients talk to
//! the hub's `stream` service (create a stream, then push and pull through
//! the stream worker that answers) and its `stream_index` service (save and
//! fetch how far a client has read). See [`protocol`].
//!
//! ```
//! use ockam_stream_client::protocol::{CreateStreamRequest, ProtocolPayload, STREAM_CREATE};
//!
//! let req = CreateStreamRequest { stream_name: Some("orders".into()) };
//! let p = ProtocolPayload::new(STREAM_CREATE, &req)?;
//! assert_eq!(p.protocol, "stream_create");
//! # Ok::<(), ockam_core::Error>(())
//! ```
#![deny(missing_docs)]

mod address;
mod builder;
pub mod consumer;
mod forwarder;
pub mod producer;
pub mod protocol;
mod worker;

pub use address::{ReceiverAddress, SenderAddress};
pub use builder::Stream;

use std::time::Duration;

/// Pushes sent and not yet confirmed, at most.
pub const MAX_IN_FLIGHT: usize = 1024;
/// A request unanswered for this long is sent again (after opening the
/// stream again).
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
pub use forwarder::{RemoteForwarder, FORWARDING_SERVICE, REGISTRATION_TIMEOUT};

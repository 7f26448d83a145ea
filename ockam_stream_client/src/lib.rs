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

mod client;
mod forwarder;
pub mod protocol;

pub use client::{
    ReceiverAddress, SenderAddress, Stream, DEFAULT_CONNECT_TIMEOUT, MAX_IN_FLIGHT, PULL_LIMIT,
    PULL_WAIT, RETRY_AFTER,
};
pub use forwarder::{RemoteForwarder, FORWARDING_SERVICE, REGISTRATION_TIMEOUT};

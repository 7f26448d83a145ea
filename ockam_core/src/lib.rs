//! Core types of the ockam-rs messaging stack, with no runtime and no I/O.
//!
//! ```
//! use ockam_core::{route, Message, Route, TransportMessage, TCP};
//!
//! let onward: Route = route![(TCP, "127.0.0.1:4000"), "echoer"];
//! let msg = TransportMessage::v1(onward, route!["app"], "hello".to_string().encode()?);
//! let bytes = msg.encode()?;
//! let back = TransportMessage::decode(&bytes)?;
//! assert_eq!(String::decode(&back.payload)?, "hello");
//! # Ok::<(), ockam_core::Error>(())
//! ```
//!
//! - [`Address`]: a transport type and address (`"1#127.0.0.1:4000"`).
//! - [`Route`], its builder and [`route!`]: the path a message takes.
//! - [`Message`]: anything serde can encode, carried as BARE.
//! - [`TransportMessage`] / [`LocalMessage`]: the envelope with both routes.
//! - [`Routed`]: a received message with its routes; [`Any`] for hops.
//! - [`Worker`]: what a node runs; [`Error`] / [`Result`].
#![deny(missing_docs)]

mod address;
mod error;
mod message;
mod route;
mod routed;
mod worker;

#[doc(hidden)]
pub mod internal;

pub use address::{Address, AddressSet, TransportType, LOCAL, TCP};
pub use error::{Error, ErrorKind, Result};
pub use message::{
    check_address, check_route, decode, encode, encode_into, Any, Delivery, EncodePayload,
    EncodedMessage, LocalMessage, Message, Receipt, SharedTail, TransportMessage, ENCODE_HEADROOM,
    MAX_ADDRESS_LEN, MAX_ROUTE_LEN, TRANSPORT_MESSAGE_VERSION,
};
pub use route::{Route, RouteBuilder, RouteIntoIter, RouteModifier};
pub use routed::Routed;
pub use worker::Worker;

/// The `async_trait` attribute, for implementing [`Worker`].
pub use async_trait::async_trait;

// The README's examples run as doc tests too, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

//! End-to-end encrypted, reliable messaging between Rust services and
//! devices: the facade of the ockam-rs stack.
//!
//! ```
//! use ockam::{Context, Result, Routed, Worker};
//!
//! struct Echoer;
//!
//! #[ockam::worker]
//! impl Worker for Echoer {
//!     type Message = String;
//!     type Context = Context;
//!
//!     async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
//!         ctx.send(msg.return_route(), msg.body()).await
//!     }
//! }
//!
//! #[ockam::node]
//! async fn main(mut ctx: Context) -> Result<()> {
//!     ctx.start_worker("echoer", Echoer).await?;
//!     ctx.send(route!["echoer"], "Hello Ockam!".to_string()).await?;
//!     let reply = ctx.receive::<String>().await?;
//!     println!("App received: {}", reply);
//!     ctx.stop().await
//! }
//! ```
//!
//! A node runs workers; workers exchange messages along routes of any
//! number of hops. This crate re-exports everything an application needs,
//! the way the Ockam guides use it.
#![deny(missing_docs)]

pub use ockam_channel::{ListenerOptions, SecureChannel, SecureChannelOptions};
pub use ockam_stream_client::RemoteForwarder;

/// Typed streams (seeds 003 and 004): see [`ockam_rpc`].
pub mod rpc {
    pub use ockam_rpc::*;
}

/// Reliable streams through a hub: `stream::Stream::new(&ctx)?...connect(..)`.
pub mod stream {
    pub use ockam_stream_client::{protocol, ReceiverAddress, SenderAddress, Stream};
}
pub use ockam_core::{
    async_trait, route, Address, AddressSet, Any, Error, ErrorKind, LocalMessage, Message, Result,
    Route, RouteBuilder, RouteModifier, Routed, TransportMessage, TransportType, Worker, LOCAL,
    TCP,
};
pub use ockam_node::{setup_tracing, start_node, Context, Executor, Routing, TransportRouter};
pub use ockam_node_attribute::{async_worker, node, worker};
pub use ockam_transport_tcp::{TcpOptions, TcpTransport};
pub use ockam_vault::{PublicKey, SecretHandle, Vault};

// What the attribute macros' expansion uses (`#root::__node_prelude`,
// `#root::__private`), the node crate's own.
#[doc(hidden)]
pub use ockam_node::{__node_prelude, __private};

// The README's examples run as doc tests too, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

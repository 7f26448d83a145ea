//! The async node of the ockam-rs messaging stack.
//!
//! ```
//! use ockam_core::{async_trait, Result, Routed, Worker};
//! use ockam_node::Context;
//!
//! struct Echoer;
//!
//! #[async_trait]
//! impl Worker for Echoer {
//!     type Message = String;
//!     type Context = Context;
//!
//!     async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<String>) -> Result<()> {
//!         ctx.send(msg.return_route(), msg.body()).await
//!     }
//! }
//!
//! let (mut ctx, mut executor) = ockam_node::start_node();
//! executor
//!     .execute(async move {
//!         ctx.start_worker("echoer", Echoer).await?;
//!         ctx.send("echoer", "hello".to_string()).await?;
//!         let reply = ctx.receive::<String>().await?;
//!         assert_eq!(*reply, "hello");
//!         ctx.stop().await
//!     })
//!     .unwrap();
//! ```
//!
//! A node runs [`Worker`](ockam_core::Worker)s on a tokio runtime. Each
//! worker has one or more addresses and a mailbox; a [`Context`] sends
//! messages along routes, receives them, and starts and stops workers.
//! Messages to addresses of another transport type (TCP, ...) go to the
//! worker registered as that type's router ([`Context::register`]).
#![deny(missing_docs)]

// So that `#[node]`/`#[worker]` inside this crate (its unit tests) reach
// it by the name the expansion uses.
extern crate self as ockam_node;

mod context;
mod executor;
mod helper;
mod mailbox;
mod relay;
mod router;

pub use context::{Context, NodeHandle, DEFAULT_RECEIVE_TIMEOUT};
/// The attribute macros, for users of this crate without the `ockam` facade:
/// `#[ockam_node::node]` and `#[ockam_node::worker]` (older spelling
/// `#[ockam_node::async_worker]`); see `ockam_node_attribute`.
pub use ockam_node_attribute::{async_worker, node, worker};

/// What `#[ockam_node::node]` brings into scope of the module it is used in,
/// as a glob import (so the module's own imports of these names take
/// precedence).
#[doc(hidden)]
pub mod __node_prelude {
    pub use ockam_core::route;
    pub use tracing::{debug, error, info, trace, warn};
}

#[doc(hidden)]
pub mod __private {
    pub use ockam_core::async_trait;
}
pub use executor::{setup_tracing, start_node, start_node_with, Executor, APP_ADDRESS};
pub use helper::HelperTask;
pub use mailbox::{HIGH_WATER_BYTES, HIGH_WATER_MARK, PRESSURE_WAIT};
pub use router::{
    Backpressure, InlineHandler, Onward, Routing, TransportRouter, SHUTDOWN_TIMEOUT, STOP_GRACE,
};

// The README's examples run as doc tests too, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

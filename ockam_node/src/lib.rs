//! The async node of the ockam-rs messaging stack.
//!
//! A node runs [`Worker`](ockam_core::Worker)s on a tokio runtime. Each
//! worker has one or more addresses and a mailbox; a [`Context`] sends
//! messages along routes, receives them, and starts and stops workers.
//! Messages to addresses of another transport type (TCP, ...) go to the
//! worker registered as that type's router ([`Context::register`]).
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
#![deny(missing_docs)]

mod context;
mod executor;
mod mailbox;
mod relay;
mod router;

pub use context::{Context, NodeHandle, DEFAULT_RECEIVE_TIMEOUT};
pub use executor::{setup_tracing, start_node, Executor, APP_ADDRESS};
pub use mailbox::{HIGH_WATER_BYTES, HIGH_WATER_MARK, PRESSURE_WAIT};
pub use router::{
    Backpressure, InlineHandler, Onward, Routing, TransportRouter, SHUTDOWN_TIMEOUT, STOP_GRACE,
};

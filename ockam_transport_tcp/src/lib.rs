//! TCP transport of the ockam-rs messaging stack.
//!
//! [`TcpTransport::create`] plugs TCP into a node: messages whose next hop is
//! a TCP address (`(TCP, "host:port")` or `"1#host:port"`) travel over a
//! connection to that peer, opened on first use if needed; messages arriving
//! from a peer get the connection prepended to their return route, so
//! replies go back the same way. Routes can cross any number of nodes.
//!
//! On the wire every message is one frame: a big-endian `u32` length, then a
//! BARE-encoded `TransportMessage` ([`frame`]). Frames above
//! [`TcpOptions::max_frame_size`] are refused on both sides. Sockets use
//! `TCP_NODELAY`; messages queued together are written together.
//!
//! A peer that sends anything but valid frames is disconnected with a log
//! line; other connections are unaffected. When a peer cannot be reached,
//! sends to it fail with [`ErrorKind::Unavailable`](ockam_core::ErrorKind)
//! for a short, growing backoff, after which the next send reconnects.
//!
//! ```no_run
//! use ockam_core::{route, Result, TCP};
//! use ockam_node::Context;
//! use ockam_transport_tcp::TcpTransport;
//!
//! async fn initiator(ctx: &mut Context) -> Result<()> {
//!     let _tcp = TcpTransport::create(ctx).await?;
//!     ctx.send(route![(TCP, "127.0.0.1:4000"), "echoer"], "Hello".to_string()).await?;
//!     let reply = ctx.receive::<String>().await?;
//!     println!("{}", reply);
//!     Ok(())
//! }
//! ```
#![deny(missing_docs)]

mod compat;
mod connection;
pub mod frame;
mod listener;
mod options;
mod outbox;
mod peers;
mod transport;

pub use compat::{start_tcp_worker, TcpRouter, TcpRouterHandle, WorkerPair};
pub use frame::{FrameDecoder, DEFAULT_MAX_FRAME_SIZE};
pub use ockam_core::TCP;
pub use options::TcpOptions;
pub use transport::TcpTransport;

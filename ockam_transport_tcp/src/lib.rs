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
//! A peer that breaks the framing is disconnected with a log line; other
//! connections are unaffected. A well-framed message that does not decode
//! is dropped alone (logged, with a `dropped` count) and the connection
//! carries on. Limits the peer enforces (routes of at most
//! [`MAX_ROUTE_LEN`](ockam_core::MAX_ROUTE_LEN) addresses, addresses of
//! 1 to [`MAX_ADDRESS_LEN`](ockam_core::MAX_ADDRESS_LEN) bytes, the frame
//! size) are checked when a message is sent, and a message that breaks one
//! is refused to its sender.
//!
//! A send that needs a new connection waits until it is set up: the first
//! send to a peer that cannot be reached fails with the connect error
//! ([`ErrorKind::Unavailable`](ockam_core::ErrorKind) or `Timeout`), and
//! further sends fail at once for a short, growing backoff, after which the
//! next send reconnects. A peer that connected to this node and left is not
//! dialed back unless the application connects to it explicitly.
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

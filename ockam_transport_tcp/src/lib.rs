//! TCP transport of the ockam-rs messaging stack.
//!
//! ```rust
//! use ockam_core::{route, Result, TCP};
//! use ockam_node::Context;
//! use ockam_transport_tcp::TcpTransport;
//!
//! #[ockam_node::node]
//! async fn main(mut ctx: Context) -> Result<()> {
//!     let tcp = TcpTransport::create(&ctx).await?;
//!     let addr = tcp.listen("127.0.0.1:0").await?; // a free port
//!     // Over a real TCP connection (to this same node) and back to "app".
//!     ctx.send(route![(TCP, addr.to_string()), "app"], "hello".to_string()).await?;
//!     assert_eq!(*ctx.receive::<String>().await?, "hello");
//!     ctx.stop().await
//! }
//! ```
//!
//! [`TcpTransport::create`] plugs TCP into a node: messages whose next hop is
//! a TCP address (`(TCP, "host:port")` or `"1#host:port"`) travel over a
//! connection to that peer, opened on first use if needed; messages arriving
//! from a peer get the connection prepended to their return route, so
//! replies go back the same way. Routes can cross any number of nodes.
//!
//! On the wire every message is one frame: a big-endian `u32` length, then a
//! BARE-encoded [`TransportMessage`](ockam_core::TransportMessage). Frames above
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
#![deny(missing_docs)]

mod compat;
mod connection;
mod frame;
mod listener;
mod options;
mod outbox;
mod peers;
mod transport;

pub use compat::{start_tcp_worker, TcpRouter, TcpRouterHandle, WorkerPair};
pub use frame::DEFAULT_MAX_FRAME_SIZE;
pub use ockam_core::TCP;
pub use options::TcpOptions;
pub use transport::TcpTransport;

/// What the other crates of the workspace, its tests, benches and fuzz
/// targets use of this one outside its API: the frame codec (a `u32`
/// big-endian length, then the encoded message). Hidden from the docs, no
/// stability promise; applications should not use it.
#[doc(hidden)]
pub mod internal {
    pub use crate::frame::{
        check_frame, encode_frame, encode_frame_parts, FrameDecoder, FrameError, LENGTH_PREFIX,
    };
}

// The README's examples run as doc tests too, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

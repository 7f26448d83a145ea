//! Typed streams of the ockam-rs stack (seeds 003 and 004): a [`Sink<T>`]
//! and a [`Source<T>`] over any Ockam route (local, TCP hops, a secure
//! channel, a hub stream), and calls that carry them.
//!
//! ```
//! use ockam_rpc::{call, make_sink, RpcServer, Sink, Source};
//!
//! let (ctx, mut executor) = ockam_node::start_node();
//! executor
//!     .execute(async move {
//!         // A server whose "upper" handler answers each text upper-cased.
//!         RpcServer::new()
//!             .handler("upper", |_aux: u8, mut source: Source<String>| async move {
//!                 let sink: Sink<String> = source.make_sink().await?;
//!                 let mut out = sink.clone();
//!                 tokio::spawn(async move {
//!                     while let Ok(Some(text)) = source.recv().await {
//!                         if out.send(text.to_uppercase()).await.is_err() {
//!                             return;
//!                         }
//!                     }
//!                     let _ = out.close().await;
//!                 });
//!                 Ok(Some(sink))
//!             })
//!             .start(&ctx, "rpc")
//!             .await?;
//!         // A client: a sink, a call, the reverse source.
//!         let mut sink: Sink<String> = make_sink(&ctx).await?;
//!         let mut back: Source<String> = call(&ctx, "rpc", "upper", 0u8, &sink).await?.unwrap();
//!         sink.send("hello".to_string()).await?;
//!         assert_eq!(back.recv().await?.as_deref(), Some("HELLO"));
//!         sink.close().await?;
//!         assert_eq!(back.recv().await?, None); // a clean end
//!         ctx.stop().await
//!     })
//!     .unwrap();
//! ```
//!
//! - **Order, exactly once** to the application, per stream, also over
//!   routes that redeliver: sequence numbers, duplicates dropped.
//! - **Credits, end to end**: the receiving application's pace bounds the
//!   sender ([`Window`]: 64 messages and 1 MiB by default); at most one
//!   window of a stream is in flight or held anywhere on the route.
//! - **Endings that can't be confused**: `Ok(None)` from
//!   [`Source::recv`] only after [`Sink::close`] with nothing missing (and
//!   `close` returns only once the receiver has everything); a sink dropped
//!   without `close` aborts; [`RpcError`] says which other ending it was.
//! - The protocol is a plain state machine (no I/O, no clock; the
//!   `proto` module of the sources, with [`Window`] and [`Timing`] its
//!   settings); each end is a small
//!   task around it.
#![deny(missing_docs)]

mod endpoint;
mod error;
mod proto;
mod rpc;

pub use endpoint::{live_ends, Sink, Source};
pub use error::RpcError;
pub use proto::{Timing, Window};
pub use rpc::{
    call, call_with, make_sink, make_sink_with, request, request_with, CallOptions, RpcServer,
    CALL_TIMEOUT,
};

/// What tests and the fuzz targets (`fuzz/` and their stable driver
/// `ockam_fuzz`) use of this crate outside its API: the typed-stream state
/// machine and frames (`proto`), and fuzz entry points. Hidden from the
/// docs, no stability promise; applications should not use it.
#[doc(hidden)]
pub mod internal {
    /// Frames and the flow-control state machine of a typed stream.
    pub mod proto {
        pub use crate::proto::*;
    }

    /// A server's decoding of a request (a call's handler name, auxiliary
    /// bytes and the addresses it names) and a caller's decoding of a
    /// reply, over the same bytes.
    pub fn decode_call_messages(bytes: &[u8]) {
        crate::rpc::decode_call_messages(bytes)
    }

    /// Encodings of each kind of request and reply (the fuzz targets'
    /// seed corpus).
    pub fn seed_call_messages() -> Vec<Vec<u8>> {
        crate::rpc::seed_call_messages()
    }
}

// The README's examples run as doc tests too, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

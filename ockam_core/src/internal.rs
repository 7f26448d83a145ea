//! What the other crates of the ockam-rs workspace (and its tests, benches
//! and fuzz targets) use of this one, outside its API: hidden from the
//! docs, and with no stability promise across versions (rustls's way).
//! Applications should not use it.

pub mod recycle;
pub mod sync;

/// Hand-written BARE primitives (the other crates' hot-path codecs).
pub use crate::message::wire;

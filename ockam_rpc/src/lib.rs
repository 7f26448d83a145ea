//! Typed streams of the ockam-rs stack (seeds 003 and 004).
#![deny(missing_docs)]

pub mod proto;

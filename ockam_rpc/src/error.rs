//! [`RpcError`]: how a typed stream or a call can fail, matchable.

use crate::proto::End;

/// Why a typed stream or call failed. Each ending has its own variant, so
/// that "finished" is never confused with "broken": a clean end is
/// `Ok(None)` from [`Source::recv`](crate::Source::recv), never an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcError {
    /// The sender aborted the stream (or dropped its sink without
    /// `close()`), saying why.
    Aborted(String),
    /// The receiver cancelled the stream, saying why.
    Cancelled(String),
    /// The stream is lost: the peer, or the way to it, is gone (no word
    /// within the liveness timeout, a message that never arrived, a send
    /// that failed, the node stopping).
    Lost(String),
    /// A message does not decode as the stream's type (the stream is
    /// cancelled).
    Decode(String),
    /// A message larger than the receiver's window in bytes (the stream
    /// goes on; send smaller ones or open it with a larger window).
    TooLarge {
        /// The message's encoded size, in bytes.
        size: u64,
        /// The window, in bytes.
        limit: u64,
    },
    /// A limit of the server was reached (retryable later), named.
    Limit {
        /// Which limit.
        what: String,
        /// Its value.
        limit: u64,
    },
    /// `send` after `close()`.
    Closed,
    /// `make_sink` on a source that no call brought.
    NoReverse,
    /// The server refused the call (no such handler, aux that does not
    /// decode, the handler's error), saying why.
    Refused(String),
    /// The node failed (an address taken, the node stopped, ...).
    Node(String),
}

impl RpcError {
    pub(crate) fn from_core(e: ockam_core::Error) -> Self {
        RpcError::Node(e.to_string())
    }
}

impl From<ockam_core::Error> for RpcError {
    fn from(e: ockam_core::Error) -> Self {
        RpcError::from_core(e)
    }
}

impl From<End> for RpcError {
    fn from(e: End) -> Self {
        match e {
            End::Aborted(r) => RpcError::Aborted(r),
            End::Cancelled(r) => RpcError::Cancelled(r),
            End::Lost(r) => RpcError::Lost(r),
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RpcError::Aborted(r) => write!(f, "the sender aborted the stream: {r}"),
            RpcError::Cancelled(r) => write!(f, "the receiver cancelled the stream: {r}"),
            RpcError::Lost(r) => write!(f, "the stream is lost: {r}"),
            RpcError::Decode(r) => write!(f, "{r}"),
            RpcError::TooLarge { size, limit } => write!(
                f,
                "a message of {size} bytes is over the receiver's window of {limit} bytes"
            ),
            RpcError::Limit { what, limit } => write!(f, "limit reached: {what} ({limit})"),
            RpcError::Closed => write!(f, "the stream is closed"),
            RpcError::NoReverse => {
                write!(f, "no reverse stream: this source was not made by a call")
            }
            RpcError::Refused(r) => write!(f, "the server refused the call: {r}"),
            RpcError::Node(r) => write!(f, "node: {r}"),
        }
    }
}

impl std::error::Error for RpcError {}

impl From<RpcError> for ockam_core::Error {
    fn from(e: RpcError) -> Self {
        use ockam_core::ErrorKind;
        let kind = match &e {
            RpcError::Lost(_) => ErrorKind::Unavailable,
            RpcError::Decode(_) => ErrorKind::Decoding,
            RpcError::TooLarge { .. } | RpcError::NoReverse => ErrorKind::InvalidInput,
            RpcError::Limit { .. } => ErrorKind::ResourceExhausted,
            _ => ErrorKind::Protocol,
        };
        ockam_core::Error::new(kind, e.to_string())
    }
}

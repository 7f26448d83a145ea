//! The error type shared by every crate of the stack, and its kinds.

use std::fmt;
use std::sync::Arc;

/// What went wrong, coarsely: match on this to decide what to do about an
/// [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No worker, router, stream or key exists under the given name.
    NotFound,
    /// Something already exists under the given name (e.g. a worker address).
    AlreadyExists,
    /// An argument or configuration value is not acceptable.
    InvalidInput,
    /// A value could not be encoded.
    Encoding,
    /// Bytes from a peer, a file or a user could not be decoded.
    Decoding,
    /// A peer broke the rules of a protocol (framing, handshake, stream protocol).
    Protocol,
    /// An operation did not complete in time.
    Timeout,
    /// The node (or the component) is shutting down or has stopped.
    Shutdown,
    /// An I/O operation failed.
    Io,
    /// A cryptographic check failed (authentication, key mismatch).
    Security,
    /// A service the operation depends on is not available right now.
    Unavailable,
    /// A limit was reached (frame size, queue length, ...).
    ResourceExhausted,
    /// The peer refused the operation: the caller's identity may not do it
    /// (a closed hub's access file, issue 16). Retrying does not help
    /// until the peer's rules change.
    PermissionDenied,
    /// A bug: an invariant of the library did not hold.
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Encoding => "encoding failed",
            ErrorKind::Decoding => "decoding failed",
            ErrorKind::Protocol => "protocol violation",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Shutdown => "shut down",
            ErrorKind::Io => "i/o error",
            ErrorKind::Security => "security check failed",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::ResourceExhausted => "limit reached",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Internal => "internal error",
        };
        f.write_str(s)
    }
}

/// The error type of the whole stack: a [`ErrorKind`], a message for humans
/// and optionally the underlying cause.
///
/// ```
/// use ockam_core::{Error, ErrorKind};
///
/// let e = Error::new(ErrorKind::NotFound, "no worker at address 0#echoer");
/// assert_eq!(e.kind(), ErrorKind::NotFound);
/// assert_eq!(e.to_string(), "not found: no worker at address 0#echoer");
/// ```
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// An error of `kind` with a message for humans.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `kind` caused by `source`.
    pub fn with_source<E>(kind: ErrorKind, message: impl Into<String>, source: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Error {
            kind,
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message for humans, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `main` returning `Err` prints `Debug`: keep it as readable as `Display`.
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::TimedOut => ErrorKind::Timeout,
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            _ => ErrorKind::Io,
        };
        Error::with_source(kind, "i/o operation failed", e)
    }
}

/// `Result` with the stack's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

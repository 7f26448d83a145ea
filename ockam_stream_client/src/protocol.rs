//! Messages of the Ockam stream protocol, BARE-encoded.
//!
//! Every request and response is a [`ProtocolPayload`]: a protocol id and
//! the encoding of that protocol's message.
//!
//! | protocol | request | response |
//! | --- | --- | --- |
//! | `stream_create` | [`CreateStreamRequest`] | [`Init`], sent from the stream worker's address |
//! | `stream_push` | [`PushRequest`] | [`PushConfirm`] |
//! | `stream_pull` | [`PullRequest`] | [`PullResponse`] |
//! | `stream_pull_wait` (extension) | [`PullWaitRequest`] | [`PullResponse`] as `stream_pull` |
//! | `stream_index` | [`IndexRequest`] | [`Index`] (to `Get`) |
//! | `stream_error` (extension) | — | [`StreamError`]: why a request was refused |

use ockam_core::{decode, encode, Error, ErrorKind, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An unsigned integer of the protocol, encoded as BARE's `uint` (a
/// variable-length integer: 7 bits a byte, least significant first), as
/// seed 002's messages have it. `1u64.into()` or `Uint(1)` makes one;
/// `.0` or `u64::from` reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uint(pub u64);

impl From<u64> for Uint {
    fn from(n: u64) -> Self {
        Uint(n)
    }
}

impl From<Uint> for u64 {
    fn from(n: Uint) -> Self {
        n.0
    }
}

impl Serialize for Uint {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serde_bare::Uint(self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Uint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        serde_bare::Uint::deserialize(d).map(|n| Uint(n.0))
    }
}

/// Protocol id: create (or open) a stream.
pub const STREAM_CREATE: &str = "stream_create";
/// Protocol id: append a message.
pub const STREAM_PUSH: &str = "stream_push";
/// Protocol id: read messages from an index on.
pub const STREAM_PULL: &str = "stream_pull";
/// Protocol id (extension): read, waiting up to `wait_ms` for new messages.
pub const STREAM_PULL_WAIT: &str = "stream_pull_wait";
/// Protocol id: client read positions.
pub const STREAM_INDEX: &str = "stream_index";
/// Protocol id (extension): a request was refused.
pub const STREAM_ERROR: &str = "stream_error";

/// The envelope of every stream protocol message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolPayload {
    /// Which protocol `data` belongs to.
    pub protocol: String,
    /// The BARE encoding of that protocol's message.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl ProtocolPayload {
    /// Wraps `msg` as protocol `protocol`.
    ///
    /// # Errors
    /// [`ErrorKind::Encoding`] when `msg` cannot be BARE-encoded.
    pub fn new<T: Serialize>(protocol: &str, msg: &T) -> Result<Self> {
        Ok(ProtocolPayload {
            protocol: protocol.to_string(),
            data: encode(msg)?,
        })
    }

    /// Decodes the data as `T`, if the protocol is `expected`.
    ///
    /// # Errors
    /// [`ErrorKind::Protocol`] when the protocol is not `expected`;
    /// [`ErrorKind::Decoding`] when the data is not a valid `T`.
    pub fn decode_data<T: DeserializeOwned>(&self, expected: &str) -> Result<T> {
        if self.protocol != expected {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("expected protocol {expected:?}, got {:?}", self.protocol),
            ));
        }
        decode(&self.data)
    }
}

/// `stream_create` request: open `stream_name`, or a new stream with a
/// generated name.
///
/// The hub answers with a stream worker for this requester alone (the
/// [`Init`] comes from its address). A second `stream_create` of the same
/// stream from the same return route replaces the first one's stream
/// worker, which the hub stops: a client opens its stream again when its
/// stream worker failed or went quiet, and the old one is of no more use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateStreamRequest {
    /// The stream to open (created if missing).
    pub stream_name: Option<String>,
}

/// `stream_create` response, sent from the stream worker's address: its
/// return route is how to reach the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Init {
    /// The stream's name.
    pub stream_name: String,
}

/// `stream_push` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRequest {
    /// Echoed in the confirmation; retries reuse it.
    pub request_id: Uint,
    /// The message to append.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// A [`PushRequest`] that borrows its message, for encoding only (the same
/// wire form): `ProtocolPayload::new(STREAM_PUSH, &PushRequestRef { .. })`
/// pushes a message without copying it into a `Vec` of its own first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PushRequestRef<'a> {
    /// See [`PushRequest::request_id`].
    pub request_id: Uint,
    /// See [`PushRequest::data`].
    #[serde(with = "serde_bytes")]
    pub data: &'a [u8],
}

/// Outcome of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PushStatus {
    /// Stored durably at `index`.
    Ok,
    /// Not stored; the client should retry.
    Error,
}

/// `stream_push` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushConfirm {
    /// The request's id.
    pub request_id: Uint,
    /// Whether the message is stored.
    pub status: PushStatus,
    /// Where it is stored (meaningful when `status` is `Ok`).
    pub index: Uint,
}

/// `stream_pull` request: up to `limit` messages from `index` on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// Echoed in the response.
    pub request_id: Uint,
    /// The first index wanted.
    pub index: Uint,
    /// At most this many messages (the hub may cap it).
    pub limit: Uint,
}

/// `stream_pull_wait` request (extension): like [`PullRequest`], but when
/// nothing is there yet the hub answers as soon as something is pushed, or
/// after `wait_ms` with an empty response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullWaitRequest {
    /// Echoed in the response.
    pub request_id: Uint,
    /// The first index wanted.
    pub index: Uint,
    /// At most this many messages.
    pub limit: Uint,
    /// How long to wait for a first message (the hub may cap it).
    pub wait_ms: Uint,
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMessage {
    /// Its position in the stream.
    pub index: Uint,
    /// Its bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// `stream_pull` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullResponse {
    /// The request's id.
    pub request_id: Uint,
    /// The messages, in order.
    pub messages: Vec<StreamMessage>,
}

/// `stream_index` request to the index service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexRequest {
    /// Where did `client_id` stop reading `stream_name`?
    Get {
        /// The reading client.
        client_id: String,
        /// The stream.
        stream_name: String,
    },
    /// `client_id` has handled `stream_name` up to (not including) `index`.
    Save {
        /// The reading client.
        client_id: String,
        /// The stream.
        stream_name: String,
        /// The next index to read.
        index: Uint,
    },
}

/// `stream_index` response to `Get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    /// The reading client.
    pub client_id: String,
    /// The stream.
    pub stream_name: String,
    /// The saved index, if any.
    pub index: Option<Uint>,
}

/// `stream_error` (extension): why a request was refused.
///
/// A hub answers every request it refuses with one, sent to the request's
/// return route: a request it cannot decode (then `protocol` is the id the
/// request named, or empty when it was not a [`ProtocolPayload`] at all),
/// a name it does not accept, a protocol it does not serve, or a store that
/// failed to answer. A hub without an extension says so with
/// [`StreamError::unknown_protocol`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamError {
    /// The refused request's protocol id.
    pub protocol: String,
    /// What was wrong.
    pub reason: String,
}

/// How the reason of a refusal for an unknown protocol starts.
const UNKNOWN_PROTOCOL: &str = "unknown protocol ";
/// How the reason of a refusal of a read position past the end starts.
const PAST_END: &str = "read position past the end: ";
/// How the reason of a refusal of a read position the hub trimmed starts.
const TRIMMED: &str = "read position trimmed: ";
/// How the reason of a refusal for want of permission starts.
const ACCESS_DENIED: &str = "access denied: ";

impl StreamError {
    /// A refusal of a request of `protocol` for `reason`.
    pub fn new(protocol: impl Into<String>, reason: impl Into<String>) -> Self {
        StreamError {
            protocol: protocol.into(),
            reason: reason.into(),
        }
    }

    /// The refusal of a request of a protocol the service does not serve
    /// (`what`: the kind of service, for the reason's text).
    pub fn unknown_protocol(protocol: &str, what: &str) -> Self {
        StreamError::new(
            protocol,
            format!("{UNKNOWN_PROTOCOL}{protocol:?} for {what}"),
        )
    }

    /// Whether this refuses a request because the service does not serve
    /// its protocol at all (as opposed to refusing this one request).
    pub fn is_unknown_protocol(&self) -> bool {
        self.reason.starts_with(UNKNOWN_PROTOCOL)
    }

    /// The refusal of a pull (`protocol`) or an index save at `index` of
    /// `stream`, which holds messages `0..end` only: the position does not
    /// point into the log (the hub lost messages, or it never did). A hub
    /// answers such a request with this, never with an empty answer; a
    /// client then reads its saved index again (which the hub keeps within
    /// the log) instead of skipping what lies before the position.
    pub fn past_end(protocol: &str, stream: &str, index: u64, end: u64) -> Self {
        StreamError::new(
            protocol,
            format!("{PAST_END}index {index} of stream {stream:?}, which ends at {end}"),
        )
    }

    /// Whether this refuses a read position past the end of the stream
    /// ([`StreamError::past_end`]).
    pub fn is_past_end(&self) -> bool {
        self.reason.starts_with(PAST_END)
    }

    /// The refusal of a pull (`protocol`) from `index` of `stream`, whose
    /// messages before `oldest` the hub removed (its retention, issue 17):
    /// the reader missed `oldest - index` messages and continues from
    /// `oldest` ([`StreamError::trimmed_to`]). A hub answers such a pull
    /// with this, never with messages from further on, so that no reader
    /// passes over a gap without being told.
    pub fn trimmed(protocol: &str, stream: &str, index: u64, oldest: u64) -> Self {
        StreamError::new(
            protocol,
            format!(
                "{TRIMMED}index {index} of stream {stream:?} was removed by the hub's retention; \
                 the oldest kept message is {oldest}"
            ),
        )
    }

    /// For a [`StreamError::trimmed`] refusal, the oldest kept index.
    pub fn trimmed_to(&self) -> Option<u64> {
        if !self.reason.starts_with(TRIMMED) {
            return None;
        }
        self.reason.rsplit(' ').next()?.parse().ok()
    }

    /// The refusal of a request of `protocol` that its sender may not make
    /// (extension, issue 16): the hub is closed and the request did not
    /// come through a secure channel, or the channel's identity is not
    /// allowed to do it (`reason` says which). Nothing was stored or moved.
    /// Asking again does not help until the hub's access file changes, so
    /// clients report it ([`ockam_core::ErrorKind::PermissionDenied`])
    /// instead of retrying.
    pub fn access_denied(protocol: &str, reason: &str) -> Self {
        StreamError::new(protocol, format!("{ACCESS_DENIED}{reason}"))
    }

    /// Whether this refuses a request its sender may not make
    /// ([`StreamError::access_denied`]).
    pub fn is_access_denied(&self) -> bool {
        self.reason.starts_with(ACCESS_DENIED)
    }

    /// The kind of error a client reports a refusal of its request as:
    /// [`ockam_core::ErrorKind::PermissionDenied`] for
    /// [`StreamError::access_denied`], otherwise
    /// [`ockam_core::ErrorKind::InvalidInput`].
    pub fn error_kind(&self) -> ockam_core::ErrorKind {
        if self.is_access_denied() {
            ockam_core::ErrorKind::PermissionDenied
        } else {
            ockam_core::ErrorKind::InvalidInput
        }
    }
}

/// The local name of a stream worker that tells which log it serves
/// (extension): `"{incarnation:016x}.{unique}"`, where the incarnation is a
/// number the hub's store keeps while it keeps its contents (a store that
/// lost them, such as an in-memory hub restarted, has a new one). The
/// `Init` comes from this address, so a client learns it from the answer's
/// return route: a client whose stream workers change incarnation knows
/// that the positions it holds are from another log. Other names mean
/// "unknown".
pub fn stream_worker_name(incarnation: u64, unique: &str) -> String {
    format!("{incarnation:016x}.{unique}")
}

/// The incarnation in a stream worker's local name
/// ([`stream_worker_name`]), if it has one (and it is not 0).
pub fn store_incarnation(worker_name: &str) -> Option<u64> {
    let (head, _) = worker_name.split_once('.')?;
    if head.len() != 16 {
        return None;
    }
    u64::from_str_radix(head, 16).ok().filter(|i| *i != 0)
}

/// Longest stream or client name accepted, in bytes (Kafka's topic limit).
pub const MAX_NAME_LEN: usize = 249;

/// Checks a stream or client name: 1 to [`MAX_NAME_LEN`] bytes of ASCII
/// letters, digits, `.`, `_` and `-` (names a file system or Kafka takes
/// as they are).
///
/// # Errors
/// [`ErrorKind::InvalidInput`] when `name` breaks these rules (or is `.`
/// or `..`).
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        let shown: String = name.chars().take(40).collect();
        Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "{kind} name {shown:?}{} is not 1-{MAX_NAME_LEN} characters of [A-Za-z0-9._-]",
                if name.chars().count() > 40 { "…" } else { "" }
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms_are_bare() {
        let p = ProtocolPayload::new(
            STREAM_PUSH,
            &PushRequest {
                request_id: Uint(300),
                data: vec![7],
            },
        )
        .unwrap();
        // request_id 300 as a uint is two bytes; data is length + bytes.
        assert_eq!(p.data, vec![0xac, 0x02, 1, 7]);
        let borrowed = PushRequestRef {
            request_id: Uint(300),
            data: &[7],
        };
        assert_eq!(ProtocolPayload::new(STREAM_PUSH, &borrowed).unwrap(), p);
        let bytes = encode(&p).unwrap();
        assert_eq!(&bytes[..12], b"\x0bstream_push");
        let back: ProtocolPayload = decode(&bytes).unwrap();
        assert_eq!(back, p);
        assert!(back.decode_data::<PushRequest>(STREAM_PULL).is_err());
        let confirm = PushConfirm {
            request_id: Uint(1),
            status: PushStatus::Error,
            index: Uint(0),
        };
        assert_eq!(encode(&confirm).unwrap(), vec![1, 1, 0]);
        let get = IndexRequest::Get {
            client_id: "c".into(),
            stream_name: "s".into(),
        };
        assert_eq!(encode(&get).unwrap(), vec![0, 1, b'c', 1, b's']);
    }

    #[test]
    fn stream_worker_names_carry_the_incarnation() {
        let name = stream_worker_name(0xabc, "f00");
        assert_eq!(name, "0000000000000abc.f00");
        assert_eq!(store_incarnation(&name), Some(0xabc));
        for other in [
            "f00",
            "abc.f00",
            "zzzzzzzzzzzzzzzz.x",
            "0000000000000000.x",
            "",
        ] {
            assert_eq!(store_incarnation(other), None, "{other}");
        }
    }

    #[test]
    fn names_are_checked() {
        for good in ["a", "orders-2021.eu_west", &"x".repeat(MAX_NAME_LEN)] {
            validate_name("stream", good).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "a/b",
            "a b",
            "é",
            &"x".repeat(MAX_NAME_LEN + 1),
        ] {
            assert_eq!(
                validate_name("stream", bad).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{bad:?}"
            );
        }
    }
}

//! Messages: what workers exchange, and the envelopes that carry them.

use crate::address::Address;
use crate::error::{Error, ErrorKind, Result};
use crate::route::Route;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A value that can travel between workers, encoded as BARE.
///
/// Every `serde` type that is `Send + 'static` is a message; [`Any`] is the
/// message type of workers that forward whatever they receive.
pub trait Message: Sized + Send + 'static {
    /// The BARE encoding of this value.
    ///
    /// # Errors
    /// [`ErrorKind::Encoding`] when the value cannot be encoded (for serde
    /// types, when `serde_bare` refuses it; always for [`Any`]).
    fn encode(&self) -> Result<Vec<u8>>;
    /// Decodes a value; bytes left over after the value are an error.
    ///
    /// # Errors
    /// [`ErrorKind::Decoding`] when `data` is not a valid encoding of the
    /// type or has bytes left over ([`Any`] never fails).
    fn decode(data: &[u8]) -> Result<Self>;

    /// The length in bytes of [`Message::encode`]'s output, without building it.
    /// Transports use it with [`Message::encode_into`] to encode a message
    /// straight into their own buffers. The default builds the encoding
    /// (so a send to a transport encodes twice): a type with a cheaper
    /// way to measure itself should override both.
    ///
    /// # Errors
    /// As [`Message::encode`]: [`ErrorKind::Encoding`].
    fn encoded_len(&self) -> Result<usize> {
        self.encode().map(|bytes| bytes.len())
    }

    /// Appends [`Message::encode`]'s output to `out`. The default builds the
    /// encoding and copies it.
    ///
    /// # Errors
    /// As [`Message::encode`]: [`ErrorKind::Encoding`].
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(&self.encode()?);
        Ok(())
    }
}

impl<T> Message for T
where
    T: Serialize + DeserializeOwned + Send + 'static,
{
    fn encode(&self) -> Result<Vec<u8>> {
        encode(self)
    }

    fn decode(data: &[u8]) -> Result<Self> {
        decode_measured(data)
    }

    fn encoded_len(&self) -> Result<usize> {
        let mut size = Counter(0);
        serde_bare::to_writer(&mut size, self).map_err(encode_error::<T>)?;
        Ok(size.0)
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        encode_into(self, out)
    }
}

/// The payload of a message that is not built yet: a transport writes it
/// straight into its own buffer (see `TransportRouter::route_parts` in
/// `ockam_node`), saving the sender an allocation and a copy, or keeps its
/// shared end by reference ([`EncodePayload::write_payload_shared`]).
pub trait EncodePayload {
    /// Bytes [`EncodePayload::write_payload`] appends.
    fn payload_len(&self) -> usize;
    /// Appends exactly `payload_len()` bytes to `out`.
    ///
    /// # Errors
    /// [`ErrorKind::Encoding`] when the payload cannot be encoded, or (for
    /// [`EncodedMessage`]) encodes to another length than it measured; a
    /// payload in byte parts never fails.
    fn write_payload(&self, out: &mut Vec<u8>) -> Result<()>;

    /// Appends the payload to `out` but for its end, which it returns as a
    /// shared buffer, for a transport that can send it by reference (a
    /// vectored write) instead of copying it: the bytes appended and the
    /// buffer returned are `payload_len()` bytes in all. The default
    /// appends everything ([`EncodePayload::write_payload`]) and returns
    /// `None`.
    ///
    /// # Errors
    /// As [`EncodePayload::write_payload`]'s.
    fn write_payload_shared(&self, out: &mut Vec<u8>) -> Result<Option<bytes::Bytes>> {
        out.reserve(self.payload_len());
        self.write_payload(out).map(|()| None)
    }
}

/// A payload of a few bytes written in place (`head`) followed by a
/// shared buffer (`tail`) that a transport may send by reference
/// ([`EncodePayload::write_payload_shared`]): a frame header and a slice
/// of a queue, say.
///
/// ```
/// use ockam_core::{EncodePayload, SharedTail};
///
/// let tail = bytes::Bytes::from(vec![7u8; 3]);
/// let payload = SharedTail { head: &[1, 2], tail: tail.clone() };
/// assert_eq!(payload.payload_len(), 5);
/// let mut out = Vec::new();
/// assert_eq!(payload.write_payload_shared(&mut out).unwrap(), Some(tail));
/// assert_eq!(out, [1, 2]);
/// ```
#[derive(Debug, Clone)]
pub struct SharedTail<'a> {
    /// Written in place, first.
    pub head: &'a [u8],
    /// Follows `head`; shared with the transport when it can.
    pub tail: bytes::Bytes,
}

impl EncodePayload for SharedTail<'_> {
    fn payload_len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    fn write_payload(&self, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(self.head);
        out.extend_from_slice(&self.tail);
        Ok(())
    }

    fn write_payload_shared(&self, out: &mut Vec<u8>) -> Result<Option<bytes::Bytes>> {
        out.extend_from_slice(self.head);
        Ok(Some(self.tail.clone()))
    }
}

/// A payload in parts, to be joined.
impl<const N: usize> EncodePayload for [&[u8]; N] {
    fn payload_len(&self) -> usize {
        self.iter().map(|part| part.len()).sum()
    }

    fn write_payload(&self, out: &mut Vec<u8>) -> Result<()> {
        for part in self {
            out.extend_from_slice(part);
        }
        Ok(())
    }
}

/// A message as a payload: measured once, encoded where it is written.
///
/// ```
/// use ockam_core::{EncodePayload, EncodedMessage, Message};
///
/// let text = "hello".to_string();
/// let payload = EncodedMessage::new(&text).unwrap();
/// let mut out = Vec::new();
/// payload.write_payload(&mut out).unwrap();
/// assert_eq!(out.len(), payload.payload_len());
/// assert_eq!(out, text.encode().unwrap());
/// ```
pub struct EncodedMessage<'a, M> {
    msg: &'a M,
    len: usize,
}

impl<'a, M: Message> EncodedMessage<'a, M> {
    /// Measures `msg`'s encoding.
    ///
    /// # Errors
    /// The errors of `msg`'s [`Message::encoded_len`] ([`ErrorKind::Encoding`]).
    pub fn new(msg: &'a M) -> Result<Self> {
        Ok(EncodedMessage {
            len: msg.encoded_len()?,
            msg,
        })
    }

    /// The message's encoding, in a buffer of its own (with
    /// [`ENCODE_HEADROOM`] to spare), for when no transport writes it.
    ///
    /// # Errors
    /// [`ErrorKind::Encoding`], as [`EncodePayload::write_payload`].
    pub fn to_vec(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.len + ENCODE_HEADROOM);
        self.write_payload(&mut out)?;
        Ok(out)
    }
}

impl<M: Message> EncodePayload for EncodedMessage<'_, M> {
    fn payload_len(&self) -> usize {
        self.len
    }

    fn write_payload(&self, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        self.msg.encode_into(out)?;
        let written = out.len() - start;
        if written != self.len {
            // A `Serialize` that writes something else each time.
            out.truncate(start);
            return Err(Error::new(
                ErrorKind::Encoding,
                format!(
                    "{} encoded to {written} bytes after measuring {}",
                    std::any::type_name::<M>(),
                    self.len
                ),
            ));
        }
        Ok(())
    }
}

fn encode_error<T: ?Sized>(e: serde_bare::error::Error) -> Error {
    Error::with_source(
        ErrorKind::Encoding,
        format!("cannot encode {}", std::any::type_name::<T>()),
        e,
    )
}

/// Spare capacity, in bytes, [`encode`] leaves after a value, so that a hop that wraps
/// the message (a secure channel: the routes, padding and tag it seals
/// after the payload) can do it in the same buffer.
pub const ENCODE_HEADROOM: usize = 128;

/// Counts the bytes written to it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// BARE-encodes any serde value (into a buffer sized for it, plus
/// [`ENCODE_HEADROOM`]).
///
/// # Errors
/// [`ErrorKind::Encoding`] when `serde_bare` cannot encode `value`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    // Measuring first costs a walk over the value but no copy of its bytes,
    // and saves the regrowths (each an allocation and a copy) of encoding
    // into a buffer that is too small.
    let mut size = Counter(0);
    let mut out = match serde_bare::to_writer(&mut size, value) {
        Ok(()) => Vec::with_capacity(size.0 + ENCODE_HEADROOM),
        Err(_) => Vec::new(),
    };
    serde_bare::to_writer(&mut out, value)
        .map(|()| out)
        .map_err(encode_error::<T>)
}

/// BARE-encodes any serde value at the end of `out`.
///
/// # Errors
/// [`ErrorKind::Encoding`] when `serde_bare` cannot encode `value`.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    serde_bare::to_writer(out, value).map_err(encode_error::<T>)
}

/// Decodes a BARE value, rejecting trailing bytes.
///
/// # Errors
/// [`ErrorKind::Decoding`] when `data` is not a valid `T` or has bytes
/// left over after it.
pub fn decode<T: DeserializeOwned>(data: &[u8]) -> Result<T> {
    // Read straight from the slice (serde_bare's slice reader copies each
    // byte field in one go; its io::Read reader reads them in steps), then
    // look for one more byte.
    let (value, Trailer(left_over)) =
        serde_bare::from_slice::<(T, Trailer)>(data).map_err(|e| decoding_error::<T>(data, e))?;
    if left_over {
        return Err(Error::new(
            ErrorKind::Decoding,
            format!(
                "bytes left over after decoding {} from {} bytes",
                std::any::type_name::<T>(),
                data.len()
            ),
        ));
    }
    Ok(value)
}

/// Inputs of at most this many bytes are decoded by [`decode_measured`],
/// longer ones by [`decode`]: beside them one allocation is little, and the
/// measuring walk over a value of many small items could cost more than it
/// saves.
const MEASURED_UP_TO: usize = 4096;

/// [`decode`] without an allocation on success, for a type that can also
/// be encoded (every serde [`Message`]).
///
/// [`decode`] learns that nothing follows the value by asking serde_bare
/// for one more byte, and serde_bare answers "end of input" with an error
/// it allocates (a `Box`), once per decoded message. serde_bare's slice
/// reader does not say how much of its input it read (its `io::Read`
/// reader would, but reads byte fields in steps, which cost more than the
/// allocation). So this decodes the value alone and measures its encoding
/// (a walk that copies nothing): a value encodes to no more bytes than
/// were read for it when its type's `Serialize` writes what its
/// `Deserialize` reads (every derived type; the inputs serde_bare reads
/// but would not write, such as a varint longer than it needs or a map's
/// key twice, it writes shorter), so an encoding as long as the input
/// means the whole input was read. Otherwise [`decode`] decides, as
/// before. A 64 B byte string decodes in about a quarter less time
/// (`cargo bench -p ockam-rs-core --bench decode`; BENCHMARKS.md, typed
/// streams, session 13).
///
/// So the same values and errors as [`decode`] for every type whose
/// `Serialize` writes what its `Deserialize` reads. A type that writes
/// more than it reads (a `skip_deserializing` field: [`decode`] refuses
/// its own encodings) may have bytes left over go unnoticed when they make
/// up the difference exactly. `Serialize` is called once on the decoded
/// value, before it is returned.
fn decode_measured<T: Serialize + DeserializeOwned>(data: &[u8]) -> Result<T> {
    if data.len() > MEASURED_UP_TO {
        return decode(data);
    }
    let value = serde_bare::from_slice::<T>(data).map_err(|e| decoding_error::<T>(data, e))?;
    let mut size = Counter(0);
    match serde_bare::to_writer(&mut size, &value) {
        Ok(()) if size.0 == data.len() => Ok(value),
        _ => decode(data),
    }
}

fn decoding_error<T>(data: &[u8], e: serde_bare::error::Error) -> Error {
    Error::with_source(
        ErrorKind::Decoding,
        format!(
            "{} bytes are not a valid {}",
            data.len(),
            std::any::type_name::<T>()
        ),
        e,
    )
}

/// Whether any byte follows a decoded value: deserializing it reads one
/// byte if there is one, and is `false` at the end of the input.
struct Trailer(bool);

impl<'de> serde::Deserialize<'de> for Trailer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Trailer(<u8 as serde::Deserialize>::deserialize(d).is_ok()))
    }
}

/// The message type of a worker that accepts any payload without decoding it,
/// such as a hop that forwards messages unchanged
/// ([`Routed::into_local_message`](crate::Routed::into_local_message) gives
/// the whole message back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Any;

impl Message for Any {
    fn encode(&self) -> Result<Vec<u8>> {
        Err(Error::new(
            ErrorKind::Encoding,
            "`Any` has no content of its own; forward the received message instead",
        ))
    }

    fn decode(_data: &[u8]) -> Result<Self> {
        Ok(Any)
    }
}

impl std::fmt::Display for Any {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Any")
    }
}

/// Most addresses a route may have, on the wire in either direction: a
/// message with a longer onward or return route is refused when it is sent
/// and when it is decoded ([`check_route`]).
pub const MAX_ROUTE_LEN: usize = 256;

/// Most bytes of an address's transport-specific part (its text after the
/// `<type>#` prefix). Addresses are also never empty. Checked when a worker
/// registers an address, when a message is sent over a transport and when
/// one is decoded ([`check_address`]).
pub const MAX_ADDRESS_LEN: usize = 1024;

/// Checks the rules every address that crosses a transport follows: not
/// empty, at most [`MAX_ADDRESS_LEN`] bytes. One definition for the sending
/// and the receiving side.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] naming the rule that is broken.
pub fn check_address(address: &Address) -> Result<()> {
    check_address_bytes(address.address().len())
}

fn check_address_bytes(len: usize) -> Result<()> {
    if len == 0 {
        return Err(Error::new(ErrorKind::InvalidInput, "an address is empty"));
    }
    if len > MAX_ADDRESS_LEN {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("an address of {len} bytes is longer than {MAX_ADDRESS_LEN}"),
        ));
    }
    Ok(())
}

fn check_route_len(n: u64) -> Result<()> {
    if n > MAX_ROUTE_LEN as u64 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("a route of {n} addresses is longer than {MAX_ROUTE_LEN}"),
        ));
    }
    Ok(())
}

/// Checks a route against the wire's rules: at most [`MAX_ROUTE_LEN`]
/// addresses, each one valid ([`check_address`]). Transports call this
/// before they send a message, so the sender learns at once what the peer
/// would refuse.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] naming the rule that is broken.
pub fn check_route(route: &[Address]) -> Result<()> {
    check_route_len(route.len() as u64)?;
    route.iter().try_for_each(check_address)
}

/// Protocol version written in every [`TransportMessage`].
pub const TRANSPORT_MESSAGE_VERSION: u8 = 1;

/// The message as it crosses any hop: routes and an encoded payload.
///
/// Wire form (BARE): `struct { version: u8, onward_route: list<Address>,
/// return_route: list<Address>, payload: data }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportMessage {
    /// Wire format version, [`TRANSPORT_MESSAGE_VERSION`].
    pub version: u8,
    /// Where the message goes; the first address is the next hop.
    pub onward_route: Route,
    /// How to answer; hops prepend themselves as the message passes.
    pub return_route: Route,
    /// The encoded message.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl TransportMessage {
    /// A current-version transport message.
    pub fn v1(
        onward_route: impl Into<Route>,
        return_route: impl Into<Route>,
        payload: Vec<u8>,
    ) -> Self {
        TransportMessage {
            version: TRANSPORT_MESSAGE_VERSION,
            onward_route: onward_route.into(),
            return_route: return_route.into(),
            payload,
        }
    }

    /// The BARE encoding of this message.
    ///
    /// # Errors
    /// None: the encoding is written by hand and always succeeds.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        Ok(out)
    }

    /// Bytes of [`TransportMessage::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        Self::encoded_len_parts(
            self.onward_route.as_slice(),
            self.return_route.as_slice(),
            self.payload.len(),
        )
    }

    #[doc(hidden)] // for the transport and channel crates: see `internal`
    /// Bytes of the encoding of a message with these routes and a payload
    /// of `payload_len` bytes (what [`TransportMessage::encoded_len`] of
    /// the built message would be).
    pub fn encoded_len_parts(
        onward_route: &[Address],
        return_route: &[Address],
        payload_len: usize,
    ) -> usize {
        let uint_len = |v: usize| (usize::BITS - (v | 1).leading_zeros()).div_ceil(7) as usize;
        let route_len = |r: &[Address]| {
            uint_len(r.len())
                + r.iter()
                    .map(|a| 1 + uint_len(a.address().len()) + a.address().len())
                    .sum::<usize>()
        };
        1 + route_len(onward_route) + route_len(return_route) + uint_len(payload_len) + payload_len
    }

    /// Appends the BARE encoding of this message to `out`. Written by hand
    /// (the same bytes as the serde encoding) because every message that
    /// crosses a transport goes through it.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.head_len_bound() + self.payload.len());
        self.encode_head_into(out);
        out.extend_from_slice(&self.payload);
    }

    #[doc(hidden)] // for the transport and channel crates: see `internal`
    /// At least the bytes of [`TransportMessage::encode_head_into`]'s output.
    pub fn head_len_bound(&self) -> usize {
        let routes: usize = self
            .onward_route
            .iter()
            .chain(self.return_route.iter())
            .map(|a| 3 + a.address().len())
            .sum();
        1 + 2 * 10 + routes + 10
    }

    #[doc(hidden)] // for the transport and channel crates: see `internal`
    /// Appends the encoding of everything but the payload's bytes (version,
    /// routes, payload length): [`TransportMessage::encode_into`] is this
    /// followed by the payload.
    pub fn encode_head_into(&self, out: &mut Vec<u8>) {
        self.encode_head_with(|bytes| out.extend_from_slice(bytes));
    }

    #[doc(hidden)] // for the transport and channel crates: see `internal`
    /// [`TransportMessage::encode_head_into`] for any byte sink.
    pub fn encode_head_with(&self, put: impl FnMut(&[u8])) {
        Self::encode_head_parts(
            self.version,
            self.onward_route.as_slice(),
            self.return_route.as_slice(),
            self.payload.len(),
            put,
        );
    }

    #[doc(hidden)] // for the transport and channel crates: see `internal`
    /// The bytes of [`TransportMessage::encode_head_with`] for a message
    /// that is not built: a transport that writes a message's payload
    /// straight into its own buffer encodes the rest with this.
    pub fn encode_head_parts(
        version: u8,
        onward_route: &[Address],
        return_route: &[Address],
        payload_len: usize,
        mut put: impl FnMut(&[u8]),
    ) {
        fn uint(v: usize, put: &mut impl FnMut(&[u8])) {
            let mut buf = [0u8; 10];
            let mut n = 0;
            wire::put_uint_with(v as u64, |b| {
                buf[n] = b;
                n += 1;
            });
            put(&buf[..n]);
        }
        put(&[version]);
        for route in [onward_route, return_route] {
            uint(route.len(), &mut put);
            for a in route {
                put(&[a.transport_type()]);
                uint(a.address().len(), &mut put);
                put(a.address().as_bytes());
            }
        }
        uint(payload_len, &mut put);
    }

    #[doc(hidden)] // for the transport and channel crates: see `internal`
    /// The encoding laid out payload first: the payload's bytes, then
    /// everything else ([`TransportMessage::encode_head_with`]'s bytes),
    /// in the payload's own buffer (no copy of the payload; `spare` more
    /// bytes of capacity are left after it). The inverse of
    /// [`TransportMessage::decode_split`], whose `head` starts at the
    /// payload's length.
    pub fn encode_split(self, spare: usize) -> Vec<u8> {
        let head_bound = self.head_len_bound();
        let TransportMessage {
            version,
            onward_route,
            return_route,
            payload: mut out,
        } = self;
        let payload_len = out.len();
        out.reserve(head_bound + spare);
        Self::encode_head_parts(
            version,
            onward_route.as_slice(),
            return_route.as_slice(),
            payload_len,
            |bytes| out.extend_from_slice(bytes),
        );
        out
    }

    /// Decodes a transport message from a peer: strict (no bytes left over,
    /// no overlong numbers, UTF-8 addresses) and rejecting unknown versions.
    ///
    /// # Errors
    /// [`ErrorKind::Decoding`] when `data` is truncated, malformed, breaks a
    /// route or address limit or has bytes left over; [`ErrorKind::Protocol`]
    /// when its version is not [`TRANSPORT_MESSAGE_VERSION`].
    pub fn decode(data: &[u8]) -> Result<Self> {
        let (head, payload) = Self::decode_head(data)?;
        // A large payload's buffer is a reused one (see `internal::recycle`).
        let mut buf = crate::internal::recycle::take(payload.len());
        buf.extend_from_slice(&data[payload]);
        Self::checked(head, buf)
    }

    #[doc(hidden)] // for the TCP transport's frame decoder
    /// Where the payload starts in the encoding of a transport message
    /// whose first bytes are `data` (which may stop anywhere in the
    /// payload): `(head_len, payload_len)`, the payload being the
    /// `payload_len` bytes after the first `head_len`. `None` when `data`
    /// does not hold the whole head, or the head is malformed (decoding
    /// the whole message then says why).
    pub fn payload_position(data: &[u8]) -> Option<(usize, usize)> {
        let mut r = wire::Reader::new(data);
        Self::read_routes(&mut r).ok()?;
        let len = usize::try_from(r.uint().ok()?).ok()?;
        Some((data.len() - r.remaining(), len))
    }

    #[doc(hidden)] // for the transport and channel crates: see `internal`
    /// Decodes a message stored payload first: `buf[..head.start]` is the
    /// payload and `buf[head]` the rest of the encoding (the bytes of
    /// [`TransportMessage::encode_head_with`]: version, routes, payload
    /// length). `buf` becomes the payload without a copy: for a hop that
    /// unwraps a message from another (a secure channel's plaintext).
    ///
    /// # Errors
    /// As [`TransportMessage::decode`]; also [`ErrorKind::Decoding`] when
    /// `head` is outside `buf` or its payload length is not `head.start`.
    pub fn decode_split(mut buf: Vec<u8>, head: std::ops::Range<usize>) -> Result<Self> {
        let data = buf.get(head.clone()).ok_or_else(|| {
            Error::new(
                ErrorKind::Decoding,
                "transport message head outside the buffer",
            )
        })?;
        let mut r = wire::Reader::new(data);
        let routes = Self::read_routes(&mut r)?;
        let len = r.uint()?;
        r.finish()?;
        if len != head.start as u64 {
            return Err(Error::new(
                ErrorKind::Decoding,
                format!(
                    "transport message payload is {} bytes, its head says {len}",
                    head.start
                ),
            ));
        }
        buf.truncate(head.start);
        Self::checked(routes, buf)
    }

    /// Version and routes, and where the payload is in `data`.
    fn decode_head(data: &[u8]) -> Result<((u8, Route, Route), std::ops::Range<usize>)> {
        let mut r = wire::Reader::new(data);
        let routes = Self::read_routes(&mut r)?;
        let len = r.bytes()?.len();
        r.finish()?;
        let end = data.len();
        Ok((routes, end - len..end))
    }

    /// Version, onward route and return route.
    fn read_routes(r: &mut wire::Reader<'_>) -> Result<(u8, Route, Route)> {
        Ok((r.u8()?, r.route()?, r.route()?))
    }

    fn checked(
        (version, onward_route, return_route): (u8, Route, Route),
        payload: Vec<u8>,
    ) -> Result<Self> {
        let m = TransportMessage {
            version,
            onward_route,
            return_route,
            payload,
        };
        if m.version != TRANSPORT_MESSAGE_VERSION {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!(
                    "transport message version {} is not supported (expected {})",
                    m.version, TRANSPORT_MESSAGE_VERSION
                ),
            ));
        }
        Ok(m)
    }
}

/// Hand-written BARE primitives for the hot paths (the transport message is
/// decoded for every message that arrives from a peer); reached through
/// [`crate::internal::wire`].
pub mod wire {
    use crate::address::Address;
    use crate::error::{Error, ErrorKind, Result};
    use crate::route::Route;

    /// Appends a BARE `uint` (LEB128).
    #[inline]
    pub fn put_uint(out: &mut Vec<u8>, v: u64) {
        put_uint_with(v, |b| out.push(b));
    }

    /// Gives the bytes of a BARE `uint` (LEB128), one at a time.
    #[inline]
    pub fn put_uint_with(mut v: u64, mut put: impl FnMut(u8)) {
        while v >= 0x80 {
            put((v as u8) | 0x80);
            v >>= 7;
        }
        put(v as u8);
    }

    /// A broken limit, found while decoding.
    fn decoding(e: Error) -> Error {
        Error::new(ErrorKind::Decoding, e.to_string())
    }

    #[cold]
    fn truncated() -> Error {
        Error::new(ErrorKind::Decoding, "transport message is truncated")
    }

    /// Reads BARE primitives from a byte slice, strictly.
    pub struct Reader<'a> {
        buf: &'a [u8],
    }

    impl<'a> Reader<'a> {
        /// A reader over `buf`.
        #[inline]
        pub fn new(buf: &'a [u8]) -> Self {
            Reader { buf }
        }

        /// One byte.
        ///
        /// # Errors
        /// [`ErrorKind::Decoding`] when no byte is left.
        #[inline]
        pub fn u8(&mut self) -> Result<u8> {
            let (&b, rest) = self.buf.split_first().ok_or_else(truncated)?;
            self.buf = rest;
            Ok(b)
        }

        /// A BARE `u64`: 8 bytes, little-endian.
        ///
        /// # Errors
        /// [`ErrorKind::Decoding`] when fewer than 8 bytes are left.
        #[inline]
        pub fn u64(&mut self) -> Result<u64> {
            if self.buf.len() < 8 {
                return Err(truncated());
            }
            let (b, rest) = self.buf.split_at(8);
            self.buf = rest;
            let mut v = [0u8; 8];
            v.copy_from_slice(b);
            Ok(u64::from_le_bytes(v))
        }

        /// Bytes not read yet.
        #[inline]
        pub fn remaining(&self) -> usize {
            self.buf.len()
        }

        /// A LEB128 `uint`: at most 10 bytes, no overflow, no trailing zero
        /// groups (the encoding is canonical).
        ///
        /// # Errors
        /// [`ErrorKind::Decoding`] when it is truncated, overflows 64 bits
        /// (a 10th byte above 1, which is also how one longer than 10 bytes
        /// is refused) or is not canonical. After an error the reader is
        /// left inside the number: not to be read further.
        #[inline]
        pub fn uint(&mut self) -> Result<u64> {
            // One byte (below 128: lengths of short strings and lists, the
            // common case) is always canonical; it is read here, inlined
            // where it is called, and longer ones out of line.
            if let Some((&b, rest)) = self.buf.split_first() {
                if b < 0x80 {
                    self.buf = rest;
                    return Ok(u64::from(b));
                }
            }
            self.long_uint()
        }

        /// [`uint`](Self::uint) when the first byte is not below 128 (a
        /// number of more than one byte), or no byte is left.
        #[cold]
        #[inline(never)]
        fn long_uint(&mut self) -> Result<u64> {
            let mut v: u64 = 0;
            for i in 0..10 {
                let b = self.u8()?;
                if i == 9 && b > 1 {
                    return Err(Error::new(ErrorKind::Decoding, "uint overflows 64 bits"));
                }
                v |= u64::from(b & 0x7f) << (7 * i);
                if b & 0x80 == 0 {
                    if b == 0 && i > 0 {
                        return Err(Error::new(ErrorKind::Decoding, "uint is not canonical"));
                    }
                    return Ok(v);
                }
            }
            // (Not reached: a 10th byte either overflows or ends the
            // number.)
            Err(Error::new(
                ErrorKind::Decoding,
                "uint is longer than 10 bytes",
            ))
        }

        /// A BARE `data`: length, then that many bytes.
        ///
        /// # Errors
        /// [`ErrorKind::Decoding`] when the length is not a valid `uint` or
        /// more bytes than are left.
        #[inline]
        pub fn bytes(&mut self) -> Result<&'a [u8]> {
            let len = self.uint()?;
            if len > self.buf.len() as u64 {
                return Err(truncated());
            }
            let (b, rest) = self.buf.split_at(len as usize);
            self.buf = rest;
            Ok(b)
        }

        /// A route: a count, then addresses.
        ///
        /// # Errors
        /// [`ErrorKind::Decoding`] when it is truncated or malformed, has more
        /// than [`MAX_ROUTE_LEN`](super::MAX_ROUTE_LEN) addresses, or an
        /// address is empty, too long or not UTF-8.
        pub fn route(&mut self) -> Result<Route> {
            let n = self.uint()?;
            super::check_route_len(n).map_err(decoding)?;
            // Every address takes at least three bytes: a count beyond that
            // is a lie, and must not size an allocation.
            if n > (self.buf.len() / 3) as u64 {
                return Err(truncated());
            }
            // Built in place: a route of one address needs no allocation.
            let mut route = Route::with_capacity(n as usize);
            for _ in 0..n {
                let tt = self.u8()?;
                let bytes = self.bytes()?;
                super::check_address_bytes(bytes.len()).map_err(decoding)?;
                route.push(Address::from_utf8(tt, bytes)?);
            }
            Ok(route)
        }

        /// Fails unless every byte was read.
        ///
        /// # Errors
        /// [`ErrorKind::Decoding`] when bytes are left.
        pub fn finish(&self) -> Result<()> {
            if self.buf.is_empty() {
                Ok(())
            } else {
                Err(Error::new(
                    ErrorKind::Decoding,
                    format!(
                        "{} bytes left over after the transport message",
                        self.buf.len()
                    ),
                ))
            }
        }
    }
}

/// What became of a message sent with a [`Receipt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The application took it: the worker it went to returned from
    /// `handle_message` for it (whatever it returned, and also when the
    /// worker could not decode it: it was given its chance), the context
    /// that received it asked for its next message (or acknowledged it), or,
    /// for a message routed on to another node, the transport took it (its
    /// connection is open and the message is queued for it).
    Handled,
    /// It never reached the application: no worker at its address, it was
    /// still queued when the worker or context went away, the worker
    /// panicked handling it, or the connection it was queued for could not
    /// be opened.
    NotHandled,
}

/// A one-shot notice of what became of one message inside a node: the node
/// calls it with [`Delivery::Handled`] once the application took the
/// message, and a receipt dropped before that (with its message) calls it
/// with [`Delivery::NotHandled`]. The stream consumer uses receipts to save
/// its read position only past messages the application has taken.
///
/// The notice runs on whatever thread takes or drops the message: it must
/// be short and must not block (send on an unbounded channel, say).
pub struct Receipt {
    notify: Option<Box<dyn FnOnce(Delivery) + Send + Sync>>,
}

impl Receipt {
    /// A receipt that calls `notify` once, with the outcome.
    pub fn new(notify: impl FnOnce(Delivery) + Send + Sync + 'static) -> Self {
        Receipt {
            notify: Some(Box::new(notify)),
        }
    }

    /// The application took the message.
    pub fn handled(mut self) {
        if let Some(notify) = self.notify.take() {
            notify(Delivery::Handled);
        }
    }
}

impl Drop for Receipt {
    fn drop(&mut self) {
        if let Some(notify) = self.notify.take() {
            notify(Delivery::NotHandled);
        }
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Receipt")
    }
}

/// A [`TransportMessage`] inside a node, as workers receive and forward it,
/// with an optional [`Receipt`] (which a clone does not carry, and which
/// equality ignores).
#[derive(Debug)]
pub struct LocalMessage {
    transport: TransportMessage,
    receipt: Option<Receipt>,
}

impl Clone for LocalMessage {
    fn clone(&self) -> Self {
        LocalMessage::new(self.transport.clone())
    }
}

impl PartialEq for LocalMessage {
    fn eq(&self, other: &Self) -> bool {
        self.transport == other.transport
    }
}

impl Eq for LocalMessage {}

impl LocalMessage {
    /// Wraps a transport message.
    pub fn new(transport: TransportMessage) -> Self {
        LocalMessage {
            transport,
            receipt: None,
        }
    }

    /// The message with `receipt`, told what becomes of it in this node.
    pub fn with_receipt(mut self, receipt: Receipt) -> Self {
        self.receipt = Some(receipt);
        self
    }

    /// Takes the receipt out, if there is one (the node does, where the
    /// message reaches the application).
    pub fn take_receipt(&mut self) -> Option<Receipt> {
        self.receipt.take()
    }

    /// The transport message.
    pub fn transport(&self) -> &TransportMessage {
        &self.transport
    }

    /// The transport message, to change its routes before forwarding.
    pub fn transport_mut(&mut self) -> &mut TransportMessage {
        &mut self.transport
    }

    /// Unwraps the transport message (a receipt still in it is dropped:
    /// [`Delivery::NotHandled`]).
    pub fn into_transport_message(self) -> TransportMessage {
        let LocalMessage { transport, .. } = self;
        transport
    }
}

impl From<TransportMessage> for LocalMessage {
    fn from(t: TransportMessage) -> Self {
        LocalMessage::new(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{route, TCP};

    #[test]
    fn an_encoded_message_writes_what_encode_builds() {
        let values = ["", "x", &"y".repeat(200), &"z".repeat(70_000)];
        for v in values {
            let v = v.to_string();
            let payload = EncodedMessage::new(&v).unwrap();
            assert_eq!(payload.payload_len(), v.encode().unwrap().len());
            let mut out = vec![7];
            payload.write_payload(&mut out).unwrap();
            assert_eq!(out[1..], v.encode().unwrap()[..]);
            assert_eq!(payload.to_vec().unwrap(), v.encode().unwrap());
        }
        let parts: [&[u8]; 3] = [b"ab", b"", b"c"];
        assert_eq!(parts.payload_len(), 3);
        let mut out = Vec::new();
        parts.write_payload(&mut out).unwrap();
        assert_eq!(out, b"abc");
    }

    /// Serializes to one more byte each time.
    struct Growing(std::sync::atomic::AtomicUsize);

    impl Serialize for Growing {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            s.serialize_str(&"g".repeat(n))
        }
    }

    impl<'de> Deserialize<'de> for Growing {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            String::deserialize(d).map(|s| Growing(s.len().into()))
        }
    }

    #[test]
    fn a_message_that_encodes_to_another_length_than_measured_is_an_error() {
        let g = Growing(5.into());
        let payload = EncodedMessage::new(&g).unwrap();
        let mut out = vec![1, 2];
        let err = payload.write_payload(&mut out).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Encoding);
        assert_eq!(out, [1, 2], "nothing of it is left in the buffer");
    }

    #[test]
    fn transport_message_round_trips() {
        let m = TransportMessage::v1(route![(TCP, "h:1"), "b"], route!["a"], vec![1, 2, 3]);
        let bytes = m.encode().unwrap();
        assert_eq!(TransportMessage::decode(&bytes).unwrap(), m);
        // Truncated at every length: an error, never a panic.
        for n in 0..bytes.len() {
            assert!(TransportMessage::decode(&bytes[..n]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(TransportMessage::decode(&longer).is_err());
        let mut v2 = bytes;
        v2[0] = 2;
        assert_eq!(
            TransportMessage::decode(&v2).unwrap_err().kind(),
            ErrorKind::Protocol
        );
    }

    #[test]
    fn decoding_a_split_message_is_decoding() {
        let m = TransportMessage::v1(route![(TCP, "h:1"), "b"], route!["a"], vec![7; 300]);
        let mut head = Vec::new();
        m.encode_head_into(&mut head);
        let mut split = m.payload.clone();
        split.extend_from_slice(&head);
        let end = split.len();
        split.extend_from_slice(&[8; 16]);
        assert_eq!(
            TransportMessage::decode_split(split.clone(), 300..end).unwrap(),
            m
        );
        // The head's payload length must be where the head starts.
        assert!(TransportMessage::decode_split(split.clone(), 299..end).is_err());
        for n in 300..end {
            assert!(TransportMessage::decode_split(split.clone(), 300..n).is_err());
        }
        assert!(TransportMessage::decode_split(split.clone(), 300..end + 1).is_err());
        assert!(TransportMessage::decode_split(split, 300..10_000).is_err());
    }

    #[test]
    fn values_decode_whole_and_nothing_more() {
        assert_eq!(decode::<String>(&[2, b'h', b'i']).unwrap(), "hi");
        assert_eq!(decode::<(u8, Vec<u8>)>(&[7, 1, 9]).unwrap(), (7, vec![9]));
        // A byte too many, or too few.
        let e = decode::<String>(&[2, b'h', b'i', 0]).unwrap_err();
        assert!(e.to_string().contains("left over"), "{e}");
        assert!(decode::<u8>(&[1, 2]).is_err());
        assert!(decode::<String>(&[3, b'h', b'i']).is_err());
        assert!(decode::<u8>(&[]).is_err());
        // A length that claims more than there is allocates nothing big.
        assert!(decode::<Vec<u8>>(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1]).is_err());
        assert!(decode::<Vec<String>>(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1]).is_err());
    }

    #[test]
    fn lying_lengths_and_bad_numbers_are_errors() {
        // A route claiming 2^60 addresses in a few bytes.
        let mut b = vec![1];
        wire::put_uint(&mut b, 1 << 60);
        assert!(TransportMessage::decode(&b).is_err());
        // An 11-byte uint.
        assert!(TransportMessage::decode(&[
            1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0
        ])
        .is_err());
        // A route of 257 addresses, and an empty address.
        let long = TransportMessage::v1(
            Route::create((0..257).map(|i| i.to_string())),
            route![],
            vec![],
        );
        assert!(TransportMessage::decode(&long.encode().unwrap()).is_err());
        assert!(TransportMessage::decode(&[1, 1, 0, 0, 0, 0]).is_err());
        // A non-canonical zero (0x80 0x00).
        assert!(TransportMessage::decode(&[1, 0x80, 0x00, 0, 0]).is_err());
        // A payload length beyond the end.
        assert!(TransportMessage::decode(&[1, 0, 0, 5, 1]).is_err());
        assert_eq!(
            TransportMessage::decode(&[1, 0, 0, 1, 7]).unwrap().payload,
            vec![7]
        );
    }

    /// `Reader::uint`, one-byte (inline) and longer (out of line): every
    /// length of number up to `u64::MAX` read with exactly its own bytes,
    /// and each kind of refusal with its error, where the reader stops.
    #[test]
    fn reader_uint_takes_canonical_leb128_and_refuses_the_rest() {
        use wire::Reader;
        let mut values = vec![0u64, 1, 127, 128, 255, 300, u64::MAX - 1, u64::MAX];
        for k in 1..64 {
            values.extend([(1u64 << k) - 1, 1u64 << k]);
        }
        for v in values {
            let mut b = Vec::new();
            wire::put_uint(&mut b, v);
            b.push(0xAA);
            let mut r = Reader::new(&b);
            assert_eq!(r.uint().unwrap(), v, "{b:02x?}");
            assert_eq!(r.remaining(), 1, "{b:02x?}");
            assert_eq!(r.u8().unwrap(), 0xAA);
        }
        let ten = |last: u8| {
            let mut b = vec![0xff; 9];
            b.push(last);
            b
        };
        assert_eq!(Reader::new(&ten(0x01)).uint().unwrap(), u64::MAX);
        // (input, what the error says, bytes left after it)
        let refused: Vec<(Vec<u8>, &str, usize)> = vec![
            (vec![], "truncated", 0),
            (vec![0x80], "truncated", 0),
            (vec![0xff; 9], "truncated", 0),
            (vec![0x80, 0x00, 0xAA], "not canonical", 1),
            (vec![0xff, 0x80, 0x00, 0xAA], "not canonical", 1),
            ([ten(0x00), vec![0xAA]].concat(), "not canonical", 1),
            ([ten(0x02), vec![0xAA]].concat(), "overflows", 1),
            ([ten(0x7f), vec![0xAA]].concat(), "overflows", 1),
            // 11 bytes: refused at the 10th (its continuation bit makes it
            // more than 1).
            ([ten(0x81), vec![0x00, 0xAA]].concat(), "overflows", 2),
            ([vec![0x80; 10], vec![0x01]].concat(), "overflows", 1),
        ];
        for (b, says, left) in refused {
            let mut r = Reader::new(&b);
            let e = r.uint().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Decoding, "{b:02x?}");
            assert!(e.to_string().contains(says), "{b:02x?}: {e}");
            assert_eq!(r.remaining(), left, "{b:02x?}");
        }
    }

    proptest::proptest! {
        /// Whatever `Reader::uint` accepts is exactly what `put_uint`
        /// writes for that number (so it is canonical).
        #[test]
        fn reader_uint_accepts_only_what_put_uint_writes(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..12),
        ) {
            let mut r = wire::Reader::new(&data);
            if let Ok(v) = r.uint() {
                let mut b = Vec::new();
                wire::put_uint(&mut b, v);
                proptest::prop_assert_eq!(&data[..data.len() - r.remaining()], &b[..]);
            }
        }
    }

    #[test]
    fn one_set_of_limits_for_sending_and_decoding() {
        let ok = Route::create((0..MAX_ROUTE_LEN).map(|i| i.to_string()));
        assert!(check_route(ok.as_slice()).is_ok());
        let long = Route::create((0..=MAX_ROUTE_LEN).map(|i| i.to_string()));
        let e = check_route(long.as_slice()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("longer than 256"), "{e}");
        assert!(check_route(&[Address::from("")]).is_err());
        let big = "x".repeat(MAX_ADDRESS_LEN + 1);
        assert!(check_route(&[Address::from(big.as_str())]).is_err());
        assert!(check_route(&[Address::from(&big[1..])]).is_ok());
        // What the decoder refuses is exactly what the check refuses.
        for (route, refused) in [
            (ok, false),
            (long, true),
            (route![big.as_str()], true),
            (route![&big[1..]], false),
        ] {
            let m = TransportMessage::v1(route.clone(), route![], vec![1]);
            let decoded = TransportMessage::decode(&m.encode().unwrap());
            assert_eq!(decoded.is_err(), refused, "{:?}", decoded.err());
            assert_eq!(check_route(route.as_slice()).is_err(), refused);
        }
    }

    #[test]
    fn strings_are_bare_strings() {
        let bytes = "hi".to_string().encode().unwrap();
        assert_eq!(bytes, vec![2, b'h', b'i']);
        assert_eq!(String::decode(&bytes).unwrap(), "hi");
        assert!(String::decode(&[2, 0xff, 0xff]).is_err());
        assert!(Any::decode(&[9, 9, 9]).is_ok());
    }

    /// A message of several shapes, for the measured decode's tests.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shapes {
        Unit,
        Numbers(u8, u64, i32),
        Text {
            name: String,
            tags: Vec<String>,
            blob: Option<Vec<u8>>,
        },
        Map(std::collections::BTreeMap<u16, String>),
    }

    /// `Message::decode` (measured) and [`decode`] (exact) give the same
    /// value or both an error, for `data` as a `T`.
    fn measured_agrees<T>(data: &[u8]) -> std::result::Result<(), String>
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + Send + 'static,
    {
        match (<T as Message>::decode(data), decode::<T>(data)) {
            (Ok(a), Ok(b)) if a == b => Ok(()),
            (Err(a), Err(b)) if a.kind() == b.kind() => Ok(()),
            (a, b) => Err(format!("{data:?}: measured {a:?}, exact {b:?}")),
        }
    }

    /// Writes one byte more than it reads (`b` is not read, written as 0).
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Lopsided {
        a: u8,
        #[serde(skip_deserializing)]
        b: u8,
    }

    #[test]
    fn the_measured_decode_refuses_what_the_exact_one_refuses() {
        let m = Shapes::Text {
            name: "n".into(),
            tags: vec!["a".into()],
            blob: Some(vec![1, 2]),
        };
        let bytes = crate::encode(&m).unwrap();
        assert_eq!(Shapes::decode(&bytes).unwrap(), m);
        let mut longer = bytes.clone();
        longer.push(0);
        let e = Shapes::decode(&longer).unwrap_err();
        assert!(e.to_string().contains("left over"), "{e}");
        // Longer than MEASURED_UP_TO: the exact decode alone.
        let big = crate::encode(&vec![7u8; MEASURED_UP_TO]).unwrap();
        assert_eq!(Vec::<u8>::decode(&big).unwrap().len(), MEASURED_UP_TO);
        let mut big_longer = big.clone();
        big_longer.push(0);
        assert!(Vec::<u8>::decode(&big_longer).is_err());
        // Inputs serde_bare reads but would not write: a varint longer than
        // it needs (0 as 0x80 0x00), a map's keys out of order or twice.
        for data in [
            &[0x80, 0x00][..],
            &[0x80, 0x00, 0x00][..],
            &[3, 2, 2, 0, 0, 1, 0, 1, b'x'][..],
            &[3, 2, 1, 0, 0, 1, 0, 0][..],
            &[3, 2, 1, 0, 0, 1, 0, 0, 7][..],
        ] {
            measured_agrees::<Vec<u8>>(data).unwrap();
            measured_agrees::<Shapes>(data).unwrap();
        }
        // A type that writes more than it reads: what it reads is taken,
        // and bytes left over beyond what it writes are refused.
        assert_eq!(Lopsided::decode(&[5]).unwrap(), Lopsided { a: 5, b: 0 });
        assert!(Lopsided::decode(&[5, 9, 9]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn the_measured_decode_agrees_with_the_exact_one(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            head in 0u8..4,
        ) {
            // Mostly well-formed starts (an enum's tag in range), then garbage.
            let mut data = data;
            if let Some(first) = data.first_mut() {
                *first = head;
            }
            measured_agrees::<Shapes>(&data).map_err(proptest::test_runner::TestCaseError::fail)?;
            measured_agrees::<(u8, Vec<u8>)>(&data).map_err(proptest::test_runner::TestCaseError::fail)?;
            measured_agrees::<String>(&data).map_err(proptest::test_runner::TestCaseError::fail)?;
            measured_agrees::<Vec<u64>>(&data).map_err(proptest::test_runner::TestCaseError::fail)?;
        }

        #[test]
        fn decoding_garbage_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = TransportMessage::decode(&data);
            let _ = String::decode(&data);
        }

        #[test]
        fn the_hand_written_codec_matches_serde_bare(
            onward in proptest::collection::vec((0u8..3, "[a-z0-9:.#]{1,40}"), 0..6),
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let route = Route::create(onward.iter().map(|(t, a)| crate::Address::new(*t, a)));
            let m = TransportMessage::v1(route.clone(), route, payload);
            let ours = m.encode().unwrap();
            proptest::prop_assert_eq!(&ours, &serde_bare::to_vec(&m).unwrap());
            proptest::prop_assert_eq!(ours.len(), m.encoded_len());
            let theirs: TransportMessage = serde_bare::from_slice(&ours).unwrap();
            proptest::prop_assert_eq!(TransportMessage::decode(&ours).unwrap(), theirs);
        }

        #[test]
        fn any_transport_message_round_trips(
            onward in proptest::collection::vec("[a-z0-9:.]{1,20}", 0..6),
            ret in proptest::collection::vec("[a-z0-9:.]{1,20}", 0..6),
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
        ) {
            let m = TransportMessage::v1(Route::create(onward), Route::create(ret), payload);
            proptest::prop_assert_eq!(TransportMessage::decode(&m.encode().unwrap()).unwrap(), m);
        }
    }
}

//! The TCP frame codec: a big-endian `u32` length, then that many bytes of
//! one BARE-encoded [`TransportMessage`]. A plain state machine with no I/O:
//! the connection reads bytes into it and takes whole frames out.

use ockam_core::{check_route, Address, EncodePayload, Error, ErrorKind, Result, TransportMessage};

/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// Default largest frame accepted or sent: 16 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16 * 1024 * 1024;

/// Why a byte stream is not a valid sequence of frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix announces more than the maximum frame size.
    Oversize {
        /// Announced length, in bytes.
        len: usize,
        /// The limit, in bytes.
        max: usize,
    },
    /// A frame of length zero (no transport message is that short).
    Empty,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Oversize { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max}")
            }
            FrameError::Empty => f.write_str("empty frame"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<FrameError> for Error {
    fn from(e: FrameError) -> Self {
        let kind = match e {
            FrameError::Oversize { .. } => ErrorKind::ResourceExhausted,
            FrameError::Empty => ErrorKind::Protocol,
        };
        Error::with_source(kind, "invalid TCP frame", e)
    }
}

/// Splits a byte stream into frames.
///
/// ```
/// use ockam_transport_tcp::internal::FrameDecoder;
///
/// let mut d = FrameDecoder::new(1024);
/// d.extend(&[0, 0, 0, 3, b'a', b'b']);
/// assert_eq!(d.next_frame().unwrap(), None); // incomplete
/// d.extend(&[b'c', 0, 0]);
/// assert_eq!(d.next_frame().unwrap(), Some(&b"abc"[..]));
/// assert_eq!(d.next_frame().unwrap(), None);
/// assert_eq!(d.pending(), 2);
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    max_frame: usize,
}

impl FrameDecoder {
    /// A decoder that rejects frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max_frame,
        }
    }

    /// Bytes received but not yet returned as frames.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read into (append at its end), with room for at least
    /// `min` more bytes, or for the rest of a frame already announced.
    pub fn read_buffer(&mut self, min: usize) -> &mut Vec<u8> {
        self.compact();
        let avail = &self.buf[self.start..];
        let mut want = min;
        if avail.len() >= LENGTH_PREFIX {
            let len = frame_len(avail);
            if len <= self.max_frame {
                // Grow towards an announced frame as its bytes arrive, not
                // all at once on the peer's word.
                let missing = LENGTH_PREFIX + len - avail.len().min(LENGTH_PREFIX + len);
                want = want.max(missing.min(1 << 20));
            }
        }
        self.buf.reserve(want);
        &mut self.buf
    }

    /// Drops consumed bytes once they are the larger part of the buffer, so
    /// the partial frame at the end moves rarely and only a short way.
    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    /// The next whole frame, if one has arrived. After an error the stream
    /// is unusable: close the connection.
    ///
    /// # Errors
    /// [`FrameError::Oversize`] when the length prefix announces more than
    /// the decoder's maximum; [`FrameError::Empty`] for a zero length.
    pub fn next_frame(&mut self) -> std::result::Result<Option<&[u8]>, FrameError> {
        let avail = &self.buf[self.start..];
        if avail.len() < LENGTH_PREFIX {
            return Ok(None);
        }
        let len = frame_len(avail);
        if len > self.max_frame {
            return Err(FrameError::Oversize {
                len,
                max: self.max_frame,
            });
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if avail.len() < LENGTH_PREFIX + len {
            return Ok(None);
        }
        let body = self.start + LENGTH_PREFIX;
        self.start = body + len;
        Ok(Some(&self.buf[body..body + len]))
    }
}

fn frame_len(avail: &[u8]) -> usize {
    u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize
}

/// Appends `msg` as one frame to `out`; refuses (and leaves `out` as it
/// was) when the encoding is longer than `max_frame` bytes.
///
/// # Errors
/// As [`encode_frame_parts`]'s.
pub fn encode_frame(msg: &TransportMessage, out: &mut Vec<u8>, max_frame: usize) -> Result<()> {
    encode_frame_parts(
        msg.version,
        msg.onward_route.as_slice(),
        msg.return_route.as_slice(),
        &[msg.payload.as_slice()],
        out,
        max_frame,
    )
}

/// Checks that a message with these routes and a payload of `payload_len`
/// bytes can be sent as one frame: the routes follow the wire's rules
/// ([`check_route`]) and the frame is at most `max_frame` bytes. The
/// checks [`encode_frame_parts`] makes, without encoding anything.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for a route the peer would refuse,
/// [`ErrorKind::ResourceExhausted`] ([`FrameError::Oversize`]) for a frame
/// that is too large.
pub fn check_frame(
    onward_route: &[Address],
    return_route: &[Address],
    payload_len: usize,
    max_frame: usize,
) -> Result<()> {
    check_route(onward_route)?;
    check_route(return_route)?;
    check_len(
        TransportMessage::encoded_len_parts(onward_route, return_route, payload_len),
        max_frame,
    )
}

/// A frame of `len` bytes fits the limit and the length prefix.
fn check_len(len: usize, max_frame: usize) -> Result<()> {
    if len > max_frame || len > u32::MAX as usize {
        return Err(FrameError::Oversize {
            len,
            max: max_frame,
        }
        .into());
    }
    Ok(())
}

/// Appends one frame for a message that is not built: its version, routes
/// and payload, in parts (the same bytes as [`encode_frame`] of the built
/// message with the parts joined). Nothing is appended if the frame would
/// be too large.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for a route the peer would refuse
/// ([`check_route`]); [`ErrorKind::ResourceExhausted`] for a frame over
/// `max_frame` bytes; [`ErrorKind::Encoding`] when the payload cannot be
/// written or writes another length than it announced. `out` is then left
/// as it was.
pub fn encode_frame_parts(
    version: u8,
    onward_route: &[Address],
    return_route: &[Address],
    payload: &dyn EncodePayload,
    out: &mut Vec<u8>,
    max_frame: usize,
) -> Result<()> {
    let shared = encode_frame_shared(version, onward_route, return_route, payload, out, max_frame)?;
    if let Some(tail) = shared {
        out.extend_from_slice(&tail);
    }
    Ok(())
}

/// [`encode_frame_parts`], but the frame's end may be left out of `out`
/// and returned as a shared buffer (see
/// [`EncodePayload::write_payload_shared`]): the frame is what is
/// appended followed by what is returned.
///
/// # Errors
/// As [`encode_frame_parts`]'s; `out` is then left as it was.
pub(crate) fn encode_frame_shared(
    version: u8,
    onward_route: &[Address],
    return_route: &[Address],
    payload: &dyn EncodePayload,
    out: &mut Vec<u8>,
    max_frame: usize,
) -> Result<Option<bytes::Bytes>> {
    // The peer's decoder refuses these: refuse them here, to the sender.
    check_route(onward_route)?;
    check_route(return_route)?;
    let payload_len = payload.payload_len();
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX]);
    TransportMessage::encode_head_parts(
        version,
        onward_route,
        return_route,
        payload_len,
        |bytes| out.extend_from_slice(bytes),
    );
    let len = out.len() - start - LENGTH_PREFIX + payload_len;
    if let Err(e) = check_len(len, max_frame) {
        out.truncate(start);
        return Err(e);
    }
    let body = out.len();
    let tail = match payload.write_payload_shared(out) {
        Ok(tail) => tail,
        Err(e) => {
            out.truncate(start);
            return Err(e);
        }
    };
    let wrote = out.len() - body + tail.as_ref().map_or(0, bytes::Bytes::len);
    if wrote != payload_len {
        out.truncate(start);
        return Err(Error::new(
            ErrorKind::Encoding,
            format!("a payload of {payload_len} bytes wrote {wrote} bytes"),
        ));
    }
    out[start..start + LENGTH_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ockam_core::{route, Message};
    use proptest::prelude::*;

    fn msg(payload: Vec<u8>) -> TransportMessage {
        TransportMessage::v1(route!["echoer"], route!["app"], payload)
    }

    #[test]
    fn frames_round_trip() {
        let mut out = Vec::new();
        for n in 0..5u8 {
            encode_frame(&msg(vec![n; n as usize * 100]), &mut out, 1 << 20).unwrap();
        }
        let mut d = FrameDecoder::new(1 << 20);
        d.extend(&out);
        for n in 0..5u8 {
            let f = d.next_frame().unwrap().unwrap();
            assert_eq!(
                TransportMessage::decode(f).unwrap(),
                msg(vec![n; n as usize * 100])
            );
        }
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn oversize_and_empty_frames_are_errors() {
        let mut d = FrameDecoder::new(10);
        d.extend(&[0, 0, 0, 11]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::Oversize { len: 11, max: 10 })
        );
        let mut d = FrameDecoder::new(10);
        d.extend(&[0xff, 0xff, 0xff, 0xff]);
        assert!(d.next_frame().is_err());
        let mut d = FrameDecoder::new(10);
        d.extend(&[0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::Empty));
    }

    #[test]
    fn encoding_refuses_oversize_messages_and_keeps_the_buffer() {
        let mut out = vec![1, 2, 3];
        let err = encode_frame(&msg(vec![0; 100]), &mut out, 50).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
        assert_eq!(out, vec![1, 2, 3]);
    }

    #[test]
    fn check_frame_refuses_exactly_what_encoding_refuses() {
        // Long addresses take two-byte lengths: the check must count them.
        let long = "a".repeat(300);
        let onward = route![long.as_str(), "b"];
        let back = route!["app", long.as_str()];
        for payload_len in 0..40 {
            let m = TransportMessage::v1(onward.clone(), back.clone(), vec![7; payload_len]);
            for max in [620, 630, 640, 650] {
                let mut out = Vec::new();
                let encoded = encode_frame(&m, &mut out, max);
                let checked = check_frame(onward.as_slice(), back.as_slice(), payload_len, max);
                assert_eq!(encoded.is_ok(), checked.is_ok(), "{payload_len} {max}");
            }
        }
        let bad = route![""];
        assert!(check_frame(bad.as_slice(), &[], 0, 1 << 20).is_err());
    }

    #[test]
    fn a_frame_from_parts_is_the_frame_of_the_built_message() {
        let onward = route![(ockam_core::TCP, "h:1"), "echoer", "b"];
        let back = route!["app", "c"];
        let payload: Vec<u8> = (0..=255).collect();
        let built = TransportMessage::v1(route!["echoer", "b"], back.clone(), payload.clone());
        let mut expected = vec![9];
        encode_frame(&built, &mut expected, 1 << 20).unwrap();
        let mut out = vec![9];
        let (a, b) = payload.split_at(100);
        encode_frame_parts(
            1,
            &onward.as_slice()[1..],
            back.as_slice(),
            &[a, &[], b],
            &mut out,
            1 << 20,
        )
        .unwrap();
        assert_eq!(out, expected);
        // A message encoded straight into the frame: the same bytes.
        let text = "a message".repeat(50);
        let built = TransportMessage::v1(route!["echoer"], back.clone(), text.encode().unwrap());
        let mut expected_text = Vec::new();
        encode_frame(&built, &mut expected_text, 1 << 20).unwrap();
        let mut direct = Vec::new();
        let encoded = ockam_core::EncodedMessage::new(&text).unwrap();
        encode_frame_parts(
            1,
            route!["echoer"].as_slice(),
            back.as_slice(),
            &encoded,
            &mut direct,
            1 << 20,
        )
        .unwrap();
        assert_eq!(direct, expected_text);
        // Too large: an error, and the buffer as it was.
        let err =
            encode_frame_parts(1, &[], &[], &[payload.as_slice()], &mut out, 100).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
        assert_eq!(out, expected);
    }

    #[test]
    fn read_buffer_reserves_room_for_an_announced_frame() {
        let mut d = FrameDecoder::new(1 << 20);
        d.extend(&(100_000u32).to_be_bytes());
        let buf = d.read_buffer(16);
        assert!(buf.capacity() - buf.len() >= 100_000);
        // A huge announcement reserves in bounded steps.
        let mut d = FrameDecoder::new(usize::MAX);
        d.extend(&(u32::MAX).to_be_bytes());
        let buf = d.read_buffer(16);
        assert!(buf.capacity() < 4 << 20);
    }

    proptest! {
        #[test]
        fn any_split_of_the_stream_gives_the_same_frames(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..8),
            cuts in prop::collection::vec(1usize..64, 1..50),
        ) {
            let mut stream = Vec::new();
            for p in &payloads {
                encode_frame(&msg(p.clone()), &mut stream, 1 << 20).unwrap();
            }
            let mut d = FrameDecoder::new(1 << 20);
            let mut got = Vec::new();
            let mut rest = &stream[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cut.next().unwrap()).min(rest.len());
                d.extend(&rest[..n]);
                rest = &rest[n..];
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(TransportMessage::decode(f).unwrap().payload);
                }
            }
            prop_assert_eq!(got, payloads);
        }

        #[test]
        fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut d = FrameDecoder::new(256);
            d.extend(&data);
            while let Ok(Some(f)) = d.next_frame() {
                let _ = TransportMessage::decode(f);
            }
        }
    }
}

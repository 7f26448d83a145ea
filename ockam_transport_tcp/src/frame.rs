//! The TCP frame codec: a big-endian `u32` length, then that many bytes of
//! one BARE-encoded [`TransportMessage`]. A plain state machine with no I/O:
//! the connection reads bytes into it and takes whole frames out.

use ockam_core::internal::recycle;
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
    /// A large frame whose payload is read straight into a buffer of its
    /// own (see [`FrameDecoder::next_message`]).
    direct: Option<Direct>,
}

/// Frames at least this long have the rest of their payload read straight
/// into the message's own buffer (no copy out of the read buffer), when
/// their head is in before their payload is.
pub(crate) const DIRECT_MIN: usize = 16 * 1024;

/// Bytes of a large frame read so far: its payload, then (once it is all
/// in) its head, the layout [`TransportMessage::decode_split`] takes.
#[derive(Debug)]
struct Direct {
    buf: Vec<u8>,
    payload_len: usize,
    /// The frame's bytes before its payload (version, routes, length).
    head: Vec<u8>,
}

impl Direct {
    fn missing(&self) -> usize {
        self.payload_len - self.buf.len()
    }
}

impl FrameDecoder {
    /// A decoder that rejects frames longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max_frame,
            direct: None,
        }
    }

    /// Bytes received but not yet returned as frames or messages.
    pub fn pending(&self) -> usize {
        let direct = self
            .direct
            .as_ref()
            .map_or(0, |d| LENGTH_PREFIX + d.head.len() + d.buf.len());
        self.buf.len() - self.start + direct
    }

    /// Appends received bytes (to the large frame being read, first).
    pub fn extend(&mut self, mut bytes: &[u8]) {
        if let Some(d) = &mut self.direct {
            let n = d.missing().min(bytes.len());
            d.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// The buffer to read into (append at its end), with room for at least
    /// `min` more bytes, or for the rest of a frame already announced.
    ///
    /// Only for [`next_frame`](Self::next_frame); a reader of
    /// [`next_message`](Self::next_message) reads into
    /// [`read_target`](Self::read_target).
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

    /// Where the next read goes and how much it may take: the payload
    /// buffer of a large frame being read, up to its end; else
    /// [`read_buffer`](Self::read_buffer) (with room for `min` bytes).
    pub fn read_target(&mut self, min: usize) -> bytes::buf::Limit<&mut Vec<u8>> {
        use bytes::BufMut;
        if self.direct.is_none() {
            return self.read_buffer(min).limit(usize::MAX);
        }
        match &mut self.direct {
            Some(d) => {
                let missing = d.missing();
                // In bounded steps (an announced length is the peer's
                // word), with room for the head at the end.
                d.buf.reserve(missing.min(1 << 20) + d.head.len());
                (&mut d.buf).limit(missing)
            }
            // (Not reached: looked at above.)
            None => (&mut self.buf).limit(0),
        }
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

    /// The length of the frame at the read position, once its prefix is
    /// in.
    ///
    /// # Errors
    /// As [`next_frame`](Self::next_frame)'s.
    fn announced(&self) -> std::result::Result<Option<usize>, FrameError> {
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
        Ok(Some(len))
    }

    /// The next whole frame, if one has arrived. After an error the stream
    /// is unusable: close the connection.
    ///
    /// # Errors
    /// [`FrameError::Oversize`] when the length prefix announces more than
    /// the decoder's maximum; [`FrameError::Empty`] for a zero length.
    pub fn next_frame(&mut self) -> std::result::Result<Option<&[u8]>, FrameError> {
        let Some(len) = self.announced()? else {
            return Ok(None);
        };
        if self.buf.len() - self.start < LENGTH_PREFIX + len {
            return Ok(None);
        }
        let body = self.start + LENGTH_PREFIX;
        self.start = body + len;
        Ok(Some(&self.buf[body..body + len]))
    }

    /// The next whole frame, decoded, if one has arrived: the outer error
    /// breaks the stream (as [`next_frame`](Self::next_frame)'s), the
    /// inner one is that message's ([`TransportMessage::decode`]'s; the
    /// frames after it are intact).
    ///
    /// A frame of 16 KiB or more whose head (version, routes, payload
    /// length) is in before the rest of its payload is taken out of the
    /// read buffer at once, and the rest of its payload read straight into
    /// the message's own buffer ([`read_target`](Self::read_target)): those
    /// bytes are never copied from one buffer to another.
    ///
    /// # Errors
    /// As [`next_frame`](Self::next_frame)'s.
    #[allow(clippy::type_complexity)] // two levels of failure, each named above
    pub fn next_message(
        &mut self,
    ) -> std::result::Result<Option<Result<TransportMessage>>, FrameError> {
        if let Some(d) = &self.direct {
            if d.missing() > 0 {
                return Ok(None);
            }
            let Some(Direct {
                mut buf,
                payload_len,
                head,
            }) = self.direct.take()
            else {
                return Ok(None);
            };
            buf.extend_from_slice(&head);
            let end = buf.len();
            return Ok(Some(TransportMessage::decode_split(buf, payload_len..end)));
        }
        let Some(len) = self.announced()? else {
            return Ok(None);
        };
        let avail = &self.buf[self.start + LENGTH_PREFIX..];
        if avail.len() >= len {
            let body = self.start + LENGTH_PREFIX;
            self.start = body + len;
            return Ok(Some(TransportMessage::decode(&self.buf[body..body + len])));
        }
        if len >= DIRECT_MIN {
            // A head that does not parse, or does not add up to the frame,
            // stays in the read buffer: the whole frame's decoding says
            // what is wrong with it.
            if let Some((head_len, payload_len)) = TransportMessage::payload_position(avail) {
                if head_len.checked_add(payload_len) == Some(len) {
                    let mut buf = recycle::take((payload_len + head_len).min(1 << 20));
                    buf.extend_from_slice(&avail[head_len..]);
                    let head = avail[..head_len].to_vec();
                    self.start = self.buf.len();
                    self.direct = Some(Direct {
                        buf,
                        payload_len,
                        head,
                    });
                }
            }
        }
        Ok(None)
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

    /// One read of at most `chunk` bytes of `data` into `d`'s read
    /// target, as the connection does it; how many were read.
    fn feed(d: &mut FrameDecoder, data: &[u8], chunk: usize) -> usize {
        use bytes::BufMut;
        let mut target = d.read_target(16);
        let n = chunk.min(data.len()).min(target.remaining_mut());
        target.put_slice(&data[..n]);
        n
    }

    /// How many bytes the next read may take.
    fn room(d: &mut FrameDecoder) -> usize {
        bytes::BufMut::remaining_mut(&d.read_target(16))
    }

    /// A large frame whose head comes first: the rest of its payload is
    /// read straight into the message's buffer, and no further than its
    /// end (the next frame's bytes go to the read buffer).
    #[test]
    fn a_large_frame_is_read_straight_into_its_own_buffer() {
        let payload = vec![5u8; 40_000];
        let mut stream = Vec::new();
        encode_frame(&msg(payload.clone()), &mut stream, 1 << 20).unwrap();
        encode_frame(&msg(payload.clone()), &mut stream, 1 << 20).unwrap();
        let frame = stream.len() / 2;
        let mut d = FrameDecoder::new(1 << 20);
        let mut at = feed(&mut d, &stream, 100);
        assert!(d.next_message().unwrap().is_none());
        assert_eq!(d.pending(), 100);
        // Only the rest of the first frame's payload is asked for.
        assert_eq!(room(&mut d), frame - 100);
        at += feed(&mut d, &stream[at..], usize::MAX);
        assert_eq!(at, frame);
        let m = d.next_message().unwrap().unwrap().unwrap();
        assert_eq!(m, msg(payload.clone()));
        assert_eq!(d.pending(), 0);
        assert!(room(&mut d) > frame, "the read buffer again");
        while at < stream.len() {
            at += feed(&mut d, &stream[at..], usize::MAX);
        }
        assert_eq!(d.next_message().unwrap().unwrap().unwrap(), msg(payload));
        assert_eq!(d.pending(), 0);
    }

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
            let mut d = FrameDecoder::new(1 << 20);
            feed(&mut d, &data, 7);
            while let Ok(Some(_)) = d.next_message() {}
        }

        /// Large frames read straight into their own buffers, small ones
        /// out of the read buffer, a damaged one among them: whatever the
        /// reads' sizes, the same messages in the same order.
        #[test]
        fn any_reads_give_the_same_messages(
            sizes in prop::collection::vec(
                prop_oneof![0usize..300, DIRECT_MIN - 64..DIRECT_MIN * 3], 1..8),
            damaged in any::<prop::sample::Index>(),
            reads in prop::collection::vec(1usize..70_000, 1..50),
        ) {
            let damaged = damaged.index(sizes.len() + 1); // == len: none
            let mut stream = Vec::new();
            let mut want = Vec::new();
            for (i, &n) in sizes.iter().enumerate() {
                let payload: Vec<u8> = (0..n).map(|b| (b * 31 + i) as u8).collect();
                let at = stream.len();
                encode_frame(&msg(payload.clone()), &mut stream, 1 << 20).unwrap();
                if i == damaged {
                    // The version byte: the message is refused, the frame
                    // is well formed.
                    stream[at + LENGTH_PREFIX] = 9;
                    want.push(None);
                } else {
                    want.push(Some(payload));
                }
            }
            let mut d = FrameDecoder::new(1 << 20);
            let mut got = Vec::new();
            let mut rest = &stream[..];
            let mut read = reads.iter().cycle();
            while !rest.is_empty() {
                let n = feed(&mut d, rest, *read.next().unwrap());
                rest = &rest[n..];
                while let Some(m) = d.next_message().unwrap() {
                    got.push(m.ok().map(|m| m.payload));
                }
            }
            prop_assert_eq!(got, want);
            prop_assert_eq!(d.pending(), 0);
        }
    }
}

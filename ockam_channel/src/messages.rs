//! What channel workers send each other (BARE-encoded).

use crate::cipher_state::CipherState;
use ockam_core::internal::wire;
use ockam_core::{Error, ErrorKind, Result, Route, TransportMessage};
use ockam_vault::AEAD_TAG_LEN;
use serde::{Deserialize, Serialize};

/// A message between the two ends of a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelMessage {
    /// One of the three Noise XX handshake messages.
    Handshake(#[serde(with = "serde_bytes_compat")] Vec<u8>),
    /// An encrypted message (see `seal_transport` for the plaintext's
    /// layout), with its explicit nonce.
    Transport {
        /// The nonce it was encrypted with (also the replay counter).
        nonce: u64,
        /// AES-256-GCM ciphertext and tag.
        #[serde(with = "serde_bytes_compat")]
        ciphertext: Vec<u8>,
    },
    /// The listener refused the initiator's key (sent in clear: the
    /// initiator cannot tell it from a forgery, only from silence).
    Refused(String),
}

/// BARE union tag of [`ChannelMessage::Transport`].
const TRANSPORT_TAG: u64 = 1;

/// Bytes at the end of a plaintext: the head's length (`u32`, little
/// endian), the padding's length, the kind.
const TRAILER: usize = 6;

/// Plaintexts are padded to a multiple of the AES block: AES-GCM seals and
/// opens whole blocks markedly faster than a partial last one (~60 ns of
/// ~390 per 1 KiB message, measured with ring).
const PAD_TO: usize = 16;

/// The longest prefix of an encoded `ChannelMessage::Transport`: the
/// union's tag, the nonce, the ciphertext's length.
const PREFIX_MAX: usize = 1 + 8 + 10;

/// An encoded `ChannelMessage::Transport { nonce, ciphertext }` (the same
/// bytes as the serde encoding) in two parts: the prefix up to the
/// ciphertext, and the ciphertext with its tag, sealed in the buffer of the
/// message's payload. A transport copies both into its output buffer (see
/// `Onward::forward_parts`) without their being joined first.
pub(crate) struct Sealed {
    pub(crate) prefix: Prefix,
    pub(crate) ciphertext: Vec<u8>,
}

/// The bytes of an encoded `ChannelMessage::Transport` before its
/// ciphertext.
pub(crate) struct Prefix {
    bytes: [u8; PREFIX_MAX],
    len: usize,
}

impl Prefix {
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Seals one plaintext. The plaintext is laid out payload first, so that
/// neither end moves the payload:
///
/// `body.payload | body's head (encode_head_with) | zeros | head length
/// (u32 LE) | padding length (u8) | kind (u8)`
///
/// padded with zeros to a multiple of 16 bytes (no body: no payload, no
/// head), and encrypted in the body's payload buffer (which the head and
/// the rest fit in without an allocation for routes of a few short
/// addresses, see [`ockam_core::ENCODE_HEADROOM`]); the receiver decrypts
/// it to the front of its buffer, where the payload is then in place.
pub(crate) fn seal_transport(
    cipher: &CipherState,
    nonce: u64,
    kind: u8,
    body: Option<TransportMessage>,
) -> Result<Sealed> {
    let spare = PAD_TO + TRAILER + AEAD_TAG_LEN;
    // Payload and head, in the payload's buffer.
    let (mut out, body_len) = match body {
        Some(b) => {
            let body_len = b.payload.len();
            (b.encode_split(spare), body_len)
        }
        None => (Vec::with_capacity(spare), 0),
    };
    let head_len = u32::try_from(out.len() - body_len).map_err(|_| {
        Error::new(
            ErrorKind::ResourceExhausted,
            "the routes are too long for a secure channel message",
        )
    })?;
    let unpadded = out.len() + TRAILER;
    let pad = (PAD_TO - unpadded % PAD_TO) % PAD_TO;
    out.resize(out.len() + pad, 0);
    out.extend_from_slice(&head_len.to_le_bytes());
    out.extend_from_slice(&[pad as u8, kind]);
    let tag = cipher.encrypt_slice_with_nonce(nonce, &[], &mut out)?;
    out.extend_from_slice(&tag);
    let mut prefix = Prefix {
        bytes: [0; PREFIX_MAX],
        len: 0,
    };
    let mut put = |b: u8| {
        prefix.bytes[prefix.len] = b;
        prefix.len += 1;
    };
    wire::put_uint_with(TRANSPORT_TAG, &mut put);
    nonce.to_le_bytes().into_iter().for_each(&mut put);
    wire::put_uint_with(out.len() as u64, &mut put);
    Ok(Sealed {
        prefix,
        ciphertext: out,
    })
}

/// The parts of a decrypted plaintext (see [`seal_transport`]): its kind
/// and where the head is (the body is everything before it). `None` if it
/// is not laid out that way.
pub(crate) fn split_plaintext(plain: &[u8]) -> Option<(u8, std::ops::Range<usize>)> {
    let len = plain.len();
    let trailer = plain.get(len.checked_sub(TRAILER)?..)?;
    let head_len = u32::from_le_bytes(trailer[..4].try_into().ok()?) as usize;
    let (pad, kind) = (trailer[4] as usize, trailer[5]);
    if pad >= PAD_TO || len % PAD_TO != 0 {
        return None;
    }
    let head_end = len - TRAILER - pad.min(len - TRAILER);
    let padding = plain.get(head_end..len - TRAILER)?;
    if padding.len() != pad || padding.iter().any(|&b| b != 0) {
        return None;
    }
    let head_start = head_end.checked_sub(head_len)?;
    Some((kind, head_start..head_end))
}

/// A `ChannelMessage::Transport` found in a payload: its nonce, where its
/// ciphertext (without tag) is, and its tag.
pub(crate) type Transport = (u64, std::ops::Range<usize>, [u8; AEAD_TAG_LEN]);

/// If `payload` is a `ChannelMessage::Transport`, its nonce and where its
/// ciphertext (without tag) and tag are.
pub(crate) fn parse_transport(payload: &[u8]) -> Option<Transport> {
    let mut r = wire::Reader::new(payload);
    if r.uint().ok()? != TRANSPORT_TAG {
        return None;
    }
    let nonce = r.u64().ok()?;
    let ct = r.bytes().ok()?;
    r.finish().ok()?;
    if ct.len() < AEAD_TAG_LEN + 1 {
        return None;
    }
    let end = payload.len() - AEAD_TAG_LEN;
    let start = payload.len() - ct.len();
    let mut tag = [0u8; AEAD_TAG_LEN];
    tag.copy_from_slice(&payload[end..]);
    Some((nonce, start..end, tag))
}

/// The routes of the last inner message a channel end decoded, by the
/// bytes they were decoded from. Messages through a channel mostly go
/// between the same two workers, so most heads are the same bytes as the
/// one before, and cloning two routes costs less than parsing them again.
#[derive(Default)]
pub(crate) struct HeadCache {
    bytes: Vec<u8>,
    last: Option<(Route, Route, usize)>,
}

impl HeadCache {
    /// Decodes the inner message in `buf`: its payload, then its head at
    /// `head` (see [`TransportMessage::decode_split`], whose checks a head
    /// of the same bytes as the last one passed).
    pub(crate) fn decode(
        &mut self,
        mut buf: Vec<u8>,
        head: std::ops::Range<usize>,
    ) -> Result<TransportMessage> {
        if let Some((onward, back, payload_len)) = &self.last {
            if *payload_len == head.start && buf.get(head.clone()) == Some(&self.bytes[..]) {
                buf.truncate(head.start);
                return Ok(TransportMessage::v1(onward.clone(), back.clone(), buf));
            }
        }
        // Remembered only once it decodes (the buffer is reused).
        self.last = None;
        self.bytes.clear();
        self.bytes
            .extend_from_slice(buf.get(head.clone()).unwrap_or_default());
        let msg = TransportMessage::decode_split(buf, head)?;
        self.last = Some((
            msg.onward_route.clone(),
            msg.return_route.clone(),
            msg.payload.len(),
        ));
        Ok(msg)
    }
}

/// The kind of a decrypted transport message (its last byte).
pub(crate) const PLAIN_READY: u8 = 0;
pub(crate) const PLAIN_MESSAGE: u8 = 1;
/// The sender's end is closing (its worker stopped): the receiver ends
/// too. Empty, like `PLAIN_READY`; authenticated and replay-checked like
/// any transport message, so no one but the peer can close a channel.
pub(crate) const PLAIN_CLOSE: u8 = 2;

/// `Vec<u8>` as BARE `data` (not a list of u8) without another dependency.
mod serde_bytes_compat {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ockam_core::{route, Message};

    fn seal(cipher: &CipherState, nonce: u64, kind: u8, body: Option<TransportMessage>) -> Vec<u8> {
        let sealed = seal_transport(cipher, nonce, kind, body).unwrap();
        [sealed.prefix.as_slice(), &sealed.ciphertext].concat()
    }

    /// Decrypts a sealed `ChannelMessage::Transport` the way the channel
    /// does: to the front of its own buffer; the kind and the message.
    fn open(cipher: &CipherState, sealed: &[u8]) -> (u8, Option<TransportMessage>) {
        let (n, range, tag) = parse_transport(sealed).unwrap();
        let mut buf = sealed[..range.end].to_vec();
        cipher
            .decrypt_slice_with_nonce(n, &[], &mut buf, range.start, &tag)
            .unwrap();
        buf.truncate(range.len());
        let (kind, head) = split_plaintext(&buf).unwrap();
        let msg = (!head.is_empty()).then(|| TransportMessage::decode_split(buf, head).unwrap());
        (kind, msg)
    }

    #[test]
    fn the_hand_written_transport_encoding_is_the_serde_one() {
        let mut cipher = CipherState::default();
        cipher.initialize_key(Some(&[3; 32]));
        for len in [0, 1, 3, 9, 10, 16, 300, 1024, 1025] {
            let inner = TransportMessage::v1(route!["a", "c"], route!["b"], vec![1; len]);
            let fast = seal(&cipher, 300, PLAIN_MESSAGE, Some(inner.clone()));
            // The same bytes when the payload has room to be sealed in place.
            let mut roomy = inner.clone();
            roomy.payload.reserve(ockam_core::ENCODE_HEADROOM);
            assert_eq!(seal(&cipher, 300, PLAIN_MESSAGE, Some(roomy)), fast);
            let decoded = ChannelMessage::decode(&fast).unwrap();
            let ChannelMessage::Transport { nonce, ciphertext } = &decoded else {
                panic!("not a transport message");
            };
            assert_eq!(*nonce, 300);
            assert_eq!(decoded.encode().unwrap(), fast);
            let (n, range, _) = parse_transport(&fast).unwrap();
            assert_eq!(n, 300);
            assert_eq!(&fast[range.clone()], &ciphertext[..ciphertext.len() - 16]);
            // Whole AES blocks only.
            assert_eq!(range.len() % PAD_TO, 0, "payload of {len} bytes");
            assert_eq!(open(&cipher, &fast), (PLAIN_MESSAGE, Some(inner)));
        }
        let ready = seal(&cipher, 7, PLAIN_READY, None);
        assert_eq!(open(&cipher, &ready), (PLAIN_READY, None));
        // Anything else is not a transport message.
        let fast = seal(
            &cipher,
            1,
            PLAIN_MESSAGE,
            Some(TransportMessage::v1(route!["a"], route![], vec![])),
        );
        assert!(parse_transport(&ChannelMessage::Handshake(vec![1]).encode().unwrap()).is_none());
        assert!(parse_transport(&fast[..fast.len() - 1]).is_none());
        assert!(parse_transport(&[1]).is_none());
    }

    #[test]
    fn the_head_cache_decodes_what_decode_split_decodes() {
        let mut cache = HeadCache::default();
        let split = |m: &TransportMessage| {
            let mut buf = m.payload.clone();
            m.encode_head_with(|b| buf.extend_from_slice(b));
            let head = m.payload.len()..buf.len();
            (buf, head)
        };
        let a = TransportMessage::v1(route!["sink"], route!["app"], vec![1; 10]);
        let b = TransportMessage::v1(route!["sink"], route!["app"], vec![2; 10]);
        let c = TransportMessage::v1(route!["other", "x"], route![], vec![3; 12]);
        for m in [&a, &b, &b, &c, &a, &a] {
            let (buf, head) = split(m);
            assert_eq!(&cache.decode(buf, head).unwrap(), m);
        }
        // The same head bytes with a payload of another length: refused,
        // as decode_split refuses it.
        let (mut buf, head) = split(&a);
        buf.insert(0, 9);
        let head = head.start + 1..head.end + 1;
        assert!(cache.decode(buf.clone(), head.clone()).is_err());
        assert!(TransportMessage::decode_split(buf, head).is_err());
        // A head that does not decode is refused and not remembered.
        let (buf, head) = split(&a);
        assert!(cache.decode(buf.clone(), 0..head.end).is_err());
        assert_eq!(cache.decode(buf, head).unwrap(), a);
    }

    /// A plaintext: `bytes`, then the trailer.
    fn laid_out(bytes: &[u8], head_len: u32, pad: u8, kind: u8) -> Vec<u8> {
        let mut v = bytes.to_vec();
        v.extend_from_slice(&head_len.to_le_bytes());
        v.extend_from_slice(&[pad, kind]);
        v
    }

    #[test]
    fn plaintexts_not_laid_out_as_sealed_are_refused() {
        let ok = |bytes: &[u8], head_len, pad, kind| {
            split_plaintext(&laid_out(bytes, head_len, pad, kind))
        };
        assert_eq!(ok(&[0; 10], 0, 10, 1), Some((1, 0..0)));
        assert_eq!(
            ok(&[7, 9, 0, 0, 0, 0, 0, 0, 0, 0], 2, 8, 1),
            Some((1, 0..2))
        );
        assert_eq!(ok(&[7; 10], 10, 0, 0), Some((0, 0..10)));
        assert_eq!(ok(&[7; 26], 10, 0, 1), Some((1, 16..26)));
        // Not whole blocks, or shorter than the trailer.
        assert_eq!(ok(&[0; 9], 0, 9, 1), None);
        assert_eq!(ok(&[0; 11], 0, 10, 1), None);
        assert_eq!(split_plaintext(&[]), None);
        assert_eq!(split_plaintext(&[0; 5]), None);
        // More padding than a block, or than there is, or not zeros.
        assert_eq!(ok(&[0; 26], 0, 16, 1), None);
        assert_eq!(ok(&[0; 10], 0, 11, 1), None);
        assert_eq!(ok(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 5], 0, 10, 1), None);
        // A head longer than what is there.
        assert_eq!(ok(&[0; 10], 11, 0, 1), None);
        assert_eq!(ok(&[0; 10], u32::MAX, 0, 1), None);
    }

    proptest::proptest! {
        #[test]
        fn any_plaintext_splits_or_is_refused_without_panicking(plain: Vec<u8>) {
            if let Some((_, head)) = split_plaintext(&plain) {
                proptest::prop_assert!(head.end + TRAILER <= plain.len());
                let _ = TransportMessage::decode_split(plain, head);
            }
        }
    }
}

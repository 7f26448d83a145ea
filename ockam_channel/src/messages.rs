//! What channel workers send each other (BARE-encoded).

use crate::cipher_state::CipherState;
use ockam_core::{wire, Result, TransportMessage};
use ockam_vault::AEAD_TAG_LEN;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// A message between the two ends of a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelMessage {
    /// One of the three Noise XX handshake messages.
    Handshake(#[serde(with = "serde_bytes_compat")] Vec<u8>),
    /// An encrypted message (a kind byte, then an encoded transport
    /// message), with its explicit nonce.
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

/// Encodes `ChannelMessage::Transport { nonce, ciphertext }` where the
/// ciphertext is `kind` followed by `body` (if any), encrypted in place in
/// the output buffer: the same bytes as the serde encoding, without the
/// intermediate copies. When the body's payload buffer has room for the
/// rest (see [`ockam_core::ENCODE_HEADROOM`]), it becomes the output.
pub(crate) fn seal_transport(
    cipher: &CipherState,
    nonce: u64,
    kind: u8,
    body: Option<TransportMessage>,
) -> Result<Vec<u8>> {
    // Everything before the body's payload bytes, on the stack.
    let payload_len = body.as_ref().map_or(0, |b| b.payload.len());
    let inner_len = body.as_ref().map_or(0, |b| b.encoded_len());
    let mut head: SmallVec<[u8; 128]> = SmallVec::new();
    wire::put_uint_with(TRANSPORT_TAG, |b| head.push(b));
    head.extend_from_slice(&nonce.to_le_bytes());
    wire::put_uint_with((1 + inner_len + AEAD_TAG_LEN) as u64, |b| head.push(b));
    let start = head.len();
    head.push(kind);
    if let Some(b) = &body {
        b.encode_head_with(|bytes| head.extend_from_slice(bytes));
    }
    let mut out = match body {
        Some(b) if b.payload.capacity() - b.payload.len() >= head.len() + AEAD_TAG_LEN => {
            let mut out = b.payload;
            out.splice(0..0, head.iter().copied());
            out
        }
        Some(b) => {
            let mut out = Vec::with_capacity(head.len() + payload_len + AEAD_TAG_LEN);
            out.extend_from_slice(&head);
            out.extend_from_slice(&b.payload);
            out
        }
        None => {
            let mut out = Vec::with_capacity(head.len() + AEAD_TAG_LEN);
            out.extend_from_slice(&head);
            out
        }
    };
    let tag = cipher.encrypt_slice_with_nonce(nonce, &[], &mut out[start..])?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// If `payload` is a `ChannelMessage::Transport`, its nonce and where its
/// ciphertext (without tag) and tag are.
pub(crate) fn parse_transport(
    payload: &[u8],
) -> Option<(u64, std::ops::Range<usize>, [u8; AEAD_TAG_LEN])> {
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

/// The first byte of a decrypted transport message.
pub(crate) const PLAIN_READY: u8 = 0;
pub(crate) const PLAIN_MESSAGE: u8 = 1;

/// `Vec<u8>` as BARE `data` (not a list of u8) without another dependency.
mod serde_bytes_compat {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
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

    #[test]
    fn the_hand_written_transport_encoding_is_the_serde_one() {
        let mut cipher = CipherState::default();
        cipher.initialize_key(Some(&[3; 32]));
        let inner = TransportMessage::v1(route!["a"], route!["b"], vec![1, 2, 3]);
        let fast = seal_transport(&cipher, 300, PLAIN_MESSAGE, Some(inner.clone())).unwrap();
        // The same bytes when the payload has room to be sealed in place.
        let mut roomy = inner.clone();
        roomy.payload.reserve(ockam_core::ENCODE_HEADROOM);
        assert_eq!(
            seal_transport(&cipher, 300, PLAIN_MESSAGE, Some(roomy)).unwrap(),
            fast
        );
        let decoded = ChannelMessage::decode(&fast).unwrap();
        let ChannelMessage::Transport { nonce, ciphertext } = &decoded else {
            panic!("not a transport message");
        };
        assert_eq!(*nonce, 300);
        assert_eq!(decoded.encode().unwrap(), fast);
        let (n, range, tag) = parse_transport(&fast).unwrap();
        assert_eq!(n, 300);
        assert_eq!(&fast[range.clone()], &ciphertext[..ciphertext.len() - 16]);
        let mut body = fast[range].to_vec();
        cipher
            .decrypt_slice_with_nonce(300, &[], &mut body, &tag)
            .unwrap();
        assert_eq!(body[0], PLAIN_MESSAGE);
        assert_eq!(TransportMessage::decode(&body[1..]).unwrap(), inner);
        // Anything else is not a transport message.
        assert!(parse_transport(&ChannelMessage::Handshake(vec![1]).encode().unwrap()).is_none());
        assert!(parse_transport(&fast[..fast.len() - 1]).is_none());
        assert!(parse_transport(&[1]).is_none());
    }
}

//! What channel workers send each other (BARE-encoded).

use serde::{Deserialize, Serialize};

/// A message between the two ends of a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelMessage {
    /// One of the three Noise XX handshake messages.
    Handshake(#[serde(with = "serde_bytes_compat")] Vec<u8>),
    /// An encrypted [`Plaintext`], with its explicit nonce.
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

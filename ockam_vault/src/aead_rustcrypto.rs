//! [`AeadKey`] without the `ring` feature: the pure-Rust `aes-gcm` crate
//! (RustCrypto; AES-NI and CLMUL used when the CPU has them, detected at run
//! time), which needs no C compiler. Its key schedule is zeroized when
//! dropped (`aes-gcm`'s `zeroize` feature). Same bytes as ring's (tested).

use crate::AEAD_TAG_LEN;
use aes_gcm::aead::{AeadInOut, KeyInit, Nonce, Tag};
use aes_gcm::Aes256Gcm;
use std::fmt;

/// An AES-256-GCM key, expanded once for many messages; its expanded form
/// is zeroized when dropped.
///
/// Backed by the pure-Rust `aes-gcm` crate (this build has no `ring`
/// feature); with the `ring` feature (on by default), by `ring`'s AES-GCM,
/// about three times as fast on x86-64 with AES-NI. Both produce the same
/// bytes.
#[derive(Clone)]
pub struct AeadKey(Box<Aes256Gcm>);

impl AeadKey {
    pub(crate) fn from_bytes(key: &[u8; 32]) -> AeadKey {
        AeadKey(Box::new(Aes256Gcm::new(&(*key).into())))
    }

    /// Encrypts `buf` in place; the tag, or `None` if the input is longer
    /// than AES-GCM allows.
    pub(crate) fn seal_raw(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Option<[u8; AEAD_TAG_LEN]> {
        let nonce = Nonce::<Aes256Gcm>::from(*nonce);
        let tag = self
            .0
            .encrypt_inout_detached(&nonce, aad, buf.into())
            .ok()?;
        Some(tag.into())
    }

    /// Checks `tag` and decrypts `buf[src..]` to the front of `buf`
    /// (`src <= buf.len()`); whether it authenticated.
    pub(crate) fn open_within_raw(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        src: usize,
        tag: &[u8; AEAD_TAG_LEN],
    ) -> bool {
        buf.copy_within(src.., 0);
        let len = buf.len() - src;
        let nonce = Nonce::<Aes256Gcm>::from(*nonce);
        let tag = Tag::<Aes256Gcm>::from(*tag);
        self.0
            .decrypt_inout_detached(&nonce, aad, (&mut buf[..len]).into(), &tag)
            .is_ok()
    }
}

impl fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AeadKey(<redacted>)")
    }
}

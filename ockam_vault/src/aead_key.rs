//! [`AeadKey`] with the `ring` feature (on by default): ring's expanded
//! AES-256-GCM key, zeroized when dropped.
//!
//! The one module of the vault that uses `unsafe` (the workspace lints deny
//! it everywhere else): ring's `LessSafeKey` does not zeroize itself, so the
//! key lives in a `MaybeUninit` that is dropped in place and then
//! overwritten. Each block says why it is sound.
#![allow(unsafe_code)]

use crate::AEAD_TAG_LEN;
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, AES_256_GCM};
use std::fmt;
use std::mem::MaybeUninit;
use zeroize::Zeroize;

/// An AES-256-GCM key, expanded once for many messages; its expanded form
/// is zeroized when dropped.
///
/// Backed by `ring`'s AES-GCM with the `ring` feature (on by default; the
/// implementation `snow` uses too), which is about three times as fast as
/// the pure-Rust `aes-gcm` crate on x86-64 with AES-NI and produces the same
/// bytes (tested against it); without it, by the `aes-gcm` crate, which
/// needs no C compiler.
pub struct AeadKey(Box<MaybeUninit<LessSafeKey>>);

impl AeadKey {
    fn key(&self) -> &LessSafeKey {
        // SAFETY: initialised in `from_ring` and only de-initialised in
        // `drop`, after which `self` is never used.
        unsafe { self.0.assume_init_ref() }
    }

    fn from_ring(key: LessSafeKey) -> AeadKey {
        AeadKey(Box::new(MaybeUninit::new(key)))
    }

    pub(crate) fn from_bytes(key: &[u8; 32]) -> AeadKey {
        match UnboundKey::new(&AES_256_GCM, key) {
            Ok(k) => AeadKey::from_ring(LessSafeKey::new(k)),
            // AES-256-GCM takes any 32 bytes.
            Err(_) => unreachable!("ring refused a 32-byte AES-256-GCM key"),
        }
    }

    /// Encrypts `buf` in place; the tag, or `None` if ring refuses.
    pub(crate) fn seal_raw(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Option<[u8; AEAD_TAG_LEN]> {
        let tag = self
            .key()
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
            .ok()?;
        let mut out = [0u8; AEAD_TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Some(out)
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
        self.key()
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                Tag::from(*tag),
                buf,
                src..,
            )
            .is_ok()
    }
}

impl Drop for AeadKey {
    fn drop(&mut self) {
        // SAFETY: the key is initialised (see `key`); after dropping it the
        // memory is only overwritten, as bytes of a `MaybeUninit`.
        unsafe { self.0.assume_init_drop() };
        let bytes = std::ptr::slice_from_raw_parts_mut(
            self.0.as_mut_ptr().cast::<MaybeUninit<u8>>(),
            std::mem::size_of::<LessSafeKey>(),
        );
        // SAFETY: `bytes` covers exactly the boxed `MaybeUninit<LessSafeKey>`,
        // which any byte values may occupy.
        unsafe { (*bytes).zeroize() };
    }
}

impl Clone for AeadKey {
    fn clone(&self) -> Self {
        AeadKey::from_ring(self.key().clone())
    }
}

impl fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AeadKey(<redacted>)")
    }
}

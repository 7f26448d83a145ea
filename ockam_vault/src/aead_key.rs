//! [`AeadKey`]: ring's expanded AES-256-GCM key, zeroized when dropped.
//!
//! The one module of the vault that uses `unsafe` (the workspace lints deny
//! it everywhere else): ring's `LessSafeKey` does not zeroize itself, so the
//! key lives in a `MaybeUninit` that is dropped in place and then
//! overwritten. Each block says why it is sound.
#![allow(unsafe_code)]

use ring::aead::LessSafeKey;
use std::fmt;
use std::mem::MaybeUninit;
use zeroize::Zeroize;

/// An AES-256-GCM key, expanded once for many messages; its expanded form
/// is zeroized when dropped.
///
/// Backed by `ring`'s AES-GCM (the implementation `snow` uses too), which
/// is about three times as fast as the pure-Rust `aes-gcm` crate on x86-64
/// with AES-NI and produces the same bytes (tested against it).
pub struct AeadKey(Box<MaybeUninit<LessSafeKey>>);

impl AeadKey {
    pub(crate) fn key(&self) -> &LessSafeKey {
        // SAFETY: initialised in `from_ring` and only de-initialised in
        // `drop`, after which `self` is never used.
        unsafe { self.0.assume_init_ref() }
    }

    pub(crate) fn from_ring(key: LessSafeKey) -> AeadKey {
        AeadKey(Box::new(MaybeUninit::new(key)))
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

//! `CipherState` (Noise specification, section 5.1): a key and a nonce.

use ockam_core::{Error, ErrorKind, Result};
use ockam_vault::AeadKey;

/// The nonce value Noise reserves (never used to encrypt).
const MAX_NONCE: u64 = u64::MAX;

/// AES-GCM nonce for Noise: 32 zero bits, then `n` big-endian.
pub(crate) fn aes_gcm_nonce(n: u64) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&n.to_be_bytes());
    nonce
}

/// A key (possibly none yet) and the next nonce.
#[derive(Debug, Default)]
pub struct CipherState {
    k: Option<AeadKey>,
    n: u64,
}

impl CipherState {
    /// `InitializeKey(key)`.
    pub fn initialize_key(&mut self, key: Option<&[u8; 32]>) {
        self.k = key.map(AeadKey::new);
        self.n = 0;
    }

    /// `HasKey()`.
    pub fn has_key(&self) -> bool {
        self.k.is_some()
    }

    /// The next nonce.
    pub fn nonce(&self) -> u64 {
        self.n
    }

    /// `EncryptWithAd(ad, plaintext)`: plaintext unchanged if there is no key.
    ///
    /// # Errors
    /// [`ErrorKind::ResourceExhausted`] when the nonces are used up;
    /// [`ErrorKind::Encoding`] when sealing fails ([`AeadKey::seal_in_place`]).
    pub fn encrypt_with_ad(&mut self, ad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut buf = plaintext.to_vec();
        if self.k.is_some() {
            let n = self.next_nonce()?;
            self.encrypt_with_nonce(n, ad, &mut buf)?;
        }
        Ok(buf)
    }

    /// `DecryptWithAd(ad, ciphertext)`: the nonce advances only on success.
    ///
    /// # Errors
    /// [`ErrorKind::ResourceExhausted`] when the nonces are used up;
    /// [`ErrorKind::Security`] when authentication fails.
    pub fn decrypt_with_ad(&mut self, ad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>> {
        let mut buf = ciphertext.to_vec();
        if self.k.is_some() {
            if self.n == MAX_NONCE {
                return Err(exhausted());
            }
            self.decrypt_with_nonce(self.n, ad, &mut buf)?;
            self.n += 1;
        }
        Ok(buf)
    }

    /// Takes the next nonce for an explicit-nonce transport message.
    ///
    /// # Errors
    /// [`ErrorKind::ResourceExhausted`] when the nonces are used up (only
    /// the reserved 2^64-1 is left).
    pub fn next_nonce(&mut self) -> Result<u64> {
        if self.n == MAX_NONCE {
            return Err(exhausted());
        }
        let n = self.n;
        self.n += 1;
        Ok(n)
    }

    /// Encrypts `buf` in place with nonce `n` (transport messages carry `n`).
    ///
    /// # Errors
    /// [`ErrorKind::Internal`] when there is no key; [`ErrorKind::Encoding`]
    /// when sealing fails.
    pub fn encrypt_with_nonce(&self, n: u64, ad: &[u8], buf: &mut Vec<u8>) -> Result<()> {
        self.key()?.seal_in_place(&aes_gcm_nonce(n), ad, buf)
    }

    /// Decrypts `buf` in place with nonce `n`.
    ///
    /// # Errors
    /// [`ErrorKind::ResourceExhausted`] when `n` is the reserved 2^64-1;
    /// [`ErrorKind::Internal`] when there is no key; [`ErrorKind::Security`]
    /// when authentication fails.
    pub fn decrypt_with_nonce(&self, n: u64, ad: &[u8], buf: &mut Vec<u8>) -> Result<()> {
        if n == MAX_NONCE {
            return Err(exhausted());
        }
        self.key()?.open_in_place(&aes_gcm_nonce(n), ad, buf)
    }

    /// Encrypts `buf` in place with nonce `n`; returns the tag.
    ///
    /// # Errors
    /// As [`CipherState::encrypt_with_nonce`]'s.
    pub fn encrypt_slice_with_nonce(&self, n: u64, ad: &[u8], buf: &mut [u8]) -> Result<[u8; 16]> {
        self.key()?.seal_detached(&aes_gcm_nonce(n), ad, buf)
    }

    /// Checks `tag` and decrypts `buf[src..]` with nonce `n` to the front
    /// of `buf` (see [`AeadKey::open_detached_within`]).
    ///
    /// # Errors
    /// As [`CipherState::decrypt_with_nonce`]'s; [`ErrorKind::Security`] also
    /// when `src` is past the end of `buf`.
    pub fn decrypt_slice_with_nonce(
        &self,
        n: u64,
        ad: &[u8],
        buf: &mut [u8],
        src: usize,
        tag: &[u8; 16],
    ) -> Result<()> {
        if n == MAX_NONCE {
            return Err(exhausted());
        }
        self.key()?
            .open_detached_within(&aes_gcm_nonce(n), ad, buf, src, tag)
    }

    fn key(&self) -> Result<&AeadKey> {
        self.k
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::Internal, "cipher state has no key"))
    }
}

fn exhausted() -> Error {
    Error::new(
        ErrorKind::ResourceExhausted,
        "the channel used up its 2^64-1 nonces; open a new channel",
    )
}

//! `SymmetricState` (Noise specification, section 5.2): the chaining key,
//! the handshake hash and a `CipherState`.

use crate::cipher_state::CipherState;
use ockam_core::Result;
use ockam_vault::Vault;
use zeroize::Zeroizing;

/// HASHLEN for SHA-256.
pub(crate) const HASHLEN: usize = 32;

/// Two 32-byte HKDF outputs.
type Outputs2 = (Zeroizing<[u8; 32]>, Zeroizing<[u8; 32]>);

/// Chaining key, handshake hash and cipher state of a handshake.
#[derive(Debug)]
pub struct SymmetricState {
    ck: Zeroizing<[u8; HASHLEN]>,
    h: [u8; HASHLEN],
    cipher: CipherState,
}

impl SymmetricState {
    /// `InitializeSymmetric(protocol_name)`.
    pub fn initialize(protocol_name: &str) -> SymmetricState {
        let name = protocol_name.as_bytes();
        let h = if name.len() <= HASHLEN {
            let mut h = [0u8; HASHLEN];
            h[..name.len()].copy_from_slice(name);
            h
        } else {
            Vault::sha256(name)
        };
        SymmetricState {
            ck: Zeroizing::new(h),
            h,
            cipher: CipherState::default(),
        }
    }

    /// `HKDF(ck, ikm, 2)`: two 32-byte outputs.
    fn hkdf2(&self, ikm: &[u8]) -> Result<Outputs2> {
        let mut okm = Zeroizing::new([0u8; 64]);
        Vault::hkdf_sha256(&self.ck[..], ikm, &mut okm[..])?;
        let mut a = Zeroizing::new([0u8; 32]);
        let mut b = Zeroizing::new([0u8; 32]);
        a.copy_from_slice(&okm[..32]);
        b.copy_from_slice(&okm[32..]);
        Ok((a, b))
    }

    /// `MixKey(input_key_material)`.
    ///
    /// # Errors
    /// Only those of [`Vault::hkdf_sha256`], which its 64 bytes of output
    /// never meet: it does not fail.
    pub fn mix_key(&mut self, ikm: &[u8]) -> Result<()> {
        let (ck, k) = self.hkdf2(ikm)?;
        self.ck = ck;
        self.cipher.initialize_key(Some(&k));
        Ok(())
    }

    /// `MixHash(data)`.
    pub fn mix_hash(&mut self, data: &[u8]) {
        let mut buf = Vec::with_capacity(HASHLEN + data.len());
        buf.extend_from_slice(&self.h);
        buf.extend_from_slice(data);
        self.h = Vault::sha256(&buf);
    }

    /// `EncryptAndHash(plaintext)`.
    ///
    /// # Errors
    /// As [`CipherState::encrypt_with_ad`]'s.
    pub fn encrypt_and_hash(&mut self, plaintext: &[u8]) -> Result<Vec<u8>> {
        let h = self.h;
        let ciphertext = self.cipher.encrypt_with_ad(&h, plaintext)?;
        self.mix_hash(&ciphertext);
        Ok(ciphertext)
    }

    /// `DecryptAndHash(ciphertext)`.
    ///
    /// # Errors
    /// As [`CipherState::decrypt_with_ad`]'s (`Security` when authentication
    /// fails).
    pub fn decrypt_and_hash(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>> {
        let h = self.h;
        let plaintext = self.cipher.decrypt_with_ad(&h, ciphertext)?;
        self.mix_hash(ciphertext);
        Ok(plaintext)
    }

    /// Whether a key has been mixed in (encrypted fields then carry a tag).
    pub fn has_key(&self) -> bool {
        self.cipher.has_key()
    }

    /// The handshake hash `h`.
    pub fn handshake_hash(&self) -> [u8; HASHLEN] {
        self.h
    }

    /// `Split()`: the initiator's sending and receiving cipher states.
    ///
    /// # Errors
    /// As [`SymmetricState::mix_key`]'s: it does not fail.
    pub fn split(&self) -> Result<(CipherState, CipherState)> {
        let (k1, k2) = self.hkdf2(&[])?;
        let mut c1 = CipherState::default();
        let mut c2 = CipherState::default();
        c1.initialize_key(Some(&k1));
        c2.initialize_key(Some(&k2));
        Ok((c1, c2))
    }
}

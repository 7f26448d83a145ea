//! The software vault of the ockam-rs stack.
//!
//! ```
//! use ockam_vault::{AeadKey, Vault};
//!
//! let vault = Vault::new();
//! let alice = vault.generate_x25519();
//! let bob = vault.generate_x25519();
//! let shared = vault.x25519_dh(&alice, &vault.public_key(&bob)?)?;
//! assert_eq!(*shared, *vault.x25519_dh(&bob, &vault.public_key(&alice)?)?);
//!
//! let mut key = [0u8; 32];
//! Vault::hkdf_sha256(b"salt", &shared[..], &mut key)?;
//! let key = AeadKey::new(&key);
//! let sealed = key.seal(&[0; 12], b"header", b"hello")?;
//! assert_eq!(key.open(&[0; 12], b"header", &sealed)?, b"hello");
//! # Ok::<(), ockam_core::Error>(())
//! ```
//!
//! [`Vault`] is a cheap, cloneable handle on one store of secrets that many
//! workers can share. Long-term secrets (X25519 static keys) never leave it:
//! callers hold a [`SecretHandle`]. Derived key material handed out (a
//! Diffie-Hellman result, an [`AeadKey`]) is zeroized when dropped, and no
//! type here prints key bytes (`Debug` redacts them).
//!
//! Primitives: X25519 key generation and Diffie-Hellman, HKDF-SHA256,
//! AES-256-GCM with associated data, SHA-256.
#![deny(missing_docs)]

#[cfg(feature = "ring")]
mod aead_key;
#[cfg(not(feature = "ring"))]
#[path = "aead_rustcrypto.rs"]
mod aead_key;
pub use aead_key::AeadKey;

use ockam_core::internal::sync::lock;
use ockam_core::{Error, ErrorKind, Result};
use ockam_node::Context;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

/// Refers to a secret kept inside a [`Vault`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SecretHandle(u64);

impl fmt::Debug for SecretHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHandle(#{})", self.0)
    }
}

/// An X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    /// The key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A public key from bytes, which must be exactly 32.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when `bytes` is not 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<PublicKey> {
        let b: [u8; 32] = bytes.try_into().map_err(|_| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("an X25519 public key has 32 bytes, not {}", bytes.len()),
            )
        })?;
        Ok(PublicKey(b))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A public key from its 64 hexadecimal digits (as `Display` writes it):
/// how a key is written in a configuration file or on a command line.
impl std::str::FromStr for PublicKey {
    type Err = Error;

    fn from_str(text: &str) -> Result<PublicKey> {
        let text = text.trim();
        // The text is not repeated: it may be a secret key's file.
        let bad = || {
            Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "a key is 64 hexadecimal digits, not {} characters of which {} are not",
                    text.chars().count(),
                    text.chars().filter(|c| !c.is_ascii_hexdigit()).count()
                ),
            )
        };
        let mut key = [0u8; 32];
        hex::decode_to_slice(text, &mut key).map_err(|_| bad())?;
        Ok(PublicKey(key))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

struct Inner {
    secrets: Mutex<HashMap<u64, StaticSecret>>,
    next: AtomicU64,
}

/// A store of secrets, shared by cloning the handle.
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("secrets", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Default for Vault {
    fn default() -> Self {
        Vault::new()
    }
}

impl Vault {
    /// A new, empty vault (the guides' `Vault::create(&ctx)?`).
    ///
    /// # Errors
    /// None: it always returns `Ok` (the `Result` is the guides' signature).
    pub fn create(_ctx: &Context) -> Result<Vault> {
        Ok(Vault::new())
    }

    /// A new, empty vault.
    pub fn new() -> Vault {
        Vault {
            inner: Arc::new(Inner {
                secrets: Mutex::new(HashMap::new()),
                next: AtomicU64::new(1),
            }),
        }
    }

    /// The X25519 secret kept in the file at `path` (64 hexadecimal
    /// digits, readable by its owner alone), made there if there is none:
    /// an identity that outlives the process (a hub's, a client's that a
    /// hub's access file names). Also `true` when the file was made now.
    /// The file is written whole under another name and renamed, so that
    /// a crash never leaves half a key.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when the file cannot be read or written;
    /// [`ErrorKind::InvalidInput`] when it does not hold a key.
    pub fn load_or_create_x25519(&self, path: &std::path::Path) -> Result<(SecretHandle, bool)> {
        let io = |what: &str, e: std::io::Error| {
            Error::with_source(ErrorKind::Io, format!("{what} {}", path.display()), e)
        };
        let secret = match std::fs::read_to_string(path) {
            Ok(text) => {
                let key: PublicKey = text.parse().map_err(|e: Error| {
                    Error::new(
                        ErrorKind::InvalidInput,
                        format!("the key file {}: {}", path.display(), e.message()),
                    )
                })?;
                return Ok((self.import_x25519(key.0), false));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StaticSecret::random(),
            Err(e) => return Err(io("cannot read the key file", e)),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io("cannot create the directory of", e))?;
        }
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options
                .open(&tmp)
                .map_err(|e| io("cannot write the key file", e))?;
            let text = zeroize::Zeroizing::new(hex::encode(secret.to_bytes()));
            f.write_all(text.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| io("cannot write the key file", e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| io("cannot write the key file", e))?;
        Ok((self.store(secret), true))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, StaticSecret>> {
        lock(&self.inner.secrets)
    }

    fn store(&self, secret: StaticSecret) -> SecretHandle {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, secret);
        SecretHandle(id)
    }

    fn with_secret<T>(&self, h: &SecretHandle, f: impl FnOnce(&StaticSecret) -> T) -> Result<T> {
        let secrets = self.lock();
        let s = secrets.get(&h.0).ok_or_else(|| {
            Error::new(ErrorKind::NotFound, format!("{h:?} is not in this vault"))
        })?;
        Ok(f(s))
    }

    /// Generates an X25519 secret key from the operating system's RNG.
    pub fn generate_x25519(&self) -> SecretHandle {
        self.store(StaticSecret::random())
    }

    /// Stores a given X25519 secret key (the bytes are zeroized after use
    /// by the caller's `Zeroizing` wrapper, if any).
    pub fn import_x25519(&self, secret: [u8; 32]) -> SecretHandle {
        let mut secret = Zeroizing::new(secret);
        self.store(StaticSecret::from(std::mem::take(&mut *secret)))
    }

    /// The public key of an X25519 secret.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when `h` is not in this vault (deleted, or
    /// from another vault).
    pub fn public_key(&self, h: &SecretHandle) -> Result<PublicKey> {
        self.with_secret(h, |s| {
            PublicKey(*x25519_dalek::PublicKey::from(s).as_bytes())
        })
    }

    /// X25519 Diffie-Hellman of a stored secret with a peer's public key.
    /// An all-zero result (the peer sent a low-order point) is an error.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when `h` is not in this vault;
    /// [`ErrorKind::Security`] when the result is all zeros.
    pub fn x25519_dh(&self, h: &SecretHandle, peer: &PublicKey) -> Result<Zeroizing<[u8; 32]>> {
        let shared = self.with_secret(h, |s| {
            Zeroizing::new(
                *s.diffie_hellman(&x25519_dalek::PublicKey::from(peer.0))
                    .as_bytes(),
            )
        })?;
        if shared.iter().all(|b| *b == 0) {
            return Err(Error::new(
                ErrorKind::Security,
                "X25519 with this public key gives an all-zero secret (low-order point)",
            ));
        }
        Ok(shared)
    }

    /// Removes a secret; its handle no longer works.
    pub fn delete(&self, h: &SecretHandle) {
        self.lock().remove(&h.0);
    }

    /// HKDF-SHA256 (RFC 5869) with empty info: fills `out` (at most 8160 bytes).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidInput`] when `out` is longer than 8160 bytes.
    pub fn hkdf_sha256(salt: &[u8], ikm: &[u8], out: &mut [u8]) -> Result<()> {
        hkdf::Hkdf::<Sha256>::new(Some(salt), ikm)
            .expand(&[], out)
            .map_err(|_| Error::new(ErrorKind::InvalidInput, "HKDF output too long"))
    }

    /// SHA-256 of `data`.
    pub fn sha256(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }
}

/// Bytes of the authentication tag AES-GCM appends.
pub const AEAD_TAG_LEN: usize = 16;

fn sealing_failed() -> Error {
    Error::new(ErrorKind::Encoding, "AES-GCM encryption failed")
}

fn opening_failed() -> Error {
    Error::new(
        ErrorKind::Security,
        "AES-GCM authentication failed: the ciphertext or its header was altered",
    )
}

impl AeadKey {
    /// A key from its 32 bytes.
    pub fn new(key: &[u8; 32]) -> AeadKey {
        AeadKey::from_bytes(key)
    }

    /// Encrypts `buf` in place and appends the tag.
    ///
    /// # Errors
    /// As [`AeadKey::seal_detached`]'s.
    pub fn seal_in_place(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut Vec<u8>) -> Result<()> {
        let tag = self.seal_detached(nonce, aad, buf)?;
        buf.extend_from_slice(&tag);
        Ok(())
    }

    /// Checks the tag at the end of `buf` and decrypts in place (the tag is
    /// removed). On failure `buf` is left unusable.
    ///
    /// # Errors
    /// [`ErrorKind::Security`] when authentication fails: `buf`, `aad` or
    /// `nonce` is not what was sealed, or `buf` is shorter than a tag.
    pub fn open_in_place(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut Vec<u8>) -> Result<()> {
        let Some(len) = buf.len().checked_sub(AEAD_TAG_LEN) else {
            return Err(opening_failed());
        };
        let mut tag = [0u8; AEAD_TAG_LEN];
        tag.copy_from_slice(&buf[len..]);
        buf.truncate(len);
        self.open_detached(nonce, aad, buf, &tag)
    }

    /// Encrypts `buf` in place and returns the tag (kept apart).
    ///
    /// # Errors
    /// [`ErrorKind::Encoding`] when the AES-GCM implementation refuses to
    /// seal (`buf` is longer than AES-GCM allows).
    pub fn seal_detached(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; AEAD_TAG_LEN]> {
        self.seal_raw(nonce, aad, buf).ok_or_else(sealing_failed)
    }

    /// Checks `tag` and decrypts `buf` in place.
    ///
    /// # Errors
    /// [`ErrorKind::Security`] when authentication fails.
    pub fn open_detached(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; AEAD_TAG_LEN],
    ) -> Result<()> {
        self.open_detached_within(nonce, aad, buf, 0, tag)
    }

    /// Checks `tag` and decrypts the ciphertext `buf[src..]` to the front
    /// of `buf` (`buf[..buf.len() - src]`) in the same pass: how a message
    /// behind a header is decrypted without moving it first. What is left
    /// after the plaintext is unspecified; on failure `buf` is unusable.
    ///
    /// # Errors
    /// [`ErrorKind::Security`] when authentication fails or `src` is past
    /// the end of `buf`.
    pub fn open_detached_within(
        &self,
        nonce: &[u8; 12],
        aad: &[u8],
        buf: &mut [u8],
        src: usize,
        tag: &[u8; AEAD_TAG_LEN],
    ) -> Result<()> {
        if src > buf.len() {
            return Err(opening_failed());
        }
        if self.open_within_raw(nonce, aad, buf, src, tag) {
            Ok(())
        } else {
            Err(opening_failed())
        }
    }

    /// Encrypts `plaintext`; returns ciphertext and tag.
    ///
    /// # Errors
    /// As [`AeadKey::seal_detached`]'s.
    pub fn seal(&self, nonce: &[u8; 12], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(plaintext.len() + AEAD_TAG_LEN);
        buf.extend_from_slice(plaintext);
        self.seal_in_place(nonce, aad, &mut buf)?;
        Ok(buf)
    }

    /// Decrypts ciphertext and tag.
    ///
    /// # Errors
    /// As [`AeadKey::open_in_place`]'s.
    pub fn open(&self, nonce: &[u8; 12], aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>> {
        let mut buf = ciphertext.to_vec();
        self.open_in_place(nonce, aad, &mut buf)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("ockam-vault-{}", std::process::id()));
        let path = dir.join("sub").join("identity.key");
        let vault = Vault::new();
        let (first, created) = vault.load_or_create_x25519(&path).unwrap();
        assert!(created);
        let (again, created) = vault.load_or_create_x25519(&path).unwrap();
        assert!(!created);
        assert_eq!(
            vault.public_key(&first).unwrap(),
            vault.public_key(&again).unwrap()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "garbage").unwrap();
        let err = vault.load_or_create_x25519(&path).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_public_key_reads_back_what_display_writes() {
        let vault = Vault::new();
        let key = vault.public_key(&vault.generate_x25519()).unwrap();
        assert_eq!(key.to_string().parse::<PublicKey>().unwrap(), key);
        let plus = format!("+f{}", "0".repeat(62));
        for bad in [
            "",
            "00",
            &"g".repeat(64),
            &"0".repeat(63),
            &"é".repeat(32),
            &plus,
        ] {
            let err = bad.parse::<PublicKey>().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn x25519_matches_rfc7748() {
        // RFC 7748 section 6.1.
        let vault = Vault::new();
        let a: [u8; 32] =
            hex::decode("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .unwrap()
                .try_into()
                .unwrap();
        let b: [u8; 32] =
            hex::decode("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
                .unwrap()
                .try_into()
                .unwrap();
        let (a, b) = (vault.import_x25519(a), vault.import_x25519(b));
        assert_eq!(
            vault.public_key(&a).unwrap().to_string(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        let shared = vault.x25519_dh(&a, &vault.public_key(&b).unwrap()).unwrap();
        assert_eq!(
            hex::encode(*shared),
            "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
        );
        // A low-order point is refused.
        assert_eq!(
            vault.x25519_dh(&a, &PublicKey([0; 32])).unwrap_err().kind(),
            ErrorKind::Security
        );
    }

    #[test]
    fn hkdf_and_sha256_match_their_rfcs() {
        // RFC 5869 test case 3 (empty salt and info) uses an empty salt;
        // test case 1 has info, so check SHA-256 and our HKDF against a
        // known answer computed with salt only (RFC 5869 A.3).
        let ikm = [0x0bu8; 22];
        let mut okm = [0u8; 42];
        Vault::hkdf_sha256(&[], &ikm, &mut okm).unwrap();
        assert_eq!(
            hex::encode(okm),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
        );
        assert_eq!(
            hex::encode(Vault::sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn aead_detects_tampering() {
        let key = AeadKey::new(&[7; 32]);
        let mut sealed = key.seal(&[1; 12], b"ad", b"secret").unwrap();
        assert_eq!(key.open(&[1; 12], b"ad", &sealed).unwrap(), b"secret");
        assert!(key.open(&[1; 12], b"other ad", &sealed).is_err());
        assert!(key.open(&[2; 12], b"ad", &sealed).is_err());
        let mut detached = b"secret".to_vec();
        let tag = key.seal_detached(&[1; 12], b"ad", &mut detached).unwrap();
        detached.extend_from_slice(&tag);
        assert_eq!(detached, sealed, "detached and attached agree");
        let (body, tag) = detached.split_at_mut(6);
        let tag: [u8; 16] = tag.try_into().unwrap();
        key.open_detached(&[1; 12], b"ad", body, &tag).unwrap();
        assert_eq!(body, b"secret");
        sealed[0] ^= 1;
        assert_eq!(
            key.open(&[1; 12], b"ad", &sealed).unwrap_err().kind(),
            ErrorKind::Security
        );
        assert!(key.open(&[1; 12], b"ad", &[0; 5]).is_err());
    }

    proptest::proptest! {
        /// Our AES-256-GCM gives the same bytes as the `aes-gcm` crate and
        /// opens what it seals.
        #[test]
        fn aead_agrees_with_the_aes_gcm_crate(
            key in proptest::array::uniform32(proptest::num::u8::ANY),
            nonce in proptest::array::uniform12(proptest::num::u8::ANY),
            aad in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            plain in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
        ) {
            use aes_gcm::aead::{Aead, KeyInit, Payload};
            let reference = aes_gcm::Aes256Gcm::new(&key.into())
                .encrypt(&nonce.into(), Payload { msg: &plain, aad: &aad })
                .unwrap();
            let ours = AeadKey::new(&key);
            let sealed = ours.seal(&nonce, &aad, &plain).unwrap();
            proptest::prop_assert_eq!(&sealed, &reference);
            proptest::prop_assert_eq!(ours.clone().open(&nonce, &aad, &sealed).unwrap(), plain.clone());
            let mut body = plain.clone();
            let tag = ours.seal_detached(&nonce, &aad, &mut body).unwrap();
            proptest::prop_assert_eq!(&body[..], &reference[..plain.len()]);
            proptest::prop_assert_eq!(&tag[..], &reference[plain.len()..]);
            ours.open_detached(&nonce, &aad, &mut body, &tag).unwrap();
            proptest::prop_assert_eq!(&body, &plain);
            let mut bad = sealed.clone();
            let last = bad.len() - 1;
            bad[last] ^= 0x80;
            proptest::prop_assert!(ours.open(&nonce, &aad, &bad).is_err());
        }
    }

    #[test]
    fn debug_never_prints_secrets() {
        let vault = Vault::new();
        let h = vault.generate_x25519();
        assert_eq!(format!("{h:?}"), "SecretHandle(#1)");
        assert!(format!("{vault:?}").contains("secrets: 1"));
        assert_eq!(
            format!("{:?}", AeadKey::new(&[9; 32])),
            "AeadKey(<redacted>)"
        );
        vault.delete(&h);
        assert_eq!(
            vault.public_key(&h).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }
}

// The README's examples run as doc tests too, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

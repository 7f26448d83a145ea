//! `HandshakeState` (Noise specification, section 5.3) for the XX pattern:
//!
//! ```text
//! XX:
//!   -> e
//!   <- e, ee, s, es
//!   -> s, se
//! ```
//!
//! A state machine with no I/O: feed it received handshake messages, send
//! what it writes. The static key stays in the vault; ephemeral keys are
//! created there and deleted when the handshake ends.

use crate::cipher_state::CipherState;
use crate::symmetric_state::SymmetricState;
use ockam_core::{Error, ErrorKind, Result};
use ockam_vault::{PublicKey, SecretHandle, Vault, AEAD_TAG_LEN};

/// The protocol this crate implements.
pub const PROTOCOL_NAME: &str = "Noise_XX_25519_AESGCM_SHA256";

/// Largest Noise message, in bytes (specification, section 3).
pub const MAX_MESSAGE_LEN: usize = 65535;

const DHLEN: usize = 32;

/// Which side of the handshake this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends the first message.
    Initiator,
    /// Answers it.
    Responder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    E,
    S,
    EE,
    ES,
    SE,
}

/// The message patterns of XX, in order.
const XX: [&[Token]; 3] = [
    &[Token::E],
    &[Token::E, Token::EE, Token::S, Token::ES],
    &[Token::S, Token::SE],
];

/// The keys both sides use after the handshake.
#[derive(Debug)]
pub struct TransportState {
    /// Encrypts what this side sends.
    pub send: CipherState,
    /// Decrypts what this side receives.
    pub recv: CipherState,
    /// The peer's static public key, authenticated by the handshake.
    pub remote_static: PublicKey,
    /// The final handshake hash (a unique channel binding value).
    pub handshake_hash: [u8; 32],
}

/// One side of an XX handshake in progress.
pub struct HandshakeState {
    vault: Vault,
    role: Role,
    symmetric: SymmetricState,
    s: SecretHandle,
    e: Option<SecretHandle>,
    rs: Option<PublicKey>,
    re: Option<PublicKey>,
    /// Index of the next message pattern; 3 when finished.
    step: usize,
    failed: bool,
}

impl std::fmt::Debug for HandshakeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeState")
            .field("role", &self.role)
            .field("step", &self.step)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl HandshakeState {
    /// `Initialize(...)` for XX with static key `s` (a vault handle).
    pub fn new(vault: &Vault, role: Role, prologue: &[u8], s: SecretHandle) -> Self {
        let mut symmetric = SymmetricState::initialize(PROTOCOL_NAME);
        symmetric.mix_hash(prologue);
        HandshakeState {
            vault: vault.clone(),
            role,
            symmetric,
            s,
            e: None,
            rs: None,
            re: None,
            step: 0,
            failed: false,
        }
    }

    /// Uses a given ephemeral key instead of generating one (test vectors).
    pub fn with_ephemeral(mut self, e: SecretHandle) -> Self {
        self.e = Some(e);
        self
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Whether the next message is this side's to write.
    pub fn is_my_turn(&self) -> bool {
        !self.is_finished() && (self.step % 2 == 0) == (self.role == Role::Initiator)
    }

    /// Whether all three messages have been processed.
    pub fn is_finished(&self) -> bool {
        self.step == XX.len()
    }

    /// The peer's static key, once received (message 2 for the initiator,
    /// message 3 for the responder).
    pub fn remote_static(&self) -> Option<PublicKey> {
        self.rs
    }

    /// The handshake hash so far.
    pub fn handshake_hash(&self) -> [u8; 32] {
        self.symmetric.handshake_hash()
    }

    fn check(&self, writing: bool) -> Result<()> {
        if self.failed {
            return Err(protocol("this handshake already failed"));
        }
        if self.is_finished() {
            return Err(protocol("the handshake is already finished"));
        }
        if self.is_my_turn() != writing {
            return Err(protocol(if writing {
                "it is the peer's turn to send a handshake message"
            } else {
                "a handshake message arrived out of order (it is our turn to send)"
            }));
        }
        Ok(())
    }

    fn dh(
        &self,
        local: &SecretHandle,
        remote: &Option<PublicKey>,
    ) -> Result<zeroize::Zeroizing<[u8; 32]>> {
        let remote =
            remote.ok_or_else(|| Error::new(ErrorKind::Internal, "DH before the peer's key"))?;
        self.vault.x25519_dh(local, &remote)
    }

    fn mix_dh(&mut self, token: Token) -> Result<()> {
        let e = self
            .e
            .clone()
            .ok_or_else(|| Error::new(ErrorKind::Internal, "no ephemeral key"))?;
        let shared = match (token, self.role) {
            (Token::EE, _) => self.dh(&e, &self.re)?,
            (Token::ES, Role::Initiator) | (Token::SE, Role::Responder) => self.dh(&e, &self.rs)?,
            (Token::ES, Role::Responder) | (Token::SE, Role::Initiator) => {
                self.dh(&self.s, &self.re)?
            }
            _ => return Err(Error::new(ErrorKind::Internal, "not a DH token")),
        };
        self.symmetric.mix_key(&shared[..])
    }

    /// `WriteMessage(payload)`: the next handshake message to send.
    ///
    /// # Errors
    /// [`ErrorKind::Protocol`] when the handshake failed, is finished or it
    /// is the peer's turn; [`ErrorKind::NotFound`] when the static key is
    /// not in the vault; [`ErrorKind::Security`] when a Diffie-Hellman result
    /// is all zeros (a low-order peer key); [`ErrorKind::InvalidInput`] when
    /// the message would exceed [`MAX_MESSAGE_LEN`] bytes. Any error ends
    /// this handshake.
    pub fn write_message(&mut self, payload: &[u8]) -> Result<Vec<u8>> {
        self.check(true)?;
        let r = self.write_inner(payload);
        self.failed = r.is_err();
        r
    }

    fn write_inner(&mut self, payload: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for &token in XX[self.step] {
            match token {
                Token::E => {
                    let e = match &self.e {
                        Some(e) => e.clone(),
                        None => {
                            let e = self.vault.generate_x25519();
                            self.e = Some(e.clone());
                            e
                        }
                    };
                    let public = self.vault.public_key(&e)?;
                    out.extend_from_slice(public.as_bytes());
                    self.symmetric.mix_hash(public.as_bytes());
                }
                Token::S => {
                    let public = self.vault.public_key(&self.s)?;
                    out.extend(self.symmetric.encrypt_and_hash(public.as_bytes())?);
                }
                dh => self.mix_dh(dh)?,
            }
        }
        out.extend(self.symmetric.encrypt_and_hash(payload)?);
        if out.len() > MAX_MESSAGE_LEN {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                "handshake message longer than 65535 bytes",
            ));
        }
        self.step += 1;
        Ok(out)
    }

    /// `ReadMessage(message)`: processes a received handshake message and
    /// returns its payload. Any error ends this handshake.
    ///
    /// # Errors
    /// [`ErrorKind::Protocol`] when the handshake failed or is finished, it
    /// is this side's turn, or `message` is too short or longer than
    /// [`MAX_MESSAGE_LEN`] bytes; [`ErrorKind::Security`] when the peer's
    /// static key or the payload fails authentication, or a Diffie-Hellman
    /// result is all zeros; [`ErrorKind::NotFound`] when the static key is
    /// not in the vault.
    pub fn read_message(&mut self, message: &[u8]) -> Result<Vec<u8>> {
        self.check(false)?;
        let r = self.read_inner(message);
        self.failed = r.is_err();
        r
    }

    fn read_inner(&mut self, message: &[u8]) -> Result<Vec<u8>> {
        if message.len() > MAX_MESSAGE_LEN {
            return Err(protocol("handshake message longer than 65535 bytes"));
        }
        let mut rest = message;
        for &token in XX[self.step] {
            match token {
                Token::E => {
                    if rest.len() < DHLEN {
                        return Err(protocol("handshake message too short for a public key"));
                    }
                    let (re, r) = rest.split_at(DHLEN);
                    let re = PublicKey::from_slice(re)?;
                    self.symmetric.mix_hash(re.as_bytes());
                    self.re = Some(re);
                    rest = r;
                }
                Token::S => {
                    let len = DHLEN
                        + if self.symmetric.has_key() {
                            AEAD_TAG_LEN
                        } else {
                            0
                        };
                    if rest.len() < len {
                        return Err(protocol("handshake message too short for a static key"));
                    }
                    let (rs, r) = rest.split_at(len);
                    let rs = self.symmetric.decrypt_and_hash(rs).map_err(|e| {
                        Error::with_source(
                            ErrorKind::Security,
                            "the peer's static key failed authentication",
                            e,
                        )
                    })?;
                    self.rs = Some(PublicKey::from_slice(&rs)?);
                    rest = r;
                }
                dh => self.mix_dh(dh)?,
            }
        }
        let payload = self.symmetric.decrypt_and_hash(rest).map_err(|e| {
            Error::with_source(
                ErrorKind::Security,
                "handshake payload failed authentication",
                e,
            )
        })?;
        self.step += 1;
        Ok(payload)
    }

    /// `Split()` after the last message: the transport keys.
    ///
    /// # Errors
    /// [`ErrorKind::Protocol`] when the handshake is not finished or failed.
    pub fn into_transport(mut self) -> Result<TransportState> {
        if !self.is_finished() || self.failed {
            return Err(protocol("the handshake is not finished"));
        }
        let (c1, c2) = self.symmetric.split()?;
        let (send, recv) = match self.role {
            Role::Initiator => (c1, c2),
            Role::Responder => (c2, c1),
        };
        let remote_static = self
            .rs
            .take()
            .ok_or_else(|| Error::new(ErrorKind::Internal, "no remote static key"))?;
        Ok(TransportState {
            send,
            recv,
            remote_static,
            handshake_hash: self.symmetric.handshake_hash(),
        })
    }
}

impl Drop for HandshakeState {
    fn drop(&mut self) {
        // Ephemeral keys live only as long as their handshake.
        if let Some(e) = self.e.take() {
            self.vault.delete(&e);
        }
    }
}

fn protocol(msg: &str) -> Error {
    Error::new(ErrorKind::Protocol, format!("Noise XX handshake: {msg}"))
}

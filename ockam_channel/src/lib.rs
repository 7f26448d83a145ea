//! End-to-end encrypted secure channels over any route of the ockam-rs
//! stack: `Noise_XX_25519_AESGCM_SHA256`, exactly per the Noise
//! specification, with mutual authentication by static X25519 keys.
//!
//! ```rust
//! use ockam_channel::SecureChannel;
//! use ockam_core::{route, Result};
//! use ockam_node::Context;
//! use ockam_vault::Vault;
//!
//! #[ockam_node::node]
//! async fn main(mut ctx: Context) -> Result<()> {
//!     let vault = Vault::create(&ctx)?;
//!     // One end listens; the other runs the Noise XX handshake to it. The
//!     // route to the listener can cross any hops (TCP, hubs, other channels).
//!     SecureChannel::create_listener(&ctx, "secure_channel_listener", &vault).await?;
//!     let channel = SecureChannel::create(&ctx, route!["secure_channel_listener"], &vault).await?;
//!     // Encrypted whole at one end, decrypted at the other, then routed on to
//!     // "app"; the reply route leads back through the channel.
//!     ctx.send(route![channel.address(), "app"], "hello".to_string()).await?;
//!     let msg = ctx.receive::<String>().await?;
//!     assert_eq!(*msg, "hello");
//!     ctx.stop().await
//! }
//! ```
//!
//! The handshake is a transport-free state machine named after the Noise
//! specification's own objects (`CipherState`, `SymmetricState`,
//! `HandshakeState`, section 5); the published test vectors run in
//! `cargo test`, and handshakes interoperate with the `snow` crate.
//!
//! After the handshake, a message sent to `route![channel.address(), ...rest]`
//! is encrypted whole (onward route, return route and payload) and decrypted
//! at the other end, then routed on to `rest` with a return route back
//! through the channel. Transport messages carry their nonce explicitly, so
//! the channel works over routes that reorder or redeliver (streams): a
//! replayed, tampered or truncated ciphertext is dropped and logged, and the
//! channel stays up.
#![deny(missing_docs)]

mod cipher_state;
mod handshake_state;
mod messages;
mod replay;
mod symmetric_state;
mod worker;

pub use ockam_vault::PublicKey;

use ockam_core::{Address, Error, ErrorKind, Result, Route};
use ockam_node::Context;
use ockam_vault::{SecretHandle, Vault};
use std::sync::Arc;
use std::time::Duration;
use worker::{ChannelWorker, ListenerWorker, Trust};

/// How long [`SecureChannel::create`] waits for the handshake by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of the initiating end of a channel.
#[derive(Debug, Clone)]
pub struct SecureChannelOptions {
    /// This end's static key; a new one is generated if `None`.
    pub static_key: Option<SecretHandle>,
    /// Only this peer key is accepted; a different one fails the handshake.
    pub trusted_peer: Option<PublicKey>,
    /// How long the handshake may take.
    pub timeout: Duration,
}

impl Default for SecureChannelOptions {
    fn default() -> Self {
        SecureChannelOptions {
            static_key: None,
            trusted_peer: None,
            timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Most secure channels one peer may have with one listener, by default.
pub const DEFAULT_MAX_CHANNELS_PER_PEER: usize = 1024;

/// A rule deciding, at each handshake, whether a listener accepts an
/// initiator's static key: consulted every time, so it may change (a hub
/// reloading its access file). See [`ListenerOptions::admit`].
#[derive(Clone)]
pub struct Admit(pub Arc<dyn Fn(&PublicKey) -> bool + Send + Sync>);

impl std::fmt::Debug for Admit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admit(..)")
    }
}

/// Settings of a listener.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    /// The listener's static key; a new one is generated if `None`.
    pub static_key: Option<SecretHandle>,
    /// Only initiators with one of these keys are accepted (`None`: anyone).
    pub trusted_peers: Option<Vec<PublicKey>>,
    /// Only initiators whose key this rule accepts (`None`: anyone; with
    /// `trusted_peers` too, a key must pass both). A refused initiator's
    /// `create` fails with [`ErrorKind::Security`] ("... is not a trusted
    /// key"), as for `trusted_peers`.
    pub admit: Option<Admit>,
    /// Most channels one peer may have with this listener at once, being
    /// set up or established (default [`DEFAULT_MAX_CHANNELS_PER_PEER`]).
    /// A peer is the first hop of the route a handshake comes over (a TCP
    /// connection; see `Route::peer`), so a client on another node counts
    /// per connection; channels from this node itself are not counted.
    /// A handshake past it is refused: the initiator's
    /// [`SecureChannel::create`] fails with [`ErrorKind::Security`] and
    /// the reason. A channel stops holding its place when either end stops
    /// or its first hop's connection closes (issue 18). Through a relay
    /// (a hub's forwarder), every initiator counts as the relay's
    /// connection, and an initiator that vanishes without a word keeps
    /// its channel until that connection closes: there is no keepalive on
    /// established channels yet.
    pub max_channels_per_peer: usize,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            static_key: None,
            trusted_peers: None,
            admit: None,
            max_channels_per_peer: DEFAULT_MAX_CHANNELS_PER_PEER,
        }
    }
}

/// An established secure channel, seen from the end that created it.
#[derive(Debug, Clone)]
pub struct SecureChannel {
    address: Address,
    remote_static: PublicKey,
    handshake_hash: [u8; 32],
}

impl SecureChannel {
    /// The address to route messages into the channel:
    /// `route![channel.address(), "worker-at-the-other-end"]`.
    pub fn address(&self) -> Address {
        self.address.clone()
    }

    /// The peer's static public key, authenticated by the handshake.
    pub fn remote_static(&self) -> PublicKey {
        self.remote_static
    }

    /// The handshake hash: the same value at both ends of this channel.
    pub fn handshake_hash(&self) -> [u8; 32] {
        self.handshake_hash
    }

    /// The authenticated static key of the peer whose messages come out of
    /// the channel end at `address` on this node, from when that channel
    /// is established until its worker has stopped; `None` for any other
    /// address. A message that came through a channel has that end's
    /// address as the first hop of its return route, so a service learns
    /// who sent it with
    /// `SecureChannel::peer_identity(ctx, msg.return_route().next()?)`. A
    /// message from a TCP connection has the connection's address there
    /// instead (the transport puts it first), so no peer can pass for a
    /// channel's. It names the last channel the message came through: a
    /// relay beyond it that does not add itself to the return route (a
    /// hub's forwarder) is not seen. How a hub knows its clients (issue 16).
    pub fn peer_identity(ctx: &Context, address: &Address) -> Option<PublicKey> {
        worker::identities(ctx).get(address)
    }

    /// Starts a listener at `address` that accepts channels from anyone.
    ///
    /// # Errors
    /// As [`SecureChannel::create_listener_with_options`]'s.
    ///
    /// # Cancel safety
    /// As [`SecureChannel::create_listener_with_options`]'s.
    pub async fn create_listener(
        ctx: &Context,
        address: impl Into<Address>,
        vault: &Vault,
    ) -> Result<PublicKey> {
        Self::create_listener_with_options(ctx, address, vault, ListenerOptions::default()).await
    }

    /// Starts a listener at `address`; returns its static public key.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] when `options.static_key` is not in `vault`;
    /// else the errors of [`Context::start_worker`] (`AlreadyExists` when
    /// `address` is taken, `InvalidInput`, `Shutdown`).
    ///
    /// # Cancel safety
    /// Cancel safe: it never suspends, so it completes on its first poll.
    pub async fn create_listener_with_options(
        ctx: &Context,
        address: impl Into<Address>,
        vault: &Vault,
        options: ListenerOptions,
    ) -> Result<PublicKey> {
        let s = options
            .static_key
            .unwrap_or_else(|| vault.generate_x25519());
        let public = vault.public_key(&s)?;
        let trust = Trust {
            keys: options.trusted_peers.map(Arc::new),
            admit: options.admit,
        };
        ctx.start_worker(
            address.into(),
            ListenerWorker {
                vault: vault.clone(),
                s,
                trust,
                responders: Arc::new(std::sync::Mutex::new(worker::Responders::new(
                    options.max_channels_per_peer,
                ))),
            },
        )
        .await?;
        Ok(public)
    }

    /// Creates a channel to the listener at the end of `route` and waits for
    /// the handshake.
    ///
    /// # Errors
    /// As [`SecureChannel::create_with_options`]'s.
    ///
    /// # Cancel safety
    /// As [`SecureChannel::create_with_options`]'s.
    pub async fn create(
        ctx: &Context,
        route: impl Into<Route>,
        vault: &Vault,
    ) -> Result<SecureChannel> {
        Self::create_with_options(ctx, route, vault, SecureChannelOptions::default()).await
    }

    /// Creates a channel with `options`.
    ///
    /// # Errors
    /// - [`ErrorKind::Timeout`]: no handshake within `options.timeout`;
    /// - [`ErrorKind::Security`]: the peer's key is not `trusted_peer`, the
    ///   listener refused this end (untrusted key, too many channels from
    ///   this peer), or a handshake message failed authentication;
    /// - [`ErrorKind::Protocol`]: the peer broke the handshake;
    /// - [`ErrorKind::NotFound`]: `options.static_key` is not in `vault`;
    /// - the errors of [`Context::send`] for the first message along
    ///   `route` (`NotFound`, `Unavailable`, ...), and of
    ///   [`Context::start_worker`] (`Shutdown` once the node has stopped).
    ///
    /// # Cancel safety
    /// Not cancel safe: dropped after its first poll, the handshake goes on
    /// without a caller; if it succeeds, that channel end stays up (its
    /// address lost) until its peer closes it, its connection closes, or
    /// the node stops.
    pub async fn create_with_options(
        ctx: &Context,
        route: impl Into<Route>,
        vault: &Vault,
        options: SecureChannelOptions,
    ) -> Result<SecureChannel> {
        let own_static = options.static_key.is_none();
        let s = options
            .static_key
            .unwrap_or_else(|| vault.generate_x25519());
        let trust = Trust {
            keys: options.trusted_peer.map(|key| Arc::new(vec![key])),
            admit: None,
        };
        let (local, remote) = (Address::random_local(), Address::random_local());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let w = ChannelWorker::initiator(
            vault,
            s,
            own_static,
            (local.clone(), remote.clone()),
            route.into(),
            trust,
            tx,
        );
        ctx.start_worker(vec![local.clone(), remote], w).await?;
        let outcome = match tokio::time::timeout(options.timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::new(
                ErrorKind::Internal,
                "the channel worker ended without an answer",
            )),
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "the secure channel handshake took longer than {:?}",
                    options.timeout
                ),
            )),
        };
        match outcome {
            Ok((remote_static, handshake_hash)) => Ok(SecureChannel {
                address: local,
                remote_static,
                handshake_hash,
            }),
            Err(e) => {
                let _ = ctx.stop_worker(local).await;
                Err(e)
            }
        }
    }
}

/// What tests, benches and the fuzz targets (`fuzz/` and their stable
/// driver `ockam_fuzz`) use of this crate outside its API: the Noise
/// objects (Noise specification, section 5), the channel's wire messages,
/// the replay window, and fuzz entry points. Hidden from the docs, no
/// stability promise; applications should not use it.
#[doc(hidden)]
pub mod internal {
    pub use crate::cipher_state::CipherState;
    pub use crate::handshake_state::{
        HandshakeState, Role, TransportState, MAX_MESSAGE_LEN, PROTOCOL_NAME,
    };
    pub use crate::messages::ChannelMessage;
    pub use crate::replay::{ReplayWindow, WINDOW};
    pub use crate::symmetric_state::SymmetricState;

    use crate::messages::{parse_transport, split_plaintext, HeadCache};
    use ockam_core::Message;

    /// The key both fuzzed ends share.
    const KEY: [u8; 32] = [7; 32];

    /// What a channel end does with a payload its peer sent to its
    /// `remote` address: parsed as `ChannelMessage::Transport` (the worker's
    /// path for anything else: `ChannelMessage::decode`), authenticated
    /// with a fixed key, checked against the replay window. Then the same
    /// bytes sealed with that key, as a peer that holds it could send
    /// anything: decrypted, split (`split_plaintext`) and decoded twice,
    /// the second time through the head cache, which must agree with a
    /// fresh decode.
    pub fn receive_transport(payload: &[u8]) {
        let mut cipher = CipherState::default();
        cipher.initialize_key(Some(&KEY));
        let mut replay = ReplayWindow::default();
        match parse_transport(payload) {
            Some((nonce, ciphertext, tag)) => {
                let mut buf = payload.to_vec();
                if replay.check(nonce)
                    && cipher
                        .decrypt_slice_with_nonce(
                            nonce,
                            &[],
                            &mut buf[..ciphertext.end],
                            ciphertext.start,
                            &tag,
                        )
                        .is_ok()
                {
                    replay.accept(nonce);
                }
            }
            None => {
                let _ = ChannelMessage::decode(payload);
            }
        }

        // Sealed by a peer that holds the key (whose plaintexts are never
        // empty: a trailer ends each one).
        if payload.is_empty() {
            return;
        }
        let nonce = 3;
        let mut sealed = payload.to_vec();
        let Ok(tag) = cipher.encrypt_slice_with_nonce(nonce, &[], &mut sealed) else {
            return;
        };
        sealed.extend_from_slice(&tag);
        let Ok(wire) = (ChannelMessage::Transport {
            nonce,
            ciphertext: sealed,
        })
        .encode() else {
            return;
        };
        let (n, ciphertext, tag) =
            parse_transport(&wire).unwrap_or_else(|| panic!("a sealed message does not parse"));
        assert_eq!(n, nonce);
        let mut buf = wire.clone();
        cipher
            .decrypt_slice_with_nonce(n, &[], &mut buf[..ciphertext.end], ciphertext.start, &tag)
            .unwrap_or_else(|e| panic!("a sealed message does not open: {e}"));
        buf.truncate(ciphertext.len());
        assert_eq!(buf, payload, "the plaintext came back different");
        let Some((_kind, head)) = split_plaintext(&buf) else {
            return;
        };
        let mut heads = HeadCache::default();
        let first = heads.decode(buf.clone(), head.clone());
        let second = heads.decode(buf.clone(), head.clone());
        match (first, second) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "the head cache changed a message"),
            (Err(_), Err(_)) => {}
            (a, b) => panic!("the head cache disagrees: {a:?} then {b:?}"),
        }
    }
}

// The README's examples run as doc tests too, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

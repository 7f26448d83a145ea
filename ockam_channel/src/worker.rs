//! The workers: one [`ChannelWorker`] per channel end, with two addresses
//! (`local`: plaintext from this node's workers goes in here; `remote`: the
//! peer's ciphertexts arrive here), and a [`ListenerWorker`] that starts a
//! responder end for every handshake that reaches it.

use crate::handshake_state::TransportState;
use crate::handshake_state::{HandshakeState, Role};
use crate::messages::{
    parse_transport, seal_transport, ChannelMessage, PLAIN_MESSAGE, PLAIN_READY,
};
use crate::replay::ReplayWindow;
use ockam_core::{
    async_trait, Address, Any, Error, ErrorKind, LocalMessage, Message, Result, Route, Routed,
    TransportMessage, Worker,
};
use ockam_node::Context;
use ockam_vault::{PublicKey, SecretHandle, Vault};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

/// Which peer keys an end accepts.
#[derive(Debug, Clone, Default)]
pub(crate) enum Trust {
    #[default]
    Anyone,
    Only(Arc<Vec<PublicKey>>),
}

impl Trust {
    fn check(&self, key: &PublicKey) -> Result<()> {
        match self {
            Trust::Anyone => Ok(()),
            Trust::Only(keys) if keys.contains(key) => Ok(()),
            Trust::Only(_) => Err(Error::new(
                ErrorKind::Security,
                format!("the peer's static key {key} is not a trusted key"),
            )),
        }
    }
}

/// Where `create` learns the outcome: the peer's key and the handshake hash.
pub(crate) type Done = oneshot::Sender<Result<(PublicKey, [u8; 32])>>;

struct Established {
    transport: TransportState,
    replay: ReplayWindow,
}

enum Phase {
    Handshake(Box<HandshakeState>),
    Established(Box<Established>),
    /// Transient, while moving between the other two.
    Switching,
}

/// One end of a secure channel.
pub(crate) struct ChannelWorker {
    vault: Vault,
    /// A static key made for this channel alone, deleted with it.
    own_static: Option<SecretHandle>,
    phase: Phase,
    local: Address,
    remote: Address,
    /// Where the peer's `remote` address is. For the initiator, first the
    /// route to the listener.
    peer_route: Route,
    trust: Trust,
    /// The initiator's `create` waits on this until the peer is ready.
    done: Option<Done>,
    /// The responder's first handshake message, handled in `initialize`.
    first: Option<Vec<u8>>,
    /// Responder: the listener's count of unfinished handshakes, which this
    /// one is part of until it ends.
    half_open: Option<Arc<AtomicUsize>>,
    /// Responder: stops this worker if the handshake does not finish in time.
    deadline: Option<tokio::task::JoinHandle<()>>,
}

/// How long a responder waits for the initiator to finish the handshake.
pub(crate) const RESPONDER_TIMEOUT: Duration = Duration::from_secs(30);
/// Unfinished handshakes one listener keeps at most; more are dropped.
pub(crate) const MAX_HALF_OPEN: usize = 1024;

impl ChannelWorker {
    pub(crate) fn initiator(
        vault: &Vault,
        s: SecretHandle,
        own_static: bool,
        addresses: (Address, Address),
        route: Route,
        trust: Trust,
        done: Done,
    ) -> Self {
        ChannelWorker {
            vault: vault.clone(),
            own_static: own_static.then(|| s.clone()),
            phase: Phase::Handshake(Box::new(HandshakeState::new(
                vault,
                Role::Initiator,
                &[],
                s,
            ))),
            local: addresses.0,
            remote: addresses.1,
            peer_route: route,
            trust,
            done: Some(done),
            first: None,
            half_open: None,
            deadline: None,
        }
    }

    fn responder(
        vault: &Vault,
        s: SecretHandle,
        addresses: (Address, Address),
        route: Route,
        trust: Trust,
        first: Vec<u8>,
        half_open: Arc<AtomicUsize>,
    ) -> Self {
        ChannelWorker {
            vault: vault.clone(),
            own_static: None,
            phase: Phase::Handshake(Box::new(HandshakeState::new(
                vault,
                Role::Responder,
                &[],
                s,
            ))),
            local: addresses.0,
            remote: addresses.1,
            peer_route: route,
            trust,
            done: None,
            first: Some(first),
            half_open: Some(half_open),
            deadline: None,
        }
    }

    async fn send_to_peer(&self, ctx: &Context, msg: ChannelMessage) -> Result<()> {
        ctx.send_from_address(self.peer_route.clone(), msg, self.remote.clone())
            .await
    }

    fn release_half_open(&mut self) {
        if let Some(n) = self.half_open.take() {
            n.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Ends this channel after a failure: tells a waiting `create`, stops.
    async fn fail(&mut self, ctx: &mut Context, e: Error) {
        warn!(channel = %self.local, error = %e, "secure channel failed");
        if let Some(done) = self.done.take() {
            let _ = done.send(Err(e));
        }
        let _ = ctx.stop_worker(self.local.clone()).await;
    }

    /// Encrypts one plaintext (its kind, then `body`) and sends it.
    async fn seal_and_send(
        &mut self,
        ctx: &Context,
        kind: u8,
        body: Option<&TransportMessage>,
    ) -> Result<()> {
        let Phase::Established(est) = &mut self.phase else {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "the secure channel is not established yet",
            ));
        };
        let nonce = est.transport.send.next_nonce()?;
        let payload = seal_transport(&est.transport.send, nonce, kind, body)?;
        let msg = TransportMessage::v1(self.peer_route.clone(), self.remote.clone(), payload);
        ctx.forward(LocalMessage::new(msg)).await
    }

    async fn handle_handshake(
        &mut self,
        ctx: &mut Context,
        data: Vec<u8>,
        from: Route,
    ) -> Result<()> {
        let Phase::Handshake(hs) = &mut self.phase else {
            debug!(channel = %self.local, "dropped a handshake message for an established channel");
            return Ok(());
        };
        hs.read_message(&data)?;
        if let Some(rs) = hs.remote_static() {
            self.trust.check(&rs)?;
        }
        let m3 = match hs.role() {
            Role::Initiator => Some(hs.write_message(&[])?),
            Role::Responder => None,
        };
        let finished = hs.is_finished();
        if let Some(m3) = m3 {
            // Message 2 came from the responder's `remote` address.
            self.peer_route = from;
            self.send_to_peer(ctx, ChannelMessage::Handshake(m3))
                .await?;
        }
        if finished {
            self.establish()?;
            if let Phase::Established(est) = &self.phase {
                info!(channel = %self.local, peer = %est.transport.remote_static, "secure channel handshake done");
            }
            if self.done.is_none() {
                // Responder: tell the initiator it may send.
                self.seal_and_send(ctx, PLAIN_READY, None).await?;
            }
        }
        Ok(())
    }

    fn establish(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.phase, Phase::Switching) {
            Phase::Handshake(hs) => {
                self.phase = Phase::Established(Box::new(Established {
                    transport: hs.into_transport()?,
                    replay: ReplayWindow::default(),
                }));
                self.release_half_open();
                if let Some(d) = self.deadline.take() {
                    d.abort();
                }
                Ok(())
            }
            other => {
                self.phase = other;
                Ok(())
            }
        }
    }

    /// Handles an encrypted message; `payload` is the whole encoded
    /// `ChannelMessage::Transport`, decrypted in place.
    async fn handle_transport(&mut self, ctx: &mut Context, mut payload: Vec<u8>) -> Result<()> {
        let Some((nonce, body, tag)) = parse_transport(&payload) else {
            warn!(channel = %self.local, "dropped a malformed encrypted message");
            return Ok(());
        };
        let Phase::Established(est) = &mut self.phase else {
            warn!(channel = %self.local, "dropped an encrypted message that arrived before the handshake ended");
            return Ok(());
        };
        let Established { transport, replay } = &mut **est;
        if !replay.check(nonce) {
            warn!(channel = %self.local, nonce, "dropped a replayed (or too old) message");
            return Ok(());
        }
        let plain = &mut payload[body];
        if let Err(e) = transport
            .recv
            .decrypt_slice_with_nonce(nonce, &[], plain, &tag)
        {
            warn!(channel = %self.local, nonce, error = %e, "dropped a message that failed authentication");
            return Ok(());
        }
        replay.accept(nonce);
        let peer = transport.remote_static;
        let hash = transport.handshake_hash;
        match plain.first() {
            Some(&PLAIN_READY) => {
                if let Some(done) = self.done.take() {
                    let _ = done.send(Ok((peer, hash)));
                }
            }
            Some(&PLAIN_MESSAGE) => {
                let mut inner = match TransportMessage::decode(&plain[1..]) {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(channel = %self.local, error = %e, "dropped a decrypted message that does not decode");
                        return Ok(());
                    }
                };
                // Replies come back through this channel.
                inner.return_route.modify().prepend(self.local.clone());
                if let Err(e) = ctx.forward(LocalMessage::new(inner)).await {
                    warn!(channel = %self.local, error = %e, "dropped a message from the secure channel");
                }
            }
            _ => warn!(channel = %self.local, "dropped a decrypted message of unknown kind"),
        }
        Ok(())
    }

    async fn handle_plaintext(&mut self, ctx: &mut Context, local: LocalMessage) -> Result<()> {
        let mut inner = local.into_transport_message();
        // Our own `local` address is done.
        inner.onward_route.step()?;
        self.seal_and_send(ctx, PLAIN_MESSAGE, Some(&inner)).await
    }
}

#[async_trait]
impl Worker for ChannelWorker {
    type Message = Any;
    type Context = Context;

    async fn initialize(&mut self, ctx: &mut Context) -> Result<()> {
        if self.first.is_some() {
            // A responder: give up if the initiator never finishes.
            let watcher = ctx.new_context(Address::random_local()).await?;
            let me = self.local.clone();
            self.deadline = Some(tokio::spawn(async move {
                tokio::time::sleep(RESPONDER_TIMEOUT).await;
                warn!(channel = %me, "secure channel handshake not finished in time; giving up");
                let _ = watcher.stop_worker(me).await;
            }));
        }
        let r = async {
            let Phase::Handshake(hs) = &mut self.phase else {
                return Ok(());
            };
            match self.first.take() {
                // Initiator: message 1.
                None => {
                    let m1 = hs.write_message(&[])?;
                    self.send_to_peer(ctx, ChannelMessage::Handshake(m1)).await
                }
                // Responder: read message 1, answer with message 2.
                Some(m1) => {
                    hs.read_message(&m1)?;
                    let m2 = hs.write_message(&[])?;
                    self.send_to_peer(ctx, ChannelMessage::Handshake(m2)).await
                }
            }
        }
        .await;
        if let Err(e) = r {
            if let Some(done) = self.done.take() {
                let _ = done.send(Err(e.clone()));
            }
            // `shutdown` does not run after a failed `initialize`.
            self.release_half_open();
            if let Some(d) = self.deadline.take() {
                d.abort();
            }
            return Err(e);
        }
        Ok(())
    }

    async fn shutdown(&mut self, _ctx: &mut Context) -> Result<()> {
        if let Some(s) = self.own_static.take() {
            self.vault.delete(&s);
        }
        self.release_half_open();
        if let Some(d) = self.deadline.take() {
            d.abort();
        }
        Ok(())
    }

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let to_local = msg.msg_addr() == Some(&self.local);
        let local = msg.into_local_message();
        if to_local {
            if let Err(e) = self.handle_plaintext(ctx, local).await {
                warn!(channel = %self.local, error = %e, "could not send through the secure channel");
            }
            return Ok(());
        }
        // The hot path: encrypted messages, decrypted where they lie.
        if parse_transport(&local.transport().payload).is_some() {
            return self
                .handle_transport(ctx, local.into_transport_message().payload)
                .await;
        }
        let return_route = local.transport().return_route.clone();
        let cm = match ChannelMessage::decode(&local.transport().payload) {
            Ok(m) => m,
            Err(e) => {
                warn!(channel = %self.local, error = %e, "dropped a message that is not a channel message");
                return Ok(());
            }
        };
        match cm {
            ChannelMessage::Handshake(data) => {
                if let Err(e) = self.handle_handshake(ctx, data, return_route).await {
                    if self.done.is_none() {
                        // Responder: tell the initiator why, when it is
                        // about trust; then give up this channel.
                        if e.kind() == ErrorKind::Security {
                            let _ = self
                                .send_to_peer(ctx, ChannelMessage::Refused(e.message().to_string()))
                                .await;
                        }
                    }
                    self.fail(ctx, e).await;
                }
            }
            ChannelMessage::Transport { .. } => {
                warn!(channel = %self.local, "dropped a malformed encrypted message");
            }
            ChannelMessage::Refused(reason) => {
                if self.done.is_some() {
                    self.fail(
                        ctx,
                        Error::new(
                            ErrorKind::Security,
                            format!("the listener refused the channel: {reason}"),
                        ),
                    )
                    .await;
                } else {
                    debug!(channel = %self.local, %reason, "ignored a refusal for an established channel");
                }
            }
        }
        Ok(())
    }
}

/// Starts a responder end for every first handshake message it receives.
pub(crate) struct ListenerWorker {
    pub(crate) vault: Vault,
    pub(crate) s: SecretHandle,
    pub(crate) trust: Trust,
    pub(crate) half_open: Arc<AtomicUsize>,
}

#[async_trait]
impl Worker for ListenerWorker {
    type Message = ChannelMessage;
    type Context = Context;

    async fn handle_message(
        &mut self,
        ctx: &mut Context,
        msg: Routed<ChannelMessage>,
    ) -> Result<()> {
        let return_route = msg.return_route();
        let ChannelMessage::Handshake(m1) = msg.body() else {
            warn!(listener = %ctx.address(), "dropped a message that does not start a handshake");
            return Ok(());
        };
        if self.half_open.fetch_add(1, Ordering::AcqRel) >= MAX_HALF_OPEN {
            self.half_open.fetch_sub(1, Ordering::AcqRel);
            warn!(listener = %ctx.address(), "too many unfinished handshakes; dropped a new one");
            return Ok(());
        }
        let addresses = (Address::random_local(), Address::random_local());
        debug!(listener = %ctx.address(), channel = %addresses.0, "starting a secure channel responder");
        let w = ChannelWorker::responder(
            &self.vault,
            self.s.clone(),
            addresses.clone(),
            return_route,
            self.trust.clone(),
            m1,
            self.half_open.clone(),
        );
        ctx.start_worker(vec![addresses.0, addresses.1], w).await
    }
}

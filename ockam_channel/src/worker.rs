//! The workers: one [`ChannelWorker`] per channel end, with two addresses
//! (`local`: plaintext from this node's workers goes in here; `remote`: the
//! peer's ciphertexts arrive here), and a [`ListenerWorker`] that starts a
//! responder end for every handshake that reaches it.
//!
//! The worker runs the handshake. Once it is done, both addresses get
//! inline handlers sharing one [`Secure`] state: what is sent to `local` is
//! encrypted on the sender's own task and handed on, and what arrives at
//! `remote` is decrypted in the task that delivers it (a TCP reader), so a
//! message through a channel costs no worker mailbox hop on either side.

use crate::cipher_state::CipherState;
use crate::handshake_state::{HandshakeState, Role};
use crate::messages::{
    parse_transport, seal_transport, split_plaintext, ChannelMessage, HeadCache, Transport,
    PLAIN_CLOSE, PLAIN_MESSAGE, PLAIN_READY,
};
use crate::replay::ReplayWindow;
use ockam_core::internal::sync::lock;
use ockam_core::{
    async_trait, Address, Any, Error, ErrorKind, LocalMessage, Message, Result, Route, Routed,
    TransportMessage, Worker,
};
use ockam_node::HelperTask;
use ockam_node::{Context, InlineHandler, Onward};
use ockam_vault::{PublicKey, SecretHandle, Vault};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tracing::{debug, info, warn};

/// Which peer keys an end accepts: those in `keys` (all if `None`) that
/// `admit` accepts (all if `None`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Trust {
    pub(crate) keys: Option<Arc<Vec<PublicKey>>>,
    pub(crate) admit: Option<crate::Admit>,
}

impl Trust {
    fn check(&self, key: &PublicKey) -> Result<()> {
        let listed = self.keys.as_ref().is_none_or(|keys| keys.contains(key));
        let admitted = self.admit.as_ref().is_none_or(|admit| (admit.0)(key));
        if listed && admitted {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Security,
            format!("the peer's static key {key} is not a trusted key"),
        ))
    }
}

/// The peer key behind each established channel end of a node (its
/// `local` address), for [`SecureChannel::peer_identity`](crate::SecureChannel::peer_identity).
#[derive(Default)]
pub(crate) struct Identities(Mutex<std::collections::HashMap<Address, PublicKey>>);

impl Identities {
    pub(crate) fn get(&self, address: &Address) -> Option<PublicKey> {
        lock(&self.0).get(address).copied()
    }
}

/// The node's [`Identities`].
pub(crate) fn identities(ctx: &Context) -> Arc<Identities> {
    ctx.node_extension(Identities::default)
}

/// Where `create` learns the outcome: the peer's key and the handshake hash.
pub(crate) type Done = oneshot::Sender<Result<(PublicKey, [u8; 32])>>;

/// An established channel end: shared by its worker and the inline
/// handlers of its two addresses, which encrypt and decrypt on the sending
/// task's thread (no task switch per message).
pub(crate) struct Secure {
    local: Address,
    send: Mutex<SendHalf>,
    recv: Mutex<RecvHalf>,
    remote_static: PublicKey,
    handshake_hash: [u8; 32],
    /// The initiator's `create`, told when the responder is ready.
    done: Mutex<Option<Done>>,
    /// Why the channel ended, once it has: sends through it fail from then.
    ended: OnceLock<Ended>,
    /// Woken when the peer closes its end (`PLAIN_CLOSE`).
    peer_closed: Notify,
}

/// How an established channel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// This end's worker stopped (the peer is told).
    Closed,
    /// The peer closed its end.
    ClosedByPeer,
    /// The connection the channel's first hop went through closed: the
    /// peer's way back to this end went with it.
    Lost,
}

struct SendHalf {
    cipher: CipherState,
    /// Where the peer's `remote` address is.
    peer_route: Route,
}

struct RecvHalf {
    cipher: CipherState,
    replay: ReplayWindow,
    heads: HeadCache,
}

impl Secure {
    /// Records why the channel ended; `false` if it had ended already.
    fn end(&self, why: Ended) -> bool {
        self.ended.set(why).is_ok()
    }

    /// Fails when the channel has ended.
    fn check_open(&self) -> Result<()> {
        let why = match self.ended.get() {
            None => return Ok(()),
            Some(Ended::Closed) => "is closed",
            Some(Ended::ClosedByPeer) => "was closed by its peer",
            Some(Ended::Lost) => "was lost: the connection to its peer closed",
        };
        Err(Error::new(
            ErrorKind::Unavailable,
            format!(
                "the secure channel {} {why}; the message was not sent",
                self.local
            ),
        ))
    }

    /// Encrypts one plaintext (`body` and its kind) and passes it on to
    /// the peer. The nonce is taken and the message handed on under one
    /// lock, so ciphertexts leave in nonce order.
    fn seal_and_send(
        &self,
        kind: u8,
        body: Option<TransportMessage>,
        onward: &mut Onward<'_>,
    ) -> Result<()> {
        let mut send = lock(&self.send);
        let nonce = send.cipher.next_nonce()?;
        let sealed = seal_transport(&send.cipher, nonce, kind, body)?;
        // No return route: the peer sends back along its own route to our
        // `remote` address, and the hops on the way (a TCP connection on
        // the far side) then have fewer addresses to decode and prepend to.
        onward.forward_parts(
            &send.peer_route,
            &Route::empty(),
            sealed.prefix.as_slice(),
            sealed.ciphertext,
        )
    }

    /// Plaintext from this node, sent to our `local` address.
    fn send_plaintext(&self, local: LocalMessage, onward: &mut Onward<'_>) -> Result<()> {
        self.check_open()?;
        let mut inner = local.into_transport_message();
        // Our own `local` address is done.
        inner.onward_route.step()?;
        self.seal_and_send(PLAIN_MESSAGE, Some(inner), onward)
    }

    /// Decrypts a `ChannelMessage::Transport` (the whole encoded payload,
    /// as `parse_transport` found it, decrypted to the front of its own
    /// buffer) and passes the message inside on. What is not authentic,
    /// replayed or malformed is dropped with a log line.
    fn receive(&self, mut payload: Vec<u8>, parsed: Transport, onward: &mut Onward<'_>) {
        let (nonce, ciphertext, tag) = parsed;
        let mut inner = {
            let mut recv = lock(&self.recv);
            if !recv.replay.check(nonce) {
                warn!(channel = %self.local, nonce, dropped = 1, "dropped a replayed (or too old) message");
                return;
            }
            if let Err(e) = recv.cipher.decrypt_slice_with_nonce(
                nonce,
                &[],
                &mut payload[..ciphertext.end],
                ciphertext.start,
                &tag,
            ) {
                warn!(channel = %self.local, nonce, error = %e, dropped = 1, "dropped a message that failed authentication");
                return;
            }
            recv.replay.accept(nonce);
            payload.truncate(ciphertext.len());
            let Some((kind, head)) = split_plaintext(&payload) else {
                warn!(channel = %self.local, dropped = 1, "dropped a decrypted message that is not laid out as a channel message");
                return;
            };
            match kind {
                PLAIN_MESSAGE => match recv.heads.decode(payload, head) {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(channel = %self.local, error = %e, dropped = 1, "dropped a decrypted message that does not decode");
                        return;
                    }
                },
                PLAIN_READY if head.is_empty() && head.start == 0 => {
                    drop(recv);
                    if let Some(done) = lock(&self.done).take() {
                        let _ = done.send(Ok((self.remote_static, self.handshake_hash)));
                    }
                    return;
                }
                PLAIN_CLOSE if head.is_empty() && head.start == 0 => {
                    drop(recv);
                    if self.end(Ended::ClosedByPeer) {
                        self.peer_closed.notify_one();
                    }
                    return;
                }
                _ => {
                    warn!(channel = %self.local, dropped = 1, "dropped a decrypted message of unknown kind");
                    return;
                }
            }
        };
        // Replies come back through this channel.
        inner.return_route.modify().prepend(self.local.clone());
        if let Err(e) = onward.forward(LocalMessage::new(inner)) {
            warn!(channel = %self.local, error = %e, dropped = 1, "dropped a message from the secure channel");
        }
    }
}

/// Encrypts what this node's workers send to the channel's `local` address.
struct LocalHandler(Arc<Secure>);

impl InlineHandler for LocalHandler {
    fn handle(&self, msg: LocalMessage, onward: &mut Onward<'_>) -> Result<Option<LocalMessage>> {
        self.0.send_plaintext(msg, onward)?;
        Ok(None)
    }
}

/// Decrypts what the peer sends to the channel's `remote` address; anything
/// else (late handshake messages, refusals) goes to the worker.
struct RemoteHandler(Arc<Secure>);

impl InlineHandler for RemoteHandler {
    fn handle(&self, msg: LocalMessage, onward: &mut Onward<'_>) -> Result<Option<LocalMessage>> {
        let Some(parsed) = parse_transport(&msg.transport().payload) else {
            return Ok(Some(msg));
        };
        self.0
            .receive(msg.into_transport_message().payload, parsed, onward);
        Ok(None)
    }
}

enum Phase {
    Handshake(Box<HandshakeState>),
    Established(Arc<Secure>),
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
    initiator: bool,
    /// The responder's first handshake message, handled in `initialize`.
    first: Option<Vec<u8>>,
    /// Responder: the listener's count of responders, which this one is
    /// part of until it stops (as a handshake, then as a channel).
    responders: Option<Arc<Mutex<Responders>>>,
    /// Responder: stops this worker if the handshake does not finish in time.
    deadline: Option<HelperTask>,
    /// Established: stops this worker when the peer closes its end or the
    /// connection to it closes (see [`ChannelWorker::watch`]).
    watcher: Option<HelperTask>,
}

/// How long a responder waits for the initiator to finish the handshake.
pub(crate) const RESPONDER_TIMEOUT: Duration = Duration::from_secs(30);
/// Unfinished handshakes one listener keeps at most; more are dropped.
pub(crate) const MAX_HALF_OPEN: usize = 1024;
/// Unfinished handshakes one peer (the first hop of the route a handshake
/// came over: a TCP connection) may have with one listener; more of its
/// handshakes are dropped, so that one peer cannot take every place.
pub(crate) const MAX_HALF_OPEN_PER_PEER: usize = 64;

/// How often an established channel end checks that the connection its
/// first hop goes through is still the one the channel was made over.
pub(crate) const PRESENCE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a stopping end waits to hand its `PLAIN_CLOSE` on.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A listener's responders: unfinished handshakes in all and per peer, and
/// established channels per peer. A peer is the first hop of the route a
/// handshake came over (a TCP connection), see [`Route::peer`]; a handshake
/// from this node itself is not counted per peer.
pub(crate) struct Responders {
    half_open: usize,
    half_open_per_peer: HashMap<Address, usize>,
    established_per_peer: HashMap<Address, usize>,
    max_channels_per_peer: usize,
}

/// Why a listener does not start a responder for a handshake.
pub(crate) enum Refusal {
    /// Too many unfinished handshakes: dropped without a word (a flood).
    Drop,
    /// The peer has its share of channels: the initiator is told why.
    Refuse(String),
}

fn decrement(map: &mut HashMap<Address, usize>, peer: Option<&Address>) {
    if let Some(peer) = peer {
        if let Some(n) = map.get_mut(peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(peer);
            }
        }
    }
}

impl Responders {
    /// No responders yet; a peer may have `max_channels_per_peer` channels
    /// (unfinished or established) at once.
    pub(crate) fn new(max_channels_per_peer: usize) -> Self {
        Responders {
            half_open: 0,
            half_open_per_peer: HashMap::new(),
            established_per_peer: HashMap::new(),
            max_channels_per_peer,
        }
    }

    /// Takes a place for a handshake from `peer`, if one is free.
    fn take(&mut self, peer: Option<&Address>) -> std::result::Result<(), Refusal> {
        if self.half_open >= MAX_HALF_OPEN {
            return Err(Refusal::Drop);
        }
        if let Some(peer) = peer {
            let half_open = self.half_open_per_peer.get(peer).copied().unwrap_or(0);
            if half_open >= MAX_HALF_OPEN_PER_PEER {
                return Err(Refusal::Drop);
            }
            let established = self.established_per_peer.get(peer).copied().unwrap_or(0);
            if half_open + established >= self.max_channels_per_peer {
                return Err(Refusal::Refuse(format!(
                    "{peer} has {} secure channels with this listener, the most one peer may have",
                    self.max_channels_per_peer
                )));
            }
            *self.half_open_per_peer.entry(peer.clone()).or_insert(0) += 1;
        }
        self.half_open += 1;
        Ok(())
    }

    /// A handshake [`Responders::take`] counted ended: established (it
    /// counts as a channel of `peer` from now on) or not.
    fn handshake_ended(&mut self, peer: Option<&Address>, established: bool) {
        self.half_open = self.half_open.saturating_sub(1);
        decrement(&mut self.half_open_per_peer, peer);
        if let (Some(peer), true) = (peer, established) {
            *self.established_per_peer.entry(peer.clone()).or_insert(0) += 1;
        }
    }

    /// An established channel of `peer` stopped.
    fn channel_ended(&mut self, peer: Option<&Address>) {
        decrement(&mut self.established_per_peer, peer);
    }
}

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
            initiator: true,
            first: None,
            responders: None,
            deadline: None,
            watcher: None,
        }
    }

    fn responder(
        vault: &Vault,
        s: SecretHandle,
        addresses: (Address, Address),
        route: Route,
        trust: Trust,
        first: Vec<u8>,
        responders: Arc<Mutex<Responders>>,
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
            initiator: false,
            first: Some(first),
            responders: Some(responders),
            deadline: None,
            watcher: None,
        }
    }

    async fn send_to_peer(&self, ctx: &Context, msg: ChannelMessage) -> Result<()> {
        ctx.send_from_address(self.peer_route.clone(), msg, self.remote.clone())
            .await
    }

    /// A responder's handshake is done (called once, as it becomes
    /// established): its place with the listener is now a channel's, kept
    /// until [`ChannelWorker::release_place`].
    fn became_channel(&mut self) {
        if let Some(responders) = &self.responders {
            lock(responders).handshake_ended(self.peer_route.peer(0), true);
        }
        self.deadline = None; // aborts it
    }

    /// A responder stops: gives back its place with the listener (as an
    /// unfinished handshake or as a channel).
    fn release_place(&mut self) {
        if let Some(responders) = self.responders.take() {
            let peer = self.peer_route.peer(0);
            // Established: counted as a channel since `became_channel`.
            if matches!(self.phase, Phase::Established(_)) {
                lock(&responders).channel_ended(peer);
            } else {
                lock(&responders).handshake_ended(peer, false);
            }
        }
        self.deadline = None; // aborts it
    }

    /// Ends this channel after a failure: tells a waiting `create`, stops.
    async fn fail(&mut self, ctx: &mut Context, e: Error) {
        warn!(channel = %self.local, error = %e, "secure channel failed");
        if let Some(done) = self.done.take() {
            let _ = done.send(Err(e));
        }
        let _ = ctx.stop_worker(self.local.clone()).await;
    }

    /// Runs `f` on the established channel from the worker's own task (as
    /// the inline handlers do on the sender's), then waits for the
    /// back-pressure its deliveries met.
    async fn on_secure<R>(
        &self,
        ctx: &Context,
        f: impl FnOnce(&Secure, &mut Onward<'_>) -> R,
    ) -> Result<R> {
        let secure = self.secure()?;
        let mut onward = ctx.onward();
        let r = f(secure, &mut onward);
        ctx.settle(onward).await?;
        Ok(r)
    }

    fn secure(&self) -> Result<&Arc<Secure>> {
        match &self.phase {
            Phase::Established(secure) => Ok(secure),
            _ => Err(Error::new(
                ErrorKind::Unavailable,
                "the secure channel is not established yet",
            )),
        }
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
            self.establish(ctx)?;
            self.watch(ctx)?;
            info!(channel = %self.local, peer = %self.secure()?.remote_static, "secure channel handshake done");
            if !self.initiator {
                // Tell the initiator it may send.
                self.on_secure(ctx, |s, onward| s.seal_and_send(PLAIN_READY, None, onward))
                    .await??;
            }
        }
        Ok(())
    }

    /// Ends the handshake: from now on the channel's addresses encrypt and
    /// decrypt inline (see [`Secure`]).
    fn establish(&mut self, ctx: &Context) -> Result<()> {
        let Phase::Handshake(hs) = std::mem::replace(&mut self.phase, Phase::Switching) else {
            return Ok(());
        };
        let transport = hs.into_transport()?;
        let secure = Arc::new(Secure {
            local: self.local.clone(),
            send: Mutex::new(SendHalf {
                cipher: transport.send,
                peer_route: self.peer_route.clone(),
            }),
            recv: Mutex::new(RecvHalf {
                cipher: transport.recv,
                replay: ReplayWindow::default(),
                heads: HeadCache::default(),
            }),
            remote_static: transport.remote_static,
            handshake_hash: transport.handshake_hash,
            done: Mutex::new(self.done.take()),
            ended: OnceLock::new(),
            peer_closed: Notify::new(),
        });
        ctx.set_inline_handler(&self.local, Some(Arc::new(LocalHandler(secure.clone()))))?;
        ctx.set_inline_handler(&self.remote, Some(Arc::new(RemoteHandler(secure.clone()))))?;
        lock(&identities(ctx).0).insert(self.local.clone(), secure.remote_static);
        self.phase = Phase::Established(secure);
        self.became_channel();
        Ok(())
    }

    /// Starts the established channel's watcher, which stops this worker
    /// when the peer closes its end (`PLAIN_CLOSE`), or when what carries
    /// the first hop of the route to the peer (its TCP connection) is gone
    /// or replaced, checked every [`PRESENCE_INTERVAL`]: the peer's way
    /// back to this end went with it (issue 18: a hub kept the responders
    /// of departed clients for ever). Sends through the channel fail from
    /// then on, saying why.
    fn watch(&mut self, ctx: &Context) -> Result<()> {
        let secure = self.secure()?.clone();
        let hop = self.peer_route.next()?.clone();
        let carrier = ctx.carrier(&hop);
        // A handle, not a context: the watcher adds no address to the
        // node, and nothing of it outlives the worker's `shutdown`.
        let node = ctx.node_handle();
        let channel = self.local.clone();
        self.watcher = Some(ctx.spawn_helper(async move {
            loop {
                tokio::select! {
                    // A transport that cannot tell what carries the hop:
                    // only the peer's word ends the channel.
                    _ = tokio::time::sleep(PRESENCE_INTERVAL), if carrier.is_some() => {
                        if node.carrier(&hop) != carrier && secure.end(Ended::Lost) {
                            warn!(channel = %channel, %hop, "secure channel lost: the connection to its peer closed; ending it");
                            break;
                        }
                    }
                    _ = secure.peer_closed.notified() => {
                        info!(channel = %channel, "the peer closed the secure channel; ending it");
                        break;
                    }
                }
            }
            node.request_stop(&channel);
        }));
        Ok(())
    }

    /// Tells the peer this end is closing, unless the channel ended
    /// already (the peer closed it, or it cannot be reached).
    async fn close(&mut self, ctx: &Context) {
        let Phase::Established(secure) = &self.phase else {
            return;
        };
        if !secure.end(Ended::Closed) {
            return;
        }
        let sent = tokio::time::timeout(
            CLOSE_TIMEOUT,
            self.on_secure(ctx, |s, onward| s.seal_and_send(PLAIN_CLOSE, None, onward)),
        )
        .await;
        match sent {
            Ok(Ok(Ok(()))) => {
                debug!(channel = %self.local, "secure channel closed; the peer was told")
            }
            Ok(Ok(Err(e)) | Err(e)) => {
                debug!(channel = %self.local, error = %e, "secure channel closed; could not tell the peer")
            }
            Err(_) => {
                debug!(channel = %self.local, "secure channel closed; telling the peer took too long")
            }
        }
    }
}
#[async_trait]
impl Worker for ChannelWorker {
    type Message = Any;
    type Context = Context;

    async fn initialize(&mut self, ctx: &mut Context) -> Result<()> {
        if self.first.is_some() {
            // A responder: give up if the initiator never finishes.
            let node = ctx.node_handle();
            let me = self.local.clone();
            self.deadline = Some(ctx.spawn_after(RESPONDER_TIMEOUT, async move {
                warn!(channel = %me, "secure channel handshake not finished in time; giving up");
                node.request_stop(&me);
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
            self.release_place();
            return Err(e);
        }
        Ok(())
    }

    async fn shutdown(&mut self, ctx: &mut Context) -> Result<()> {
        self.close(ctx).await;
        lock(&identities(ctx).0).remove(&self.local);
        if let Some(s) = self.own_static.take() {
            self.vault.delete(&s);
        }
        self.release_place();
        self.watcher = None; // aborts it
        Ok(())
    }

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        // Once established, messages mostly skip this mailbox (the inline
        // handlers take them); those that still come here (sent with
        // `forward_to`, or looping back into a handler) take the same way.
        let to_local = msg.msg_addr() == Some(&self.local);
        let local = msg.into_local_message();
        if to_local {
            let r = self
                .on_secure(ctx, |s, onward| s.send_plaintext(local, onward))
                .await;
            if let Err(e) = r.and_then(|r| r) {
                warn!(channel = %self.local, error = %e, "could not send through the secure channel");
            }
            return Ok(());
        }
        if let Some(parsed) = parse_transport(&local.transport().payload) {
            let payload = local.into_transport_message().payload;
            let r = self
                .on_secure(ctx, |s, onward| s.receive(payload, parsed, onward))
                .await;
            if r.is_err() {
                warn!(channel = %self.local, dropped = 1, "dropped an encrypted message that arrived before the handshake ended");
            }
            return Ok(());
        }
        let return_route = local.transport().return_route.clone();
        let cm = match ChannelMessage::decode(&local.transport().payload) {
            Ok(m) => m,
            Err(e) => {
                warn!(channel = %self.local, error = %e, dropped = 1, "dropped a message that is not a channel message");
                return Ok(());
            }
        };
        match cm {
            ChannelMessage::Handshake(data) => {
                if let Err(e) = self.handle_handshake(ctx, data, return_route).await {
                    if !self.initiator {
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
                warn!(channel = %self.local, dropped = 1, "dropped a malformed encrypted message");
            }
            ChannelMessage::Refused(reason) => {
                // The initiator's handshake is over once it sent message 3,
                // but `create` waits for the responder's word.
                if let Phase::Established(secure) = &self.phase {
                    if self.done.is_none() {
                        self.done = lock(&secure.done).take();
                    }
                }
                if self.initiator && self.done.is_some() {
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
    pub(crate) responders: Arc<Mutex<Responders>>,
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
            warn!(listener = %ctx.address(), dropped = 1, "dropped a message that does not start a handshake");
            return Ok(());
        };
        let peer = return_route.peer(0).cloned();
        let taken = lock(&self.responders).take(peer.as_ref());
        match taken {
            Ok(()) => {}
            Err(Refusal::Drop) => {
                warn!(listener = %ctx.address(), peer = ?peer, dropped = 1, "too many unfinished handshakes (at most {MAX_HALF_OPEN}, {MAX_HALF_OPEN_PER_PEER} per peer); dropped a new one");
                return Ok(());
            }
            Err(Refusal::Refuse(why)) => {
                warn!(listener = %ctx.address(), peer = ?peer, "refused a secure channel: {why}");
                if let Err(e) = ctx.send(return_route, ChannelMessage::Refused(why)).await {
                    debug!(listener = %ctx.address(), error = %e, "could not send a refusal");
                }
                return Ok(());
            }
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
            self.responders.clone(),
        );
        ctx.start_worker(vec![addresses.0, addresses.1], w).await
    }
}

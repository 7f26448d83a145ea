//! The Kafka back end in a child process, supervised by the hub.
//!
//! librdkafka is C: a fault in it (issue 18: a SIGSEGV in its metadata
//! cache after the broker came back without its data) ends the process it
//! runs in. So that it cannot take down the services that do not use Kafka
//! (echo, forwarding, the embedded store's streams), the hub binary runs
//! `stream_kafka` and `stream_kafka_index` in a child process of itself
//! (`ockam_hub --kafka-child ...`, a node with those two services alone,
//! listening on a loopback port it reports on its standard output), and
//! passes each message for them on over TCP, routes and all: the child's
//! answers, and the stream workers it creates, are reached back through the
//! hub like any other hop (`KafkaProxy`).
//!
//! When the child ends, however it ends, the hub logs how (exit code or
//! signal) at error level and starts another after a pause (1 s, doubling
//! up to 30 s while it keeps failing within a minute of its start).
//! Meanwhile messages for the Kafka services are dropped with a warning;
//! stream clients time out and open their streams again, which reaches the
//! new child. Stream workers and waiting pulls of the old child are gone;
//! what Kafka stored is not (confirmed pushes were confirmed by Kafka).
//!
//! The child exits when its standard input closes: when the hub exits,
//! also by `kill -9`, no child is left behind.
//!
//! # A closed hub's child (issue 16)
//!
//! A closed hub checks who asks before anything reaches the child, and the
//! child serves nobody else:
//! - Every message to and from the child passes the hub's **gate**
//!   ([`GATE`]): `stream_kafka` and `stream_kafka_index` on the hub send
//!   requests to it, and it puts itself first in the return route of
//!   everything the child sends back, so that a client's later requests to
//!   its stream worker (route `[gate, worker]`) come through it too. The
//!   gate checks each request against the access file as the embedded
//!   store's services do (open a stream: push or pull right; push; pull;
//!   read positions: pull right), answers refusals itself, learns from each
//!   `Init` which stream a child's stream worker serves, and keeps a
//!   client's read positions its identity's own: it sends the child client
//!   id `{identity}/{client_id}` (the Kafka consumer group
//!   `{prefix}{identity}/{client_id}`, as the in-process back end names it)
//!   and gives the client its own id back in the answer.
//! - The hub reaches the child through a secure channel that the hub opens
//!   with its own identity to the child's listener ([`CHILD_LISTENER`]),
//!   which admits that identity alone; the child pins the listener key the
//!   child printed. The child ([`crate::Access::Relayed`]) serves only what
//!   comes over that channel from the gate: another process on the machine
//!   that connects to the child's loopback port, or a client that routes
//!   through the hub's channel without the gate, is refused.

use crate::access::{Access, Operation};
use crate::services::Limits;
use crate::services::{denied, index_owner, may_open, refuse, validate_pair};
use crate::store::KafkaConfig;
use async_trait::async_trait;
use ockam_channel::{SecureChannel, SecureChannelOptions};
use ockam_core::internal::sync::{read, write};
use ockam_core::{
    route, Address, Any, Error, ErrorKind, Message, Result, Route, Routed, Worker, TCP,
};
use ockam_node::Context;
use ockam_stream_client::protocol::{
    validate_name, CreateStreamRequest, Index, IndexRequest, Init, ProtocolPayload, StreamError,
    STREAM_CREATE, STREAM_INDEX, STREAM_PULL, STREAM_PULL_WAIT, STREAM_PUSH,
};
use ockam_transport_tcp::TcpTransport;
use ockam_vault::{PublicKey, SecretHandle, Vault};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tracing::{error, info, warn};

/// What the child prints on its standard output once it listens, before
/// its address (and, for a closed hub, a space and its listener's key).
pub const LISTENING: &str = "ockam_hub kafka child listening on ";

/// The address of a closed hub's gate, through which everything to and
/// from its Kafka child passes (see the module docs).
pub const GATE: &str = "kafka_gate";

/// The address of a closed hub's Kafka child's secure channel listener.
pub const CHILD_LISTENER: &str = "kafka_child_listener";

/// How long the hub waits for a new child to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The pause before restarting a child that ended, at first.
const RESTART_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause between restarts.
const MAX_RESTART_PAUSE: Duration = Duration::from_secs(30);
/// A child that ran this long before it ended restarts after the first
/// pause again.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// The arguments that make `ockam_hub` a Kafka child with `kafka` and
/// `limits` (the child's own flags, see `ockam_hub --help`); `hub`: the
/// identity of a closed hub, the only one the child is to serve.
pub fn child_args(kafka: &KafkaConfig, limits: &Limits, hub: Option<&PublicKey>) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--kafka-child".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--kafka-bootstrap-servers".into(),
        kafka.bootstrap_servers.clone(),
        "--kafka-prefix".into(),
        kafka.prefix.clone(),
        "--kafka-replication-factor".into(),
        kafka.replication_factor.to_string(),
        "--kafka-timeout-ms".into(),
        kafka.timeout.as_millis().to_string(),
        "--max-pull".into(),
        limits.max_pull.to_string(),
        "--max-wait-ms".into(),
        limits.max_wait.as_millis().to_string(),
        "--max-message-size".into(),
        limits.max_message_size.to_string(),
        "--idle-timeout-s".into(),
        limits.idle_timeout.as_secs().max(1).to_string(),
        "--max-stream-workers-per-peer".into(),
        limits.max_stream_workers_per_peer.max(1).to_string(),
    ];
    if let Some(hub) = hub {
        args.extend(["--kafka-child-hub-identity".into(), hub.to_string()]);
    }
    args
}

/// A closed hub's identity, with which it opens its secure channel to the
/// child.
#[derive(Clone)]
pub struct HubIdentity {
    /// The vault holding `secret`.
    pub vault: Vault,
    /// The hub's static key.
    pub secret: SecretHandle,
}

/// How the hub reaches the current child (`None` in a [`ChildLink`] while
/// it is being restarted).
#[derive(Clone, Debug)]
struct Link {
    /// The child's TCP address.
    tcp: String,
    /// The hub's end of its secure channel to the child (closed hubs).
    channel: Option<Address>,
}

/// The current child's [`Link`].
type ChildLink = Arc<RwLock<Option<Link>>>;

fn current(link: &ChildLink) -> Option<Link> {
    read(link).clone()
}

fn set(link: &ChildLink, to: Option<Link>) {
    *write(link) = to;
}

/// A child process running the Kafka services, as started.
struct Child {
    process: tokio::process::Child,
    address: String,
    /// The key of its secure channel listener (a closed hub's child).
    identity: Option<PublicKey>,
    /// The child's standard input: it exits when this closes. Kept apart
    /// from `process`, whose `wait` would close it.
    _stdin: Option<tokio::process::ChildStdin>,
}

/// Starts `program` with `args` (see [`child_args`]) and waits until it
/// says where it listens.
async fn spawn(program: &PathBuf, args: &[String]) -> Result<Child> {
    let mut process = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Io,
                format!("cannot start the Kafka child {}", program.display()),
                e,
            )
        })?;
    let stdin = process.stdin.take();
    let stdout = process.stdout.take().ok_or_else(|| {
        Error::new(
            ErrorKind::Internal,
            "the Kafka child has no standard output",
        )
    })?;
    let mut lines = BufReader::new(stdout).lines();
    let address = tokio::time::timeout(START_TIMEOUT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(addr) = line.strip_prefix(LISTENING) {
                return Some(addr.trim().to_string());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| {
        Error::new(
            ErrorKind::Unavailable,
            format!("the Kafka child did not say where it listens within {START_TIMEOUT:?}"),
        )
    })?;
    // Whatever else it prints is not read; keep the pipe drained.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let (address, identity) = match address.split_once(' ') {
        Some((address, key)) => (address.to_string(), Some(key.trim().parse()?)),
        None => (address, None),
    };
    Ok(Child {
        process,
        address,
        identity,
        _stdin: stdin,
    })
}

/// Connects to `child`; for a closed hub (`hub`), opens the secure channel
/// to it, pinned to the key it printed.
async fn connect(
    ctx: &Context,
    tcp: &TcpTransport,
    child: &Child,
    hub: Option<&HubIdentity>,
) -> Result<Link> {
    tcp.connect(&child.address).await?;
    let channel = match hub {
        None => None,
        Some(hub) => {
            let Some(key) = child.identity else {
                return Err(Error::new(
                    ErrorKind::Protocol,
                    "the Kafka child of a closed hub did not say its key",
                ));
            };
            let channel = SecureChannel::create_with_options(
                ctx,
                route![(TCP, child.address.as_str()), CHILD_LISTENER],
                &hub.vault,
                SecureChannelOptions {
                    static_key: Some(hub.secret.clone()),
                    trusted_peer: Some(key),
                    ..Default::default()
                },
            )
            .await?;
            Some(channel.address())
        }
    };
    Ok(Link {
        tcp: child.address.clone(),
        channel,
    })
}

/// How a child process ended, in words.
fn how_it_ended(status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}{}", signal_name(sig)),
            _ => format!("ended ({s})"),
        },
        Err(e) => format!("could not be waited for: {e}"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        6 => " (SIGABRT)",
        9 => " (SIGKILL)",
        11 => " (SIGSEGV)",
        15 => " (SIGTERM)",
        _ => "",
    }
}

/// How a hub keeps its Kafka child: the program and arguments that start
/// it (see [`child_args`]), and for a closed hub its identity and access
/// rules.
pub struct ChildConfig {
    /// The hub's own program.
    pub program: PathBuf,
    /// The child's arguments.
    pub args: Vec<String>,
    /// A closed hub's identity (`None`: an open hub, no gate).
    pub hub: Option<HubIdentity>,
    /// The hub's access rules, which its gate applies.
    pub access: Access,
}

/// Starts the Kafka child, the services `stream` and `index` on `ctx`
/// that pass messages on to it (through the gate, for a closed hub), and
/// the task that restarts it when it ends. Returns once the first child
/// listens (and, for a closed hub, its secure channel is up).
///
/// # Errors
/// The first child could not be started or did not say where it listens
/// (within 30 s); the channel to it could not be made; the services could
/// not be registered.
pub async fn start(
    ctx: &Context,
    tcp: Arc<TcpTransport>,
    config: ChildConfig,
    services: [&str; 2],
) -> Result<()> {
    let first = spawn(&config.program, &config.args).await?;
    let link: ChildLink = Arc::new(RwLock::new(Some(
        connect(ctx, &tcp, &first, config.hub.as_ref()).await?,
    )));
    info!(pid = first.process.id(), address = %first.address, gated = config.hub.is_some(), "Kafka back end started in a child process");
    let gated = config.hub.is_some();
    if gated {
        ctx.start_worker(
            GATE,
            Gate {
                access: config.access.clone(),
                link: link.clone(),
                workers: HashMap::new(),
                channel: None,
                last_sweep: Instant::now(),
            },
        )
        .await?;
    }
    for service in services {
        ctx.start_worker(
            service,
            KafkaProxy {
                service: service.into(),
                link: link.clone(),
                tcp: tcp.clone(),
                gated,
            },
        )
        .await?;
    }
    let supervisor = ctx.new_context(Address::random_local()).await?;
    tokio::spawn(supervise(supervisor, first, config, link, tcp));
    Ok(())
}

/// Waits for the child to end, says how, and starts another; for a closed
/// hub, also opens the secure channel to the child again should it end
/// while the child runs.
async fn supervise(
    ctx: Context,
    mut child: Child,
    config: ChildConfig,
    link: ChildLink,
    tcp: Arc<TcpTransport>,
) {
    let mut pause = RESTART_PAUSE;
    loop {
        let started = Instant::now();
        let pid = child.process.id();
        let status = loop {
            tokio::select! {
                status = child.process.wait() => break status,
                _ = tokio::time::sleep(Duration::from_secs(1)), if config.hub.is_some() => {
                    relink_if_gone(&ctx, &tcp, &child, &config, &link).await
                }
            }
        };
        set(&link, None);
        if started.elapsed() >= STABLE_AFTER {
            pause = RESTART_PAUSE;
        }
        error!(
            pid,
            ran_for = ?started.elapsed(),
            restart_in = ?pause,
            "the Kafka back end's child process {}; stream_kafka requests are dropped until it is restarted",
            how_it_ended(status)
        );
        loop {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RESTART_PAUSE);
            let started = match spawn(&config.program, &config.args).await {
                Ok(c) => match connect(&ctx, &tcp, &c, config.hub.as_ref()).await {
                    Ok(l) => Ok((c, l)),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match started {
                Ok((c, l)) => {
                    info!(pid = c.process.id(), address = %c.address, "Kafka back end restarted in a new child process");
                    set(&link, Some(l));
                    child = c;
                    break;
                }
                Err(e) => {
                    error!(error = %e, restart_in = ?pause, "the Kafka back end's child process did not start")
                }
            }
        }
    }
}

/// Opens the secure channel to a running child again if the last one
/// ended (logged; tried again a second later if it fails).
async fn relink_if_gone(
    ctx: &Context,
    tcp: &TcpTransport,
    child: &Child,
    config: &ChildConfig,
    link: &ChildLink,
) {
    let Some(channel) = current(link).and_then(|l| l.channel) else {
        return;
    };
    if ctx.is_present(&channel) != Some(false) {
        return;
    }
    warn!("the secure channel to the Kafka child ended; opening another");
    match connect(ctx, tcp, child, config.hub.as_ref()).await {
        Ok(l) => set(link, Some(l)),
        Err(e) => error!(error = %e, "cannot open a secure channel to the Kafka child"),
    }
}

/// `stream_kafka` / `stream_kafka_index` in the hub: passes each message on
/// to the same service in the Kafka child, with its return route (so the
/// answer, and everything after it, comes back through the hub): over TCP
/// for an open hub, through the [`Gate`] for a closed one.
struct KafkaProxy {
    service: String,
    link: ChildLink,
    /// Connections to the child are the hub's own: a message from a remote
    /// peer may not open one (`TcpOptions::connect_for_remote_senders`).
    tcp: Arc<TcpTransport>,
    /// A closed hub: requests go through the gate.
    gated: bool,
}

#[async_trait]
impl Worker for KafkaProxy {
    type Message = Any;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let mut local = msg.into_local_message();
        let transport = local.transport_mut();
        // Our own hop is done; the child's service is the next.
        transport.onward_route.step()?;
        let mut hops: Vec<Address> = Vec::new();
        if self.gated {
            hops.push(Address::from(GATE));
        } else {
            let Some(link) = current(&self.link) else {
                warn!(service = %self.service, from = %transport.return_route, dropped = 1, "the Kafka back end is restarting; dropped a request");
                return Ok(());
            };
            if let Err(e) = self.tcp.connect(&link.tcp).await {
                warn!(service = %self.service, error = %e, dropped = 1, "cannot reach the Kafka back end's child process; dropped a request");
                return Ok(());
            }
            hops.push(Address::new(TCP, link.tcp.as_str()));
        }
        hops.push(Address::from(self.service.as_str()));
        hops.extend(transport.onward_route.iter().cloned());
        transport.onward_route = Route::from(hops);
        if let Err(e) = ctx.forward(local).await {
            warn!(service = %self.service, error = %e, dropped = 1, "could not pass a request on to the Kafka back end");
        }
        Ok(())
    }
}

/// How long the gate remembers a child's stream worker that nobody used:
/// well past the child's idle timeout, after which the worker is gone.
const GATE_FORGETS_AFTER: Duration = Duration::from_secs(3600);

/// A stream worker of the child, as the gate knows it.
struct ChildWorker {
    /// The stream it serves (from its `Init`).
    stream: String,
    /// The route back to whoever opened it.
    owner: Route,
    last_used: Instant,
}

/// A closed hub's gate to its Kafka child (see the module docs).
struct Gate {
    access: Access,
    link: ChildLink,
    /// The child's stream workers, by address, as learned through
    /// `channel` (the hub's end of its channel to the child).
    workers: HashMap<Address, ChildWorker>,
    channel: Option<Address>,
    last_sweep: Instant,
}

#[async_trait]
impl Worker for Gate {
    type Message = Any;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let Some(link) = current(&self.link) else {
            warn!(from = %msg.return_route(), dropped = 1, "the Kafka back end is restarting; dropped a message at its gate");
            self.workers.clear();
            return Ok(());
        };
        let Some(channel) = link.channel else {
            return Ok(());
        };
        if self.channel.as_ref() != Some(&channel) {
            // A new child (or a new channel): what the gate knew is gone.
            self.workers.clear();
            self.channel = Some(channel.clone());
        }
        if msg.return_route().next().ok() == Some(&channel) {
            self.answer_from_child(ctx, msg).await
        } else {
            self.request_for_child(ctx, msg, channel).await
        }
    }
}

impl Gate {
    /// An answer of the child: on to the client, with the gate first in
    /// its return route instead of the channel; an `Init` teaches the gate
    /// a stream worker, an `Index` gets the client's own id back.
    async fn answer_from_child(&mut self, ctx: &Context, msg: Routed<Any>) -> Result<()> {
        let mut local = msg.into_local_message();
        let transport = local.transport_mut();
        transport.onward_route.step()?;
        transport.return_route.modify().pop_front().prepend(GATE);
        if let Ok(mut p) = ProtocolPayload::decode(&transport.payload) {
            if p.protocol == STREAM_CREATE {
                if let (Ok(init), Some(worker)) = (
                    p.decode_data::<Init>(STREAM_CREATE),
                    transport.return_route.iter().nth(1),
                ) {
                    self.sweep();
                    self.workers.insert(
                        worker.clone(),
                        ChildWorker {
                            stream: init.stream_name,
                            owner: transport.onward_route.clone(),
                            last_used: Instant::now(),
                        },
                    );
                }
            } else if p.protocol == STREAM_INDEX {
                if let Ok(mut index) = p.decode_data::<Index>(STREAM_INDEX) {
                    if let Some((_, own)) = index.client_id.split_once('/') {
                        index.client_id = own.to_string();
                        p = ProtocolPayload::new(STREAM_INDEX, &index)?;
                        transport.payload = p.encode()?;
                    }
                }
            }
        }
        ctx.forward(local).await
    }

    /// A client's request for the child: checked, then on through the
    /// channel. Refusals are answered here.
    async fn request_for_child(
        &mut self,
        ctx: &Context,
        msg: Routed<Any>,
        channel: Address,
    ) -> Result<()> {
        let back = msg.return_route();
        let onward = msg.onward_route();
        let target = match onward.iter().collect::<Vec<_>>().as_slice() {
            [_gate, target] => (*target).clone(),
            _ => {
                let why = "a route through the Kafka gate names one service or stream worker";
                return refuse(ctx, back, StreamError::new("", why)).await;
            }
        };
        let mut p = match ProtocolPayload::decode(msg.payload()) {
            Ok(p) => p,
            Err(e) => {
                let why = format!("not a stream protocol payload: {e}");
                return refuse(ctx, back, StreamError::new("", why)).await;
            }
        };
        let access = &self.access;
        if target == Address::from("stream_kafka") {
            let req = p.decode_data::<CreateStreamRequest>(STREAM_CREATE);
            let Ok(CreateStreamRequest { stream_name }) = req else {
                // Someone it admits is told by the child what is wrong.
                return self.pass_if(ctx, msg, channel, target, &p.protocol).await;
            };
            // A new stream's name is made here, to be checked.
            let name =
                stream_name.unwrap_or_else(|| format!("stream-{:016x}", rand::random::<u64>()));
            if validate_name("stream", &name).is_err() {
                return self.pass_if(ctx, msg, channel, target, &p.protocol).await;
            }
            if let Err(why) = may_open(ctx, access, &back, &name) {
                let refusal = StreamError::access_denied(STREAM_CREATE, &why);
                return refuse(ctx, back, refusal).await;
            }
            let req = CreateStreamRequest {
                stream_name: Some(name),
            };
            p = ProtocolPayload::new(STREAM_CREATE, &req)?;
        } else if target == Address::from("stream_kafka_index") {
            let Ok(mut req) = p.decode_data::<IndexRequest>(STREAM_INDEX) else {
                return self.pass_if(ctx, msg, channel, target, &p.protocol).await;
            };
            let (IndexRequest::Get {
                client_id,
                stream_name,
            }
            | IndexRequest::Save {
                client_id,
                stream_name,
                ..
            }) = &mut req;
            if let Err(e) = validate_pair(access, client_id, stream_name) {
                return refuse(ctx, back, StreamError::new(STREAM_INDEX, e)).await;
            }
            if denied(
                ctx,
                access,
                &back,
                STREAM_INDEX,
                Operation::Pull(stream_name),
            )
            .await?
            {
                return Ok(());
            }
            *client_id = index_owner(ctx, access, &back, client_id);
            p = ProtocolPayload::new(STREAM_INDEX, &req)?;
        } else {
            let Some(worker) = self.workers.get_mut(&target) else {
                let why = "no such Kafka stream worker here (it ended, or the Kafka back end \
                           restarted); open the stream again";
                return refuse(ctx, back, StreamError::new(&p.protocol, why)).await;
            };
            worker.last_used = Instant::now();
            let op = match p.protocol.as_str() {
                STREAM_PUSH => Operation::Push(&worker.stream),
                STREAM_PULL | STREAM_PULL_WAIT => Operation::Pull(&worker.stream),
                _ => Operation::Connect,
            };
            if let Err(why) = crate::services::permitted(ctx, access, &back, op) {
                // As the embedded store's worker does: after its owner's
                // refused push nothing more is stored through this worker
                // (a gap otherwise, should the rules change back).
                if p.protocol == STREAM_PUSH && back == worker.owner {
                    self.workers.remove(&target);
                }
                let refusal = StreamError::access_denied(&p.protocol, &why);
                return refuse(ctx, back, refusal).await;
            }
            return self.pass(ctx, msg, channel, target, None).await;
        }
        self.pass(ctx, msg, channel, target, Some(p)).await
    }

    /// As [`Gate::pass`], unchanged, if `msg` (a request of `protocol`)
    /// comes from an identity the hub admits; otherwise refuses it.
    async fn pass_if(
        &self,
        ctx: &Context,
        msg: Routed<Any>,
        channel: Address,
        target: Address,
        protocol: &str,
    ) -> Result<()> {
        let back = msg.return_route();
        if denied(ctx, &self.access, &back, protocol, Operation::Connect).await? {
            return Ok(());
        }
        self.pass(ctx, msg, channel, target, None).await
    }

    /// Sends `msg` on to `target` in the child through `channel`, with
    /// the gate first in its return route (and `payload` instead of its
    /// own, if given).
    async fn pass(
        &self,
        ctx: &Context,
        msg: Routed<Any>,
        channel: Address,
        target: Address,
        payload: Option<ProtocolPayload>,
    ) -> Result<()> {
        let mut local = msg.into_local_message();
        let transport = local.transport_mut();
        transport.onward_route = route![channel, target];
        transport.return_route.modify().prepend(GATE);
        if let Some(p) = payload {
            transport.payload = p.encode()?;
        }
        if let Err(e) = ctx.forward(local).await {
            warn!(error = %e, dropped = 1, "could not pass a request on to the Kafka back end");
        }
        Ok(())
    }

    /// Forgets the child's stream workers nobody used for an hour (the
    /// child stopped them long since); at most once a minute.
    fn sweep(&mut self) {
        if self.last_sweep.elapsed() < Duration::from_secs(60) {
            return;
        }
        self.last_sweep = Instant::now();
        self.workers
            .retain(|_, w| w.last_used.elapsed() < GATE_FORGETS_AFTER);
    }
}

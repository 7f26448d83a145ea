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

use crate::services::Limits;
use crate::store::KafkaConfig;
use async_trait::async_trait;
use ockam_core::{Address, Any, Error, ErrorKind, Result, Route, Routed, Worker, TCP};
use ockam_node::Context;
use ockam_transport_tcp::TcpTransport;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tracing::{error, info, warn};

/// What the child prints on its standard output once it listens, before
/// its address.
pub const LISTENING: &str = "ockam_hub kafka child listening on ";

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
/// `limits` (the child's own flags, see `ockam_hub --help`).
pub fn child_args(kafka: &KafkaConfig, limits: &Limits) -> Vec<String> {
    vec![
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
    ]
}

/// Where the current child listens (`None` while it is being restarted).
type ChildAddress = Arc<RwLock<Option<String>>>;

/// A child process running the Kafka services, as started.
struct Child {
    process: tokio::process::Child,
    address: String,
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
    Ok(Child {
        process,
        address,
        _stdin: stdin,
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

/// Starts the Kafka child, the services `stream` and `index` on `ctx`
/// that pass messages on to it, and the task that restarts it when it
/// ends. Returns once the first child listens.
///
/// # Errors
/// The first child could not be started or did not say where it listens
/// (within 30 s); the services could not be registered.
pub async fn start(
    ctx: &Context,
    tcp: Arc<TcpTransport>,
    program: PathBuf,
    args: Vec<String>,
    services: [&str; 2],
) -> Result<()> {
    let first = spawn(&program, &args).await?;
    info!(pid = first.process.id(), address = %first.address, "Kafka back end started in a child process");
    let address: ChildAddress = Arc::new(RwLock::new(Some(first.address.clone())));
    for service in services {
        ctx.start_worker(
            service,
            KafkaProxy {
                service: service.into(),
                child: address.clone(),
                tcp: tcp.clone(),
            },
        )
        .await?;
    }
    tokio::spawn(supervise(first, program, args, address));
    Ok(())
}

/// Waits for the child to end, says how, and starts another.
async fn supervise(mut child: Child, program: PathBuf, args: Vec<String>, address: ChildAddress) {
    let mut pause = RESTART_PAUSE;
    loop {
        let started = Instant::now();
        let pid = child.process.id();
        let status = child.process.wait().await;
        *address.write().unwrap_or_else(|e| e.into_inner()) = None;
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
            match spawn(&program, &args).await {
                Ok(c) => {
                    info!(pid = c.process.id(), address = %c.address, "Kafka back end restarted in a new child process");
                    *address.write().unwrap_or_else(|e| e.into_inner()) = Some(c.address.clone());
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

/// `stream_kafka` / `stream_kafka_index` in the hub: passes each message on
/// to the same service in the Kafka child, over TCP, with its return route
/// (so the answer, and everything after it, comes back through the hub).
struct KafkaProxy {
    service: String,
    child: ChildAddress,
    /// Connections to the child are the hub's own: a message from a remote
    /// peer may not open one (`TcpOptions::connect_for_remote_senders`).
    tcp: Arc<TcpTransport>,
}

#[async_trait]
impl Worker for KafkaProxy {
    type Message = Any;
    type Context = Context;

    async fn handle_message(&mut self, ctx: &mut Context, msg: Routed<Any>) -> Result<()> {
        let Some(child) = self.child.read().unwrap_or_else(|e| e.into_inner()).clone() else {
            warn!(service = %self.service, from = %msg.return_route(), dropped = 1, "the Kafka back end is restarting; dropped a request");
            return Ok(());
        };
        if let Err(e) = self.tcp.connect(&child).await {
            warn!(service = %self.service, error = %e, dropped = 1, "cannot reach the Kafka back end's child process; dropped a request");
            return Ok(());
        }
        let mut local = msg.into_local_message();
        let transport = local.transport_mut();
        // Our own hop is done; the child's service is the next.
        transport.onward_route.step()?;
        let mut hops: Vec<Address> = vec![
            Address::new(TCP, child.as_str()),
            Address::from(self.service.as_str()),
        ];
        hops.extend(transport.onward_route.iter().cloned());
        transport.onward_route = Route::from(hops);
        if let Err(e) = ctx.forward(local).await {
            warn!(service = %self.service, error = %e, dropped = 1, "could not pass a request on to the Kafka back end");
        }
        Ok(())
    }
}

//! What the hub's integration tests share: hub processes, nodes that push
//! and check numbered messages through a stream, and (in [`kafka`]) a real
//! Kafka-compatible broker.
#![allow(dead_code)]

pub mod kafka;

use ockam_core::{
    async_trait, encode, route, Result, Route, Routed, TransportMessage, Worker, TCP,
};
use ockam_node::{start_node, Context};
use ockam_stream_client::protocol::Uint;
use ockam_stream_client::protocol::{
    CreateStreamRequest, ProtocolPayload, PushConfirm, PushRequest, PushStatus, STREAM_CREATE,
    STREAM_PUSH,
};
use ockam_stream_client::Stream;
use ockam_transport_tcp::TcpTransport;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A loopback address that was free a moment ago.
pub fn free_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// Waits until something listens on `addr`.
pub fn wait_listening(addr: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The hub binary, killed (SIGKILL) when dropped. Its log lines (stderr)
/// are kept in `log`.
pub struct HubProcess {
    pub child: Child,
    log: mpsc::Receiver<String>,
    /// Every log line received so far.
    seen: std::sync::Mutex<Vec<String>>,
}

impl HubProcess {
    /// Starts the hub on `addr` with extra `args` and waits until it says
    /// it is up there (a connection alone could reach another process that
    /// was given the same port meanwhile).
    pub fn start(addr: &str, args: &[&str]) -> HubProcess {
        HubProcess::start_in(None, addr, args)
    }

    /// [`HubProcess::start`] inside network namespace `netns` (`ip netns
    /// exec` execs the hub: the child is the hub itself).
    pub fn start_in(netns: Option<&str>, addr: &str, args: &[&str]) -> HubProcess {
        // Set for the hub's own tests (other packages include this module
        // for its broker helpers only).
        let Some(hub) = option_env!("CARGO_BIN_EXE_ockam_hub") else {
            panic!("the ockam_hub binary is only known to the hub's own tests");
        };
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, hub]);
                c
            }
            None => Command::new(hub),
        };
        let mut child = command
            // OCKAM_TEST_HUB_LOG: the hub's RUST_LOG, for a closer look.
            .env(
                "RUST_LOG",
                std::env::var("OCKAM_TEST_HUB_LOG").unwrap_or_else(|_| "info".into()),
            )
            .args(["--listen", addr])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hub");
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = mpsc::channel();
        // OCKAM_TEST_LOG_DIR: keep each hub's log there too, for a look
        // after a failure.
        let mut copy = std::env::var_os("OCKAM_TEST_LOG_DIR").map(|d| {
            let path = std::path::Path::new(&d).join(format!("hub-{}.log", addr.replace(':', "_")));
            std::fs::File::create(path).expect("hub log file")
        });
        std::thread::spawn(move || {
            use std::io::Write;
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if let Some(f) = &mut copy {
                    let _ = writeln!(f, "{line}");
                }
                let _ = tx.send(line);
            }
        });
        let hub = HubProcess {
            child,
            log,
            seen: std::sync::Mutex::new(Vec::new()),
        };
        // The "hub up" line: `listen=<addr> storage=...`.
        hub.wait_for_log(&format!("listen={addr} storage="), Duration::from_secs(30));
        hub
    }

    /// Waits (at most `within`) for a log line containing `needle` (seen
    /// before or arriving).
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> String {
        let mut seen = self.seen.lock().unwrap();
        if let Some(line) = seen.iter().find(|l| l.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + within;
        loop {
            match self
                .log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("the hub logged no line with {needle:?}"),
            }
        }
    }

    /// Every log line so far.
    pub fn seen_lines(&self) -> Vec<String> {
        let mut seen = self.seen.lock().unwrap();
        seen.extend(self.log.try_iter());
        seen.clone()
    }

    /// Stops the hub the way an operator does (SIGTERM) and waits (at
    /// most 30 s) for it to exit.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the hub did not exit within 30 s of SIGTERM");
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A process's resident memory, in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

/// Which hub services a stream client uses.
#[derive(Debug, Clone, Copy)]
pub struct Services {
    pub stream: &'static str,
    pub index: &'static str,
}

/// The embedded store's services.
pub const EMBEDDED: Services = Services {
    stream: "stream",
    index: "stream_index",
};

/// The Kafka back end's services.
pub const KAFKA: Services = Services {
    stream: "stream_kafka",
    index: "stream_kafka_index",
};

/// How a producer node paces itself.
pub struct Pace {
    /// How many numbers it sends.
    pub count: u64,
    /// It pauses after every `every` numbers ...
    pub every: u64,
    /// ... for this long.
    pub pause: Duration,
}

/// A node in a thread that sends the numbers `0..pace.count` to "checker"
/// through the "numbers" stream, reporting its progress at every pause if
/// asked. It stops when the returned sender is dropped.
pub fn spawn_producer(
    hub: String,
    services: Services,
    client_id: &'static str,
    pace: Pace,
    progress: Option<mpsc::Sender<u64>>,
) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    spawn_producer_on(hub, services, client_id, "numbers", pace, progress)
}

/// [`spawn_producer`] through stream `stream` (and `<stream>-back`).
pub fn spawn_producer_on(
    hub: String,
    services: Services,
    client_id: &'static str,
    stream: &'static str,
    pace: Pace,
    progress: Option<mpsc::Sender<u64>>,
) -> (mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (stop, stop_rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let (ctx, mut executor) = start_node();
        executor
            .execute(async move {
                let _tcp = TcpTransport::create(&ctx).await?;
                let (sender, _receiver) = Stream::new(&ctx)?
                    .stream_service(services.stream)
                    .index_service(services.index)
                    .client_id(client_id)
                    .connect(
                        route![(TCP, hub.as_str())],
                        stream,
                        format!("{stream}-back"),
                    )
                    .await?;
                for n in 0..pace.count {
                    ctx.send(route![sender.clone(), "checker"], n).await?;
                    if n % pace.every == 0 {
                        if let Some(p) = &progress {
                            let _ = p.send(n);
                        }
                        tokio::time::sleep(pace.pause).await;
                    }
                }
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                ctx.stop().await
            })
            .expect("producer node");
    });
    (stop, t)
}

/// A producer node started with [`spawn_producer`] that reports its
/// progress, once it has sent `at` numbers (or panics after 60 s without
/// progress): its stop sender, thread and progress reports.
pub fn producer_past(
    hub: String,
    services: Services,
    client_id: &'static str,
    pace: Pace,
    at: u64,
) -> (
    mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
    mpsc::Receiver<u64>,
) {
    let (sent_tx, sent_rx) = mpsc::channel();
    let (stop, thread) = spawn_producer(hub, services, client_id, pace, Some(sent_tx));
    while sent_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("producer progress")
        < at
    {}
    (stop, thread, sent_rx)
}

/// Accepts numbers in order; repeats of already-seen numbers are fine
/// (at-least-once), a jump ahead is a lost message.
struct Checker {
    next: u64,
    report: mpsc::Sender<u64>,
    repeats: mpsc::Sender<u64>,
}

#[async_trait]
impl Worker for Checker {
    type Message = u64;
    type Context = Context;
    async fn handle_message(&mut self, _ctx: &mut Context, msg: Routed<u64>) -> Result<()> {
        let n = *msg;
        assert!(
            n <= self.next,
            "gap or reorder: got {n}, expected {}",
            self.next
        );
        if n < self.next {
            let _ = self.repeats.send(n);
        }
        if n == self.next {
            self.next += 1;
            let _ = self.report.send(self.next);
        }
        Ok(())
    }
}

/// A consumer node: (progress reports, repeated numbers, stop, thread).
pub type Consumer = (
    mpsc::Receiver<u64>,
    mpsc::Receiver<u64>,
    mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
);

/// A node in a thread: a stream client with `client_id` reading "numbers"
/// into a checker that expects `first` first (or repeats of earlier ones)
/// and reports every number it accepts. Stops when `stop` is dropped.
pub fn consumer(hub: String, services: Services, client_id: &'static str, first: u64) -> Consumer {
    consumer_on(hub, services, client_id, "numbers", first)
}

/// [`consumer`] of stream `stream` (answering through `<stream>-back`).
pub fn consumer_on(
    hub: String,
    services: Services,
    client_id: &'static str,
    stream: &'static str,
    first: u64,
) -> Consumer {
    let (report, progress) = mpsc::channel();
    let (repeats, repeated) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let (ctx, mut executor) = start_node();
        executor
            .execute(async move {
                let _tcp = TcpTransport::create(&ctx).await?;
                ctx.start_worker(
                    "checker",
                    Checker {
                        next: first,
                        report,
                        repeats,
                    },
                )
                .await?;
                let _conn = Stream::new(&ctx)?
                    .stream_service(services.stream)
                    .index_service(services.index)
                    .client_id(client_id)
                    .connect(
                        route![(TCP, hub.as_str())],
                        format!("{stream}-back"),
                        stream,
                    )
                    .await?;
                let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                ctx.stop().await
            })
            .expect("consumer node");
    });
    (progress, repeated, stop_tx, t)
}

/// Waits until the progress reports reach `target`.
pub fn wait_for(progress: &mpsc::Receiver<u64>, target: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    let mut seen = 0;
    while seen < target {
        let left = deadline.saturating_duration_since(Instant::now());
        match progress.recv_timeout(left) {
            Ok(n) => seen = seen.max(n),
            Err(_) => panic!("only {seen} of {target} messages arrived in time"),
        }
    }
    seen
}

/// Sends a `protocol` request to `to` and returns the reply (within 60 s).
pub async fn request<T: serde::Serialize>(
    ctx: &mut Context,
    to: Route,
    protocol: &str,
    msg: &T,
) -> Result<ProtocolPayload> {
    ctx.send(to, ProtocolPayload::new(protocol, msg)?).await?;
    Ok(ctx.receive_timeout::<ProtocolPayload>(60_000).await?.take())
}

/// Opens stream `name` through the stream service at `service`; returns the
/// route to its stream worker.
pub async fn open_stream(ctx: &mut Context, service: Route, name: &str) -> Result<Route> {
    let req = CreateStreamRequest {
        stream_name: Some(name.into()),
    };
    ctx.send(service, ProtocolPayload::new(STREAM_CREATE, &req)?)
        .await?;
    Ok(ctx
        .receive_timeout::<ProtocolPayload>(60_000)
        .await?
        .return_route())
}

/// Waits (up to `within`) until the node holds `want` addresses; the
/// count then.
pub async fn settle_to(ctx: &Context, within: Duration, want: usize) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let n = ctx.list_addresses().len();
        if n == want || Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A stored stream message as a producer makes it: a transport message
/// with no onward route (so it goes to the consumer's receiver) whose
/// payload is `text`.
pub fn stored(text: &str) -> Vec<u8> {
    TransportMessage::v1(
        Route::empty(),
        Route::empty(),
        encode(&text.to_string()).unwrap(),
    )
    .encode()
    .unwrap()
}

/// Pushes `texts` (see [`stored`]) to `stream` on the hub at `hub`
/// (through its stream service `service`), from a node of its own, and
/// returns once the hub confirmed each.
pub fn push(hub: &str, service: &str, stream: &str, texts: &[String]) {
    let (hub, service, stream, texts) = (
        hub.to_string(),
        service.to_string(),
        stream.to_string(),
        texts.to_vec(),
    );
    std::thread::spawn(move || {
        let (mut ctx, mut executor) = start_node();
        executor
            .execute(async move {
                let _tcp = TcpTransport::create(&ctx).await?;
                let h = hub.as_str();
                let worker =
                    open_stream(&mut ctx, route![(TCP, h), service.as_str()], &stream).await?;
                for (n, text) in texts.iter().enumerate() {
                    let push = PushRequest {
                        request_id: Uint(n as u64),
                        data: stored(text),
                    };
                    let c: PushConfirm = request(&mut ctx, worker.clone(), STREAM_PUSH, &push)
                        .await?
                        .decode_data(STREAM_PUSH)?;
                    assert_eq!(c.status, PushStatus::Ok, "{text}");
                }
                ctx.stop().await
            })
            .expect("pushing node");
    })
    .join()
    .unwrap();
}

//! Running the examples as processes, the way users run them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// An example binary that `cargo test` built beside this test.
pub fn example(name: &str) -> Command {
    let mut dir = std::env::current_exe().expect("test binary path");
    dir.pop(); // the test binary
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path: PathBuf = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: run through `cargo test`, which builds the examples",
        path.display()
    );
    let mut cmd = Command::new(path);
    cmd.env("RUST_LOG", "info");
    cmd
}

/// Runs an example to completion (at most 60 s) and returns its output.
pub fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn example");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("example did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// A long-running example process, killed when dropped.
pub struct Running {
    pub child: Child,
    lines: Receiver<String>,
}

impl Running {
    pub fn start(cmd: &mut Command) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn example");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// Waits (at most 30 s) for a line of stdout containing `needle`.
    pub fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no line with {needle:?} within 30 s"),
            }
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGINT, and waits for a clean exit.
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "could not signal {pid}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(Instant::now() < deadline, "process ignored SIGINT");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind")
        .port()
}

/// Starts a middle-node example (`<name> 127.0.0.1:0 <responder>`) and
/// returns it with the address it prints that it listens on.
pub fn start_middle(name: &str, responder: &str) -> (Running, String) {
    let middle = Running::start(example(name).arg("127.0.0.1:0").arg(responder));
    let line = middle.wait_for("Middle node listening on");
    let addr = line
        .split_whitespace()
        .nth(4)
        .expect("address")
        .trim_end_matches(',')
        .to_string();
    (middle, addr)
}

/// A hub in this process, stopped when dropped.
pub struct LocalHub {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalHub {
    /// Starts a hub with `config` and waits until it listens.
    pub fn start(config: ockam_hub::HubConfig) -> LocalHub {
        let listen = config.listen.clone();
        let (up_tx, up_rx) = channel();
        let (stop, stop_rx) = channel::<()>();
        let thread = std::thread::spawn(move || {
            let (ctx, mut executor) = ockam::start_node();
            executor
                .execute(async move {
                    ockam_hub::Hub::start(&ctx, config).await?;
                    up_tx.send(()).unwrap();
                    let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                    ctx.stop().await
                })
                .expect("hub node");
        });
        up_rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("hub up (is {listen} free?)"));
        LocalHub {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for LocalHub {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

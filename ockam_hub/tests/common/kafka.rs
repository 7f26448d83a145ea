//! A real Kafka-compatible broker for the tests (`tansu`, a single-binary
//! Kafka-compatible broker) and an independent Kafka client to look at what
//! the hub stored (`kafka-python`).
//!
//! Without them the Kafka tests say that they were skipped and how to run
//! them (`scripts/with-kafka.sh`); with `OCKAM_KAFKA_REQUIRED=1` (set by
//! `.ci/run`) a missing prerequisite fails the test instead.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to run the Kafka tests when they were skipped.
pub const HOW: &str = "run them with `scripts/with-kafka.sh cargo test --workspace`, which installs the tansu broker and \
kafka-python if missing and starts a broker for them";

fn on_path(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo").join("bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The `tansu` binary: `OCKAM_TANSU`, or `tansu` on the PATH or in
/// cargo's bin directory.
pub fn tansu_binary() -> Option<PathBuf> {
    match std::env::var_os("OCKAM_TANSU") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => on_path("tansu"),
    }
}

fn kafka_python() -> bool {
    Command::new("python3")
        .args(["-c", "import kafka"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The tansu binary if everything the Kafka tests need is here; otherwise
/// says that `test` is skipped and why (or fails it, when required).
pub fn prerequisites(test: &str) -> Option<PathBuf> {
    let tansu = tansu_binary();
    let python = kafka_python();
    if let (Some(t), true) = (&tansu, python) {
        return Some(t.clone());
    }
    let mut missing = Vec::new();
    if tansu.is_none() {
        missing
            .push("the `tansu` broker (cargo install --locked tansu --features dynostore,libsql)");
    }
    if !python {
        missing.push("the kafka-python module (pip install kafka-python)");
    }
    let msg = format!(
        "SKIPPED Kafka test {test}: missing {}; {HOW}",
        missing.join(" and ")
    );
    if std::env::var("OCKAM_KAFKA_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("{msg} (OCKAM_KAFKA_REQUIRED=1: the Kafka tests must run)");
    }
    // Straight to stderr: the test harness captures `eprintln!` of
    // passing tests, and a skip must be seen.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{msg}");
    None
}

/// A prefix for topics and groups no other test run uses.
pub fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("t{}_{test}_{nanos}_", std::process::id())
}

/// A tansu broker: the one `.ci/run` started (`OCKAM_KAFKA_BOOTSTRAP`) or
/// a process of our own, stopped when dropped.
pub struct Broker {
    pub address: String,
    tansu: PathBuf,
    dir: Option<PathBuf>,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Broker {
    /// The broker `.ci/run` started, if any; otherwise one of our own.
    pub fn shared(tansu: &Path) -> Broker {
        match std::env::var("OCKAM_KAFKA_BOOTSTRAP") {
            Ok(address) if !address.is_empty() => Broker {
                address,
                tansu: tansu.to_path_buf(),
                dir: None,
                child: None,
                _dir: None,
            },
            _ => Broker::own(tansu, &super::free_address()),
        }
    }

    /// A broker of our own on `address`, durable (SQLite) in a temporary
    /// directory, so that it keeps its data across `stop`/`start`.
    pub fn own(tansu: &Path, address: &str) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        let mut b = Broker {
            address: address.to_string(),
            tansu: tansu.to_path_buf(),
            dir: Some(dir.path().to_path_buf()),
            child: None,
            _dir: Some(dir),
        };
        b.start();
        b
    }

    /// (Re)starts our own broker on the same address and storage.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the broker runs already");
        let url = format!("tcp://{}", self.address);
        let dir = self.dir.as_ref().expect("a broker of our own");
        // tansu opens a SQLite path relative to its working directory.
        let child = Command::new(&self.tansu)
            .current_dir(dir)
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://db/broker.db"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tansu");
        self.child = Some(child);
        super::wait_listening(&self.address, "the tansu broker");
    }

    /// Kills our own broker (SIGKILL) and deletes its storage: it comes
    /// back from [`start`](Self::start) with nothing (every topic gone, then
    /// made again with new topic ids).
    pub fn kill_and_wipe(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let dir = self.dir.as_ref().expect("a broker of our own");
        std::fs::remove_dir_all(dir.join("db")).unwrap();
        std::fs::create_dir(dir.join("db")).unwrap();
    }

    /// Stops our own broker (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What an independent Kafka client (kafka-python) sees.
#[derive(Debug)]
pub struct Seen {
    /// Every message of the topic's partition 0, in offset order.
    pub messages: Vec<(u64, Vec<u8>)>,
    /// The committed offset of the group on that partition, if any.
    pub committed: Option<u64>,
}

/// Reads `topic` from its beginning, and `group`'s committed offset on it,
/// with kafka-python.
pub fn read_with_kafka_python(bootstrap: &str, topic: &str, group: &str) -> Seen {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kafka_read.py");
    let out = Command::new("python3")
        .args([script, bootstrap, topic, group])
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "kafka-python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut seen = Seen {
        messages: Vec::new(),
        committed: None,
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut parts = line.split_whitespace();
        match parts.next() {
            Some("MSG") => {
                let offset = parts.next().unwrap().parse().unwrap();
                let data = hex_decode(parts.next().unwrap_or(""));
                seen.messages.push((offset, data));
            }
            Some("COMMITTED") => seen.committed = parts.next().and_then(|o| o.parse().ok()),
            _ => {}
        }
    }
    seen
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

//! The guides' examples as a user runs them: separate processes, checked
//! by their output and exit status.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// An example binary `cargo test` built beside this test.
fn example(name: &str) -> Command {
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

fn run(name: &str) -> Output {
    let mut child = example(name)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn example");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Kills the child if the test fails midway.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_local_guide_examples_run_and_exit_cleanly() {
    let out = run("01-node");
    assert!(out.status.success(), "{out:?}");

    for (name, expect) in [
        ("02-worker", "App Received: Hello Ockam!"),
        ("03-routing", "App Received: Hello Ockam!"),
        (
            "03-routing-many-hops",
            "Return route: 0#h1 => 0#h2 => 0#h3 => 0#echoer",
        ),
    ] {
        let out = run(name);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name}: {out:?}");
        assert!(stdout.contains(expect), "{name} printed:\n{stdout}");
    }
}

#[test]
fn a_node_whose_main_returns_ok_keeps_running_until_interrupted() {
    let child = example("01-node-stays-up")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn example");
    let mut guard = Guard(child);
    let stdout = guard.0.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read first line");
    assert!(line.contains("Node is up"), "{line}");

    // main has returned; the process must still be there.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        guard.0.try_wait().expect("wait").is_none(),
        "the node exited after main returned Ok(())"
    );

    // SIGINT stops it gracefully, with a success status.
    let pid = guard.0.id().to_string();
    let kill = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = guard.0.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < deadline, "the node ignored SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status after SIGINT: {status:?}");
}

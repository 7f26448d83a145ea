//! 1,000,000 messages in order over TCP between two processes (the
//! `numbers` example, which `cargo test` builds beside this test).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn example() -> std::path::PathBuf {
    let mut dir = std::env::current_exe().unwrap();
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("examples").join("numbers");
    assert!(
        bin.exists(),
        "{} missing: run through `cargo test`",
        bin.display()
    );
    bin
}

#[test]
fn a_million_messages_in_order_between_two_processes() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut receiver = Command::new(example())
        .args(["receive", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = receiver.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let up = lines.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(up.starts_with("LISTENING"), "{up}");
    let sender = Command::new(example())
        .args(["send", &addr, "1000000"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(sender.status.success(), "{sender:?}");
    assert_eq!(
        String::from_utf8_lossy(&sender.stdout).trim(),
        "SENT 1000000"
    );
    // close() returned: the receiver had everything, in order.
    let end = lines.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(end, "END after 1000000");
    let _ = receiver.kill();
    let _ = receiver.wait();
}

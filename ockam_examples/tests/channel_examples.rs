//! The secure channel guide's examples, run as processes.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::{example, run, start_middle, Running};

#[test]
fn a_secure_channel_inside_one_node() {
    let out = run(&mut example("06-secure-channel"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("App Received: Hello Ockam!"), "{stdout}");
}

#[test]
fn a_secure_channel_over_two_tcp_hops() {
    let responder =
        Running::start(example("07-secure-channel-over-two-tcp-hops-responder").arg("127.0.0.1:0"));
    let line = responder.wait_for("Responder listening on");
    let words: Vec<&str> = line.split_whitespace().collect();
    let responder_addr = words[3].to_string();
    let key = words.last().expect("key").to_string();
    let (_middle, middle_addr) = start_middle(
        "07-secure-channel-over-two-tcp-hops-middle",
        &responder_addr,
    );
    let out = run(example("07-secure-channel-over-two-tcp-hops-initiator")
        .arg(&middle_addr)
        .arg(&responder_addr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("App Received: Hello Ockam!"), "{stdout}");
    // The initiator authenticated the responder's key.
    assert!(
        stdout.contains(&format!("responder's static key {key}")),
        "{stdout}"
    );
}

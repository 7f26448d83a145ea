//! Seed 004 with typed streams, as processes: the bidirectional
//! MessageService server and client exchange a message a second each way,
//! straight over TCP, through a secure channel, through a pair of hub
//! streams, and through a secure channel over hub streams: the same client
//! code each time.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::{example, free_port, LocalHub, Running};
use ockam_hub::{HubConfig, StorageKind};

/// Runs the server with `server_args` and the client (3 rounds) with
/// `client_args`; checks both ways and the clean end.
fn exchange(server_args: &[&str], client_args: &[&str]) {
    let server = Running::start(example("17-bidi-stream-server").args(server_args));
    server.wait_for("MessageService on");
    let mut client = Running::start(
        example("17-bidi-stream-client")
            .args(client_args)
            .args(["--rounds", "3"]),
    );
    let got = client.wait_for("Received message:");
    assert!(got.contains("Hello, world!"), "{got}");
    client.wait_for("Done after 3 messages");
    assert!(client.child.wait().unwrap().success());
    // The server read the client's requests, and saw its clean end.
    server.wait_for("Received request:");
    server.wait_for("The client closed its stream");
}

#[test]
fn the_bidi_stream_examples_exchange_messages_both_ways() {
    let addr = format!("127.0.0.1:{}", free_port());
    exchange(&[&addr], &[&addr]);
}

#[test]
fn the_bidi_stream_examples_over_a_secure_channel() {
    let addr = format!("127.0.0.1:{}", free_port());
    exchange(&[&addr, "--secure"], &["--secure", &addr]);
}

#[test]
fn the_bidi_stream_examples_over_hub_streams_with_and_without_a_secure_channel() {
    for secure in [false, true] {
        let hub_addr = format!("127.0.0.1:{}", free_port());
        let dir = tempfile::tempdir().unwrap();
        let _hub = LocalHub::start(HubConfig {
            listen: hub_addr.clone(),
            storage: StorageKind::Durable(dir.path().to_path_buf()),
            ..HubConfig::default()
        });
        let mut server_args = vec!["--hub", hub_addr.as_str()];
        let mut client_args = vec!["--hub", hub_addr.as_str()];
        if secure {
            server_args.push("--secure");
            client_args.push("--secure");
        }
        exchange(&server_args, &client_args);
    }
}

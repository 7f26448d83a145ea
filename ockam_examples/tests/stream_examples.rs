//! The streams guides' examples (seeds 000 and 001), the hub echo and the
//! forwarding examples, as processes, against a hub on 127.0.0.1:4000 (the
//! address the seeds' code names).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::{example, run, LocalHub, Running};
use ockam_hub::{HubConfig, StorageKind};
use std::time::Duration;

fn stdout_of(cmd: &mut std::process::Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// One test: the seeds' examples all use port 4000.
#[test]
fn stream_hub_and_forwarding_examples() {
    let dir = tempfile::tempdir().unwrap();
    let _hub = LocalHub::start(HubConfig {
        listen: "127.0.0.1:4000".into(),
        storage: StorageKind::Durable(dir.path().to_path_buf()),
        ..HubConfig::default()
    });

    assert!(stdout_of(&mut example("15-hub-echo")).contains("Hub echoed: Hello Hub!"));

    // Seed 000: the initiator first, the responder seconds later.
    let mut initiator = Running::start(&mut example("14-streams-initiator"));
    std::thread::sleep(Duration::from_secs(2));
    let responder = Running::start(&mut example("14-streams-responder"));
    let line = initiator.wait_for("Reply via stream:");
    assert!(line.contains("Hello World!"), "{line}");
    let status = initiator.child.wait().unwrap();
    assert!(status.success());
    // The same, as the mid-2021 guides wrote it (`tx.to_route().append(..)`).
    let out = stdout_of(&mut example("14-streams-initiator-2021"));
    assert!(out.contains("Reply via stream: Hello from 2021!"), "{out}");
    drop(responder);

    // Seed 001: a secure channel over the streams.
    let responder = Running::start(&mut example(
        "14-secure-channel-over-stream-over-cloud-node-responder",
    ));
    std::thread::sleep(Duration::from_millis(500));
    let out = stdout_of(&mut example(
        "14-secure-channel-over-stream-over-cloud-node-initiator",
    ));
    assert!(
        out.contains("Reply via secure channel via stream: Hello World!"),
        "{out}"
    );
    drop(responder);

    // Forwarding through the hub, plain and with a secure channel.
    let responder = Running::start(&mut example("16-forwarding-responder"));
    let echoer = responder.wait_for("of echoer on the hub:");
    let listener = responder.wait_for("of secure_channel_listener on the hub:");
    let last = |l: &str| l.split_whitespace().last().unwrap().to_string();
    let out = stdout_of(
        example("16-forwarding-initiator")
            .arg(last(&echoer))
            .arg(last(&listener)),
    );
    assert!(
        out.contains("Reply through the forwarder: Hello through the hub!"),
        "{out}"
    );
    assert!(
        out.contains("Reply through a secure channel over the forwarder: Hello, secretly!"),
        "{out}"
    );
    drop(responder);
    drop(_hub);

    // Seed 000 through a closed hub (issue 16): the two nodes' identities,
    // made beforehand so that the hub's access file names them.
    let vault = ockam::Vault::new();
    let key = |name: &str| {
        let path = dir.path().join(name);
        let (secret, _) = vault.load_or_create_x25519(&path).unwrap();
        (path, vault.public_key(&secret).unwrap())
    };
    let (initiator_file, initiator) = key("initiator.key");
    let (responder_file, responder) = key("responder.key");
    let (hub_file, hub_identity) = key("hub.key");
    let access = dir.path().join("access.toml");
    std::fs::write(
        &access,
        format!(
            "[identities]\ninitiator = \"{initiator}\"\nresponder = \"{responder}\"\n\n\
             [[streams]]\nnames = \"*-to-*\"\npush = [\"*\"]\npull = [\"*\"]\n"
        ),
    )
    .unwrap();
    let closed = tempfile::tempdir().unwrap();
    let _hub = LocalHub::start(HubConfig {
        listen: "127.0.0.1:4000".into(),
        storage: StorageKind::Durable(closed.path().to_path_buf()),
        access: ockam_hub::Access::closed(&access).unwrap(),
        identity: Some(hub_file),
        ..HubConfig::default()
    });
    let as_node = |name: &str, file: &std::path::Path| {
        let mut cmd = example(name);
        cmd.env("OCKAM_IDENTITY_FILE", file)
            .env("OCKAM_HUB_IDENTITY", hub_identity.to_string());
        cmd
    };
    // The plain examples are refused now.
    let out = run(&mut example("14-streams-initiator"));
    assert!(!out.status.success(), "a plaintext client of a closed hub");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied")
            || String::from_utf8_lossy(&out.stdout).contains("permission denied"),
        "{out:?}"
    );
    let mut initiator = Running::start(&mut as_node("18-closed-hub-initiator", &initiator_file));
    std::thread::sleep(Duration::from_secs(2));
    let responder = Running::start(&mut as_node("18-closed-hub-responder", &responder_file));
    let line = initiator.wait_for("Reply via stream:");
    assert!(line.contains("Hello World!"), "{line}");
    assert!(initiator.child.wait().unwrap().success());
    drop(responder);
}

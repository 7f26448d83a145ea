//! Issue 16: a closed hub (`--access-file`), as a real process. Clients are
//! known by the static key of the secure channel they reach the hub
//! through; the access file says what each may do; a client's read
//! positions are its identity's own; SIGHUP reloads the file; the hub's
//! identity survives a restart; garbage and half-finished handshakes on
//! its port leave it serving the others.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::{free_address, request, HubProcess};
use ockam_channel::{internal::ChannelMessage, SecureChannel, SecureChannelOptions};
use ockam_core::{route, ErrorKind, Result, Route, TCP};
use ockam_node::{start_node, Context};
use ockam_stream_client::protocol::Uint;
use ockam_stream_client::protocol::{
    CreateStreamRequest, Index, IndexRequest, ProtocolPayload, PullRequest, PullResponse,
    PushConfirm, PushRequest, StreamError, STREAM_CREATE, STREAM_ERROR, STREAM_INDEX, STREAM_PULL,
    STREAM_PUSH,
};
use ockam_stream_client::RemoteForwarder;
use ockam_transport_tcp::TcpTransport;
use ockam_vault::{PublicKey, SecretHandle, Vault};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// The access file: alice pushes and pulls `a-*` and registers forwarders;
/// bob (while named) only pulls `a-*`.
fn access_file(path: &Path, alice: &PublicKey, bob: Option<&PublicKey>) {
    let mut text = format!("[identities]\nalice = \"{alice}\"\n");
    if let Some(bob) = bob {
        text += &format!("bob = \"{bob}\"\n");
    }
    let pull = if bob.is_some() {
        r#"["alice", "bob"]"#
    } else {
        r#"["alice"]"#
    };
    text += &format!(
        "\n[[streams]]\nnames = \"a-*\"\npush = [\"alice\"]\npull = {pull}\n\n[forwarders]\nregister = [\"alice\"]\n"
    );
    std::fs::write(path, text).unwrap();
}

/// The hub's identity, from its "hub up" line.
fn identity(hub: &HubProcess) -> String {
    let line = hub.wait_for_log("hub up", Duration::from_secs(10));
    let at = line.find("identity=").expect("the hub logs its identity") + "identity=".len();
    line[at..at + 64].to_string()
}

/// A secure channel to the hub at `addr` as `key`, pinned to `hub_key`.
async fn channel(
    ctx: &Context,
    vault: &Vault,
    addr: &str,
    key: &SecretHandle,
    hub_key: &str,
) -> Result<SecureChannel> {
    SecureChannel::create_with_options(
        ctx,
        route![(TCP, addr), "secure_channel_listener"],
        vault,
        SecureChannelOptions {
            static_key: Some(key.clone()),
            trusted_peer: Some(hub_key.parse()?),
            ..Default::default()
        },
    )
    .await
}

/// The refusal in `p`, if it is one.
fn refusal(p: &ProtocolPayload) -> Option<StreamError> {
    (p.protocol == STREAM_ERROR).then(|| p.decode_data::<StreamError>(STREAM_ERROR).unwrap())
}

/// Opens `stream` through `to` (a route to the stream service): the route
/// to its stream worker, or the refusal.
async fn open(
    ctx: &mut Context,
    to: Route,
    stream: &str,
) -> Result<std::result::Result<Route, StreamError>> {
    let req = CreateStreamRequest {
        stream_name: Some(stream.into()),
    };
    ctx.send(to, ProtocolPayload::new(STREAM_CREATE, &req)?)
        .await?;
    let answer = ctx.receive_timeout::<ProtocolPayload>(30).await?;
    let route = answer.return_route();
    Ok(match refusal(&answer) {
        Some(r) => Err(r),
        None => Ok(route),
    })
}

async fn push(ctx: &mut Context, worker: Route, id: u64, data: &[u8]) -> Result<ProtocolPayload> {
    let req = PushRequest {
        request_id: Uint(id),
        data: data.to_vec(),
    };
    request(ctx, worker, STREAM_PUSH, &req).await
}

async fn pull(ctx: &mut Context, worker: Route) -> Result<ProtocolPayload> {
    let req = PullRequest {
        request_id: Uint(1),
        index: Uint(0),
        limit: Uint(10),
    };
    request(ctx, worker, STREAM_PULL, &req).await
}

async fn get_index(ctx: &mut Context, index: Route, stream: &str) -> Result<Option<u64>> {
    let req = IndexRequest::Get {
        client_id: "c".into(),
        stream_name: stream.into(),
    };
    let p = request(ctx, index, STREAM_INDEX, &req).await?;
    assert!(refusal(&p).is_none(), "{:?}", refusal(&p));
    let answer = p.decode_data::<Index>(STREAM_INDEX)?;
    assert_eq!(answer.client_id, "c", "the client's own id back");
    Ok(answer.index.map(|u| u.0))
}

async fn save_index(ctx: &Context, index: Route, stream: &str, at: u64) -> Result<()> {
    let req = IndexRequest::Save {
        client_id: "c".into(),
        stream_name: stream.into(),
        index: Uint(at),
    };
    ctx.send(index, ProtocolPayload::new(STREAM_INDEX, &req)?)
        .await
}

/// Bob (through channel `b`; he may only pull `a-*`) reads the three
/// messages alice (through `a`) pushed to `a-1` and saved her position in
/// (at 2), may not push there, and keeps his own position beside hers: on
/// the stream service `stream` and the index service `index`. Returns the
/// route to his stream worker.
async fn bob_reads_and_keeps_his_own_position(
    ctx: &mut Context,
    a: &SecureChannel,
    b: &SecureChannel,
    stream: &str,
    index: &str,
) -> Result<Route> {
    let worker_b = open(ctx, route![b.address(), stream], "a-1")
        .await?
        .unwrap();
    let p = pull(ctx, worker_b.clone()).await?;
    assert_eq!(
        p.decode_data::<PullResponse>(STREAM_PULL)?.messages.len(),
        3
    );
    assert_denied(
        &push(ctx, worker_b.clone(), 9, b"no").await?,
        "may not push",
    );
    let (index_a, index_b) = (route![a.address(), index], route![b.address(), index]);
    assert_eq!(get_index(ctx, index_b.clone(), "a-1").await?, None);
    save_index(ctx, index_b.clone(), "a-1", 1).await?;
    assert_eq!(get_index(ctx, index_b, "a-1").await?, Some(1));
    assert_eq!(get_index(ctx, index_a, "a-1").await?, Some(2));
    Ok(worker_b)
}

fn assert_denied(p: &ProtocolPayload, says: &str) {
    let r = refusal(p).unwrap_or_else(|| panic!("not refused: {}", p.protocol));
    assert!(r.is_access_denied(), "{r:?}");
    assert!(r.reason.contains(says), "{r:?}");
}

#[test]
fn a_closed_hub_serves_each_identity_what_its_access_file_allows() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.toml");
    let data = dir.path().join("data");
    let vault = Vault::new();
    let (alice, bob, eve) = (
        vault.generate_x25519(),
        vault.generate_x25519(),
        vault.generate_x25519(),
    );
    let alice_key = vault.public_key(&alice).unwrap();
    let bob_key = vault.public_key(&bob).unwrap();
    access_file(&file, &alice_key, Some(&bob_key));

    let addr = free_address();
    let args = [
        "--data-dir",
        data.to_str().unwrap(),
        "--access-file",
        file.to_str().unwrap(),
    ];
    let hub = HubProcess::start(&addr, &args);
    let hub_key = identity(&hub);
    assert!(
        !hub.seen_lines()
            .iter()
            .any(|l| l.contains("this hub is open")),
        "a closed hub warned that it is open"
    );
    let hub = std::sync::Arc::new(std::sync::Mutex::new(hub));

    let (mut ctx, mut executor) = start_node();
    let (a, h, k, f) = (addr.clone(), hub.clone(), hub_key.clone(), file.clone());
    executor
        .execute(async move {
            let (addr, hub_key, file) = (a, k, f);
            let _tcp = TcpTransport::create(&ctx).await?;
            let vault = vault;
            let plain = |service: &str| route![(TCP, addr.as_str()), service];

            // Plain TCP: refused, saying how to get in.
            let p = request(
                &mut ctx,
                plain("stream"),
                STREAM_CREATE,
                &CreateStreamRequest {
                    stream_name: Some("a-1".into()),
                },
            )
            .await?;
            assert_denied(&p, "secure channel");
            let err = RemoteForwarder::create(&ctx, addr.as_str(), "dest")
                .await
                .expect_err("a plaintext registration on a closed hub");
            assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
            let err = ockam_stream_client::Stream::new(&ctx)?
                .stream_service("stream")
                .index_service("stream_index")
                .client_id("plain")
                .connect(route![(TCP, addr.as_str())], "a-1", "a-1-back")
                .await
                .expect_err("a plaintext stream on a closed hub");
            assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");

            // A stranger's channel: refused at the handshake.
            let err = channel(&ctx, &vault, &addr, &eve, &hub_key)
                .await
                .expect_err("a stranger's channel");
            assert_eq!(err.kind(), ErrorKind::Security, "{err}");

            // Alice pushes and pulls, keeps her read position, registers.
            let ca = channel(&ctx, &vault, &addr, &alice, &hub_key).await?;
            let via_a = |service: &str| route![ca.address(), service];
            let worker_a = open(&mut ctx, via_a("stream"), "a-1").await?.unwrap();
            for i in 0..3u64 {
                let p = push(&mut ctx, worker_a.clone(), i, b"m").await?;
                assert_eq!(p.decode_data::<PushConfirm>(STREAM_PUSH)?.request_id.0, i);
            }
            save_index(&ctx, via_a("stream_index"), "a-1", 2).await?;
            ctx.start_worker("dest", ockam_get_started::Echoer).await?;
            let fwd = RemoteForwarder::create_over(&ctx, route![ca.address()], "dest").await?;
            // Through her forwarder: a stranger's plaintext is dropped,
            // an admitted identity's message passes.
            let forwarder = fwd.remote_address();
            ctx.send(
                route![(TCP, addr.as_str()), forwarder.clone()],
                "plain".to_string(),
            )
            .await?;
            ctx.send(route![ca.address(), forwarder], "through".to_string())
                .await?;
            assert_eq!(ctx.receive_timeout::<String>(10).await?.body(), "through");
            assert!(
                ctx.receive_duration::<String>(Duration::from_millis(500))
                    .await
                    .is_err(),
                "a plaintext message went through a closed hub's forwarder"
            );

            // Bob pulls, may not push, and his read position is his own.
            let cb = channel(&ctx, &vault, &addr, &bob, &hub_key).await?;
            let worker_b =
                bob_reads_and_keeps_his_own_position(&mut ctx, &ca, &cb, "stream", "stream_index")
                    .await?;
            let err = RemoteForwarder::create_over(&ctx, route![cb.address()], "dest")
                .await
                .expect_err("bob may not register");
            assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
            // Streams no rule names: nobody's.
            let refused = open(&mut ctx, via_a("stream"), "b-1").await?.unwrap_err();
            assert!(refused.is_access_denied(), "{refused:?}");
            // A stream client that may push its outgoing stream and not
            // read its incoming one learns it from `connect`.
            let err = ockam_stream_client::Stream::new(&ctx)?
                .client_id("alice-client")
                .connect(route![ca.address()], "a-2", "b-2")
                .await
                .expect_err("an incoming stream alice may not read");
            assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
            assert!(err.message().contains("read stream \"b-2\""), "{err}");
            // And one that may do both is connected.
            let (_sender, _receiver) = ockam_stream_client::Stream::new(&ctx)?
                .client_id("alice-client")
                .connect(route![ca.address()], "a-2", "a-3")
                .await?;

            // Bob leaves the file; SIGHUP: his next request is refused.
            access_file(&file, &alice_key, None);
            let pid = h.lock().unwrap().child.id();
            std::process::Command::new("kill")
                .args(["-HUP", &pid.to_string()])
                .status()
                .unwrap();
            h.lock()
                .unwrap()
                .wait_for_log("access file reloaded", Duration::from_secs(10));
            assert_denied(
                &pull(&mut ctx, worker_b).await?,
                "not allowed to use this hub",
            );
            let p = pull(&mut ctx, worker_a).await?;
            assert!(refusal(&p).is_none(), "alice is still served");
            let err = channel(&ctx, &vault, &addr, &bob, &hub_key)
                .await
                .expect_err("bob's new channel after the reload");
            assert_eq!(err.kind(), ErrorKind::Security, "{err}");

            // Garbage and a half-finished handshake on the port: the hub
            // goes on serving alice.
            let mut junk = std::net::TcpStream::connect(&addr).unwrap();
            let _ = junk.write_all(&[0xff; 64]);
            ctx.send(
                route![(TCP, addr.as_str()), "secure_channel_listener"],
                ChannelMessage::Handshake(vec![7; 32]),
            )
            .await?;
            let ca2 = channel(&ctx, &vault, &addr, &alice, &hub_key).await?;
            let via = route![ca2.address(), "echo_service"];
            ctx.send(via, "still here".to_string()).await?;
            assert_eq!(
                ctx.receive_timeout::<String>(10).await?.body(),
                "still here"
            );
            ctx.stop().await
        })
        .unwrap();

    // A restart keeps the hub's identity.
    let mut hub = std::sync::Arc::try_unwrap(hub)
        .ok()
        .unwrap()
        .into_inner()
        .unwrap();
    hub.terminate();
    let hub = HubProcess::start(&addr, &args);
    assert_eq!(
        identity(&hub),
        hub_key,
        "the hub's identity changed with a restart"
    );
}

#[test]
fn an_open_hub_says_so_once_and_names_the_flag_that_closes_it() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_address();
    let hub = HubProcess::start(&addr, &["--data-dir", dir.path().to_str().unwrap()]);
    let warned: Vec<String> = hub
        .seen_lines()
        .into_iter()
        .filter(|l| l.contains("this hub is open"))
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("WARN") && warned[0].contains("--access-file"),
        "{}",
        warned[0]
    );
}

/// The field `name=` of a log line.
#[cfg(feature = "kafka")]
fn field<'l>(line: &'l str, name: &str) -> &'l str {
    line.split(&format!("{name}="))
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

/// The Kafka back end of a closed hub, in its child process (the default):
/// the same rules as the embedded store's, the read positions kept per
/// identity in consumer groups named with it, and a child that serves no
/// one but its hub's gate, also after it was killed and restarted.
#[cfg(feature = "kafka")]
#[test]
fn a_closed_hubs_kafka_streams_follow_the_same_rules() {
    closed_kafka_hub("a_closed_hubs_kafka_streams_follow_the_same_rules", false);
}

/// The same with `--kafka-in-process`.
#[cfg(feature = "kafka")]
#[test]
fn a_closed_hubs_in_process_kafka_streams_follow_the_same_rules() {
    closed_kafka_hub(
        "a_closed_hubs_in_process_kafka_streams_follow_the_same_rules",
        true,
    );
}

#[cfg(feature = "kafka")]
fn closed_kafka_hub(test: &str, in_process: bool) {
    use common::kafka::{prerequisites, read_with_kafka_python, unique_prefix, Broker};
    let Some(tansu) = prerequisites(test) else {
        return;
    };
    let broker = Broker::shared(&tansu);
    let prefix = unique_prefix("closed");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.toml");
    let vault = Vault::new();
    let (alice, bob) = (vault.generate_x25519(), vault.generate_x25519());
    let alice_key = vault.public_key(&alice).unwrap();
    let bob_key = vault.public_key(&bob).unwrap();
    access_file(&file, &alice_key, Some(&bob_key));
    let addr = free_address();
    let hub = HubProcess::start(
        &addr,
        &[
            "--data-dir",
            dir.path().join("data").to_str().unwrap(),
            "--access-file",
            file.to_str().unwrap(),
            "--kafka-bootstrap-servers",
            &broker.address,
            "--kafka-prefix",
            &prefix,
            if in_process {
                "--kafka-in-process"
            } else {
                "--log-level=info"
            },
        ],
    );
    let hub_key = identity(&hub);
    let child = (!in_process).then(|| {
        let started = hub.wait_for_log(
            "Kafka back end started in a child process",
            Duration::from_secs(30),
        );
        (
            field(&started, "address").to_string(),
            field(&started, "pid").to_string(),
        )
    });
    let hub = std::sync::Arc::new(std::sync::Mutex::new(hub));

    let (mut ctx, mut executor) = start_node();
    let (h, b) = (hub.clone(), broker.address.clone());
    executor
        .execute(async move {
            let (hub, broker) = (h, b);
            let _tcp = TcpTransport::create(&ctx).await?;
            let vault = vault;

            // Plain TCP: refused at the hub.
            let plain = route![(TCP, addr.as_str()), "stream_kafka"];
            let refused = open(&mut ctx, plain, "a-1").await?.unwrap_err();
            assert!(refused.is_access_denied(), "{refused:?}");
            assert!(refused.reason.contains("secure channel"), "{refused:?}");

            // Alice pushes, keeps her position; it is her identity's
            // consumer group in Kafka.
            let ca = channel(&ctx, &vault, &addr, &alice, &hub_key).await?;
            let via_a = |service: &str| route![ca.address(), service];
            let worker_a = open(&mut ctx, via_a("stream_kafka"), "a-1").await?.unwrap();
            for i in 0..3u64 {
                let p = push(&mut ctx, worker_a.clone(), i, b"m").await?;
                assert_eq!(p.decode_data::<PushConfirm>(STREAM_PUSH)?.request_id.0, i);
            }
            save_index(&ctx, via_a("stream_kafka_index"), "a-1", 2).await?;
            assert_eq!(
                get_index(&mut ctx, via_a("stream_kafka_index"), "a-1").await?,
                Some(2)
            );

            // Bob pulls, may not push, and his position is his own.
            let cb = channel(&ctx, &vault, &addr, &bob, &hub_key).await?;
            let via_b = |service: &str| route![cb.address(), service];
            bob_reads_and_keeps_his_own_position(
                &mut ctx,
                &ca,
                &cb,
                "stream_kafka",
                "stream_kafka_index",
            )
            .await?;
            let refused = open(&mut ctx, via_b("stream_kafka"), "b-1")
                .await?
                .unwrap_err();
            assert!(refused.is_access_denied(), "{refused:?}");
            // Bob's refused push did not reach Kafka.
            let topic = format!("{prefix}a-1");
            let seen = read_with_kafka_python(&broker, &topic, &format!("{prefix}{alice_key}/c"));
            assert_eq!(seen.messages.len(), 3, "{seen:?}");
            assert_eq!(seen.committed, Some(2), "alice's group");
            let seen = read_with_kafka_python(&broker, &topic, &format!("{prefix}{bob_key}/c"));
            assert_eq!(seen.committed, Some(1), "bob's group");
            let seen = read_with_kafka_python(&broker, &topic, &format!("{prefix}c"));
            assert_eq!(seen.committed, None, "a group without the identity");

            // The stream client over the channel: connected, and told
            // when it may not read its incoming stream.
            let (_sender, _receiver) = ockam_stream_client::Stream::new(&ctx)?
                .stream_service("stream_kafka")
                .index_service("stream_kafka_index")
                .client_id("alice-client")
                .connect(route![ca.address()], "a-2", "a-3")
                .await?;
            let err = ockam_stream_client::Stream::new(&ctx)?
                .stream_service("stream_kafka")
                .index_service("stream_kafka_index")
                .client_id("alice-client")
                .connect(route![ca.address()], "a-2", "b-2")
                .await
                .expect_err("an incoming stream alice may not read");
            assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");

            let Some((child_addr, child_pid)) = child else {
                return ctx.stop().await;
            };
            // Around the gate: straight to the child's port, or through
            // the hub to the child's address. Refused, or dropped; never
            // a stream worker.
            for (around, to) in [
                (
                    "the child's port",
                    route![(TCP, child_addr.as_str()), "stream_kafka"],
                ),
                (
                    "the hub, then the child's address",
                    route![
                        (TCP, addr.as_str()),
                        (TCP, child_addr.as_str()),
                        "stream_kafka"
                    ],
                ),
            ] {
                let req = CreateStreamRequest {
                    stream_name: Some("a-1".into()),
                };
                ctx.send(to, ProtocolPayload::new(STREAM_CREATE, &req)?)
                    .await?;
                if let Ok(answer) = ctx
                    .receive_duration::<ProtocolPayload>(Duration::from_secs(3))
                    .await
                {
                    let refused = refusal(&answer)
                        .unwrap_or_else(|| panic!("served through {around}: {answer:?}"));
                    assert!(refused.is_access_denied(), "{around}: {refused:?}");
                }
            }

            // The gate itself: plaintext is refused, and so is a route
            // through it to anything but the child's services and workers.
            let req = CreateStreamRequest {
                stream_name: Some("a-1".into()),
            };
            let gate = route![(TCP, addr.as_str()), "kafka_gate", "stream_kafka"];
            let p = request(&mut ctx, gate, STREAM_CREATE, &req).await?;
            assert_denied(&p, "secure channel");
            let gate = route![ca.address(), "kafka_gate", "echo_service"];
            let p = request(&mut ctx, gate, STREAM_CREATE, &req).await?;
            let r = refusal(&p).expect("refused");
            assert!(r.reason.contains("no such Kafka stream worker"), "{r:?}");

            // The child killed: a new one, a new channel, served again.
            std::process::Command::new("kill")
                .args(["-9", &child_pid])
                .status()
                .unwrap();
            hub.lock().unwrap().wait_for_log(
                "Kafka back end restarted in a new child process",
                Duration::from_secs(30),
            );
            let worker_a = open(&mut ctx, via_a("stream_kafka"), "a-1").await?.unwrap();
            let p = push(&mut ctx, worker_a, 3, b"m").await?;
            assert_eq!(p.decode_data::<PushConfirm>(STREAM_PUSH)?.request_id.0, 3);
            assert_eq!(
                get_index(&mut ctx, via_a("stream_kafka_index"), "a-1").await?,
                Some(2)
            );
            ctx.stop().await
        })
        .unwrap();
}

//! The hub binary over TCP, spoken to with the raw stream protocol: echo,
//! create/push/pull/waiting pull, indexes, and bad input of every kind.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

mod common;

use common::{free_address, open_stream, request, HubProcess};
use ockam_core::{route, TCP};
use ockam_node::start_node;
use ockam_stream_client::protocol::Uint;
use ockam_stream_client::protocol::*;
use ockam_transport_tcp::TcpTransport;
use std::process::Command;
use std::time::{Duration, Instant};

fn start_hub(args: &[&str]) -> (HubProcess, String) {
    let addr = free_address();
    (HubProcess::start(&addr, args), addr)
}

#[test]
fn the_hub_serves_echo_streams_and_indexes_and_survives_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let (_hub, hub) = start_hub(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--max-pull",
        "50",
        "--max-message-size",
        "1000",
    ]);
    let (mut ctx, mut executor) = start_node();
    executor
        .execute(async move {
            let _tcp = TcpTransport::create(&ctx).await?;
            let h = hub.as_str();

            ctx.send(route![(TCP, h), "echo_service"], "ping".to_string())
                .await?;
            assert_eq!(ctx.receive::<String>().await?.take(), "ping");

            // Create: the reply comes from the stream worker.
            ctx.send(
                route![(TCP, h), "stream"],
                ProtocolPayload::new(
                    STREAM_CREATE,
                    &CreateStreamRequest {
                        stream_name: Some("orders".into()),
                    },
                )?,
            )
            .await?;
            let init = ctx.receive::<ProtocolPayload>().await?;
            let stream = init.return_route();
            let i: Init = init.decode_data(STREAM_CREATE)?;
            assert_eq!(i.stream_name, "orders");

            for n in 0..120u64 {
                let c: PushConfirm = request(
                    &mut ctx,
                    stream.clone(),
                    STREAM_PUSH,
                    &PushRequest {
                        request_id: Uint(n),
                        data: n.to_be_bytes().to_vec(),
                    },
                )
                .await?
                .decode_data(STREAM_PUSH)?;
                assert_eq!(
                    (c.request_id, c.status, c.index),
                    (Uint(n), PushStatus::Ok, Uint(n))
                );
            }
            // An absurd limit is capped (--max-pull 50).
            let p: PullResponse = request(
                &mut ctx,
                stream.clone(),
                STREAM_PULL,
                &PullRequest {
                    request_id: Uint(1),
                    index: Uint(10),
                    limit: Uint(u64::MAX),
                },
            )
            .await?
            .decode_data(STREAM_PULL)?;
            assert_eq!(p.messages.len(), 50);
            assert!(p.messages.iter().enumerate().all(
                |(i, m)| m.index.0 == 10 + i as u64 && m.data == (10 + i as u64).to_be_bytes()
            ));
            // A position past the end is refused, never answered empty
            // (a client waiting there would skip what comes before it).
            let refusal: StreamError = request(
                &mut ctx,
                stream.clone(),
                STREAM_PULL,
                &PullRequest {
                    request_id: Uint(2),
                    index: Uint(u64::MAX),
                    limit: Uint(10),
                },
            )
            .await?
            .decode_data(STREAM_ERROR)?;
            assert!(refusal.is_past_end(), "{refusal:?}");
            assert_eq!(refusal.protocol, STREAM_PULL);
            // At the end exactly, it is an empty answer.
            let p: PullResponse = request(
                &mut ctx,
                stream.clone(),
                STREAM_PULL,
                &PullRequest {
                    request_id: Uint(3),
                    index: Uint(120),
                    limit: Uint(10),
                },
            )
            .await?
            .decode_data(STREAM_PULL)?;
            assert!(p.messages.is_empty());

            // A waiting pull on an empty stream times out empty...
            ctx.send(
                route![(TCP, h), "stream"],
                ProtocolPayload::new(
                    STREAM_CREATE,
                    &CreateStreamRequest {
                        stream_name: Some("quiet".into()),
                    },
                )?,
            )
            .await?;
            let quiet = ctx.receive::<ProtocolPayload>().await?.return_route();
            let t = Instant::now();
            let p: PullResponse = request(
                &mut ctx,
                quiet,
                STREAM_PULL_WAIT,
                &PullWaitRequest {
                    request_id: Uint(3),
                    index: Uint(0),
                    limit: Uint(10),
                    wait_ms: Uint(300),
                },
            )
            .await?
            .decode_data(STREAM_PULL)?;
            assert!(p.messages.is_empty() && t.elapsed() >= Duration::from_millis(250));

            // Indexes.
            let get = IndexRequest::Get {
                client_id: "c1".into(),
                stream_name: "orders".into(),
            };
            let idx: Index = request(
                &mut ctx,
                route![(TCP, h), "stream_index"],
                STREAM_INDEX,
                &get,
            )
            .await?
            .decode_data(STREAM_INDEX)?;
            assert_eq!(idx.index, None);
            ctx.send(
                route![(TCP, h), "stream_index"],
                ProtocolPayload::new(
                    STREAM_INDEX,
                    &IndexRequest::Save {
                        client_id: "c1".into(),
                        stream_name: "orders".into(),
                        index: Uint(42),
                    },
                )?,
            )
            .await?;
            let idx: Index = request(
                &mut ctx,
                route![(TCP, h), "stream_index"],
                STREAM_INDEX,
                &get,
            )
            .await?
            .decode_data(STREAM_INDEX)?;
            assert_eq!(idx.index, Some(Uint(42)));

            // Bad input: each gets a stream_error, the hub keeps serving.
            let huge = "x".repeat(10_000);
            for name in ["", "../../etc/passwd", "a/b", huge.as_str()] {
                let r = request(
                    &mut ctx,
                    route![(TCP, h), "stream"],
                    STREAM_CREATE,
                    &CreateStreamRequest {
                        stream_name: Some(name.into()),
                    },
                )
                .await?;
                assert_eq!(r.protocol, STREAM_ERROR, "{name:?}");
            }
            let r = request(
                &mut ctx,
                route![(TCP, h), "stream"],
                "stream_delete_everything",
                &1u8,
            )
            .await?;
            assert_eq!(r.protocol, STREAM_ERROR);
            let r = request(&mut ctx, stream.clone(), "stream_explode", &1u8).await?;
            assert_eq!(r.protocol, STREAM_ERROR);
            let r = request(&mut ctx, stream.clone(), STREAM_PUSH, &vec![0xffu8; 3]).await?;
            assert_eq!(r.protocol, STREAM_ERROR);
            let r = request(
                &mut ctx,
                route![(TCP, h), "stream_index"],
                STREAM_INDEX,
                &IndexRequest::Get {
                    client_id: "../x".into(),
                    stream_name: "s".into(),
                },
            )
            .await?;
            assert_eq!(r.protocol, STREAM_ERROR);
            // Not even a protocol payload: refused too, to every service
            // and stream worker, saying why.
            for to in [
                route![(TCP, h), "stream"],
                route![(TCP, h), "stream_index"],
                stream.clone(),
            ] {
                ctx.send(to.clone(), vec![0xffu8; 7]).await?;
                let r = ctx.receive::<ProtocolPayload>().await?;
                let e: StreamError = r.decode_data(STREAM_ERROR)?;
                assert!(
                    e.reason.contains("not a stream protocol payload"),
                    "{to}: {e:?}"
                );
            }
            // A refusal is never answered (two services could otherwise
            // refuse each other's refusals forever).
            ctx.send(
                route![(TCP, h), "stream"],
                ProtocolPayload::new(STREAM_ERROR, &StreamError::new("x", "y"))?,
            )
            .await?;
            assert!(ctx
                .receive_duration::<ProtocolPayload>(Duration::from_millis(300))
                .await
                .is_err());

            // A message over --max-message-size is refused; that stream
            // worker then stores nothing more (so nothing lands after the
            // refused one: its client resends from it through a new one).
            let c: PushConfirm = request(
                &mut ctx,
                stream.clone(),
                STREAM_PUSH,
                &PushRequest {
                    request_id: Uint(500),
                    data: vec![0; 1001],
                },
            )
            .await?
            .decode_data(STREAM_PUSH)?;
            assert_eq!(c.status, PushStatus::Error);
            let after = PushRequest {
                request_id: Uint(501),
                data: vec![1],
            };
            ctx.send(stream.clone(), ProtocolPayload::new(STREAM_PUSH, &after)?)
                .await?;
            assert!(ctx
                .receive_duration::<ProtocolPayload>(Duration::from_millis(300))
                .await
                .is_err());

            // Still serving, through a new stream worker.
            let stream = open_stream(&mut ctx, route![(TCP, h), "stream"], "orders").await?;
            let c: PushConfirm = request(
                &mut ctx,
                stream.clone(),
                STREAM_PUSH,
                &PushRequest {
                    request_id: Uint(999),
                    data: vec![1],
                },
            )
            .await?
            .decode_data(STREAM_PUSH)?;
            assert_eq!(c.index, Uint(120));
            ctx.stop().await
        })
        .unwrap();
    // Nothing escaped the data directory: it holds the store, the hub's
    // identity and the socket `ockam_hub streams` asks it through.
    let mut entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    entries.sort();
    assert_eq!(entries, ["identity.key", "inspect.sock", "streams.redb"]);
}

#[test]
fn help_and_bad_flags_exit_with_meaningful_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_ockam_hub"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--data-dir",
        "--storage",
        "--max-pull",
        "--max-wait-ms",
        "--max-message-size",
        "--log-level",
        "--kafka-bootstrap-servers",
        "--kafka-prefix",
        "--kafka-replication-factor",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ockam_hub"))
        .args(["--storage", "floppy"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_ockam_hub"))
        .args(["--max-pull", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A listen address that cannot be used: a clear error and exit code 1.
    let out = Command::new(env!("CARGO_BIN_EXE_ockam_hub"))
        .args(["--storage", "memory", "--listen", "256.1.1.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
    // Kafka settings, from flags or the environment, are checked up front.
    let out = Command::new(env!("CARGO_BIN_EXE_ockam_hub"))
        .args(["--storage", "memory", "--listen", "127.0.0.1:0"])
        .env("OCKAM_HUB_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
        .env("OCKAM_HUB_KAFKA_PREFIX", "bad/prefix")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("topic prefix"));
    let out = Command::new(env!("CARGO_BIN_EXE_ockam_hub"))
        .args(["--storage", "memory", "--listen", "127.0.0.1:0"])
        .args(["--kafka-bootstrap-servers", "127.0.0.1:1"])
        .args(["--kafka-replication-factor", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("replication factor"));
    // Built without the `kafka` feature: good Kafka settings are refused
    // with the reason, not ignored.
    if !cfg!(feature = "kafka") {
        for child in [false, true] {
            let out = Command::new(env!("CARGO_BIN_EXE_ockam_hub"))
                .args(["--storage", "memory", "--listen", "127.0.0.1:0"])
                .args(["--kafka-bootstrap-servers", "127.0.0.1:9092"])
                .args(if child { &["--kafka-child"][..] } else { &[] })
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(stderr.contains("without the `kafka` feature"), "{stderr}");
        }
    }
}

#[test]
fn sigterm_stops_the_hub_cleanly() {
    let (mut hub, _) = start_hub(&["--storage", "memory"]);
    let pid = hub.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = hub.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "hub ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

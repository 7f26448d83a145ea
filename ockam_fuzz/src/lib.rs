//! The bodies of the fuzz targets: every decoder that reads a peer's bytes,
//! and the protocol state machines those decoders feed.
//!
//! Each body takes arbitrary bytes and must neither panic nor hang, nor
//! break the invariant it checks (a round trip, a memory bound). The same
//! bodies run two ways:
//! - under libFuzzer, from `fuzz/` (cargo-fuzz layout, nightly toolchain):
//!   `cargo +nightly fuzz run tcp_frames` (see `fuzz/README.md`);
//! - on the stable toolchain, from this crate's test `tests/targets.rs`:
//!   each body over its seed corpus (`fuzz/corpus/<target>/`) and over
//!   random and mutated inputs (`OCKAM_FUZZ_ITERATIONS`, default 3,000 a
//!   target; `OCKAM_FUZZ_SEED` to replay a run).
//!
//! [`TARGETS`] lists them; [`seeds`] makes the seed corpus
//! (`cargo run -p ockam-rs-fuzz --bin seed-corpus` writes it).
#![deny(missing_docs)]

use bytes::Bytes;
use ockam_core::{Delivery, Message, TransportMessage};
use ockam_rpc::internal::proto::{decode_data, Frame, RecvHalf, SendHalf};
use ockam_rpc::{Timing, Window};
use ockam_stream_client::internal::consumer::{self, Consumer, ConsumerConfig};
use ockam_stream_client::internal::producer::{self, Producer, ProducerConfig};
use ockam_stream_client::protocol::*;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// A fuzz target: its name (a file in `fuzz/fuzz_targets/`, a folder in
/// `fuzz/corpus/`) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("tcp_frames", tcp_frames),
    ("transport_message", transport_message),
    ("stream_protocol", stream_protocol),
    ("stream_consumer", stream_consumer),
    ("stream_producer", stream_producer),
    ("channel_transport", channel_transport),
    ("channel_handshake", channel_handshake),
    ("rpc_frames", rpc_frames),
    ("rpc_calls", rpc_calls),
];

/// The largest frame the fuzzed TCP decoder accepts (small, so that the
/// "too large" path is reached).
const FUZZ_MAX_FRAME: usize = 4096;

/// A TCP connection's reader (`ockam_transport_tcp`): the bytes arrive in
/// chunks (sizes taken from the first byte), frames are cut out of them and
/// each frame decoded as a `TransportMessage`; a framing error ends the
/// connection, as the reader does. The decoder never holds more than one
/// frame's worth of bytes beyond what it was given.
pub fn tcp_frames(data: &[u8]) {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut decoder = ockam_transport_tcp::internal::FrameDecoder::new(FUZZ_MAX_FRAME);
    for chunk in data.chunks(step) {
        decoder.extend(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= FUZZ_MAX_FRAME, "a frame over the limit");
                    let _ = TransportMessage::decode(frame);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(
            decoder.pending()
                <= FUZZ_MAX_FRAME + ockam_transport_tcp::internal::LENGTH_PREFIX + step,
            "the decoder holds more than a frame"
        );
    }
}

/// `TransportMessage::decode` (what every hop reads), its round trip, and
/// `decode_split` (a secure channel's inner message) at a place taken from
/// the first two bytes.
pub fn transport_message(data: &[u8]) {
    if let Ok(m) = TransportMessage::decode(data) {
        let again = m
            .encode()
            .unwrap_or_else(|e| panic!("a decoded message does not encode: {e}"));
        let back = TransportMessage::decode(&again)
            .unwrap_or_else(|e| panic!("a message does not round-trip: {e}"));
        assert_eq!(back, m, "a message changed in a round trip");
    }
    if data.len() >= 2 {
        let at = (usize::from(data[0]) << 8 | usize::from(data[1])) % data.len();
        let buf = data.to_vec();
        let _ = TransportMessage::decode_split(buf, at..data.len());
    }
}

/// Decodes `bytes` as a `T`; if it decodes, checks that it round-trips.
fn round_trip<T>(bytes: &[u8])
where
    T: Message + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = T::decode(bytes) {
        let again = v
            .encode()
            .unwrap_or_else(|e| panic!("a decoded value does not encode: {e}"));
        let back = T::decode(&again).unwrap_or_else(|e| panic!("a value does not round-trip: {e}"));
        assert_eq!(back, v, "a value changed in a round trip");
    }
}

/// The stream protocol (seed 002): a `ProtocolPayload` as the hub and the
/// stream client read it, then its data as every request and response,
/// each round-tripped; names checked as the hub checks them; a pulled
/// message's data as the `TransportMessage` the consumer unwraps.
pub fn stream_protocol(data: &[u8]) {
    round_trip::<ProtocolPayload>(data);
    let Ok(p) = ProtocolPayload::decode(data) else {
        return;
    };
    let d = p.data.as_slice();
    round_trip::<CreateStreamRequest>(d);
    round_trip::<Init>(d);
    round_trip::<PushRequest>(d);
    round_trip::<PushConfirm>(d);
    round_trip::<PullRequest>(d);
    round_trip::<PullWaitRequest>(d);
    round_trip::<PullResponse>(d);
    round_trip::<IndexRequest>(d);
    round_trip::<Index>(d);
    round_trip::<StreamError>(d);
    if let Ok(r) = p.decode_data::<CreateStreamRequest>(&p.protocol) {
        if let Some(name) = &r.stream_name {
            let _ = validate_name("stream", name);
        }
    }
    if let Ok(r) = p.decode_data::<PullResponse>(&p.protocol) {
        for m in &r.messages {
            let _ = TransportMessage::decode(&m.data);
        }
    }
    if let Ok(e) = p.decode_data::<StreamError>(STREAM_ERROR) {
        let _ = (e.is_past_end(), e.is_unknown_protocol());
    }
    let _ = store_incarnation(&p.protocol);
}

/// One step of a fuzzed consumer: what the hub (or the worker) tells it.
#[derive(Debug, Serialize, Deserialize)]
pub enum ConsumerStep {
    /// `Input::Init`.
    Init(Option<u64>),
    /// `Input::Index`.
    Index(Option<u64>),
    /// `Input::Pulled`.
    Pulled(PullResponse),
    /// `Input::Refused`.
    Refused(StreamError),
    /// `Input::SendFailed`.
    SendFailed,
    /// Every message delivered so far reported (taken or not).
    Receipts(bool),
    /// Time passes (milliseconds).
    Wait(u16),
}

/// A consumer (`ockam_stream_client::internal::consumer`, seed 002 with at-least-once
/// delivery) driven by a hub that answers anything: any sequence of
/// answers, refusals, failures and time. It must not panic, must never
/// hold more than its window of delivered-but-unreported messages, and
/// must deliver indexes in increasing order within an epoch.
pub fn stream_consumer(data: &[u8]) {
    let Ok(steps) = serde_bare::from_slice::<Vec<ConsumerStep>>(data) else {
        return;
    };
    let config = ConsumerConfig::default();
    let window = config.window;
    let mut c = Consumer::new("s", "c", config);
    let mut now = Instant::now();
    let mut delivered: Vec<consumer::Deliver> = Vec::new();
    let mut last: Option<(u64, u64)> = None;
    for step in steps.into_iter().take(256) {
        match step {
            ConsumerStep::Init(incarnation) => c.handle(consumer::Input::Init { incarnation }, now),
            ConsumerStep::Index(i) => c.handle(consumer::Input::Index(i), now),
            ConsumerStep::Pulled(r) => c.handle(consumer::Input::Pulled(r), now),
            ConsumerStep::Refused(e) => c.handle(consumer::Input::Refused(e), now),
            ConsumerStep::SendFailed => c.handle(consumer::Input::SendFailed, now),
            ConsumerStep::Receipts(taken) => {
                for d in delivered.drain(..) {
                    let delivery = if taken {
                        Delivery::Handled
                    } else {
                        Delivery::NotHandled
                    };
                    c.handle(
                        consumer::Input::Taken {
                            epoch: d.epoch,
                            index: d.index,
                            delivery,
                        },
                        now,
                    );
                }
            }
            ConsumerStep::Wait(ms) => {
                now += Duration::from_millis(u64::from(ms));
                c.handle_timeout(now);
            }
        }
        while c.poll_transmit(now).is_some() {}
        while let Some(d) = c.poll_deliver() {
            if let Some((epoch, index)) = last {
                assert!(
                    d.epoch != epoch || d.index > index,
                    "delivered index {} after {index} in epoch {epoch}",
                    d.index
                );
            }
            last = Some((d.epoch, d.index));
            delivered.push(d);
        }
        assert!(
            c.in_window() <= window.max(1),
            "{} delivered and unreported, window {window}",
            c.in_window()
        );
    }
}

/// One step of a fuzzed producer.
#[derive(Debug, Serialize, Deserialize)]
pub enum ProducerStep {
    /// The application sends a message of this many bytes.
    Send(u8),
    /// `Input::Init`.
    Init,
    /// `Input::Confirm`.
    Confirm(PushConfirm),
    /// `Input::Refused`.
    Refused(StreamError),
    /// `Input::SendFailed`.
    SendFailed,
    /// Time passes (milliseconds).
    Wait(u16),
}

/// A producer (`ockam_stream_client::internal::producer`) driven by a hub that
/// answers anything: confirmations for pushes never made, duplicates,
/// refusals, failures, time. It must not panic, and never have more
/// unconfirmed messages than the application sent.
pub fn stream_producer(data: &[u8]) {
    let Ok(steps) = serde_bare::from_slice::<Vec<ProducerStep>>(data) else {
        return;
    };
    let mut p = Producer::new("s", ProducerConfig::default());
    let mut now = Instant::now();
    let mut sent = 0usize;
    for step in steps.into_iter().take(256) {
        match step {
            ProducerStep::Send(n) => {
                sent += 1;
                p.send(vec![0; usize::from(n)]);
            }
            ProducerStep::Init => p.handle(producer::Input::Init, now),
            ProducerStep::Confirm(c) => p.handle(producer::Input::Confirm(c), now),
            ProducerStep::Refused(e) => p.handle(producer::Input::Refused(e), now),
            ProducerStep::SendFailed => p.handle(
                producer::Input::SendFailed(ockam_core::Error::new(
                    ockam_core::ErrorKind::Io,
                    "fuzzed",
                )),
                now,
            ),
            ProducerStep::Wait(ms) => {
                now += Duration::from_millis(u64::from(ms));
                p.handle_timeout(now);
            }
        }
        while p.poll_transmit(now).is_some() {}
        while p.poll_event().is_some() {}
        assert!(p.unconfirmed() <= sent, "more unconfirmed than sent");
    }
}

/// A secure channel end's receive path (`ockam_channel`): a transport
/// message parsed, authenticated and checked for replay, and the same bytes
/// as a plaintext from a peer that holds the key.
pub fn channel_transport(data: &[u8]) {
    ockam_channel::internal::receive_transport(data)
}

/// The Noise XX handshake's reads (`HandshakeState::read_message`): the
/// bytes as message 1 to a responder, as message 2 to an initiator that
/// sent a real message 1, and as message 3 to a responder that got a real
/// message 1 and sent message 2. None may panic, and a read that fails
/// leaves no finished handshake behind.
pub fn channel_handshake(data: &[u8]) {
    use ockam_channel::internal::{HandshakeState, Role};
    let vault = ockam_vault::Vault::new();
    let new = |role| HandshakeState::new(&vault, role, b"", vault.generate_x25519());

    let mut responder = new(Role::Responder);
    if responder.read_message(data).is_err() {
        assert!(!responder.is_finished());
    }

    let mut initiator = new(Role::Initiator);
    let Ok(m1) = initiator.write_message(&[]) else {
        return;
    };
    if initiator.read_message(data).is_err() {
        assert!(!initiator.is_finished());
    }

    let mut responder = new(Role::Responder);
    if responder.read_message(&m1).is_err() || responder.write_message(&[]).is_err() {
        return;
    }
    if responder.read_message(data).is_err() {
        assert!(!responder.is_finished());
    } else if responder.is_finished() {
        let _ = responder.into_transport();
    }
}

/// One step of a fuzzed typed stream.
#[derive(Debug, Serialize, Deserialize)]
pub enum RpcStep {
    /// A frame to the receiving half.
    ToReceiver(Frame),
    /// A frame to the sending half.
    ToSender(Frame),
    /// The receiving application takes a message.
    Take,
    /// The sending application sends a message of this many bytes.
    Send(u16),
    /// Time passes (milliseconds).
    Wait(u16),
}

/// A small window, so that the credit's edges are reached.
const RPC_WINDOW: Window = Window {
    messages: 8,
    bytes: 4096,
};

/// Typed streams (`ockam_rpc::internal::proto`): a frame as `Frame::decode` and as
/// the receiving end's zero-copy `decode_data`, which must agree; then
/// both halves driven by a peer that sends anything, in any order. The
/// receiving half never holds more than its window (messages and bytes).
pub fn rpc_frames(data: &[u8]) {
    let payload = Bytes::copy_from_slice(data);
    let full = Frame::decode(data);
    match (decode_data(&payload), &full) {
        (
            Some(Ok((first, bodies))),
            Ok(Frame::Data {
                first: f,
                bodies: b,
            }),
        ) => {
            assert_eq!(first, *f, "decode_data disagrees with Frame::decode");
            assert_eq!(bodies.len(), b.len(), "decode_data miscounts");
            assert_eq!(
                bodies.body_bytes(),
                b.body_bytes(),
                "decode_data mismeasures"
            );
            assert!(bodies.iter().eq(b.iter()));
        }
        (Some(Ok(_)), _) => panic!("decode_data took what Frame::decode refuses"),
        // decode_data reads only canonical BARE (minimal LEB128 `uint`s);
        // serde_bare also takes overlong ones. A correct sender never
        // writes those, and the receiving end hands a frame decode_data
        // calls "not Data" to Frame::decode: the two may differ only there.
        (None | Some(Err(_)), Ok(frame @ Frame::Data { .. })) => {
            let canonical = frame.encode().unwrap_or_default();
            assert_ne!(
                canonical, data,
                "decode_data refused a canonical Data frame"
            );
        }
        _ => {}
    }

    let Ok(steps) = serde_bare::from_slice::<Vec<RpcStep>>(data) else {
        return;
    };
    let mut now = Instant::now();
    let timing = Timing::default();
    let mut recv = RecvHalf::new(RPC_WINDOW, timing, now);
    let mut send = SendHalf::new(timing, now);
    for step in steps.into_iter().take(256) {
        match step {
            RpcStep::ToReceiver(Frame::Data { first, bodies }) => {
                recv.handle_data(first, bodies, now);
            }
            RpcStep::ToReceiver(f) => {
                recv.handle(f, now);
            }
            RpcStep::ToSender(f) => send.handle(f, now),
            RpcStep::Take => {
                let _ = recv.take();
            }
            RpcStep::Send(n) => {
                let _ = send.send(&vec![1; usize::from(n)]);
            }
            RpcStep::Wait(ms) => {
                now += Duration::from_millis(u64::from(ms));
                recv.handle_timeout(now);
                send.handle_timeout(now);
            }
        }
        while recv.poll_transmit(now).is_some() {}
        while send.poll_transmit(now).is_some() {}
        let (messages, bytes) = recv.held();
        assert!(
            messages as u64 <= RPC_WINDOW.messages && bytes <= RPC_WINDOW.bytes,
            "the receiver holds {messages} messages / {bytes} bytes over its window"
        );
    }
}

/// A typed-stream server's decoding of a call and a caller's of a reply.
pub fn rpc_calls(data: &[u8]) {
    ockam_rpc::internal::decode_call_messages(data)
}

/// Valid inputs for each target, by target name: the seed corpus
/// (`fuzz/corpus/<target>/<n>`), from which fuzzing and the random driver
/// mutate.
pub fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    use ockam_core::route;
    let msg = TransportMessage::v1(route!["a", "b"], route!["c"], b"hello".to_vec());
    let encoded = msg.encode().unwrap_or_default();
    let mut framed = Vec::new();
    let _ = ockam_transport_tcp::internal::encode_frame(&msg, &mut framed, FUZZ_MAX_FRAME);
    let mut two_frames = vec![3u8];
    two_frames.extend_from_slice(&framed);
    two_frames.extend_from_slice(&framed);

    let pulled = PullResponse {
        request_id: ockam_stream_client::protocol::Uint(1),
        messages: vec![StreamMessage {
            index: ockam_stream_client::protocol::Uint(0),
            data: encoded.clone(),
        }],
    };
    let stream = vec![
        payload(
            STREAM_CREATE,
            &CreateStreamRequest {
                stream_name: Some("s".into()),
            },
        ),
        payload(
            STREAM_PUSH,
            &PushRequest {
                request_id: ockam_stream_client::protocol::Uint(1),
                data: b"m".to_vec(),
            },
        ),
        payload(STREAM_PULL, &pulled),
        payload(
            STREAM_INDEX,
            &IndexRequest::Save {
                stream_name: "s".into(),
                client_id: "c".into(),
                index: ockam_stream_client::protocol::Uint(3),
            },
        ),
        payload(STREAM_ERROR, &StreamError::new(STREAM_PULL, "no")),
    ];

    let consumer = vec![steps(&[
        ConsumerStep::Init(Some(1)),
        ConsumerStep::Index(Some(0)),
        ConsumerStep::Pulled(pulled.clone()),
        ConsumerStep::Receipts(true),
        ConsumerStep::Wait(500),
        ConsumerStep::Pulled(pulled),
    ])];
    let producer = vec![steps(&[
        ProducerStep::Send(3),
        ProducerStep::Init,
        ProducerStep::Send(4),
        ProducerStep::Confirm(PushConfirm {
            request_id: ockam_stream_client::protocol::Uint(0),
            status: PushStatus::Ok,
            index: ockam_stream_client::protocol::Uint(0),
        }),
        ProducerStep::Wait(1000),
    ])];

    let rpc = vec![
        Frame::Data {
            first: 0,
            bodies: vec![vec![1u8, 2]; 3].into_iter().collect(),
        }
        .encode()
        .unwrap_or_default(),
        steps(&[
            RpcStep::ToSender(Frame::Credit {
                next: 0,
                credit_messages: 8,
                credit_bytes: 4096,
            }),
            RpcStep::Send(10),
            RpcStep::ToReceiver(Frame::Data {
                first: 0,
                bodies: [vec![1u8; 10]].into_iter().collect(),
            }),
            RpcStep::Take,
            RpcStep::ToReceiver(Frame::Close { total: 1 }),
            RpcStep::Wait(2000),
        ]),
    ];

    vec![
        ("tcp_frames", vec![two_frames]),
        ("transport_message", vec![encoded.clone()]),
        ("stream_protocol", stream),
        ("stream_consumer", consumer),
        ("stream_producer", producer),
        ("channel_transport", channel_seeds(&encoded)),
        ("channel_handshake", handshake_seeds()),
        ("rpc_frames", rpc),
        ("rpc_calls", ockam_rpc::internal::seed_call_messages()),
    ]
}

/// The `ProtocolPayload` of `protocol` carrying `v`, encoded.
fn payload<T: Serialize>(protocol: &str, v: &T) -> Vec<u8> {
    ProtocolPayload {
        protocol: protocol.into(),
        data: serde_bare::to_vec(v).unwrap_or_default(),
    }
    .encode()
    .unwrap_or_default()
}

fn steps<T: Serialize>(s: &[T]) -> Vec<u8> {
    serde_bare::to_vec(&s.iter().collect::<Vec<_>>()).unwrap_or_default()
}

/// A plaintext laid out as a channel's (see `ockam_channel`'s
/// `seal_transport`): payload, head, zero padding to 16 bytes, head length
/// (u32 LE), padding length, kind 1 (a message).
fn channel_seeds(encoded: &[u8]) -> Vec<Vec<u8>> {
    let mut plain = encoded.to_vec();
    let head_len = plain.len() as u32;
    let pad = (16 - (plain.len() + 6) % 16) % 16;
    plain.resize(plain.len() + pad, 0);
    plain.extend_from_slice(&head_len.to_le_bytes());
    plain.extend_from_slice(&[pad as u8, 1]);
    vec![plain]
}

/// The three messages of a real handshake.
fn handshake_seeds() -> Vec<Vec<u8>> {
    use ockam_channel::internal::{HandshakeState, Role};
    let vault = ockam_vault::Vault::new();
    let mut i = HandshakeState::new(&vault, Role::Initiator, b"", vault.generate_x25519());
    let mut r = HandshakeState::new(&vault, Role::Responder, b"", vault.generate_x25519());
    let (Ok(m1), _) = (i.write_message(&[]), ()) else {
        return Vec::new();
    };
    let _ = r.read_message(&m1);
    let Ok(m2) = r.write_message(&[]) else {
        return vec![m1];
    };
    let _ = i.read_message(&m2);
    let Ok(m3) = i.write_message(&[]) else {
        return vec![m1, m2];
    };
    vec![m1, m2, m3]
}

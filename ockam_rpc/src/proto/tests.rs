use super::*;
use proptest::prelude::*;

fn pair(window: Window) -> (SendHalf, RecvHalf, Instant) {
    let now = Instant::now();
    let s = SendHalf::new(Timing::default(), now);
    let r = RecvHalf::new(window, Timing::default(), now);
    (s, r, now)
}

/// A pair whose first credit has reached the sender: open.
fn open(window: Window) -> (SendHalf, RecvHalf, Instant) {
    let (mut s, mut r, now) = pair(window);
    exchange(&mut s, &mut r, now);
    (s, r, now)
}

/// Delivers the frames in flight (`to_r`, `to_s`), then every frame each
/// way until both are quiet.
fn exchange_queued(
    s: &mut SendHalf,
    r: &mut RecvHalf,
    to_r: &mut VecDeque<Frame>,
    to_s: &mut VecDeque<Frame>,
    now: Instant,
) {
    while let Some(f) = to_r.pop_front() {
        r.handle(f, now);
    }
    while let Some(f) = to_s.pop_front() {
        s.handle(f, now);
    }
    exchange(s, r, now);
}

/// Delivers every frame each way until both are quiet.
fn exchange(s: &mut SendHalf, r: &mut RecvHalf, now: Instant) {
    loop {
        let mut moved = false;
        while let Some(f) = s.poll_transmit(now) {
            r.handle(f, now);
            moved = true;
        }
        while let Some(f) = r.poll_transmit(now) {
            s.handle(f, now);
            moved = true;
        }
        if !moved {
            return;
        }
    }
}

#[test]
fn a_sender_waits_for_credit_then_sends_within_it() {
    let (mut s, mut r, now) = pair(Window {
        messages: 2,
        bytes: 100,
    });
    assert_eq!(s.check(1), Err(SendRefused::NoCredit), "not attached yet");
    exchange(&mut s, &mut r, now);
    s.send(&[1]).unwrap();
    s.send(&[2]).unwrap();
    assert_eq!(s.send(&[3]), Err(SendRefused::NoCredit));
    assert_eq!(
        s.check(101),
        Err(SendRefused::TooLarge {
            size: 101,
            limit: 100
        })
    );
    exchange(&mut s, &mut r, now);
    assert_eq!(r.held(), (2, 2));
    assert_eq!(r.take(), Some(Ok(Some(Bytes::from(vec![1u8])))));
    exchange(&mut s, &mut r, now);
    s.send(&[3]).unwrap();
    exchange(&mut s, &mut r, now);
    assert_eq!(r.take(), Some(Ok(Some(Bytes::from(vec![2u8])))));
    assert_eq!(r.take(), Some(Ok(Some(Bytes::from(vec![3u8])))));
    assert_eq!(r.take(), None);
}

#[test]
fn close_is_clean_only_once_everything_arrived_and_is_acknowledged() {
    let (mut s, mut r, now) = pair(Window::default());
    exchange(&mut s, &mut r, now);
    s.send(&[1]).unwrap();
    s.send(&[2]).unwrap();
    s.close();
    // The data frame is lost; the close arrives.
    let data = s.poll_transmit(now).unwrap();
    assert!(matches!(data, Frame::Data { .. }));
    let close = s.poll_transmit(now).unwrap();
    r.handle(close, now);
    assert_eq!(r.take(), None, "not an end: two messages are missing");
    assert_eq!(s.outcome(), None);
    // They come after all (a slow route), then the end.
    r.handle(data, now);
    assert_eq!(r.take(), Some(Ok(Some(Bytes::from(vec![1u8])))));
    assert_eq!(r.take(), Some(Ok(Some(Bytes::from(vec![2u8])))));
    assert_eq!(r.take(), Some(Ok(None)));
    exchange(&mut s, &mut r, now);
    assert_eq!(s.outcome(), Some(Ok(())));
}

#[test]
fn abort_cancel_and_silence_are_each_their_own_end() {
    let (mut s, mut r, now) = pair(Window::default());
    exchange(&mut s, &mut r, now);
    s.send(&[1]).unwrap();
    s.abort("dropped without close");
    exchange(&mut s, &mut r, now);
    // What was accepted before the abort arrives, then the abort.
    assert_eq!(r.take(), Some(Ok(Some(Bytes::from(vec![1u8])))));
    assert_eq!(
        r.take(),
        Some(Err(End::Aborted("dropped without close".into())))
    );

    let (mut s, mut r, now) = pair(Window::default());
    exchange(&mut s, &mut r, now);
    r.cancel("enough");
    exchange(&mut s, &mut r, now);
    assert_eq!(s.outcome(), Some(Err(End::Cancelled("enough".into()))));
    assert_eq!(s.check(1), Err(SendRefused::Ended));

    let (mut s, mut r, now) = pair(Window::default());
    exchange(&mut s, &mut r, now);
    let later = now + Timing::default().liveness;
    s.handle_timeout(later);
    r.handle_timeout(later);
    assert!(matches!(s.outcome(), Some(Err(End::Lost(_)))));
    assert!(matches!(r.take(), Some(Err(End::Lost(_)))));
}

#[test]
fn duplicates_are_dropped_and_early_messages_wait_for_the_gap() {
    let (mut s, mut r, now) = pair(Window::default());
    exchange(&mut s, &mut r, now);
    s.send(&[0]).unwrap();
    let f0 = s.poll_transmit(now).unwrap();
    s.send(&[1]).unwrap();
    let f1 = s.poll_transmit(now).unwrap();
    r.handle(f1.clone(), now);
    assert_eq!(r.take(), None, "1 waits for 0");
    r.handle(f0.clone(), now);
    r.handle(f0, now);
    r.handle(f1, now);
    assert_eq!(r.take(), Some(Ok(Some(Bytes::from(vec![0u8])))));
    assert_eq!(r.take(), Some(Ok(Some(Bytes::from(vec![1u8])))));
    assert_eq!(r.take(), None);
    // A gap that is never filled ends the stream as lost.
    s.send(&[2]).unwrap();
    let _lost = s.poll_transmit(now).unwrap();
    s.send(&[3]).unwrap();
    let f3 = s.poll_transmit(now).unwrap();
    r.handle(f3, now);
    // The sender keeps pinging; the gap alone ends it.
    let mut ended = None;
    while ended.is_none() {
        let t = r.poll_timeout().unwrap();
        r.handle(Frame::Ping, t);
        r.handle_timeout(t);
        while r.poll_transmit(t).is_some() {}
        ended = r.take().filter(|t| t.is_err());
    }
    match ended {
        Some(Err(End::Lost(why))) => assert!(why.contains("never arrived"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn frames_beyond_the_credit_are_refused() {
    let (mut s, mut r, now) = open(Window {
        messages: 2,
        bytes: 10,
    });
    let forged = Frame::Data {
        first: 5,
        bodies: [vec![1u8]].into_iter().collect(),
    };
    assert!(!r.handle(forged, now));
    let too_big = Frame::Data {
        first: 0,
        bodies: [vec![0u8; 11]].into_iter().collect(),
    };
    assert!(!r.handle(too_big, now));
    assert_eq!(r.held(), (0, 0));
    // A credit acknowledging what was never sent changes nothing.
    s.handle(
        Frame::Credit {
            next: 99,
            credit_messages: 1000,
            credit_bytes: 1000,
        },
        now,
    );
    assert_eq!(s.send(&[1]), Ok(()));
    assert_eq!(s.send(&[2]), Ok(()));
    assert_eq!(s.send(&[3]), Err(SendRefused::NoCredit));
}

/// What the network does with the next frame in one direction.
#[derive(Debug, Clone)]
enum Net {
    /// The application sends a message (if it may).
    Send(u8),
    /// The application takes a message (if there is one).
    Take,
    /// The first frame in flight arrives (from the sender, or to it).
    Deliver(bool),
    /// A frame in flight arrives first, overtaking others.
    Reorder(bool, usize),
    /// A frame in flight is delivered twice.
    Duplicate(bool),
    /// A frame in flight is lost.
    Drop(bool, usize),
    /// Time passes.
    Wait(u64),
    /// The sender closes.
    Close,
    /// The sender aborts.
    Abort,
}

fn net() -> impl Strategy<Value = Net> {
    prop_oneof![
        5 => any::<u8>().prop_map(Net::Send),
        4 => Just(Net::Take),
        8 => any::<bool>().prop_map(Net::Deliver),
        1 => (any::<bool>(), 0usize..4).prop_map(|(d, i)| Net::Reorder(d, i)),
        1 => any::<bool>().prop_map(Net::Duplicate),
        1 => (any::<bool>(), 0usize..4).prop_map(|(d, i)| Net::Drop(d, i)),
        1 => (0u64..4000).prop_map(Net::Wait),
        1 => Just(Net::Close),
        1 => Just(Net::Abort),
    ]
}

proptest! {
    /// Through a network that drops, duplicates, delays and reorders: the
    /// application gets the messages sent, in order, each once, for as
    /// far as it gets; a clean end (and a confirmed close) only if all of
    /// them arrived, and the sender's abort as it sent it only after all
    /// it sent before it; the receiver never holds more than its window;
    /// once the sender closed or aborted, both ends end in bounded time.
    #[test]
    fn order_exactly_once_and_honest_endings(steps in proptest::collection::vec(net(), 0..400)) {
        let window = Window { messages: 4, bytes: 64 };
        let (mut s, mut r, mut now) = pair(window);
        let mut to_r: VecDeque<Frame> = VecDeque::new();
        let mut to_s: VecDeque<Frame> = VecDeque::new();
        let (mut sent, mut got) = (Vec::new(), Vec::new());
        let mut end: Option<Result<(), End>> = None;
        let mut ended_by_sender = false;
        for step in steps {
            let mut waited = false;
            match step {
                Net::Send(b) => {
                    if s.send(&[b]).is_ok() {
                        sent.push(b);
                    }
                }
                Net::Take => match r.take() {
                    Some(Ok(Some(b))) => got.push(b[0]),
                    Some(Ok(None)) => end = Some(Ok(())),
                    Some(Err(e)) => end = Some(Err(e)),
                    None => {}
                },
                Net::Deliver(to_receiver) => {
                    if to_receiver {
                        if let Some(f) = to_r.pop_front() { r.handle(f, now); }
                    } else if let Some(f) = to_s.pop_front() { s.handle(f, now); }
                }
                Net::Reorder(to_receiver, i) => {
                    let q = if to_receiver { &mut to_r } else { &mut to_s };
                    if let Some(f) = q.remove(i.min(q.len().saturating_sub(1))) {
                        if to_receiver { r.handle(f, now); } else { s.handle(f, now); }
                    }
                }
                Net::Duplicate(to_receiver) => {
                    let q = if to_receiver { &mut to_r } else { &mut to_s };
                    if let Some(f) = q.front().cloned() { q.push_back(f); }
                }
                Net::Drop(to_receiver, i) => {
                    let q = if to_receiver { &mut to_r } else { &mut to_s };
                    if i < q.len() { q.remove(i); }
                }
                Net::Wait(ms) => {
                    now += Duration::from_millis(ms);
                    s.handle_timeout(now);
                    r.handle_timeout(now);
                    waited = true;
                }
                Net::Close => { s.close(); ended_by_sender = true; }
                Net::Abort => { s.abort("a"); ended_by_sender = true; }
            }
            while let Some(f) = s.poll_transmit(now) { to_r.push_back(f); }
            while let Some(f) = r.poll_transmit(now) { to_s.push_back(f); }
            if waited {
                // Timers handled: none is still due (a shell that sleeps
                // until the next one never spins).
                prop_assert!(s.poll_timeout().is_none_or(|t| t > now));
                prop_assert!(r.poll_timeout().is_none_or(|t| t > now));
            }
            prop_assert!(r.held().0 <= window.messages as usize);
            prop_assert!(r.held().1 <= window.bytes);
            // In order, each once: what arrived is a prefix of what was sent.
            prop_assert_eq!(&got[..], &sent[..got.len()]);
        }
        if end == Some(Ok(())) {
            prop_assert_eq!(&got, &sent, "a clean end with messages missing");
        }
        if end == Some(Err(End::Aborted("a".into()))) {
            // The abort as sent, nothing added: everything sent before it
            // arrived first, also when the abort overtook some of it.
            prop_assert_eq!(&got, &sent, "an abort that overtook messages");
        }
        if s.outcome() == Some(Ok(())) {
            // The receiver acknowledged the end: it had everything.
            while let Some(Ok(Some(b))) = r.take() { got.push(b[0]); }
            prop_assert_eq!(&got, &sent, "a confirmed close with messages missing");
        }
        if ended_by_sender {
            // Once the sender closed or aborted, both ends end within the
            // liveness timeout (and two pings'), whatever the route lost
            // before: frames still in flight arrive, nothing more is lost,
            // the application takes what there is, time passes; the ends
            // are as honest as above.
            let timing = Timing::default();
            let deadline = now + timing.liveness + timing.ping_every * 2;
            let mut r_end = end.clone();
            while now <= deadline {
                now += Duration::from_millis(500);
                s.handle_timeout(now);
                r.handle_timeout(now);
                exchange_queued(&mut s, &mut r, &mut to_r, &mut to_s, now);
                prop_assert!(s.poll_timeout().is_none_or(|t| t > now));
                prop_assert!(r.poll_timeout().is_none_or(|t| t > now));
                loop {
                    match r.take() {
                        Some(Ok(Some(b))) => got.push(b[0]),
                        Some(e) => { r_end = Some(e.map(|_| ())); break; }
                        None => break,
                    }
                }
                prop_assert_eq!(&got[..], &sent[..got.len()]);
            }
            prop_assert!(r_end.is_some(), "the receiver never ended");
            prop_assert!(s.outcome().is_some(), "the sender never ended");
            if r_end == Some(Ok(())) || r_end == Some(Err(End::Aborted("a".into()))) {
                prop_assert_eq!(&got, &sent, "an end as sent with messages missing");
            }
            if s.outcome() == Some(Ok(())) {
                prop_assert_eq!(&got, &sent, "a confirmed close with messages missing");
            }
        }
    }
}

proptest! {
    /// `decode_data` reads every `Data` frame as `Frame::decode` does, and
    /// every other frame is left to `Frame::decode`; any cut of a `Data`
    /// frame, or a byte more, is an error and never a panic.
    #[test]
    fn decode_data_agrees_with_the_frame_codec(
        first in any::<u64>(),
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..20),
        cut in any::<prop::sample::Index>(),
    ) {
        use ockam_core::Message;
        let frame = Frame::Data {
            first,
            bodies: bodies.iter().collect(),
        };
        let wire = Bytes::from(frame.encode().unwrap());
        // The wire form of `Bodies` is a BARE list of byte strings, as a
        // list of byte buffers is; it decodes back to the same bodies.
        #[derive(serde::Serialize)]
        enum Wire {
            Data { first: u64, bodies: Vec<serde_bytes::ByteBuf> },
        }
        let as_list = Wire::Data {
            first,
            bodies: bodies.iter().cloned().map(serde_bytes::ByteBuf::from).collect(),
        };
        prop_assert_eq!(&wire[..], &ockam_core::encode(&as_list).unwrap()[..]);
        prop_assert_eq!(&Frame::decode(&wire).unwrap(), &frame);
        // A sender writes the same bytes as the frame's header and its
        // items as queued.
        let Frame::Data { bodies: queued, .. } = &frame else { unreachable!() };
        let (head, len) = data_head(first, queued);
        prop_assert_eq!([&head[..len], queued.wire()].concat(), wire.to_vec());
        let (f, got) = decode_data(&wire).expect("a Data frame").expect("decodes");
        prop_assert_eq!(f, first);
        prop_assert_eq!(got.len(), bodies.len());
        let got: Vec<Vec<u8>> = got.iter().map(|b| b.to_vec()).collect();
        prop_assert_eq!(&got, &bodies);
        let short = wire.slice(..cut.index(wire.len()));
        prop_assert!(matches!(decode_data(&short), Some(Err(_)) | None));
        let mut long = wire.to_vec();
        long.push(0);
        prop_assert!(matches!(decode_data(&Bytes::from(long)), Some(Err(_))));
        for other in [Frame::Ping, Frame::CloseAck, Frame::Close { total: 3 }] {
            prop_assert!(decode_data(&Bytes::from(other.encode().unwrap())).is_none());
        }
    }
}

#[test]
fn a_data_frame_that_claims_more_messages_than_it_holds_is_refused() {
    // Variant 0, first = 0, then a count of 2^32 and nothing after it.
    let mut wire = vec![0u8];
    wire.extend_from_slice(&0u64.to_le_bytes());
    ockam_core::internal::wire::put_uint(&mut wire, 1 << 32);
    assert!(matches!(decode_data(&Bytes::from(wire)), Some(Err(_))));
}

/// A kept message stays a slice of its frame only when the whole frame is
/// kept; otherwise it is copied out, and the frame is not held for it.
#[test]
fn kept_messages_hold_their_frame_only_when_all_of_it_is_kept() {
    use ockam_core::Message;
    let (_, mut r, now) = pair(Window::default());
    let frame = |first: u64, n: u8| {
        let f = Frame::Data {
            first,
            bodies: (0..n).map(|i| vec![i; 100]).collect(),
        };
        Bytes::from(f.encode().unwrap())
    };
    let within = |b: &Bytes, wire: &Bytes| wire.as_ptr_range().contains(&b.as_ptr());
    // 0..2, all new: slices of the frame.
    let wire = frame(0, 2);
    let (first, bodies) = decode_data(&wire).unwrap().unwrap();
    assert!(r.handle_data(first, bodies, now));
    for _ in 0..2 {
        let Some(Ok(Some(b))) = r.take() else {
            panic!()
        };
        assert!(within(&b, &wire));
    }
    // 0..4 again: two duplicates, two new: the new ones are copied out.
    let wire = frame(0, 4);
    let (first, bodies) = decode_data(&wire).unwrap().unwrap();
    assert!(r.handle_data(first, bodies, now));
    for _ in 0..2 {
        let Some(Ok(Some(b))) = r.take() else {
            panic!()
        };
        assert!(!within(&b, &wire));
        assert_eq!(b.len(), 100);
    }
    assert_eq!(r.take(), None);
}

/// Lent messages stay held and earn no credit until the application
/// reports them taken; then they earn what `take` would have.
#[test]
fn lent_messages_earn_credit_only_once_taken() {
    let (mut s, mut r, now) = open(Window {
        messages: 4,
        bytes: 1000,
    });
    for b in 0..4u8 {
        s.send(&[b; 10]).unwrap();
    }
    assert_eq!(s.send(&[9]), Err(SendRefused::NoCredit), "window full");
    exchange(&mut s, &mut r, now);
    let mut batch = VecDeque::new();
    assert_eq!(r.lend(3, &mut batch), 3);
    let lent: Vec<u8> = batch
        .iter()
        .flat_map(|run| run.iter().map(|b| b[0]))
        .collect();
    assert_eq!(lent, [0, 1, 2], "in order");
    assert_eq!(r.held(), (4, 40), "lent messages are still held");
    exchange(&mut s, &mut r, now);
    assert_eq!(
        s.send(&[9]),
        Err(SendRefused::NoCredit),
        "no credit for lending"
    );
    r.took(2, 20);
    assert_eq!(r.held(), (2, 20));
    exchange(&mut s, &mut r, now);
    s.send(&[4; 10]).unwrap();
    s.send(&[5; 10]).unwrap();
    assert_eq!(
        s.send(&[9]),
        Err(SendRefused::NoCredit),
        "two taken, two more"
    );
    // Reporting more than was lent counts what was.
    r.took(5, 1000);
    assert_eq!(r.held(), (1, 10), "the one never lent (message 3)");
    exchange(&mut s, &mut r, now);
    assert_eq!(r.take(), Some(Ok(Some(Bytes::from(vec![3u8; 10])))));
}

/// The sending queue holds messages as `Data` frames carry them, each
/// length in the room the last one took: lengths of other sizes move the
/// encoding, and a message that fails to encode leaves nothing behind.
#[test]
fn queued_lengths_of_any_size_stay_in_order() {
    let (mut s, mut r, now) = open(Window {
        messages: 64,
        bytes: 1 << 20,
    });
    let sizes = [3usize, 0, 200, 200, 20_000, 5, 127, 128, 16_384, 1];
    for (i, &n) in sizes.iter().enumerate() {
        s.send(&vec![i as u8; n]).unwrap();
        assert_eq!(s.send_encoded(|_| Err("no")), Err("no"));
    }
    assert_eq!(s.queued(), sizes.len());
    exchange(&mut s, &mut r, now);
    for (i, &n) in sizes.iter().enumerate() {
        assert_eq!(r.take(), Some(Ok(Some(Bytes::from(vec![i as u8; n])))));
    }
    assert_eq!(r.take(), None);
}

/// What a sending half queues goes on the wire as the shell writes it (the
/// frame's header, then its items as queued) and comes back through
/// `decode_data` as the same messages: lengths of every size, in frames
/// split at `MAX_FRAME_BODY_BYTES`.
#[test]
fn queued_frames_on_the_wire_decode_to_the_messages_sent() {
    let (mut s, _r, now) = open(Window {
        messages: 1000,
        bytes: 1 << 22,
    });
    let sizes = [0usize, 1, 127, 128, 300, 16_383, 16_384, 40_000, 70_000, 5];
    let sent: Vec<Vec<u8>> = (0..200)
        .map(|i| vec![i as u8; sizes[i % sizes.len()]])
        .collect();
    for m in &sent {
        s.send(m).unwrap();
    }
    let mut got = Vec::new();
    while let Some(f) = s.poll_transmit(now) {
        let Frame::Data { first, bodies } = f else {
            continue;
        };
        assert_eq!(first, got.len() as u64, "frames in order");
        assert!(
            bodies.wire_bytes().len() <= MAX_FRAME_BODY_BYTES || bodies.len() == 1,
            "a frame's worth at most, or one message"
        );
        let (head, len) = data_head(first, &bodies);
        let wire = Bytes::from([&head[..len], &bodies.wire_bytes()[..]].concat());
        let (f, mut run) = decode_data(&wire).expect("a Data frame").expect("decodes");
        assert_eq!((f, run.len()), (first, bodies.len()));
        assert_eq!(run.body_bytes(), bodies.body_bytes());
        while let Some(m) = run.next_slice() {
            got.push(m.to_vec());
        }
    }
    assert_eq!(got, sent);
}

/// The queue is cut into frames as messages are queued, a frame's worth to
/// a buffer: like messages fill each frame, and a message larger than
/// what fits starts the next frame, in order.
#[test]
fn like_messages_fill_each_frame_and_a_larger_one_starts_the_next() {
    let (mut s, mut r, now) = open(Window {
        messages: 1000,
        bytes: 1 << 22,
    });
    // The messages of each `Data` frame sent, the frames delivered.
    let mut got = Vec::new();
    let mut frames = |s: &mut SendHalf, r: &mut RecvHalf| {
        let mut counts = Vec::new();
        while let Some(f) = s.poll_transmit(now) {
            if let Frame::Data { bodies, .. } = &f {
                assert!(bodies.wire_bytes().len() <= MAX_FRAME_BODY_BYTES || bodies.len() == 1);
                counts.push(bodies.len());
            }
            r.handle(f, now);
        }
        while let Some(Ok(Some(m))) = r.take() {
            got.push(m.to_vec());
        }
        exchange(s, r, now);
        counts
    };
    // 4 KiB messages take 4,098 bytes each with their lengths: 15 a frame.
    for _ in 0..40 {
        s.send(&[1; 4096]).unwrap();
    }
    assert_eq!(s.queued(), 40);
    assert_eq!(frames(&mut s, &mut r), [15, 15, 10]);
    assert_eq!(s.queued(), 0);
    // Small ones (11 bytes each with their lengths), then one that does
    // not fit beside them (65,503): it starts the next frame. One that
    // would fit beside it (11) goes in the frame after, as a message like
    // the last would not fit. Then one larger than a frame, alone, and a
    // small one after it.
    for _ in 0..10 {
        s.send(&[2; 10]).unwrap();
    }
    s.send(&[3; 65_500]).unwrap();
    s.send(&[4; 10]).unwrap();
    s.send(&[5; 70_000]).unwrap();
    s.send(&[6; 10]).unwrap();
    assert_eq!(s.queued(), 14);
    assert_eq!(frames(&mut s, &mut r), [10, 1, 1, 1, 1]);
    // Small ones with one that fits beside them: one frame.
    for _ in 0..10 {
        s.send(&[7; 10]).unwrap();
    }
    s.send(&[8; 65_000]).unwrap();
    assert_eq!(frames(&mut s, &mut r), [11]);
    // Everything arrives, in order.
    let mut sent = vec![vec![1u8; 4096]; 40];
    sent.extend(vec![vec![2u8; 10]; 10]);
    sent.extend([vec![3; 65_500], vec![4; 10], vec![5; 70_000], vec![6; 10]]);
    sent.extend(vec![vec![7u8; 10]; 10]);
    sent.push(vec![8; 65_000]);
    assert_eq!(got.len(), sent.len());
    assert!(got == sent);
}

/// An `Abort` says how many messages came before it: one that overtakes
/// them (a route that reorders) ends the stream only after they arrived;
/// if some never do, the abort is reported with what is missing.
#[test]
fn an_abort_that_overtakes_data_ends_the_stream_after_it() {
    let window = Window {
        messages: 16,
        bytes: 1024,
    };
    for lose_one in [false, true] {
        let (mut s, mut r, now) = open(window);
        s.send(&[1]).unwrap();
        let first = s.poll_transmit(now).unwrap();
        s.send(&[2]).unwrap();
        s.abort("changed my mind");
        let second = s.poll_transmit(now).unwrap();
        let abort = s.poll_transmit(now).unwrap();
        assert_eq!(
            abort,
            Frame::Abort {
                reason: "changed my mind".into(),
                total: 2
            }
        );
        // The abort, then the first message: the second is awaited.
        assert!(r.handle(abort, now));
        assert!(r.handle(first, now));
        assert_eq!(r.take(), Some(Ok(Some(Bytes::from(vec![1u8])))));
        assert_eq!(r.take(), None, "message 2 is still on its way");
        if lose_one {
            let later = now + Timing::default().liveness;
            r.handle_timeout(later);
            let Some(Err(End::Aborted(why))) = r.take() else {
                panic!("an abort with a message missing")
            };
            assert!(
                why.starts_with(
                    "changed my mind (not all 2 messages sent before the abort arrived: message 1 never did"
                ),
                "{why}"
            );
        } else {
            assert!(r.handle(second, now));
            assert_eq!(r.take(), Some(Ok(Some(Bytes::from(vec![2u8])))));
            assert_eq!(r.take(), Some(Err(End::Aborted("changed my mind".into()))));
        }
        assert_eq!(r.poll_transmit(now), None, "no CloseAck for an abort");
    }
}

/// A stream whose last message the route lost and whose `Close` arrived
/// does not go on forever on pings: the receiver reports the message
/// missing and the sender the end unacknowledged, each within the
/// liveness timeout.
#[test]
fn a_close_after_a_lost_message_ends_both_ends_within_the_liveness_timeout() {
    let (mut s, mut r, mut now) = open(Window {
        messages: 16,
        bytes: 1024,
    });
    s.send(&[1]).unwrap();
    exchange(&mut s, &mut r, now);
    s.send(&[2]).unwrap();
    let _lost = s.poll_transmit(now).unwrap();
    s.close();
    let timing = Timing::default();
    let deadline = now + timing.liveness + timing.ping_every;
    assert_eq!(r.take(), Some(Ok(Some(Bytes::from(vec![1u8])))));
    let mut r_end = None;
    while now <= deadline && (r_end.is_none() || s.outcome().is_none()) {
        exchange(&mut s, &mut r, now);
        if let Some(e) = r.take() {
            r_end = Some(e);
        }
        now += Duration::from_millis(500);
        s.handle_timeout(now);
        r.handle_timeout(now);
    }
    let Some(Err(End::Lost(why))) = r_end else {
        panic!("the receiver: {r_end:?}")
    };
    assert!(why.contains("message 1 never arrived"), "{why}");
    let Some(Err(End::Lost(why))) = s.outcome() else {
        panic!("the sender: {:?}", s.outcome())
    };
    assert!(why.contains("did not acknowledge the end"), "{why}");

    // The `Close` itself lost: the receiver has everything but no end,
    // and learns it from the sender's abort when its close times out.
    let (mut s, mut r, mut now) = open(Window {
        messages: 16,
        bytes: 1024,
    });
    s.send(&[1]).unwrap();
    exchange(&mut s, &mut r, now);
    s.close();
    assert!(matches!(
        s.poll_transmit(now),
        Some(Frame::Close { total: 1 })
    ));
    let deadline = now + timing.liveness + timing.ping_every;
    let mut r_end = None;
    while now <= deadline && r_end.is_none() {
        now += Duration::from_millis(500);
        s.handle_timeout(now);
        r.handle_timeout(now);
        exchange(&mut s, &mut r, now);
        while let Some(m) = r.take() {
            if !matches!(m, Ok(Some(_))) {
                r_end = Some(m);
                break;
            }
        }
    }
    let Some(Err(End::Aborted(why))) = r_end else {
        panic!("the receiver: {r_end:?}")
    };
    assert!(why.contains("did not acknowledge the end"), "{why}");
    assert!(matches!(s.outcome(), Some(Err(End::Lost(_)))));
}

/// `Close` and `Abort` again (a route that redelivers), or in the other
/// order (an abort after `close()` that overtook it), are no forgery and
/// change nothing; a different total is, and what was held beyond a total
/// goes.
#[test]
fn repeated_ends_are_accepted_and_messages_beyond_the_end_dropped() {
    let window = Window {
        messages: 16,
        bytes: 1024,
    };
    let (mut s, mut r, now) = open(window);
    for b in 0..3 {
        s.send(&[b]).unwrap();
    }
    exchange(&mut s, &mut r, now);
    // Not yet acknowledged: the receiver has 3 and waits for a 4th.
    assert!(r.handle(Frame::Close { total: 4 }, now));
    assert!(r.handle(Frame::Close { total: 4 }, now), "again");
    assert!(!r.handle(Frame::Close { total: 5 }, now), "another total");
    assert!(r.handle(
        Frame::Abort {
            reason: "x".into(),
            total: 4
        },
        now
    ));
    assert!(
        r.handle(Frame::Close { total: 4 }, now),
        "overtaken by the abort"
    );
    for b in 0..3 {
        assert_eq!(r.take(), Some(Ok(Some(Bytes::from(vec![b])))));
    }
    assert_eq!(r.take(), None, "message 3 is awaited");

    // Held early beyond the end's total: dropped when the total is known.
    let (mut s, mut r, now) = open(window);
    let bodies: Bodies = [&[9u8; 10][..]].into_iter().collect();
    assert!(r.handle(
        Frame::Data {
            first: 5,
            bodies: bodies.clone()
        },
        now
    ));
    assert_eq!(r.held(), (1, 10));
    assert!(r.handle(Frame::Close { total: 2 }, now));
    assert_eq!(r.held(), (0, 0));
    s.send(&[0]).unwrap();
    s.send(&[1]).unwrap();
    while let Some(f) = s.poll_transmit(now) {
        r.handle(f, now);
    }
    assert_eq!(r.take(), Some(Ok(Some(Bytes::from(vec![0u8])))));
    assert_eq!(r.take(), Some(Ok(Some(Bytes::from(vec![1u8])))));
    assert_eq!(
        r.take(),
        Some(Ok(None)),
        "a clean end after 2, nothing more"
    );
    assert!(!r.handle(Frame::Data { first: 2, bodies }, now));
}

/// A slow route still carrying what was sent before the end does not make
/// `close` fail: the end is overdue only after the liveness timeout
/// without the receiver saying more arrived; and with the `Close` first (a
/// route that reorders), the receiver waits while messages arrive in
/// order, however slowly.
#[test]
fn a_close_on_a_slow_route_waits_while_messages_still_arrive() {
    let timing = Timing::default();
    // One frame every 4 s: 24 s in all, over twice the liveness timeout.
    assert!(timing.liveness < Duration::from_secs(24));
    for close_first in [false, true] {
        let (mut s, mut r, mut now) = open(Window {
            messages: 16,
            bytes: 1024,
        });
        let mut in_flight = VecDeque::new();
        for b in 0..5 {
            s.send(&[b]).unwrap();
            in_flight.extend(std::iter::from_fn(|| s.poll_transmit(now)));
        }
        s.close();
        let close = s.poll_transmit(now).unwrap();
        if close_first {
            in_flight.push_front(close);
        } else {
            in_flight.push_back(close);
        }
        assert_eq!(in_flight.len(), 6, "five Data frames and the Close");
        while let Some(f) = in_flight.pop_front() {
            r.handle(f, now);
            exchange(&mut s, &mut r, now);
            if in_flight.is_empty() {
                break;
            }
            for _ in 0..8 {
                now += Duration::from_millis(500);
                s.handle_timeout(now);
                r.handle_timeout(now);
                exchange(&mut s, &mut r, now);
            }
            assert_eq!(s.outcome(), None, "still closing");
        }
        assert_eq!(s.outcome(), Some(Ok(())));
        for b in 0..5 {
            assert_eq!(r.take(), Some(Ok(Some(Bytes::from(vec![b])))));
        }
        assert_eq!(r.take(), Some(Ok(None)));
    }
}

/// A sink closed before its other end is known (a call not answered yet):
/// the end's acknowledgement is due from when the way is known, not from
/// when the `Close` was queued.
#[test]
fn a_close_before_the_peer_is_known_is_timed_from_when_it_is() {
    let (mut s, mut r, mut now) = pair(Window {
        messages: 16,
        bytes: 1024,
    });
    s.close();
    let close = s.poll_transmit(now).unwrap();
    assert_eq!(close, Frame::Close { total: 0 });
    // The call's answer comes after longer than the liveness timeout.
    now += Timing::default().liveness * 2;
    s.attached(now);
    r.attached(now);
    s.handle_timeout(now);
    assert_eq!(s.outcome(), None);
    r.handle(close, now);
    exchange(&mut s, &mut r, now);
    assert_eq!(s.outcome(), Some(Ok(())));
    assert_eq!(r.take(), Some(Ok(None)));
}

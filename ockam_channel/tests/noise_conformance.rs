//! The Noise XX state machine against the published test vectors
//! (cacophony / snow, `tests/vectors/`) and against the `snow` crate in
//! both roles.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: see clippy.toml

use ockam_channel::internal::{HandshakeState, Role, PROTOCOL_NAME};
use ockam_vault::{PublicKey, Vault};

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

fn key(s: &str) -> [u8; 32] {
    unhex(s).try_into().expect("32 bytes")
}

#[test]
fn the_published_test_vectors_pass() {
    let text = include_str!("vectors/noise_XX_25519_AESGCM_SHA256.json");
    let doc: serde_json::Value = serde_json::from_str(text).unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    assert!(!vectors.is_empty());
    for v in vectors {
        assert_eq!(v["protocol_name"], PROTOCOL_NAME);
        let s = |k: &str| v[k].as_str().unwrap();
        let vault = Vault::new();
        let mut init = HandshakeState::new(
            &vault,
            Role::Initiator,
            &unhex(s("init_prologue")),
            vault.import_x25519(key(s("init_static"))),
        )
        .with_ephemeral(vault.import_x25519(key(s("init_ephemeral"))));
        let mut resp = HandshakeState::new(
            &vault,
            Role::Responder,
            &unhex(s("resp_prologue")),
            vault.import_x25519(key(s("resp_static"))),
        )
        .with_ephemeral(vault.import_x25519(key(s("resp_ephemeral"))));

        let messages = v["messages"].as_array().unwrap();
        for (i, m) in messages.iter().take(3).enumerate() {
            let payload = unhex(m["payload"].as_str().unwrap());
            let ciphertext = unhex(m["ciphertext"].as_str().unwrap());
            let (w, r) = if i % 2 == 0 {
                (&mut init, &mut resp)
            } else {
                (&mut resp, &mut init)
            };
            assert_eq!(
                w.write_message(&payload).unwrap(),
                ciphertext,
                "handshake message {i}"
            );
            assert_eq!(
                r.read_message(&ciphertext).unwrap(),
                payload,
                "handshake message {i}"
            );
        }
        assert!(init.is_finished() && resp.is_finished());
        if let Some(h) = v["handshake_hash"].as_str() {
            assert_eq!(init.handshake_hash().to_vec(), unhex(h));
            assert_eq!(resp.handshake_hash().to_vec(), unhex(h));
        }
        let mut init = init.into_transport().unwrap();
        let mut resp = resp.into_transport().unwrap();
        assert_eq!(
            init.remote_static,
            vault
                .public_key(&vault.import_x25519(key(s("resp_static"))))
                .unwrap()
        );
        for (i, m) in messages.iter().enumerate().skip(3) {
            let payload = unhex(m["payload"].as_str().unwrap());
            let ciphertext = unhex(m["ciphertext"].as_str().unwrap());
            let (w, r) = if i % 2 == 0 {
                (&mut init, &mut resp)
            } else {
                (&mut resp, &mut init)
            };
            assert_eq!(
                w.send.encrypt_with_ad(&[], &payload).unwrap(),
                ciphertext,
                "transport message {i}"
            );
            assert_eq!(
                r.recv.decrypt_with_ad(&[], &ciphertext).unwrap(),
                payload,
                "transport message {i}"
            );
        }
    }
}

fn snow_builder() -> snow::Builder<'static> {
    snow::Builder::new(PROTOCOL_NAME.parse().unwrap())
}

#[test]
fn our_initiator_with_a_snow_responder() {
    let vault = Vault::new();
    let s = vault.generate_x25519();
    let ours_public = vault.public_key(&s).unwrap();
    let keys = snow_builder().generate_keypair().unwrap();
    let mut them = snow_builder()
        .local_private_key(&keys.private)
        .unwrap()
        .build_responder()
        .unwrap();
    let mut us = HandshakeState::new(&vault, Role::Initiator, &[], s);
    let mut buf = vec![0u8; 65535];

    let m1 = us.write_message(b"one").unwrap();
    let n = them.read_message(&m1, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"one");
    let n = them.write_message(b"two", &mut buf).unwrap();
    assert_eq!(us.read_message(&buf[..n]).unwrap(), b"two");
    let m3 = us.write_message(b"three").unwrap();
    let n = them.read_message(&m3, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"three");

    assert_eq!(us.handshake_hash().as_slice(), them.get_handshake_hash());
    assert_eq!(them.get_remote_static().unwrap(), ours_public.as_bytes());
    let us = us.into_transport().unwrap();
    assert_eq!(
        us.remote_static,
        PublicKey::from_slice(&keys.public).unwrap()
    );

    // Transport messages with explicit nonces, both ways.
    let them = them.into_stateless_transport_mode().unwrap();
    for nonce in [0u64, 1, 7, 1000] {
        let mut sealed = b"from us".to_vec();
        us.send.encrypt_with_nonce(nonce, &[], &mut sealed).unwrap();
        let n = them.read_message(nonce, &sealed, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"from us");

        let n = them.write_message(nonce, b"from snow", &mut buf).unwrap();
        let mut opened = buf[..n].to_vec();
        us.recv.decrypt_with_nonce(nonce, &[], &mut opened).unwrap();
        assert_eq!(opened, b"from snow");
    }
}

#[test]
fn a_snow_initiator_with_our_responder() {
    let vault = Vault::new();
    let s = vault.generate_x25519();
    let keys = snow_builder().generate_keypair().unwrap();
    let mut them = snow_builder()
        .local_private_key(&keys.private)
        .unwrap()
        .build_initiator()
        .unwrap();
    let mut us = HandshakeState::new(&vault, Role::Responder, &[], s);
    let mut buf = vec![0u8; 65535];

    let n = them.write_message(&[], &mut buf).unwrap();
    us.read_message(&buf[..n]).unwrap();
    let m2 = us.write_message(b"payload 2").unwrap();
    let n = them.read_message(&m2, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"payload 2");
    let n = them.write_message(&[], &mut buf).unwrap();
    us.read_message(&buf[..n]).unwrap();
    assert_eq!(us.handshake_hash().as_slice(), them.get_handshake_hash());

    let mut us = us.into_transport().unwrap();
    let mut them = them.into_transport_mode().unwrap();
    for i in 0..5 {
        let text = format!("message {i}");
        let n = them.write_message(text.as_bytes(), &mut buf).unwrap();
        assert_eq!(
            us.recv.decrypt_with_ad(&[], &buf[..n]).unwrap(),
            text.as_bytes()
        );
        let sealed = us.send.encrypt_with_ad(&[], text.as_bytes()).unwrap();
        let n = them.read_message(&sealed, &mut buf).unwrap();
        assert_eq!(&buf[..n], text.as_bytes());
    }
}

#[test]
fn out_of_order_and_garbage_handshake_messages_fail_that_handshake_only() {
    let vault = Vault::new();
    let mut resp = HandshakeState::new(&vault, Role::Responder, &[], vault.generate_x25519());
    // The responder must not write first.
    assert!(resp.write_message(&[]).is_err());
    let mut resp = HandshakeState::new(&vault, Role::Responder, &[], vault.generate_x25519());
    assert!(
        resp.read_message(&[1, 2, 3]).is_err(),
        "too short for a key"
    );
    assert!(
        resp.read_message(&[0; 32]).is_err(),
        "a failed handshake stays failed"
    );

    let mut init = HandshakeState::new(&vault, Role::Initiator, &[], vault.generate_x25519());
    let _m1 = init.write_message(&[]).unwrap();
    // Message 2 with a flipped bit in the encrypted static key.
    let mut resp = HandshakeState::new(&vault, Role::Responder, &[], vault.generate_x25519());
    resp.read_message(&_m1).unwrap();
    let mut m2 = resp.write_message(&[]).unwrap();
    m2[40] ^= 1;
    let err = init.read_message(&m2).unwrap_err();
    assert_eq!(err.kind(), ockam_core::ErrorKind::Security, "{err}");
}

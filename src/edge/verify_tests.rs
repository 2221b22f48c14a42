//! Unit tests of per-event verification.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use ed25519_dalek::{Signer as _, SigningKey};

use super::*;

const NODE: &str = "6f1c2a3e-0000-4000-8000-000000000001";
const STREAM: &str = "s-1";

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn envelope(
    key: &SigningKey,
    kind: EventKind,
    ts: i64,
    stream: &str,
    inner: &[u8],
) -> SealNodeEnvelope {
    let payload = canonical::encode(kind, ts, NODE, stream, inner);
    SealNodeEnvelope {
        node_security_token: String::new(),
        signature: key.sign(&payload).to_bytes().to_vec(),
        payload,
    }
}

fn auth(keys: Vec<AcceptedKey>) -> StreamAuth {
    StreamAuth::new(
        NODE.to_owned(),
        STREAM.to_owned(),
        keys,
        Duration::from_secs(300),
    )
}

fn current(key: &SigningKey) -> AcceptedKey {
    AcceptedKey {
        key: key.verifying_key(),
        valid_until: None,
    }
}

#[test]
fn a_well_signed_sequence_passes_and_time_may_not_go_back() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut auth = auth(vec![current(&key)]);
    let t = now().timestamp_millis();
    let hb = envelope(&key, EventKind::Heartbeat, t, STREAM, b"");
    auth.check(Some(&hb), EventKind::Heartbeat, Inner::Empty, now())
        .unwrap();
    auth.check(Some(&hb), EventKind::Heartbeat, Inner::Empty, now())
        .unwrap();
    // Reordered by up to 5 s is fine (heartbeats are signed on their own task).
    let reordered = envelope(&key, EventKind::Heartbeat, t - 4_000, STREAM, b"");
    auth.check(Some(&reordered), EventKind::Heartbeat, Inner::Empty, now())
        .unwrap();
    let older = envelope(&key, EventKind::Heartbeat, t - 5_001, STREAM, b"");
    assert!(matches!(
        auth.check(Some(&older), EventKind::Heartbeat, Inner::Empty, now()),
        Err(EventError::Backwards { .. })
    ));
}

#[test]
fn every_binding_is_checked() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let other = SigningKey::from_bytes(&[8; 32]);
    let t = now().timestamp_millis();
    let mut auth = auth(vec![current(&key)]);
    let check = |auth: &mut StreamAuth, env: &SealNodeEnvelope, kind, inner| {
        auth.check(Some(env), kind, inner, now())
    };
    let forged = envelope(&other, EventKind::Heartbeat, t, STREAM, b"");
    assert_eq!(
        check(&mut auth, &forged, EventKind::Heartbeat, Inner::Empty),
        Err(EventError::BadSignature("heartbeat"))
    );
    let mut tampered = envelope(&key, EventKind::CommandResult, t, STREAM, b"c-1");
    tampered.signature[0] ^= 1;
    assert_eq!(
        check(
            &mut auth,
            &tampered,
            EventKind::CommandResult,
            Inner::CommandId("c-1")
        ),
        Err(EventError::BadSignature("command_result"))
    );
    let result = envelope(&key, EventKind::CommandResult, t, STREAM, b"c-1");
    assert!(matches!(
        check(&mut auth, &result, EventKind::Heartbeat, Inner::Empty),
        Err(EventError::KindMismatch { .. })
    ));
    assert_eq!(
        check(
            &mut auth,
            &result,
            EventKind::CommandResult,
            Inner::CommandId("c-2")
        ),
        Err(EventError::InnerMismatch("command_result"))
    );
    let elsewhere = envelope(&key, EventKind::Heartbeat, t, "s-2", b"");
    assert_eq!(
        check(&mut auth, &elsewhere, EventKind::Heartbeat, Inner::Empty),
        Err(EventError::StreamMismatch("heartbeat"))
    );
    let stale = envelope(&key, EventKind::Heartbeat, t - 301_000, STREAM, b"");
    assert!(matches!(
        check(&mut auth, &stale, EventKind::Heartbeat, Inner::Empty),
        Err(EventError::Skew { .. })
    ));
    assert_eq!(
        auth.check(None, EventKind::Heartbeat, Inner::Empty, now()),
        Err(EventError::MissingEnvelope("heartbeat"))
    );
}

#[test]
fn a_previous_key_is_honoured_only_inside_its_overlap() {
    let old = SigningKey::from_bytes(&[1; 32]);
    let new = SigningKey::from_bytes(&[2; 32]);
    let until = now() + TimeDelta::seconds(60);
    let mut auth = auth(vec![
        current(&new),
        AcceptedKey {
            key: old.verifying_key(),
            valid_until: Some(until),
        },
    ]);
    let t = now().timestamp_millis();
    let by_old = envelope(&old, EventKind::Heartbeat, t, STREAM, b"");
    auth.check(Some(&by_old), EventKind::Heartbeat, Inner::Empty, now())
        .unwrap();
    let later = now() + TimeDelta::seconds(61);
    let by_old_late = envelope(
        &old,
        EventKind::Heartbeat,
        later.timestamp_millis(),
        STREAM,
        b"",
    );
    assert!(matches!(
        auth.check(
            Some(&by_old_late),
            EventKind::Heartbeat,
            Inner::Empty,
            later
        ),
        Err(EventError::KeyExpired(..))
    ));
    let by_new = envelope(
        &new,
        EventKind::Heartbeat,
        later.timestamp_millis(),
        STREAM,
        b"",
    );
    auth.check(Some(&by_new), EventKind::Heartbeat, Inner::Empty, later)
        .unwrap();
}

//! ConnectEdge sessions against a real relay: Hello checks before response
//! headers, per-event verification (signature, stream, time), one live
//! stream per node, revoke, heartbeat timeout and batched store writes.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aegis_relay::edge::EventKind;
use aegis_relay::edge_client::EdgeOptions;
use aegis_relay::hop::SessionKey;
use aegis_relay::proto::cluster::{edge_event, EdgeEvent};
use aegis_relay::store::{EdgeStatus, TagChange};
use common::edges::{
    capabilities, enroll_edge, forged_kind, now_ms, open_stream, open_with, run_edge, signer,
    RawStream,
};
use common::enroll::admin_bearer;
use common::{
    counter_value, eventually, registered_session, start_relay, start_relay_configured, TestRelay,
    TestResult,
};
use tonic::Code;

#[tokio::test]
async fn an_edge_connects_heartbeats_and_its_writes_are_batched() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    let options = EdgeOptions {
        heartbeat_interval: Duration::from_millis(20),
        ..EdgeOptions::default()
    };
    let running = run_edge(&relay, &edge.state, options).await?;
    let node_id = running.node_id;
    let metrics = relay.metrics().clone();
    let heartbeats = eventually(Duration::from_secs(10), "100 heartbeats", || {
        let text = metrics.render();
        async move {
            let seen = counter_value(&text, "aegis_relay_edge_events_total{kind=\"heartbeat\"}");
            (seen >= 100.0).then_some(seen)
        }
    })
    .await?;
    // What the heartbeats changed: the stored `last_heartbeat_at` moves past
    // an instant taken after they were counted (only a later heartbeat's
    // flush can write that).
    let counted_at = aegis_relay::runtime::SystemClock
        .utc_now()
        .timestamp_millis();
    let store = Arc::clone(relay.store());
    let stored = eventually(
        Duration::from_secs(30),
        "a newer heartbeat in the store",
        || {
            let store = Arc::clone(&store);
            async move {
                store.get_edge(node_id).await.ok().flatten().filter(|edge| {
                    edge.last_heartbeat_at
                        .is_some_and(|at| at.timestamp_millis() >= counted_at)
                })
            }
        },
    )
    .await?;
    assert_eq!(stored.status, EdgeStatus::Active);
    assert_eq!(stored.capabilities.os, std::env::consts::OS);
    let text = relay.metrics().render();
    let flushes = counter_value(&text, "aegis_relay_edge_update_flushes_total");
    // One statement per flush (tests/benches/store.rs counts them), flushed
    // once a second: far fewer than one per heartbeat.
    assert!(flushes >= 1.0, "no flush at all");
    assert!(
        flushes * 10.0 < heartbeats,
        "{flushes} flushes for {heartbeats} heartbeats"
    );
    assert_eq!(
        counter_value(&text, "aegis_relay_edge_nodes_connected"),
        1.0
    );
    Ok(())
}

#[tokio::test]
async fn bad_hellos_are_refused_before_headers() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    let state = &edge.state;

    // Signed by another key.
    let mut forged = state.clone();
    forged.key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let status = open_stream(&relay, &forged)
        .await
        .err()
        .ok_or("forged Hello accepted")?;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // A heartbeat first.
    let raw = signer(state, "s-1");
    let status = open_with(&relay, raw.clone(), raw.heartbeat(now_ms()))
        .await
        .err()
        .ok_or("heartbeat-first accepted")?;
    assert_eq!(status.code(), Code::InvalidArgument);

    // A stale timestamp.
    let status = open_with(
        &relay,
        raw.clone(),
        raw.hello(now_ms() - 600_000, capabilities()),
    )
    .await
    .err()
    .ok_or("stale Hello accepted")?;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("clock"), "{}", status.message());

    // A token that is not ours.
    let mut foreign = state.clone();
    foreign.token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln".to_owned();
    let status = open_stream(&relay, &foreign)
        .await
        .err()
        .ok_or("foreign token accepted")?;
    assert_eq!(status.code(), Code::Unauthenticated);

    // Revoked: PERMISSION_DENIED, so the daemon backs off.
    relay
        .store()
        .revoke_edge(
            None,
            state.node_id,
            "test",
            aegis_relay::runtime::SystemClock.utc_now(),
        )
        .await?;
    let status = open_stream(&relay, state)
        .await
        .err()
        .ok_or("revoked node accepted")?;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("revoked"));
    let text = relay.metrics().render();
    assert!(
        counter_value(
            &text,
            "aegis_relay_handshake_failures_total{reason=\"revoked\"}"
        ) >= 1.0
    );
    assert!(!relay.owner().is_connected(state.node_id));
    Ok(())
}

/// Asserts that `key` stays the node's registered stream for half a second.
/// A window rather than an event, because what it proves is that nothing
/// happens: the other stream's cleanup runs right after its status is sent
/// (one registry call, microseconds), so half a second bounds that cleanup
/// by more than a thousand times; a wrong unregistration shows up inside it.
async fn stays_current(relay: &TestRelay, key: &SessionKey, failure: &str) {
    let watch_until = tokio::time::Instant::now() + Duration::from_millis(500);
    while tokio::time::Instant::now() < watch_until {
        assert!(relay.owner().registry().is_current(key), "{failure}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_newer_stream_supersedes_and_the_older_cannot_unregister_it() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    let mut first = open_stream(&relay, &edge.state).await?;
    let second = open_stream(&relay, &edge.state).await?;
    let status = first.ended().await?;
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    drop(first);
    let registered = relay
        .owner()
        .registry()
        .get(edge.state.node_id)
        .ok_or("the older stream unregistered the node")?
        .key;
    assert_eq!(&*registered.stream_id, second.signer.stream_id());
    stays_current(
        &relay,
        &registered,
        "the older stream unregistered the node",
    )
    .await;
    second.send(second.signer.heartbeat(now_ms())).await?;
    assert!(relay.owner().is_connected(edge.state.node_id));
    Ok(())
}

#[tokio::test]
async fn a_replayed_hello_is_refused_and_the_live_stream_stays() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    let stream_id = aegis_relay::runtime::OsEntropy.uuid().to_string();
    let hello = signer(&edge.state, &stream_id).hello(now_ms(), capabilities());
    let mut live = open_with(&relay, signer(&edge.state, &stream_id), hello.clone()).await?;
    live.send(live.signer.heartbeat(now_ms())).await?;
    let registered =
        registered_session(relay.owner(), edge.state.node_id, "the live stream", |_| {
            true
        })
        .await?
        .key;
    // Same node, same stream id: only the relay's connection number tells
    // the two apart.
    let status = match open_with(&relay, signer(&edge.state, &stream_id), hello).await {
        Err(status) => status,
        Ok(mut copy) => copy.ended().await?,
    };
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    stays_current(
        &relay,
        &registered,
        "the copy displaced or unregistered the live stream",
    )
    .await;
    live.send(live.signer.heartbeat(now_ms())).await?;
    // Still live: a command sent now arrives (an ended stream yields its status).
    let admin = admin_bearer(&relay).await?;
    let url = format!(
        "http://{}/v1/edge/hosts/{}/drain",
        relay.http_addr(),
        edge.state.node_id
    );
    let (status, body) =
        common::http_request("POST", &url, &[("authorization", &admin)], "").await?;
    assert_eq!(status, 202, "{body}");
    let next = live
        .next()
        .await?
        .map_err(|status| format!("the live stream ended: {status:?}"))?;
    assert!(
        matches!(
            next.command,
            Some(aegis_relay::proto::cluster::edge_command::Command::Drain(_))
        ),
        "{next:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_older_streams_replayed_hello_cannot_take_over_the_newer_one() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    let stream_a = aegis_relay::runtime::OsEntropy.uuid().to_string();
    let hello_a = signer(&edge.state, &stream_a).hello(now_ms(), capabilities());
    let mut a = open_with(&relay, signer(&edge.state, &stream_a), hello_a.clone()).await?;
    let mut b = open_stream(&relay, &edge.state).await?;
    assert_eq!(a.ended().await?.code(), Code::Aborted, "B superseded A");
    let registered = registered_session(relay.owner(), edge.state.node_id, "B", |_| true)
        .await?
        .key;
    // A's captured Hello, replayed while it is still fresh.
    let status = match open_with(&relay, signer(&edge.state, &stream_a), hello_a).await {
        Err(status) => status,
        Ok(mut copy) => copy.ended().await?,
    };
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(relay.owner().registry().is_current(&registered));
    // B still receives commands.
    let bearer = common::edges::tenant_bearer(&relay, "t-a").await?;
    let (code, body) = common::http_post(
        &format!(
            "http://{}/v1/edge/hosts/{}/drain",
            relay.http_addr(),
            edge.state.node_id
        ),
        &[("authorization", &bearer)],
        "",
    )
    .await?;
    assert_eq!(code, 202, "{body}");
    let command = b
        .next()
        .await?
        .map_err(|status| format!("B ended: {status:?}"))?;
    assert!(
        matches!(
            command.command,
            Some(aegis_relay::proto::cluster::edge_command::Command::Drain(_))
        ),
        "{command:?}"
    );
    Ok(())
}

#[tokio::test]
async fn forged_events_end_the_stream() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    let other_stream = signer(&edge.state, "other-stream");
    type Forge<'a> = Box<dyn Fn(&RawStream) -> EdgeEvent + 'a>;
    // Each case and the one status the README documents for it.
    let cases: Vec<(&str, Code, Forge)> = vec![
        (
            "replayed from another stream",
            Code::Unauthenticated,
            Box::new(|_| other_stream.heartbeat(now_ms())),
        ),
        (
            "stale timestamp",
            Code::Unauthenticated,
            Box::new(|s| s.signer.heartbeat(now_ms() - 600_000)),
        ),
        (
            "kind mismatch",
            Code::Unauthenticated,
            Box::new(|s| forged_kind(&s.signer, EventKind::Hello)),
        ),
        (
            "tampered signature",
            Code::Unauthenticated,
            Box::new(|s| {
                let mut event = s.signer.heartbeat(now_ms());
                if let Some(edge_event::Event::Heartbeat(hb)) = &mut event.event {
                    if let Some(envelope) = &mut hb.envelope {
                        envelope.signature[3] ^= 0x40;
                    }
                }
                event
            }),
        ),
        (
            "second hello",
            Code::InvalidArgument,
            Box::new(|s| s.signer.hello(now_ms(), capabilities())),
        ),
    ];
    let refused = |text: &str| {
        counter_value(
            text,
            "aegis_relay_edge_events_refused_total{kind=\"heartbeat\"}",
        )
    };
    let mut refusals = 0.0;
    for (case, code, forge) in cases {
        let mut stream = open_stream(&relay, &edge.state).await?;
        stream.send(stream.signer.heartbeat(now_ms())).await?;
        stream.send(forge(&stream)).await?;
        let status = stream.ended().await?;
        assert_eq!(status.code(), code, "{case}: {status:?}");
        if code == Code::Unauthenticated {
            refusals += 1.0;
            assert!(
                status.message().starts_with("event refused"),
                "{case}: {status:?}"
            );
        }
        assert_eq!(refused(&relay.metrics().render()), refusals, "{case}");
        let node_id = edge.state.node_id;
        let owner = Arc::clone(relay.owner());
        eventually(Duration::from_secs(5), "the session to go", || {
            let owner = Arc::clone(&owner);
            async move { (!owner.is_connected(node_id)).then_some(()) }
        })
        .await?;
    }
    // All five refused: four failed verification, the Hello is a protocol error.
    assert_eq!(refusals, 4.0);
    Ok(())
}

#[tokio::test]
async fn revoking_a_connected_edge_ends_its_stream_with_permission_denied() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    let mut stream = open_stream(&relay, &edge.state).await?;
    let url = format!(
        "http://{}/v1/edge/hosts/{}",
        relay.http_addr(),
        edge.state.node_id
    );
    let bearer = admin_bearer(&relay).await?;
    let (status, body) =
        common::http_request("DELETE", &url, &[("authorization", &bearer)], "").await?;
    assert_eq!(status, 204, "{body}");
    let ended = stream.ended().await?;
    assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");
    Ok(())
}

#[tokio::test]
async fn a_silent_edge_is_evicted_and_marked_unhealthy() -> TestResult {
    let relay = start_relay_configured(|settings| {
        settings.sessions.heartbeat_timeout = Duration::from_millis(400);
        settings.sessions.store_flush_interval = Duration::from_millis(50);
    })
    .await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    // Taken before the stream opens, so the silence timer starts after it:
    // the lower bound holds however slow the machine is.
    let started = tokio::time::Instant::now();
    let mut stream = open_stream(&relay, &edge.state).await?;
    let status = stream.ended().await?;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("no event"), "{status:?}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(!relay.owner().is_connected(edge.state.node_id));
    let store = Arc::clone(relay.store());
    let node_id = edge.state.node_id;
    eventually(Duration::from_secs(5), "status unhealthy", || {
        let store = Arc::clone(&store);
        async move {
            let edge = store.get_edge(node_id).await.ok().flatten()?;
            (edge.status == EdgeStatus::Unhealthy).then_some(())
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn capability_updates_apply_but_tags_stay_server_side() -> TestResult {
    use aegis_relay::proto::cluster::CapabilityUpdateEvent;
    let relay = start_relay(Duration::from_secs(5)).await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    relay
        .store()
        .change_edge_tags(
            None,
            edge.state.node_id,
            &TagChange {
                replace: Some(vec!["prod".to_owned()]),
                ..TagChange::default()
            },
            aegis_relay::runtime::SystemClock.utc_now(),
        )
        .await?;
    let stream = open_stream(&relay, &edge.state).await?;
    let mut update = capabilities();
    update.os = "freebsd".to_owned();
    update.tags = vec!["self-assigned".to_owned()];
    stream
        .send(EdgeEvent {
            event: Some(edge_event::Event::CapabilityUpdate(CapabilityUpdateEvent {
                envelope: Some(stream.signer.envelope(EventKind::Heartbeat, now_ms(), b"")),
                capabilities: Some(update),
            })),
        })
        .await?;
    let node_id = edge.state.node_id;
    let owner = Arc::clone(relay.owner());
    let entry = registered_session(&owner, node_id, "the new capabilities", |entry| {
        entry.capabilities.os == "freebsd"
    })
    .await?;
    assert_eq!(&*entry.tags, ["prod".to_owned()]);
    assert!(entry.capabilities.tags.is_empty());
    let store = Arc::clone(relay.store());
    let stored = eventually(
        Duration::from_secs(5),
        "the capabilities in the store",
        || {
            let store = Arc::clone(&store);
            async move {
                store
                    .get_edge(node_id)
                    .await
                    .ok()
                    .flatten()
                    .filter(|edge| edge.capabilities.os == "freebsd")
            }
        },
    )
    .await?;
    assert_eq!(stored.tags, ["prod".to_owned()]);
    drop(stream);
    Ok(())
}

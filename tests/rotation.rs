//! RotateEdgeKey (protocol.md §9), revoke (`DELETE /v1/edge/hosts/{id}`) and
//! the AttestNode rate limit, against a real relay.

mod common;

use std::time::Duration;

use aegis_relay::proto::cluster::RotateEdgeKeyRequest;
use common::edges::rotate_request;
use common::enroll::{admin_bearer, assert_refused, client, mint, Client, Node};
use common::{start_relay, start_relay_configured, TestResult};
use ed25519_dalek::{Signer, SigningKey};

fn fresh_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

async fn enrolled(
    relay: &aegis_relay::app::RunningRelay,
    grpc: &mut Client,
) -> Result<Node, Box<dyn std::error::Error>> {
    let node = Node::new();
    node.enroll(
        grpc,
        &mint(relay, aegis_relay::runtime::OsEntropy.uuid()).await?,
    )
    .await?;
    Ok(node)
}

#[tokio::test]
async fn rotation_installs_the_new_key_and_refuses_replays() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let mut grpc = client(&relay).await?;
    let node = enrolled(&relay, &mut grpc).await?;
    let new = fresh_key();
    let nonce = rand::random::<[u8; 32]>();
    let response = grpc
        .rotate_edge_key(rotate_request(node.id, &node.key, &new, nonce))
        .await?
        .into_inner();
    let stored = relay.store().get_edge(node.id).await?.ok_or("edge gone")?;
    assert_eq!(stored.public_key, new.verifying_key().to_bytes().to_vec());
    let claims = common::enroll::claims_of(&response.node_security_token)?;
    assert_eq!(claims["sub"], serde_json::json!(node.id.to_string()));
    let overlap = response.overlap_until.ok_or("no overlap_until")?.seconds
        - aegis_relay::runtime::SystemClock.utc_now().timestamp();
    assert!((55..=61).contains(&overlap), "overlap {overlap}s");

    // The same signed request again: the nonce is spent.
    let replay = grpc
        .rotate_edge_key(rotate_request(node.id, &node.key, &new, nonce))
        .await;
    assert_refused(replay, tonic::Code::Unauthenticated, "nonce already used");
    // A same-key refresh (aegis edge token refresh) works with the new key.
    grpc.rotate_edge_key(rotate_request(node.id, &new, &new, rand::random()))
        .await?;
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn bad_signatures_are_refused_and_change_nothing() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let mut grpc = client(&relay).await?;
    let node = enrolled(&relay, &mut grpc).await?;
    let new = fresh_key();
    let mut request = rotate_request(node.id, &node.key, &new, rand::random());
    request.signature_with_new_key = fresh_key().sign(b"something else").to_bytes().to_vec();
    assert_refused(
        grpc.rotate_edge_key(request).await,
        tonic::Code::Unauthenticated,
        "signature_with_new_key invalid",
    );
    let stranger = fresh_key();
    assert_refused(
        grpc.rotate_edge_key(rotate_request(node.id, &stranger, &new, rand::random()))
            .await,
        tonic::Code::Unauthenticated,
        "current_envelope signature invalid",
    );
    let mut mismatched = rotate_request(node.id, &node.key, &new, rand::random());
    mismatched.new_public_key = stranger.verifying_key().to_bytes().to_vec();
    assert_refused(
        grpc.rotate_edge_key(mismatched).await,
        tonic::Code::InvalidArgument,
        "differs",
    );
    assert_refused(
        grpc.rotate_edge_key(RotateEdgeKeyRequest::default()).await,
        tonic::Code::InvalidArgument,
        "current_envelope is required",
    );
    let unknown = aegis_relay::runtime::OsEntropy.uuid();
    assert_refused(
        grpc.rotate_edge_key(rotate_request(unknown, &node.key, &new, rand::random()))
            .await,
        tonic::Code::Unauthenticated,
        "unknown edge",
    );
    let stored = relay.store().get_edge(node.id).await?.ok_or("edge gone")?;
    assert_eq!(stored.public_key, node.public_key(), "key unchanged");
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn previous_key_counts_only_inside_the_overlap() -> TestResult {
    for (overlap, accepted) in [(Duration::from_secs(60), true), (Duration::ZERO, false)] {
        let relay = start_relay_configured(|settings| {
            settings.rotation_overlap = overlap;
        })
        .await?;
        let mut grpc = client(&relay).await?;
        let node = enrolled(&relay, &mut grpc).await?;
        let second = fresh_key();
        grpc.rotate_edge_key(rotate_request(node.id, &node.key, &second, rand::random()))
            .await?;
        // The daemon keeps signing with the old key until it reconnects.
        let third = fresh_key();
        let with_old = grpc
            .rotate_edge_key(rotate_request(node.id, &node.key, &third, rand::random()))
            .await;
        if accepted {
            assert!(with_old.is_ok(), "inside the overlap: {with_old:?}");
        } else {
            assert_refused(with_old, tonic::Code::Unauthenticated, "overlap");
        }
        common::assert_graceful(relay.shutdown().await);
    }
    Ok(())
}

#[tokio::test]
async fn revoke_is_final_for_the_node() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let mut grpc = client(&relay).await?;
    let node = enrolled(&relay, &mut grpc).await?;
    let url = |id: &str| format!("http://{}/v1/edge/hosts/{id}", relay.http_addr());
    let bearer = admin_bearer(&relay).await?;
    let delete = |target: String, bearer: Option<String>| async move {
        let client = reqwest::Client::new();
        let mut request = client.delete(target);
        if let Some(bearer) = bearer {
            request = request.header("authorization", bearer);
        }
        let response = request.timeout(Duration::from_secs(10)).send().await?;
        Ok::<_, reqwest::Error>((response.status().as_u16(), response.text().await?))
    };
    assert_eq!(delete(url(&node.id.to_string()), None).await?.0, 401);
    assert_eq!(
        delete(url("not-a-uuid"), Some(bearer.clone())).await?.0,
        400
    );
    assert_eq!(
        delete(
            url(&aegis_relay::runtime::OsEntropy.uuid().to_string()),
            Some(bearer.clone())
        )
        .await?
        .0,
        404
    );
    let (status, body) = delete(url(&node.id.to_string()), Some(bearer.clone())).await?;
    assert_eq!(status, 204, "{body}");
    assert!(relay.store().get_edge(node.id).await?.is_none());
    assert_eq!(
        delete(url(&node.id.to_string()), Some(bearer)).await?.0,
        404
    );

    assert_refused(
        grpc.rotate_edge_key(rotate_request(
            node.id,
            &node.key,
            &fresh_key(),
            rand::random(),
        ))
        .await,
        tonic::Code::PermissionDenied,
        "revoked",
    );
    // A new token does not bring the revoked identity back.
    let token = mint(&relay, aegis_relay::runtime::OsEntropy.uuid()).await?;
    assert_refused(
        node.enroll(&mut grpc, &token).await,
        tonic::Code::PermissionDenied,
        "was revoked",
    );
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn attest_node_is_rate_limited_per_source() -> TestResult {
    let relay = start_relay_configured(|settings| {
        settings.attest_rate_limit.per_second = 0.5;
        settings.attest_rate_limit.burst = 3;
    })
    .await?;
    let mut grpc = client(&relay).await?;
    for _ in 0..3 {
        Node::new().attest(&mut grpc).await?;
    }
    assert_refused(
        Node::new().attest(&mut grpc).await,
        tonic::Code::ResourceExhausted,
        "too many AttestNode calls from 127.0.0.1",
    );
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn a_rotation_reaches_the_live_stream_and_the_old_key_ends_with_the_overlap() -> TestResult {
    use common::edges::{enroll_edge, now_ms, open_stream, signer};
    let overlap = Duration::from_secs(2);
    let relay = start_relay_configured(|settings| {
        settings.rotation_overlap = overlap;
    })
    .await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    let mut stream = open_stream(&relay, &edge.state).await?;
    let old = stream.signer.clone();
    let beats = |relay: &common::TestRelay| {
        common::counter_value(
            &relay.metrics().render(),
            "aegis_relay_edge_events_total{kind=\"heartbeat\"}",
        )
    };

    let mut grpc = client(&relay).await?;
    let new_key = fresh_key();
    grpc.rotate_edge_key(rotate_request(
        edge.state.node_id,
        &edge.state.key,
        &new_key,
        rand::random(),
    ))
    .await?;
    let rotated_at = tokio::time::Instant::now();
    let mut rotated = edge.state.clone();
    rotated.key = new_key;
    let new = signer(&rotated, old.stream_id());

    // The live stream takes the new key at once, and the old one inside
    // the overlap (the daemon signs with it until it reconnects).
    stream.send(new.heartbeat(now_ms())).await?;
    stream.send(old.heartbeat(now_ms())).await?;
    common::eventually(Duration::from_secs(10), "both heartbeats verified", || {
        let seen = beats(&relay);
        async move { (seen >= 2.0).then_some(()) }
    })
    .await?;
    assert!(relay.owner().is_connected(edge.state.node_id));

    // Once the overlap is over, the old key ends the stream.
    common::eventually(Duration::from_secs(10), "the overlap to pass", || {
        let passed = rotated_at.elapsed() > overlap + Duration::from_millis(200);
        async move { passed.then_some(()) }
    })
    .await?;
    stream.send(new.heartbeat(now_ms())).await?;
    stream.send(old.heartbeat(now_ms())).await?;
    let ended = stream.ended().await?;
    assert_eq!(ended.code(), tonic::Code::Unauthenticated, "{ended:?}");
    assert!(ended.message().contains("overlap"), "{ended:?}");
    assert_eq!(
        beats(&relay),
        3.0,
        "the new key's heartbeat after the overlap counts"
    );
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

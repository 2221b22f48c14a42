//! Edge enrollment end to end over the real gRPC and HTTP ports: the
//! AttestNode / ChallengeNode handshake, every refusal of the enrollment
//! token and of the handshake (each with its status, a message naming the
//! problem, and proof that nothing was written and no token was burned), and
//! enrollment-token issuance over gRPC and REST.

mod common;

use std::time::Duration;

use aegis_relay::proto::cluster::{
    challenge_node_request::BootstrapProof, ChallengeNodeRequest, NodeRole,
};
use aegis_relay::store::{AttestedCapabilities, EdgeStatus, NodeChallenge};
use common::enroll::{
    admin_bearer, assert_not_enrolled, assert_redeemable, assert_refused, claims_of, client,
    good_claims, issue_request, mint, sign_claims, Client, Node, ISSUED_TO, TENANT,
};
use common::{http_post, start_relay, TestRelay, TestResult};
use ed25519_dalek::Signer as _;
use tonic::Code;

async fn relay() -> Result<(TestRelay, Client), Box<dyn std::error::Error>> {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let client = client(&relay).await?;
    Ok((relay, client))
}

#[tokio::test]
async fn an_edge_enrolls_with_a_valid_token() -> TestResult {
    let (relay, mut client) = relay().await?;
    let token = mint(&relay, aegis_relay::runtime::OsEntropy.uuid()).await?;
    let node = Node::new();
    let response = node.enroll(&mut client, &token).await?;
    let now = aegis_relay::runtime::SystemClock.utc_now().timestamp();

    let expires_at = response.expires_at.ok_or("no expires_at")?.seconds;
    assert!(
        (expires_at - (now + 3600)).abs() <= 5,
        "{expires_at} vs {now}"
    );
    let claims = claims_of(&response.node_security_token)?;
    assert_eq!(claims["sub"], node.id.to_string());
    assert_eq!(claims["role"], "edge");
    assert_eq!(claims["tid"], TENANT);
    assert_eq!(claims["cep"], relay.tokens().public_endpoint());
    let cap_hash = claims["cap_hash"].as_str().ok_or("no cap_hash")?;
    assert!(cap_hash.starts_with("c3ea0799"), "{cap_hash}");
    assert_eq!(claims["exp"], expires_at);
    let verified: serde_json::Value = relay
        .tokens()
        .verify_own(&response.node_security_token)
        .await?;
    assert_eq!(verified, claims, "the node token is signed by the relay");

    let edge = relay
        .store()
        .get_edge(node.id)
        .await?
        .ok_or("no edge row")?;
    assert_eq!(edge.tenant_id, TENANT);
    assert_eq!(edge.public_key, node.public_key());
    assert_eq!(edge.display_name, ISSUED_TO);
    assert_eq!(edge.status, EdgeStatus::Active);
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

/// Tokens refused at verification: each is signed by the relay's key with one
/// claim spoiled; the refusal names it, and the jti stays redeemable.
#[tokio::test]
async fn each_bad_enrollment_token_is_refused_without_burning_its_jti() -> TestResult {
    let (relay, mut client) = relay().await?;
    let now = aegis_relay::runtime::SystemClock.utc_now().timestamp();
    type Spoil = fn(&mut serde_json::Value, i64);
    let cases: [(&str, Spoil, &str); 5] = [
        ("expired", |c, now| c["exp"] = (now - 1).into(), "expired"),
        (
            "not yet valid",
            |c, now| c["nbf"] = (now + 600).into(),
            "not valid before",
        ),
        (
            "wrong audience",
            |c, _| c["aud"] = "something-else".into(),
            "audience mismatch",
        ),
        (
            "wrong issuer",
            |c, _| c["iss"] = "https://evil.example".into(),
            "issuer mismatch",
        ),
        (
            "invalid tenant",
            |c, _| c["tid"] = "Bad_Tenant".into(),
            "tenant invalid",
        ),
    ];
    for (case, spoil, needle) in cases {
        let jti = aegis_relay::runtime::OsEntropy.uuid();
        let mut claims = good_claims(&relay, jti);
        spoil(&mut claims, now);
        let token = sign_claims(&relay, &claims).await?;
        let node = Node::new();
        let refused = node.enroll(&mut client, &token).await;
        assert!(refused.is_err(), "a token with {case} was accepted");
        assert_refused(refused, Code::Unauthenticated, needle);
        assert_not_enrolled(&relay, node.id).await?;
        assert_redeemable(&relay, &mut client, &mint(&relay, jti).await?).await?;
    }
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn a_token_signed_by_another_relay_is_refused() -> TestResult {
    let (relay, mut client) = relay().await?;
    let other = start_relay(Duration::from_secs(5)).await?;
    let jti = aegis_relay::runtime::OsEntropy.uuid();
    let foreign = mint(&other, jti).await?;
    let node = Node::new();
    assert_refused(
        node.enroll(&mut client, &foreign).await,
        Code::Unauthenticated,
        "signature invalid",
    );
    assert_not_enrolled(&relay, node.id).await?;
    assert_redeemable(&relay, &mut client, &mint(&relay, jti).await?).await?;
    common::assert_graceful(other.shutdown().await);
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn a_malformed_token_is_refused_and_the_challenge_survives() -> TestResult {
    let (relay, mut client) = relay().await?;
    let node = Node::new();
    let attested = node.attest(&mut client).await?;
    for malformed in ["not-a-jwt", "two.segments", "a.b.c.d", "e30.e30.***"] {
        let request = node.challenge_request(&attested, malformed);
        assert_refused(
            client.challenge_node(request).await,
            Code::Unauthenticated,
            "enrollment token malformed",
        );
    }
    assert_not_enrolled(&relay, node.id).await?;
    // A failed ChallengeNode leaves the challenge: the node may retry it.
    let token = mint(&relay, aegis_relay::runtime::OsEntropy.uuid()).await?;
    client
        .challenge_node(node.challenge_request(&attested, &token))
        .await?;
    assert!(relay.store().get_edge(node.id).await?.is_some());
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn a_redeemed_token_is_refused_to_the_next_node() -> TestResult {
    let (relay, mut client) = relay().await?;
    let token = mint(&relay, aegis_relay::runtime::OsEntropy.uuid()).await?;
    let first = Node::new();
    first.enroll(&mut client, &token).await?;
    let before = relay.store().get_edge(first.id).await?;
    let second = Node::new();
    assert_refused(
        second.enroll(&mut client, &token).await,
        Code::Unauthenticated,
        "already redeemed",
    );
    assert_not_enrolled(&relay, second.id).await?;
    assert_eq!(relay.store().get_edge(first.id).await?, before);
    // Even the node that redeemed it cannot use it twice.
    assert_refused(
        first.enroll(&mut client, &token).await,
        Code::Unauthenticated,
        "already redeemed",
    );
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_handshakes_with_one_token_enroll_exactly_one() -> TestResult {
    const NODES: usize = 50;
    let (relay, client) = relay().await?;
    let token = mint(&relay, aegis_relay::runtime::OsEntropy.uuid()).await?;
    let nodes: Vec<Node> = (0..NODES).map(|_| Node::new()).collect();
    // Every node attests first, then all challenges go out together.
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(NODES));
    let handshakes = nodes.iter().map(|node| {
        let (mut client, token, barrier) = (client.clone(), token.clone(), barrier.clone());
        async move {
            let attested = node.attest(&mut client).await;
            barrier.wait().await;
            let request = node.challenge_request(&attested?, &token);
            client.challenge_node(request).await
        }
    });
    let results = futures::future::join_all(handshakes).await;
    let mut winners = Vec::new();
    for (node, result) in nodes.iter().zip(results) {
        match result {
            Ok(_) => winners.push(node.id),
            Err(status) => {
                assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
                assert!(status.message().contains("already redeemed"), "{status:?}");
                assert_not_enrolled(&relay, node.id).await?;
            }
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let edges = relay.store().list_edges(None).await?;
    assert_eq!(
        edges.iter().map(|edge| edge.node_id).collect::<Vec<_>>(),
        winners
    );
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn a_wrong_nonce_signature_is_refused_and_may_be_retried() -> TestResult {
    let (relay, mut client) = relay().await?;
    let token = mint(&relay, aegis_relay::runtime::OsEntropy.uuid()).await?;
    let node = Node::new();
    let attested = node.attest(&mut client).await?;
    let mut request = node.challenge_request(&attested, &token);
    request.challenge_signature = node.key.sign(b"other bytes").to_bytes().to_vec();
    assert_refused(
        client.challenge_node(request).await,
        Code::Unauthenticated,
        "challenge signature invalid",
    );
    let mut request = node.challenge_request(&attested, &token);
    request.challenge_signature.truncate(10);
    assert_refused(
        client.challenge_node(request).await,
        Code::Unauthenticated,
        "must be 64 bytes",
    );
    // Signed by another key than the attested one.
    let mut request = node.challenge_request(&attested, &token);
    request.challenge_signature = Node::new()
        .key
        .sign(&attested.challenge_nonce)
        .to_bytes()
        .to_vec();
    assert_refused(
        client.challenge_node(request).await,
        Code::Unauthenticated,
        "challenge signature invalid",
    );
    assert_not_enrolled(&relay, node.id).await?;
    // Same challenge, same token, right signature: the token was not burned.
    client
        .challenge_node(node.challenge_request(&attested, &token))
        .await?;
    assert!(relay.store().get_edge(node.id).await?.is_some());
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

/// No clock control is needed: a challenge created six minutes ago is put in
/// the relay's store directly, as another replica would have written it.
#[tokio::test]
async fn an_expired_challenge_is_refused() -> TestResult {
    let (relay, mut client) = relay().await?;
    let token = mint(&relay, aegis_relay::runtime::OsEntropy.uuid()).await?;
    let node = Node::new();
    let challenge = NodeChallenge {
        challenge_id: aegis_relay::runtime::OsEntropy.uuid(),
        node_id: node.id,
        nonce: vec![7; 32],
        public_key: node.public_key(),
        role: "edge".to_owned(),
        capabilities: AttestedCapabilities::default(),
        grpc_address: String::new(),
        created_at: aegis_relay::runtime::SystemClock.utc_now() - chrono::Duration::minutes(6),
    };
    relay.store().put_challenge(&challenge).await?;
    let request = ChallengeNodeRequest {
        challenge_id: challenge.challenge_id.to_string(),
        node_id: node.id.to_string(),
        challenge_signature: node.key.sign(&challenge.nonce).to_bytes().to_vec(),
        bootstrap_proof: Some(BootstrapProof::EnrollmentToken(token.clone())),
    };
    assert_refused(
        client.challenge_node(request).await,
        Code::Unauthenticated,
        "challenge not found or expired",
    );
    assert_not_enrolled(&relay, node.id).await?;
    assert_redeemable(&relay, &mut client, &token).await?;
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn a_challenge_answered_for_another_node_is_refused() -> TestResult {
    let (relay, mut client) = relay().await?;
    let token = mint(&relay, aegis_relay::runtime::OsEntropy.uuid()).await?;
    let (a, b) = (Node::new(), Node::new());
    let attested = a.attest(&mut client).await?;
    let mut request = a.challenge_request(&attested, &token);
    request.node_id = b.id.to_string();
    assert_refused(
        client.challenge_node(request).await,
        Code::Unauthenticated,
        "node id mismatch",
    );
    assert_not_enrolled(&relay, a.id).await?;
    assert_not_enrolled(&relay, b.id).await?;
    assert_redeemable(&relay, &mut client, &token).await?;
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn challenge_ids_and_node_ids_are_checked() -> TestResult {
    let (relay, mut client) = relay().await?;
    let token = mint(&relay, aegis_relay::runtime::OsEntropy.uuid()).await?;
    let node = Node::new();
    let attested = node.attest(&mut client).await?;

    let mut unknown = node.challenge_request(&attested, &token);
    unknown.challenge_id = aegis_relay::runtime::OsEntropy.uuid().to_string();
    let unknown = client.challenge_node(unknown).await;
    assert_refused(unknown, Code::Unauthenticated, "challenge not found");

    let mut bad_id = node.challenge_request(&attested, &token);
    bad_id.challenge_id = "not-a-uuid".to_owned();
    let bad_id = client.challenge_node(bad_id).await;
    assert_refused(bad_id, Code::InvalidArgument, "challenge_id \"not-a-uuid\"");

    let mut bad_node = node.challenge_request(&attested, &token);
    bad_node.node_id = "node-1".to_owned();
    let bad_node = client.challenge_node(bad_node).await;
    assert_refused(
        bad_node,
        Code::InvalidArgument,
        "node_id \"node-1\" is not a UUID",
    );

    let mut attest = node.attest_request();
    attest.node_id = "node-1".to_owned();
    let refused = client.attest_node(attest).await;
    assert_refused(
        refused,
        Code::InvalidArgument,
        "node_id \"node-1\" is not a UUID",
    );

    assert_not_enrolled(&relay, node.id).await?;
    assert_redeemable(&relay, &mut client, &token).await?;
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn oversized_fields_are_refused() -> TestResult {
    let (relay, mut client) = relay().await?;
    let token = mint(&relay, aegis_relay::runtime::OsEntropy.uuid()).await?;
    let node = Node::new();
    let long_id = "a".repeat(10 * 1024);

    let mut request = node.attest_request();
    request.node_id = long_id.clone();
    let refused = client.attest_node(request).await;
    assert_refused(refused, Code::InvalidArgument, "node_id is 10240 bytes");

    let mut request = node.attest_request();
    request.grpc_address = "h".repeat(10 * 1024);
    let refused = client.attest_node(request).await;
    assert_refused(
        refused,
        Code::InvalidArgument,
        "grpc_address is 10240 bytes",
    );

    let attested = node.attest(&mut client).await?;
    let mut request = node.challenge_request(&attested, &token);
    request.node_id = long_id;
    let refused = client.challenge_node(request).await;
    assert_refused(refused, Code::InvalidArgument, "node_id is 10240 bytes");

    let huge = "e".repeat(20 * 1024);
    let refused = client
        .challenge_node(node.challenge_request(&attested, &huge))
        .await;
    assert_refused(
        refused,
        Code::InvalidArgument,
        "enrollment_token is 20480 bytes",
    );

    assert_not_enrolled(&relay, node.id).await?;
    assert_redeemable(&relay, &mut client, &token).await?;
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn attest_node_refuses_bad_keys_capabilities_and_roles() -> TestResult {
    let (relay, mut client) = relay().await?;
    let node = Node::new();

    let mut request = node.attest_request();
    request.public_key.truncate(31);
    let refused = client.attest_node(request).await;
    assert_refused(
        refused,
        Code::InvalidArgument,
        "32-byte Ed25519 key, got 31",
    );

    let mut request = node.attest_request();
    request.capabilities = None;
    let refused = client.attest_node(request).await;
    assert_refused(refused, Code::InvalidArgument, "missing capabilities");

    let mut request = node.attest_request();
    request.role = NodeRole::Unspecified as i32;
    let refused = client.attest_node(request).await;
    assert_refused(refused, Code::InvalidArgument, "role is required");

    let mut request = node.attest_request();
    request.role = NodeRole::Worker as i32;
    let refused = client.attest_node(request).await;
    assert_refused(refused, Code::PermissionDenied, "admits only edges");

    let mut request = node.attest_request();
    request.role = 42;
    let refused = client.attest_node(request).await;
    assert_refused(refused, Code::InvalidArgument, "role 42 is not a NodeRole");

    assert_not_enrolled(&relay, node.id).await?;
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn a_challenge_without_bootstrap_proof_is_refused() -> TestResult {
    let (relay, mut client) = relay().await?;
    let token = mint(&relay, aegis_relay::runtime::OsEntropy.uuid()).await?;
    let node = Node::new();
    let attested = node.attest(&mut client).await?;
    let mut request = node.challenge_request(&attested, &token);
    request.bootstrap_proof = None;
    assert_refused(
        client.challenge_node(request).await,
        Code::Unauthenticated,
        "requires bootstrap_proof.enrollment_token",
    );
    assert_not_enrolled(&relay, node.id).await?;
    client
        .challenge_node(node.challenge_request(&attested, &token))
        .await?;
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn grpc_issuance_needs_a_bearer_and_honours_the_admin_tenant_header() -> TestResult {
    let (relay, mut client) = relay().await?;
    let bearer = admin_bearer(&relay).await?;

    let issued = client
        .issue_enrollment_token(issue_request("laptop-7", &[("authorization", &bearer)])?)
        .await?
        .into_inner();
    assert_eq!(
        issued.command_hint,
        format!("aegis edge enroll {}", issued.token)
    );
    assert_eq!(issued.qr_payload, issued.command_hint);
    assert_eq!(issued.controller_endpoint, relay.tokens().public_endpoint());
    let expires_at = chrono::DateTime::parse_from_rfc3339(&issued.expires_at)?.timestamp();
    let now = aegis_relay::runtime::SystemClock.utc_now().timestamp();
    assert!(
        (expires_at - (now + 900)).abs() <= 5,
        "{}",
        issued.expires_at
    );
    let claims = claims_of(&issued.token)?;
    assert_eq!(claims["sub"], "laptop-7");
    assert_eq!(claims["tid"], "aegis-system");
    assert_eq!(claims["cep"], issued.controller_endpoint);
    // The issued token enrolls an edge.
    assert_redeemable(&relay, &mut client, &issued.token).await?;

    let refused = client
        .issue_enrollment_token(issue_request("x", &[])?)
        .await;
    assert_refused(refused, Code::Unauthenticated, "missing bearer token");
    let garbage = [("authorization", "Bearer not.a.token")];
    let refused = client
        .issue_enrollment_token(issue_request("x", &garbage)?)
        .await;
    assert_refused(refused, Code::Unauthenticated, "invalid bearer token");

    let other = [
        ("authorization", bearer.as_str()),
        ("x-aegis-tenant", "t-other"),
    ];
    let issued = client
        .issue_enrollment_token(issue_request("x", &other)?)
        .await?
        .into_inner();
    assert_eq!(claims_of(&issued.token)?["tid"], "t-other");
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

fn url(relay: &TestRelay) -> String {
    format!("http://{}/v1/edge/enrollment-tokens", relay.http_addr())
}

#[tokio::test]
async fn rest_issuance_accepts_issued_to_or_name_and_tenant_headers() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let bearer = admin_bearer(&relay).await?;
    let auth = ("authorization", bearer.as_str());
    type Headers<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Headers, &str, &str, &str); 4] = [
        (&[auth], r#"{"issued_to":"a"}"#, "a", "aegis-system"),
        (&[auth], r#"{"name":"b"}"#, "b", "aegis-system"),
        (
            &[auth, ("x-tenant-id", "aegis-system")],
            r#"{"issued_to":"c"}"#,
            "c",
            "aegis-system",
        ),
        (
            &[auth, ("x-tenant-id", "t-other")],
            r#"{"issued_to":"d"}"#,
            "d",
            "t-other",
        ),
    ];
    for (headers, body, sub, tid) in cases {
        let (status, text) = http_post(&url(&relay), headers, body).await?;
        assert_eq!(status, 200, "{body}: {text}");
        let json: serde_json::Value = serde_json::from_str(&text)?;
        let token = json["token"].as_str().ok_or("no token")?;
        let claims = claims_of(token)?;
        assert_eq!(claims["sub"], sub, "{body}");
        assert_eq!(claims["tid"], tid, "{body}");
        assert_eq!(json["command_hint"], format!("aegis edge enroll {token}"));
        assert_eq!(json["qr_payload"], json["command_hint"]);
        assert_eq!(
            json["controller_endpoint"],
            relay.tokens().public_endpoint()
        );
    }
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn rest_issuance_refusals_use_the_error_shape() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let bearer = admin_bearer(&relay).await?;
    let auth = ("authorization", bearer.as_str());

    let (status, text) = http_post(&url(&relay), &[], r#"{"issued_to":"a"}"#).await?;
    assert_eq!(status, 401, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text)?;
    assert_eq!(json["status"], 401);
    assert_eq!(json["code"], "unauthorized");
    let message = json["message"].as_str().ok_or("no message")?;
    assert!(message.contains("missing bearer token"), "{message}");

    let (status, text) = http_post(&url(&relay), &[auth], r#"{"issued_to":"#).await?;
    assert_eq!(status, 400, "{text}");
    let json: serde_json::Value = serde_json::from_str(&text)?;
    assert_eq!(json["status"], 400);
    assert_eq!(json["code"], "bad_request");
    let message = json["message"].as_str().ok_or("no message")?;
    assert!(message.contains("invalid JSON body"), "{message}");

    let big = format!(r#"{{"issued_to":"{}"}}"#, "a".repeat(64 * 1024));
    let (status, text) = http_post(&url(&relay), &[auth], &big).await?;
    assert_eq!(status, 413, "{text}");
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

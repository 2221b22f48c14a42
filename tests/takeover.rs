//! An enrollment token cannot silently take over an enrolled node: only a
//! token issued with `replace_node` for that node re-enrolls it with a new
//! key (over gRPC, REST, our edge client's `--force` and the `edge-sim`
//! binary), a refused attempt changes nothing and burns nothing, and the
//! old key's live stream ends.

mod common;

use std::time::Duration;

use aegis_relay::app::RunningRelay;
use aegis_relay::edge_client::{self, EdgeState, EnrollError, EnrollOptions, NODE_KEY};
use aegis_relay::runtime::Runtime;
use common::edges::{enroll_edge, open_stream};
use common::enroll::{
    assert_not_enrolled, assert_redeemable, assert_refused, claims_of, client, good_claims,
    issue_request, mint, sign_claims, Client, Node, TENANT,
};
use common::rest::{caller_bearer, Answer, Rest};
use common::{eventually, start_relay, start_relay_configured, TestResult};
use serde_json::{json, Value};
use tonic::Code;
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error>;

const BIN: &str = env!("CARGO_BIN_EXE_aegis-relay");
const TOKENS: &str = "/v1/edge/enrollment-tokens";

async fn relay() -> Result<(common::TestRelay, Client), BoxError> {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let client = client(&relay).await?;
    Ok((relay, client))
}

/// `Bearer` of an operator of [`TENANT`] (may issue tokens for it).
async fn operator(relay: &RunningRelay) -> Result<String, BoxError> {
    caller_bearer(relay, "ops", TENANT, "aegis:operator").await
}

/// `POST /v1/edge/enrollment-tokens` with `body` as an operator of [`TENANT`].
async fn issue(relay: &RunningRelay, body: Value) -> Result<Answer, BoxError> {
    let bearer = operator(relay).await?;
    Rest::new(relay, Some(&bearer)).post(TOKENS, &body).await
}

/// The token of a successful issuance.
fn token_of(answer: &Answer) -> Result<String, BoxError> {
    assert_eq!(answer.status, 200, "{}", answer.text);
    Ok(answer.json["token"]
        .as_str()
        .ok_or("no token in the answer")?
        .to_owned())
}

/// The node id with a new key, as `aegis edge enroll --force` presents it.
fn new_key_for(node: &Node) -> Node {
    Node {
        id: node.id,
        ..Node::new()
    }
}

fn already_enrolled(node: Uuid) -> String {
    format!(
        "node {node} is already enrolled; to re-enroll it with a new key, issue an enrollment \
         token with replace_node={node} (REST body field `replace_node`, gRPC metadata \
         `x-aegis-replace-node`)"
    )
}

#[tokio::test]
async fn an_enrolled_node_is_re_enrolled_only_with_a_token_issued_for_it() -> TestResult {
    let (relay, mut client) = relay().await?;
    let node = Node::new();
    node.enroll(
        &mut client,
        &mint(&relay, aegis_relay::runtime::OsEntropy.uuid()).await?,
    )
    .await?;
    let before = relay.store().get_edge(node.id).await?.ok_or("no edge")?;
    let forced = new_key_for(&node);

    // A token of the node's own tenant, issued without replace_node.
    let plain = token_of(&issue(&relay, json!({"issued_to": "x"})).await?)?;
    assert_refused(
        forced.enroll(&mut client, &plain).await,
        Code::FailedPrecondition,
        &already_enrolled(node.id),
    );
    assert_eq!(
        relay.store().get_edge(node.id).await?.as_ref(),
        Some(&before)
    );
    assert_redeemable(&relay, &mut client, &plain).await?;

    let answer = issue(
        &relay,
        json!({"issued_to": "host-1b", "replace_node": node.id.to_string()}),
    )
    .await?;
    let bound = token_of(&answer)?;
    assert_eq!(answer.json["replace_node"], node.id.to_string());
    assert_eq!(
        answer.json["command_hint"],
        format!("aegis edge enroll {bound} --force")
    );
    assert_eq!(answer.json["qr_payload"], answer.json["command_hint"]);
    assert_claim_order(&bound)?;

    // Bound to the node: it enrolls no other node, and is not burned trying.
    let other = Node::new();
    assert_refused(
        other.enroll(&mut client, &bound).await,
        Code::FailedPrecondition,
        &format!("issued to re-enroll node {}", node.id),
    );
    assert_not_enrolled(&relay, other.id).await?;
    assert_eq!(
        relay.store().get_edge(node.id).await?.as_ref(),
        Some(&before)
    );

    let response = forced.enroll(&mut client, &bound).await?;
    assert_eq!(
        claims_of(&response.node_security_token)?["sub"],
        node.id.to_string()
    );
    let after = relay.store().get_edge(node.id).await?.ok_or("edge gone")?;
    assert_eq!(after.public_key, forced.public_key());
    assert_ne!(after.public_key, before.public_key);
    assert_eq!(after.display_name, "host-1b");
    assert_eq!(after.enrolled_at, before.enrolled_at);
    assert_refused(
        forced.enroll(&mut client, &bound).await,
        Code::Unauthenticated,
        "already redeemed",
    );
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

/// protocol.md §4.1 pins the claims and their order; binding adds none.
fn assert_claim_order(token: &str) -> TestResult {
    let segment = token.split('.').nth(1).ok_or("no claims segment")?;
    let json = aegis_relay::auth::b64url_decode(segment).ok_or("claims not base64url")?;
    let text = String::from_utf8(json)?;
    let keys: Vec<&str> = ["tid", "sub", "jti", "exp", "nbf", "aud", "iss", "cep"].into();
    let positions: Vec<usize> = keys
        .iter()
        .map(|key| text.find(&format!("\"{key}\":")).ok_or(*key))
        .collect::<Result<_, _>>()?;
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    let claims: serde_json::Map<String, Value> = serde_json::from_str(&text)?;
    assert_eq!(claims.len(), keys.len(), "{text}");
    Ok(())
}

#[tokio::test]
async fn issuing_with_replace_node_checks_the_node_over_rest_and_grpc() -> TestResult {
    let (relay, mut client) = relay().await?;
    let unknown = aegis_relay::runtime::OsEntropy.uuid();
    let answer = issue(&relay, json!({"replace_node": unknown.to_string()})).await?;
    assert_eq!(
        (answer.status, answer.json["code"].as_str()),
        (404, Some("not_found"))
    );
    assert!(
        answer
            .message()
            .contains(&format!("no enrolled edge {unknown} in tenant {TENANT}")),
        "{}",
        answer.text
    );
    let answer = issue(&relay, json!({"replace_node": "nope"})).await?;
    assert_eq!(answer.status, 400, "{}", answer.text);
    assert!(
        answer
            .message()
            .contains("replace_node \"nope\" is not a UUID"),
        "{}",
        answer.text
    );

    // Another tenant's node is not found for this tenant.
    let foreign = Node::new();
    let foreign_token = relay
        .tokens()
        .mint_enrollment(
            "t-other",
            "x",
            aegis_relay::runtime::OsEntropy.uuid(),
            aegis_relay::runtime::SystemClock.utc_now(),
        )
        .await?;
    foreign.enroll(&mut client, &foreign_token.token).await?;
    let answer = issue(&relay, json!({"replace_node": foreign.id.to_string()})).await?;
    assert_eq!(answer.status, 404, "{}", answer.text);

    // Revocation is final.
    let revoked = Node::new();
    revoked
        .enroll(
            &mut client,
            &mint(&relay, aegis_relay::runtime::OsEntropy.uuid()).await?,
        )
        .await?;
    relay
        .store()
        .revoke_edge(
            Some(TENANT),
            revoked.id,
            "ops",
            aegis_relay::runtime::SystemClock.utc_now(),
        )
        .await?
        .ok_or("not revoked")?;
    let answer = issue(&relay, json!({"replace_node": revoked.id.to_string()})).await?;
    assert_eq!(
        (answer.status, answer.json["code"].as_str()),
        (409, Some("conflict"))
    );
    for needle in ["revocation is final", "fresh state directory"] {
        assert!(answer.message().contains(needle), "{}", answer.text);
    }

    // gRPC: the node comes in metadata (the proto message has no field).
    let bearer = operator(&relay).await?;
    let issuer = client.clone();
    let grpc = |node: String| {
        let (bearer, mut issuer) = (bearer.clone(), issuer.clone());
        async move {
            let metadata = [
                ("authorization", bearer.as_str()),
                ("x-aegis-replace-node", node.as_str()),
            ];
            Ok::<_, BoxError>(
                issuer
                    .issue_enrollment_token(issue_request("h", &metadata)?)
                    .await,
            )
        }
    };
    assert_refused(
        grpc(unknown.to_string()).await?,
        Code::NotFound,
        &unknown.to_string(),
    );
    assert_refused(
        grpc("nope".into()).await?,
        Code::InvalidArgument,
        "replace_node",
    );
    assert_refused(
        grpc(revoked.id.to_string()).await?,
        Code::FailedPrecondition,
        "revocation is final",
    );
    let node = Node::new();
    node.enroll(
        &mut client,
        &mint(&relay, aegis_relay::runtime::OsEntropy.uuid()).await?,
    )
    .await?;
    let issued = grpc(node.id.to_string()).await??.into_inner();
    assert_eq!(
        issued.command_hint,
        format!("aegis edge enroll {} --force", issued.token)
    );
    new_key_for(&node)
        .enroll(&mut client, &issued.token)
        .await?;
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn tokens_of_accepted_issuers_never_replace_a_node() -> TestResult {
    let relay = start_relay_configured(|settings| {
        settings.accepted_issuers = vec!["aegis-controller".to_owned()];
    })
    .await?;
    let mut client = client(&relay).await?;
    let node = Node::new();
    node.enroll(
        &mut client,
        &mint(&relay, aegis_relay::runtime::OsEntropy.uuid()).await?,
    )
    .await?;
    let before = relay.store().get_edge(node.id).await?;

    // Even with the jti of a token bound to the node.
    let bound = token_of(&issue(&relay, json!({"replace_node": node.id.to_string()})).await?)?;
    let jti = Uuid::parse_str(claims_of(&bound)?["jti"].as_str().ok_or("no jti")?)?;
    let mut claims = good_claims(&relay, jti);
    claims["iss"] = "aegis-controller".into();
    let foreign = sign_claims(&relay, &claims).await?;
    let forced = new_key_for(&node);
    assert_refused(
        forced.enroll(&mut client, &foreign).await,
        Code::FailedPrecondition,
        "tokens of \"aegis-controller\" never replace a node",
    );
    assert_eq!(relay.store().get_edge(node.id).await?, before);
    // Neither attempt burned the jti: the bound token still re-enrolls the node.
    forced.enroll(&mut client, &bound).await?;
    // A foreign token still enrolls new nodes.
    let mut claims = good_claims(&relay, aegis_relay::runtime::OsEntropy.uuid());
    claims["iss"] = "aegis-controller".into();
    assert_redeemable(&relay, &mut client, &sign_claims(&relay, &claims).await?).await?;
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

/// The daemon's state layout through our edge client's `--force` path and
/// the `edge-sim enroll --force` binary; the old key's stream ends.
#[tokio::test]
async fn forced_re_enrollment_with_our_edge_client_ends_the_old_stream() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let enrolled = enroll_edge(&relay, TENANT).await?;
    let old = enrolled.state.clone();
    let mut old_stream = open_stream(&relay, &old).await?;
    let owner = std::sync::Arc::clone(relay.owner());
    eventually(
        Duration::from_secs(10),
        "the old stream to register",
        || {
            let owner = std::sync::Arc::clone(&owner);
            async move { owner.is_connected(old.node_id).then_some(()) }
        },
    )
    .await?;
    let old_key = std::fs::read(old.dir.join(NODE_KEY))?;
    let forced = EnrollOptions {
        force: true,
        ..EnrollOptions::default()
    };

    let plain = token_of(&issue(&relay, json!({"issued_to": "laptop"})).await?)?;
    match edge_client::enroll(&Runtime::real(), &plain, &old.dir, &forced).await {
        Err(EnrollError::Refused { code, message, .. }) => {
            assert_eq!(code, Code::FailedPrecondition);
            assert!(
                message.contains(&already_enrolled(old.node_id)),
                "{message}"
            );
        }
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    assert_eq!(
        std::fs::read(old.dir.join(NODE_KEY))?,
        old_key,
        "state kept"
    );
    assert!(
        relay.owner().is_connected(old.node_id),
        "a refusal ends nothing"
    );

    let bound = token_of(
        &issue(
            &relay,
            json!({"issued_to": "laptop", "replace_node": old.node_id.to_string()}),
        )
        .await?,
    )?;
    let state_dir = old.dir.to_string_lossy().into_owned();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args([
                "edge-sim",
                "enroll",
                "--token",
                &bound,
                "--state-dir",
                &state_dir,
                "--force",
            ])
            .stdin(std::process::Stdio::null())
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("enrolled node {}", old.node_id)),
        "{stdout}"
    );

    let new = EdgeState::load(&old.dir)?;
    assert_eq!(new.node_id, old.node_id, "same node id");
    assert_ne!(new.key.to_bytes(), old.key.to_bytes(), "new key");
    let stored = relay
        .store()
        .get_edge(old.node_id)
        .await?
        .ok_or("edge gone")?;
    assert_eq!(
        stored.public_key,
        new.key.verifying_key().to_bytes().to_vec()
    );

    let ended = old_stream.ended().await?;
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert!(
        ended.message().contains("re-enrolled with a new key"),
        "{ended:?}"
    );
    assert!(
        !relay.owner().is_connected(old.node_id),
        "ended before the answer"
    );
    let refused = open_stream(&relay, &old).await.map(|_| ());
    assert!(
        matches!(&refused, Err(status) if status.code() == Code::Unauthenticated),
        "the old key opened a stream: {refused:?}"
    );
    let _new_stream = open_stream(&relay, &new).await?;
    let owner = std::sync::Arc::clone(relay.owner());
    eventually(Duration::from_secs(10), "the new key's stream", || {
        let owner = std::sync::Arc::clone(&owner);
        async move { owner.is_connected(new.node_id).then_some(()) }
    })
    .await?;
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

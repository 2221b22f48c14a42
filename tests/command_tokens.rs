//! The caller's bearer never reaches an edge: each InvokeTool carries a
//! per-command token (or the caller's explicit `user_security_token`), and
//! no route of the relay accepts such a token as a bearer.

mod common;

use std::time::Duration;

use aegis_relay::edge_client::EdgeOptions;
use aegis_relay::proto::cluster::edge_command;
use common::edges::{enroll_edge, run_edge, RunningEdge};
use common::enroll::{admin_bearer, claims_of};
use common::{http_request, start_relay, TestResult};
use serde_json::{json, Value};

type BoxError = Box<dyn std::error::Error>;

/// The user token of the next InvokeTool `edge` receives, with its command id.
async fn next_invoke_token(edge: &mut RunningEdge) -> Result<(String, String), BoxError> {
    loop {
        let command = tokio::time::timeout(Duration::from_secs(10), edge.commands.recv())
            .await?
            .ok_or("the edge stopped")?;
        if let Some(edge_command::Command::InvokeTool(invoke)) = command.command {
            let inner = invoke.seal_envelope.ok_or("no envelope")?;
            return Ok((inner.user_security_token, invoke.command_id));
        }
    }
}

fn echo(extra: Value) -> String {
    let mut body = json!({"tool_name": "cmd.run", "args": {"command": "echo", "args": ["hi"]},
                          "security_context_name": "zaru-free", "deadline_secs": 30});
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body.to_string()
}

#[tokio::test]
async fn an_invoke_carries_its_own_token_which_no_route_accepts() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    let mut running = run_edge(&relay, &edge.state, EdgeOptions::default()).await?;
    let admin = admin_bearer(&relay).await?;
    let http = format!("http://{}", relay.http_addr());
    let url = format!("{http}/v1/edge/hosts/{}/invoke", running.node_id);
    let key = aegis_relay::runtime::OsEntropy.uuid().to_string();
    let headers = [
        ("authorization", admin.as_str()),
        ("idempotency-key", key.as_str()),
    ];
    let before = aegis_relay::runtime::SystemClock.utc_now().timestamp();
    let (status, answer) = http_request("POST", &url, &headers, &echo(json!({}))).await?;
    assert_eq!(status, 200, "{answer}");

    let (token, command_id) = next_invoke_token(&mut running).await?;
    assert_eq!(command_id, key);
    assert_ne!(
        format!("Bearer {token}"),
        admin,
        "the caller's bearer reached the edge"
    );
    assert_eq!(token.split('.').count(), 3, "the daemon needs three parts");
    let claims = claims_of(&token)?;
    assert_eq!(claims["iss"], relay.tokens().issuer());
    assert_eq!(claims["aud"], "aegis-edge");
    assert_eq!(claims["sub"], "ops");
    assert_eq!(claims["tid"], "t-a");
    assert_eq!(claims["node"], running.node_id.to_string());
    assert_eq!(claims["cmd"], key);
    let exp = claims["exp"].as_i64().ok_or("no exp")?;
    assert!(
        (before + 30..=aegis_relay::runtime::SystemClock.utc_now().timestamp() + 31).contains(&exp),
        "exp {exp} is not the call's deadline (30 s after {before})"
    );

    // Presented back to the relay, it is refused everywhere a bearer counts.
    let stolen = format!("Bearer {token}");
    for (method, path) in [
        ("GET", "/v1/edge/hosts".to_owned()),
        ("GET", format!("/v1/edge/hosts/{}", running.node_id)),
        ("POST", format!("/v1/edge/hosts/{}/invoke", running.node_id)),
        ("POST", "/v1/edge/enrollment-tokens".to_owned()),
    ] {
        let (status, body) = http_request(
            method,
            &format!("{http}{path}"),
            &[("authorization", stolen.as_str())],
            &echo(json!({"issued_to": "x"})),
        )
        .await?;
        assert_eq!(
            status, 401,
            "{method} {path} accepted a command token: {body}"
        );
    }
    assert_eq!(
        relay.shutdown().await,
        aegis_relay::app::ShutdownOutcome::Graceful
    );
    Ok(())
}

#[tokio::test]
async fn fleet_targets_get_distinct_tokens_and_a_body_token_passes_through() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let (first, second) = (
        enroll_edge(&relay, "t-a").await?,
        enroll_edge(&relay, "t-a").await?,
    );
    let mut edges = [
        run_edge(&relay, &first.state, EdgeOptions::default()).await?,
        run_edge(&relay, &second.state, EdgeOptions::default()).await?,
    ];
    let bearer = common::edges::tenant_bearer(&relay, "t-a").await?;
    let http = format!("http://{}", relay.http_addr());
    let auth = [("authorization", bearer.as_str())];
    let fleet = format!("{http}/v1/edge/fleet/invoke");
    let (status, events) = http_request(
        "POST",
        &fleet,
        &auth,
        &echo(json!({"target": "All", "mode": "parallel"})),
    )
    .await?;
    assert_eq!(status, 200, "{events}");
    assert!(events.contains("\"Done\""), "{events}");
    let mut tokens = Vec::new();
    for edge in &mut edges {
        let (token, _) = next_invoke_token(edge).await?;
        let claims = claims_of(&token)?;
        assert_eq!(claims["node"], edge.node_id.to_string(), "{claims}");
        assert_eq!(claims["sub"], "user");
        tokens.push(token);
    }
    assert_ne!(tokens[0], tokens[1]);
    assert!(tokens
        .iter()
        .all(|token| format!("Bearer {token}") != bearer));

    // An explicit user token is the caller's choice: passed through as is.
    let chosen = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJjbGkifQ.c2ln";
    let (status, events) = http_request(
        "POST",
        &fleet,
        &auth,
        &echo(json!({"target": "All", "mode": "parallel", "user_security_token": chosen})),
    )
    .await?;
    assert_eq!(status, 200, "{events}");
    let url = format!("{http}/v1/edge/hosts/{}/invoke", edges[0].node_id);
    let (status, answer) = http_request(
        "POST",
        &url,
        &auth,
        &echo(json!({"user_security_token": chosen})),
    )
    .await?;
    assert_eq!(status, 200, "{answer}");
    for edge in &mut edges {
        assert_eq!(next_invoke_token(edge).await?.0, chosen);
    }
    assert_eq!(next_invoke_token(&mut edges[0]).await?.0, chosen);
    drop(edges);
    assert_eq!(
        relay.shutdown().await,
        aegis_relay::app::ShutdownOutcome::Graceful
    );
    Ok(())
}

//! Limits on what callers and edges can hold: idempotent outcomes bounded
//! per tenant (evicted ones answer `outcome_expired`, never a second run),
//! a silent edge's call released `call_grace` after its deadline, and the
//! per-tenant cap on running fleet runs (429 with `Retry-After`).

mod common;

use std::time::Duration;

use aegis_relay::edge_client::EdgeOptions;
use aegis_relay::proto::cluster::edge_command;
use common::edges::{enroll_edge, open_stream, run_edge, tenant_bearer};
use common::{eventually, http_request, start_relay_configured, TestResult};
use http_body_util::BodyExt;
use uuid::Uuid;

async fn invoke(
    relay: &common::TestRelay,
    node: Uuid,
    bearer: &str,
    key: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let url = format!("http://{}/v1/edge/hosts/{node}/invoke", relay.http_addr());
    let headers = [("authorization", bearer), ("idempotency-key", key)];
    let (status, text) = http_request("POST", &url, &headers, &body.to_string()).await?;
    assert_eq!(status, 200, "{text}");
    Ok(serde_json::from_str(&text)?)
}

fn echo(word: &str) -> serde_json::Value {
    serde_json::json!({
        "tool_name": "cmd.run",
        "args": {"command": "echo", "args": [word]},
        "security_context_name": "zaru-free",
    })
}

#[tokio::test]
async fn one_tenants_outputs_cannot_evict_anothers_and_evicted_keys_never_run_twice() -> TestResult
{
    let relay = start_relay_configured(|settings| {
        settings.sessions.idempotency_bytes_per_tenant = 64 * 1024;
    })
    .await?;
    let (edge_a, edge_b) = (
        enroll_edge(&relay, "t-a").await?,
        enroll_edge(&relay, "t-b").await?,
    );
    let mut running_a = run_edge(&relay, &edge_a.state, EdgeOptions::default()).await?;
    let _running_b = run_edge(&relay, &edge_b.state, EdgeOptions::default()).await?;
    let (bearer_a, bearer_b) = (
        tenant_bearer(&relay, "t-a").await?,
        tenant_bearer(&relay, "t-b").await?,
    );

    let key_b = aegis_relay::runtime::OsEntropy.uuid().to_string();
    let first_b = invoke(
        &relay,
        edge_b.state.node_id,
        &bearer_b,
        &key_b,
        &echo("kept"),
    )
    .await?;
    assert_eq!(first_b["stdout"], "kept\n");
    let big = "a".repeat(10_000);
    let keys_a: Vec<String> = (0..30)
        .map(|_| aegis_relay::runtime::OsEntropy.uuid().to_string())
        .collect();
    for key in &keys_a {
        let outcome = invoke(&relay, edge_a.state.node_id, &bearer_a, key, &echo(&big)).await?;
        assert_eq!(outcome["ok"], true, "{outcome}");
    }
    // 300 KB of A's outputs left B's outcome alone.
    let again_b = invoke(
        &relay,
        edge_b.state.node_id,
        &bearer_b,
        &key_b,
        &echo("kept"),
    )
    .await?;
    assert_eq!(again_b, first_b);
    // A's first outcome was evicted: its retry is refused, not run again.
    let retry = invoke(
        &relay,
        edge_a.state.node_id,
        &bearer_a,
        &keys_a[0],
        &echo(&big),
    )
    .await?;
    assert_eq!(retry["error_kind"], "outcome_expired", "{retry}");
    assert_eq!(retry["ok"], false);
    // A's newest is still kept.
    let newest = invoke(
        &relay,
        edge_a.state.node_id,
        &bearer_a,
        &keys_a[29],
        &echo(&big),
    )
    .await?;
    assert_eq!(newest["ok"], true, "{newest}");
    let mut invokes = 0;
    while let Ok(Some(command)) =
        tokio::time::timeout(Duration::from_millis(300), running_a.commands.recv()).await
    {
        if matches!(command.command, Some(edge_command::Command::InvokeTool(_))) {
            invokes += 1;
        }
    }
    assert_eq!(invokes, 30, "every key of A ran exactly once");
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn a_silent_edges_call_is_released_after_the_grace() -> TestResult {
    let relay = start_relay_configured(|settings| {
        settings.sessions.call_grace = Duration::from_secs(1);
    })
    .await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    // Connected, heartbeating on its own clock, but never answering.
    let _silent = open_stream(&relay, &edge.state).await?;
    let bearer = tenant_bearer(&relay, "t-a").await?;
    let key = aegis_relay::runtime::OsEntropy.uuid().to_string();
    let mut body = echo("never");
    body["deadline_secs"] = 1.into();
    let first = invoke(&relay, edge.state.node_id, &bearer, &key, &body).await?;
    assert_eq!(first["error_kind"], "timeout", "{first}");
    // Within deadline + grace the call is released: a retry gets its
    // outcome at once instead of joining a call that would never end.
    let released = eventually(Duration::from_secs(10), "the call released", || async {
        let retry = invoke(&relay, edge.state.node_id, &bearer, &key, &body)
            .await
            .ok()?;
        retry["error_message"]
            .as_str()
            .is_some_and(|m| m.contains("relay.edges.call_grace"))
            .then_some(retry)
    })
    .await?;
    assert_eq!(released["error_kind"], "timeout");
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn running_fleet_runs_are_capped_per_tenant_with_retry_after() -> TestResult {
    let relay = start_relay_configured(|settings| {
        settings.fleet_runs.running_per_tenant = 1;
        // The run ends at its 2 s deadline and the silent edge's call is
        // released right after, so the drain finishes it.
        settings.sessions.call_grace = Duration::ZERO;
        settings.drain_timeout = Duration::from_secs(10);
    })
    .await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    let _silent = open_stream(&relay, &edge.state).await?;
    let bearer = tenant_bearer(&relay, "t-a").await?;
    let url = format!("http://{}/v1/edge/fleet/invoke", relay.http_addr());
    let body = serde_json::json!({
        "target": "All",
        "tool_name": "cmd.run",
        "args": {"command": "sleep", "args": ["30"]},
        "security_context_name": "zaru-free",
        "mode": "parallel",
        "deadline_secs": 2,
    })
    .to_string();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let request = || {
        hyper::Request::builder()
            .method("POST")
            .uri(&url)
            .header("authorization", &bearer)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
    };
    // The first run streams (and holds its place) while the edge is silent.
    let running =
        tokio::time::timeout(Duration::from_secs(10), client.request(request()?)).await??;
    assert_eq!(running.status(), 200);
    let refused =
        tokio::time::timeout(Duration::from_secs(10), client.request(request()?)).await??;
    assert_eq!(refused.status(), 429);
    let retry_after = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        retry_after.is_some_and(|s| s >= 1),
        "{:?}",
        refused.headers()
    );
    let text = refused.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("too_many_runs") && text.contains("running_per_tenant"),
        "{text}"
    );
    drop(running);
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

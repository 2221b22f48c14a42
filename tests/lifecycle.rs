//! What happens around a call rather than in it: a drain with live sessions,
//! a caller hanging up, a fleet run outliving its HTTP request, an
//! `Idempotency-Key` retry joining a running call and expiring after the
//! retention.

mod common;

use std::time::Duration;

use aegis_relay::edge_client::EdgeOptions;
use aegis_relay::proto::cluster::{edge_command, EdgeCommand};
use common::edges::{
    commands_before_marker, enroll_edge, now_ms, open_stream, run_edge, tenant_bearer,
};
use common::{
    assert_graceful, eventually, http_request, start_relay, start_relay_configured, TestResult,
};
use serde_json::{json, Value};
use tokio::sync::mpsc;

type BoxError = Box<dyn std::error::Error>;

fn tool(command: &str, args: &[&str], extra: Value) -> String {
    let mut body = json!({
        "tool_name": "cmd.run",
        "args": {"command": command, "args": args},
        "security_context_name": "zaru-free",
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body.to_string()
}

/// POSTs in a task of its own (so the test can wait for the edge, or hang up).
fn spawn_post(
    url: String,
    headers: Vec<(&'static str, String)>,
    body: String,
) -> tokio::task::JoinHandle<Result<(u16, String), String>> {
    tokio::spawn(async move {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        http_request("POST", &url, &headers, &body)
            .await
            .map_err(|err| err.to_string())
    })
}

/// The next InvokeTool the edge receives (other commands are skipped).
async fn next_invoke(
    commands: &mut mpsc::Receiver<EdgeCommand>,
) -> Result<aegis_relay::proto::cluster::InvokeToolCommand, BoxError> {
    loop {
        let command = tokio::time::timeout(Duration::from_secs(20), commands.recv())
            .await?
            .ok_or("the edge stopped")?;
        if let Some(edge_command::Command::InvokeTool(invoke)) = command.command {
            return Ok(invoke);
        }
    }
}

#[tokio::test]
async fn a_drain_finishes_calls_ends_fleet_runs_at_their_deadline_and_sends_edges_away(
) -> TestResult {
    let relay = start_relay(Duration::from_secs(20)).await?;
    let a = enroll_edge(&relay, "t-a").await?;
    let b = enroll_edge(&relay, "t-a").await?;
    let c = enroll_edge(&relay, "t-a").await?;
    let mut edge_a = run_edge(&relay, &a.state, EdgeOptions::default()).await?;
    let mut edge_b = run_edge(&relay, &b.state, EdgeOptions::default()).await?;
    let mut idle = open_stream(&relay, &c.state).await?;
    let bearer = tenant_bearer(&relay, "t-a").await?;
    let base = format!("http://{}", relay.http_addr());
    let auth = vec![("authorization", bearer.clone())];

    // In flight when the drain starts: a single-edge call (2 s) and a fleet
    // run whose target outlives its 1 s deadline (the edge sleeps 3 s).
    let call = spawn_post(
        format!("{base}/v1/edge/hosts/{}/invoke", a.state.node_id),
        auth.clone(),
        tool("sleep", &["2"], json!({})),
    );
    let fleet = spawn_post(
        format!("{base}/v1/edge/fleet/invoke"),
        auth.clone(),
        tool(
            "sleep",
            &["3"],
            json!({"target": {"Node": b.state.node_id}, "deadline_secs": 1}),
        ),
    );
    next_invoke(&mut edge_a.commands).await?;
    next_invoke(&mut edge_b.commands).await?;

    let started = tokio::time::Instant::now();
    let outcome = relay.shutdown();
    let (outcome, idle_end) = tokio::join!(outcome, idle.ended());
    assert_graceful(outcome);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "hit the drain deadline"
    );

    // The edge with nothing in flight is sent away with the reconnect status.
    let idle_end = idle_end?;
    assert_eq!(idle_end.code(), tonic::Code::Unavailable, "{idle_end:?}");
    assert!(idle_end.message().contains("reconnect"), "{idle_end:?}");
    // The in-flight call finished with its result.
    let (status, text) = call.await??;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text)?;
    assert_eq!(
        (answer["ok"].clone(), answer["exit_code"].clone()),
        (json!(true), json!(0)),
        "{answer}"
    );
    // The fleet run ended at its target's deadline, not the drain's.
    let (status, text) = fleet.await??;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains(r#""timed_out":1"#) && text.contains(r#""Done""#),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn a_caller_hanging_up_cancels_its_call_on_the_edge() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    let mut stream = open_stream(&relay, &edge.state).await?;
    let bearer = tenant_bearer(&relay, "t-a").await?;
    let call = spawn_post(
        format!(
            "http://{}/v1/edge/hosts/{}/invoke",
            relay.http_addr(),
            edge.state.node_id
        ),
        vec![("authorization", bearer)],
        tool("sleep", &["30"], json!({})),
    );
    let invoke = stream.next().await?.map_err(|status| status.to_string())?;
    let Some(edge_command::Command::InvokeTool(invoke)) = invoke.command else {
        return Err(format!("expected an InvokeTool, got {invoke:?}").into());
    };
    // Aborting the task drops its connection: the caller hung up.
    call.abort();
    let cancel = stream.next().await?.map_err(|status| status.to_string())?;
    match cancel.command {
        Some(edge_command::Command::Cancel(cancel)) => {
            assert_eq!(cancel.command_id, invoke.command_id);
        }
        other => return Err(format!("expected a Cancel, got {other:?}").into()),
    }
    // The edge acknowledges, as the daemon does; until then the command
    // counts as running and a drain would wait for it.
    let cancelled = aegis_relay::proto::cluster::EdgeResult {
        error_kind: "cancelled".to_owned(),
        ..Default::default()
    };
    stream
        .send(
            stream
                .signer
                .result(now_ms(), &invoke.command_id, cancelled),
        )
        .await?;
    assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn a_fleet_run_outlives_its_request_and_its_history_is_complete() -> TestResult {
    let relay = start_relay(Duration::from_secs(10)).await?;
    let mut edges = Vec::new();
    let mut enrolled = Vec::new();
    for _ in 0..2 {
        let edge = enroll_edge(&relay, "t-a").await?;
        edges.push(run_edge(&relay, &edge.state, EdgeOptions::default()).await?);
        enrolled.push(edge);
    }
    let bearer = tenant_bearer(&relay, "t-a").await?;
    let base = format!("http://{}", relay.http_addr());
    let run = spawn_post(
        format!("{base}/v1/edge/fleet/invoke"),
        vec![("authorization", bearer.clone())],
        tool(
            "sleep",
            &["1"],
            json!({"target": "All", "mode": "parallel"}),
        ),
    );
    for edge in &mut edges {
        next_invoke(&mut edge.commands).await?;
    }
    // Both targets are running: the caller hangs up.
    run.abort();
    let runs_url = format!("{base}/v1/edge/fleet/runs");
    let id = eventually(Duration::from_secs(10), "the run in the history", || {
        let (url, bearer) = (runs_url.clone(), bearer.clone());
        async move {
            let (_, text) = http_request("GET", &url, &[("authorization", &bearer)], "")
                .await
                .ok()?;
            let runs: Value = serde_json::from_str(&text).ok()?;
            runs["runs"][0]["fleet_command_id"]
                .as_str()
                .map(str::to_owned)
        }
    })
    .await?;
    let run_url = format!("{base}/v1/edge/fleet/runs/{id}");
    let view = eventually(Duration::from_secs(30), "the run to complete", || {
        let (url, bearer) = (run_url.clone(), bearer.clone());
        async move {
            let (_, text) = http_request("GET", &url, &[("authorization", &bearer)], "")
                .await
                .ok()?;
            let view: Value = serde_json::from_str(&text).ok()?;
            (view["state"] != "running").then_some(view)
        }
    })
    .await?;
    assert_eq!(view["state"], "done", "{view}");
    assert_eq!(
        view["summary"],
        json!({"ok": 2, "err": 0, "timed_out": 0, "skipped": 0}),
        "{view}"
    );
    let nodes = view["nodes"].as_array().ok_or("no nodes")?;
    assert_eq!(nodes.len(), 2, "{view}");
    for node in nodes {
        assert_eq!(
            (node["ok"].clone(), node["exit_code"].clone()),
            (json!(true), json!(0)),
            "{view}"
        );
    }
    assert!(view["finished_at"].is_string(), "{view}");
    drop(edges);
    assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn an_idempotent_retry_joins_the_running_call_and_expires_after_the_retention() -> TestResult
{
    let retention = Duration::from_millis(1500);
    let relay = start_relay_configured(|settings| {
        settings.sessions.idempotency_retention = retention;
    })
    .await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    let mut running = run_edge(&relay, &edge.state, EdgeOptions::default()).await?;
    let bearer = tenant_bearer(&relay, "t-a").await?;
    let key = aegis_relay::runtime::OsEntropy.uuid().to_string();
    let url = format!(
        "http://{}/v1/edge/hosts/{}/invoke",
        relay.http_addr(),
        edge.state.node_id
    );
    let headers = vec![
        ("authorization", bearer.clone()),
        ("idempotency-key", key.clone()),
    ];
    let body = tool("sleep", &["1"], json!({}));

    // The retry arrives while the first call runs on the edge: it joins it.
    let started = tokio::time::Instant::now();
    let first = spawn_post(url.clone(), headers.clone(), body.clone());
    let invoke = next_invoke(&mut running.commands).await?;
    assert_eq!(invoke.command_id, key);
    let retry = spawn_post(url.clone(), headers.clone(), body.clone());
    let (first, retry) = (first.await??, retry.await??);
    assert_eq!(first.0, 200, "{}", first.1);
    assert_eq!(first, retry);
    let seen =
        commands_before_marker(&relay, edge.state.node_id, &bearer, &mut running.commands).await?;
    assert!(
        seen.is_empty(),
        "the joined retry reached the edge: {seen:?}"
    );

    // Within the retention a retry gets the first outcome, whatever its
    // body; after it the key is forgotten and the retry's own body runs.
    let echo = tool("echo", &["again"], json!({}));
    let again = eventually(Duration::from_secs(30), "the key to expire", || {
        let (url, headers, body) = (url.clone(), headers.clone(), echo.clone());
        let first = first.1.clone();
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (status, text) = http_request("POST", &url, &headers, &body).await.ok()?;
            (status == 200 && text != first).then_some(text)
        }
    })
    .await?;
    assert!(again.contains(r#""stdout":"again\n""#), "{again}");
    assert!(started.elapsed() >= retention, "expired early: {again}");
    let invoke = next_invoke(&mut running.commands).await?;
    assert_eq!(
        invoke.command_id, key,
        "the expired key ran again under the same id"
    );
    drop(running);
    assert_graceful(relay.shutdown().await);
    Ok(())
}

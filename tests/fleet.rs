//! Fleet calls end to end: SSE events, each mode and failure policy,
//! require_min_targets, deadlines, cancel reaching every edge, idempotent
//! retries, run history and tenant isolation.

mod common;

use std::time::Duration;

use aegis_relay::edge_client::EdgeOptions;
use aegis_relay::proto::cluster::edge_command;
use common::edges::{commands_before_marker, enroll_edge, run_edge, tenant_bearer, RunningEdge};
use common::{http_request, start_relay, TestRelay, TestResult};
use serde_json::{json, Value};
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error>;

/// Three edges of tenant t-a; the one at `failing` (in node-id order) has no
/// security context, so every call to it fails.
async fn fleet_of_three(relay: &TestRelay, failing: Option<usize>) -> Result<Fleet, BoxError> {
    let mut enrolled = Vec::new();
    for _ in 0..3 {
        enrolled.push(enroll_edge(relay, "t-a").await?);
    }
    enrolled.sort_by_key(|edge| edge.state.node_id);
    let mut edges = Vec::new();
    for (index, edge) in enrolled.iter().enumerate() {
        let mut options = EdgeOptions::default();
        if failing == Some(index) {
            options.security_contexts.clear();
        }
        edges.push(run_edge(relay, &edge.state, options).await?);
    }
    Ok(Fleet {
        edges,
        _enrolled: enrolled,
    })
}

/// Running edges and their state directories (kept for the test's life).
struct Fleet {
    edges: Vec<RunningEdge>,
    _enrolled: Vec<common::edges::Enrolled>,
}

fn body(extra: Value, command: &str, args: &[&str]) -> String {
    let mut body = json!({
        "target": "All",
        "tool_name": "cmd.run",
        "args": {"command": command, "args": args},
        "security_context_name": "zaru-free",
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    body.to_string()
}

async fn fleet_invoke(
    relay: &TestRelay,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, Vec<Value>), BoxError> {
    let url = format!("http://{}/v1/edge/fleet/invoke", relay.http_addr());
    let (status, text) = http_request("POST", &url, headers, body).await?;
    if status != 200 {
        return Ok((status, vec![serde_json::from_str(&text)?]));
    }
    let events = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| serde_json::from_str(data.trim()))
        .collect::<Result<Vec<Value>, _>>()?;
    Ok((status, events))
}

fn summary(events: &[Value]) -> Value {
    events
        .last()
        .map(|e| e["Done"]["summary"].clone())
        .unwrap_or_default()
}

fn completed(events: &[Value]) -> Vec<(String, bool)> {
    events
        .iter()
        .filter_map(|e| e.get("NodeCompleted"))
        .map(|c| {
            (
                c["node_id"].as_str().unwrap_or_default().to_owned(),
                c["ok"] == true,
            )
        })
        .collect()
}

fn ids(edges: &[RunningEdge]) -> Vec<String> {
    edges.iter().map(|e| e.node_id.to_string()).collect()
}

#[tokio::test]
async fn sequential_runs_stop_on_failure_unless_told_to_continue() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let edges = fleet_of_three(&relay, Some(1)).await?.edges;
    let bearer = tenant_bearer(&relay, "t-a").await?;
    let auth = [("authorization", bearer.as_str())];
    let (status, events) = fleet_invoke(&relay, &auth, &body(json!({}), "echo", &["hi"])).await?;
    assert_eq!(status, 200, "{events:?}");
    let started = &events[0]["Started"];
    assert_eq!(started["resolved"], json!(ids(&edges)));
    assert_eq!(started["skipped"], json!([]));
    let names = ids(&edges);
    assert_eq!(
        completed(&events),
        vec![(names[0].clone(), true), (names[1].clone(), false)]
    );
    assert_eq!(
        summary(&events),
        json!({"ok": 1, "err": 1, "timed_out": 0, "skipped": 1})
    );
    let failure = events
        .iter()
        .find_map(|e| e.get("NodeCompleted").filter(|c| c["ok"] == false))
        .ok_or("no failure")?;
    assert_eq!(failure["error_kind"], "security_context_not_found");

    // The real CLI's body: `mode` and `on_error` words.
    let cli = body(
        json!({"mode": "sequential", "on_error": "continue"}),
        "echo",
        &["hi"],
    );
    let (_, events) = fleet_invoke(&relay, &auth, &cli).await?;
    assert_eq!(
        summary(&events),
        json!({"ok": 2, "err": 1, "timed_out": 0, "skipped": 0})
    );
    let order: Vec<String> = completed(&events).into_iter().map(|(id, _)| id).collect();
    assert_eq!(order, names);
    Ok(())
}

#[tokio::test]
async fn parallel_and_rolling_modes_schedule_as_asked() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let edges = fleet_of_three(&relay, Some(0)).await?.edges;
    let bearer = tenant_bearer(&relay, "t-a").await?;
    let auth = [("authorization", bearer.as_str())];

    // Parallel: every node starts before any completes (each sleeps 2 s, a
    // margin no scheduling stall on a loaded machine comes near).
    let (_, events) = fleet_invoke(
        &relay,
        &auth,
        &body(
            json!({"mode": "parallel", "failure_policy": "continue"}),
            "sleep",
            &["2"],
        ),
    )
    .await?;
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e.as_object()?.keys().next().map(String::as_str))
        .collect();
    assert_eq!(
        &kinds[..4],
        ["Started", "NodeStarted", "NodeStarted", "NodeStarted"],
        "{kinds:?}"
    );
    assert_eq!(
        summary(&events),
        json!({"ok": 2, "err": 1, "timed_out": 0, "skipped": 0})
    );

    // Rolling batch 2, fail-fast: the failing first node stops the run after its chunk.
    let (_, events) = fleet_invoke(
        &relay,
        &auth,
        &body(json!({"mode": "rolling", "batch": 2}), "echo", &["x"]),
    )
    .await?;
    assert_eq!(
        summary(&events),
        json!({"ok": 1, "err": 1, "timed_out": 0, "skipped": 1})
    );
    let names = ids(&edges);
    let done: Vec<String> = completed(&events).into_iter().map(|(id, _)| id).collect();
    assert!(!done.contains(&names[2]), "the second chunk ran: {done:?}");

    // Too few targets: cancelled before anything is sent.
    let (_, events) = fleet_invoke(
        &relay,
        &auth,
        &body(json!({"require_min_targets": 5}), "echo", &["x"]),
    )
    .await?;
    assert!(events[1]["Cancelled"]["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("require_min_targets"));
    assert_eq!(
        summary(&events),
        json!({"ok": 0, "err": 0, "timed_out": 0, "skipped": 3})
    );
    Ok(())
}

#[tokio::test]
async fn deadlines_count_as_timeouts_and_stop_after_limits_them() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let _edges = fleet_of_three(&relay, None).await?;
    let bearer = tenant_bearer(&relay, "t-a").await?;
    let auth = [("authorization", bearer.as_str())];
    let request = body(
        json!({"failure_policy": "stop-after", "stop_after": 2, "deadline_secs": 1}),
        "sleep",
        &["30"],
    );
    let (_, events) = fleet_invoke(&relay, &auth, &request).await?;
    assert_eq!(
        summary(&events),
        json!({"ok": 0, "err": 0, "timed_out": 2, "skipped": 1})
    );
    let timeout = events
        .iter()
        .find_map(|e| e.get("NodeCompleted"))
        .ok_or("no completion")?;
    assert_eq!(
        (timeout["error_kind"].clone(), timeout["exit_code"].clone()),
        (json!("timeout"), json!(-1))
    );
    Ok(())
}

#[tokio::test]
async fn cancel_reaches_every_edge_and_runs_are_kept() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let mut edges = fleet_of_three(&relay, None).await?.edges;
    let bearer = tenant_bearer(&relay, "t-a").await?;
    let other = tenant_bearer(&relay, "t-b").await?;
    // Long enough that the cancel comes first; our edge client, like the
    // daemon, reads the Cancel only once its sleep is over.
    let request = body(json!({"mode": "parallel"}), "sleep", &["3"]);
    let url = format!("http://{}/v1/edge/fleet/invoke", relay.http_addr());
    let headers = [("authorization".to_owned(), bearer.clone())];
    let run = tokio::spawn(async move {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        http_request("POST", &url, &headers, &request)
            .await
            .map_err(|e| e.to_string())
    });
    let relay_runs = format!("http://{}/v1/edge/fleet/runs", relay.http_addr());
    let id = common::eventually(Duration::from_secs(5), "the run in the history", || {
        let (url, bearer) = (relay_runs.clone(), bearer.clone());
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
    let cancel_url = format!("http://{}/v1/edge/fleet/{id}/cancel", relay.http_addr());
    let (status, _) = http_request("POST", &cancel_url, &[("authorization", &other)], "").await?;
    assert_eq!(status, 404, "another tenant cancelled the run");
    let (status, body) =
        http_request("POST", &cancel_url, &[("authorization", &bearer)], "").await?;
    assert_eq!(status, 204, "{body}");
    let (_, text) = run.await??;
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str(d.trim()).ok())
        .collect();
    assert!(
        events.iter().any(|e| e.get("Cancelled").is_some()),
        "{events:?}"
    );
    let cancelled = events
        .iter()
        .filter_map(|e| e.get("NodeCompleted"))
        .filter(|c| c["error_kind"] == "cancelled")
        .count();
    assert_eq!(cancelled, 3, "{events:?}");
    for edge in &mut edges {
        let mut saw_cancel = false;
        while let Ok(Some(command)) =
            tokio::time::timeout(Duration::from_secs(20), edge.commands.recv()).await
        {
            if matches!(command.command, Some(edge_command::Command::Cancel(_))) {
                saw_cancel = true;
                break;
            }
        }
        assert!(saw_cancel, "edge {} got no Cancel", edge.node_id);
    }
    let run_url = format!("http://{}/v1/edge/fleet/runs/{id}", relay.http_addr());
    let (status, text) = http_request("GET", &run_url, &[("authorization", &bearer)], "").await?;
    assert_eq!(status, 200);
    let view: Value = serde_json::from_str(&text)?;
    assert_eq!(view["state"], "cancelled");
    assert_eq!(view["nodes"].as_array().map(Vec::len), Some(3));
    let (status, _) = http_request("GET", &run_url, &[("authorization", &other)], "").await?;
    assert_eq!(status, 404);
    let (_, text) = http_request("GET", &relay_runs, &[("authorization", &other)], "").await?;
    assert_eq!(serde_json::from_str::<Value>(&text)?, json!({"runs": []}));
    Ok(())
}

#[tokio::test]
async fn a_retried_fleet_call_with_the_same_key_runs_nothing_twice() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let mut edges = fleet_of_three(&relay, None).await?.edges;
    let bearer = tenant_bearer(&relay, "t-a").await?;
    let key = aegis_relay::runtime::OsEntropy.uuid().to_string();
    let headers = [
        ("authorization", bearer.as_str()),
        ("idempotency-key", key.as_str()),
    ];
    let request = body(json!({"mode": "parallel"}), "echo", &["once"]);
    let (_, first) = fleet_invoke(&relay, &headers, &request).await?;
    let (_, second) = fleet_invoke(&relay, &headers, &request).await?;
    assert_eq!(
        summary(&first),
        json!({"ok": 3, "err": 0, "timed_out": 0, "skipped": 0})
    );
    assert_eq!(summary(&second), summary(&first));
    for edge in &mut edges {
        let seen =
            commands_before_marker(&relay, edge.node_id, &bearer, &mut edge.commands).await?;
        let invokes: Vec<String> = seen
            .into_iter()
            .filter_map(|command| match command {
                edge_command::Command::InvokeTool(invoke) => Some(invoke.command_id),
                _ => None,
            })
            .collect();
        let expected = Uuid::new_v5(&Uuid::parse_str(&key)?, edge.node_id.as_bytes()).to_string();
        assert_eq!(invokes, vec![expected]);
    }
    // Another tenant reaches none of these edges.
    let other = tenant_bearer(&relay, "t-b").await?;
    let (status, answer) =
        fleet_invoke(&relay, &[("authorization", other.as_str())], &request).await?;
    assert_eq!(status, 400, "{answer:?}");
    for edge in &mut edges {
        let seen =
            commands_before_marker(&relay, edge.node_id, &bearer, &mut edge.commands).await?;
        assert!(
            seen.is_empty(),
            "another tenant's call reached {}: {seen:?}",
            edge.node_id
        );
    }
    Ok(())
}

#[tokio::test]
async fn an_operator_fleet_call_stays_inside_the_tenant_it_acts_for() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let edges = fleet_of_three(&relay, None).await?.edges;
    let foreign = enroll_edge(&relay, "t-b").await?;
    let _foreign_edge = run_edge(&relay, &foreign.state, EdgeOptions::default()).await?;
    let admin = common::rest::caller_bearer(&relay, "ops", "aegis-system", "aegis:admin").await?;
    let acting_for_a = [("authorization", admin.as_str()), ("x-aegis-tenant", "t-a")];
    let request = body(json!({"mode": "parallel"}), "echo", &["hi"]);
    let (status, events) = fleet_invoke(&relay, &acting_for_a, &request).await?;
    assert_eq!(status, 200, "{events:?}");
    assert_eq!(events[0]["Started"]["resolved"], json!(ids(&edges)));
    assert_eq!(
        summary(&events),
        json!({"ok": 3, "err": 0, "timed_out": 0, "skipped": 0})
    );
    let preview_url = format!("http://{}/v1/edge/fleet/preview", relay.http_addr());
    let (status, text) = http_request(
        "POST",
        &preview_url,
        &[("authorization", &admin), ("x-aegis-tenant", "t-b")],
        r#"{"target":"All"}"#,
    )
    .await?;
    assert_eq!(status, 200, "{text}");
    let preview: Value = serde_json::from_str(&text)?;
    assert_eq!(
        preview["resolved"],
        json!([foreign.state.node_id.hyphenated().to_string()])
    );

    // The run's history, readable by t-a's users, names only t-a's edges.
    let user = tenant_bearer(&relay, "t-a").await?;
    let runs_url = format!("http://{}/v1/edge/fleet/runs", relay.http_addr());
    let (_, text) = http_request("GET", &runs_url, &[("authorization", &user)], "").await?;
    let runs: Value = serde_json::from_str(&text)?;
    let id = runs["runs"][0]["fleet_command_id"]
        .as_str()
        .ok_or("no run in t-a's history")?;
    let run_url = format!("http://{}/v1/edge/fleet/runs/{id}", relay.http_addr());
    let (_, text) = http_request("GET", &run_url, &[("authorization", &user)], "").await?;
    let run: Value = serde_json::from_str(&text)?;
    let mut nodes: Vec<String> = run["nodes"]
        .as_array()
        .ok_or("no nodes")?
        .iter()
        .filter_map(|node| node["node_id"].as_str().map(str::to_owned))
        .collect();
    nodes.sort();
    assert_eq!(nodes, ids(&edges), "{run}");

    // Without a tenant header the admin acts for its own tenant, which has
    // no edges here: nothing runs anywhere.
    let own = [("authorization", admin.as_str())];
    let (status, events) = fleet_invoke(&relay, &own, &request).await?;
    assert_eq!(status, 400, "{events:?}");
    Ok(())
}

//! Tool calls to one edge: REST invoke with the result, progress in order,
//! cancel, deadline, a stream lost mid-command, `Idempotency-Key` retries,
//! operator commands, tenant isolation and request validation.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aegis_relay::edge_client::EdgeOptions;
use aegis_relay::owner::{CallEvent, ToolCall};
use aegis_relay::proto::cluster::{edge_command, EdgeResult};
use common::edges::{
    commands_before_marker, enroll_edge, now_ms, open_stream, run_edge, tenant_bearer, RunningEdge,
};
use common::enroll::admin_bearer;
use common::{assert_graceful, http_request, start_relay, TestResult};

fn echo_body(words: &[&str]) -> String {
    serde_json::json!({
        "tool_name": "cmd.run",
        "args": {"command": "echo", "args": words},
        "security_context_name": "zaru-free",
        "an_unknown_field": true,
    })
    .to_string()
}

fn call(command: &str, args: &[&str], deadline: Duration) -> ToolCall {
    let mut object = serde_json::Map::new();
    object.insert("command".into(), command.into());
    object.insert("args".into(), serde_json::json!(args));
    ToolCall {
        tool_name: "cmd.run".into(),
        args: object,
        security_context_name: "zaru-free".into(),
        user_security_token: Some("a.b.c".into()),
        caller_subject: "test".into(),
        deadline,
    }
}

fn invokes(commands: &[edge_command::Command]) -> usize {
    commands
        .iter()
        .filter(|c| matches!(c, edge_command::Command::InvokeTool(_)))
        .count()
}

async fn post(
    relay: &common::TestRelay,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, serde_json::Value), Box<dyn std::error::Error>> {
    let url = format!("http://{}{path}", relay.http_addr());
    let (status, text) = http_request("POST", &url, headers, body).await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    ))
}

#[tokio::test]
async fn rest_invoke_runs_once_per_idempotency_key() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    let mut running: RunningEdge = run_edge(&relay, &edge.state, EdgeOptions::default()).await?;
    let bearer = tenant_bearer(&relay, "t-a").await?;
    let path = format!("/v1/edge/hosts/{}/invoke", running.node_id);
    let key = aegis_relay::runtime::OsEntropy.uuid().to_string();
    let headers = [
        ("authorization", bearer.as_str()),
        ("idempotency-key", key.as_str()),
    ];
    let (status, first) = post(&relay, &path, &headers, &echo_body(&["hello", "edge"])).await?;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["ok"], true);
    assert_eq!(first["stdout"], "hello edge\n");
    assert_eq!(first["command_id"], key.as_str());
    assert_eq!(first["error_kind"], serde_json::Value::Null);
    let (status, again) = post(&relay, &path, &headers, &echo_body(&["hello", "edge"])).await?;
    assert_eq!((status, &again), (200, &first));
    let seen =
        commands_before_marker(&relay, running.node_id, &bearer, &mut running.commands).await?;
    assert_eq!(invokes(&seen), 1, "{seen:?}");
    assert_eq!(seen.len(), 1, "{seen:?}");
    // The inner envelope carried a token of its own (never the caller's
    // bearer), the tenant and the context.
    let Some(edge_command::Command::InvokeTool(invoke)) = seen.first() else {
        return Err("no invoke".into());
    };
    let inner = invoke.seal_envelope.clone().ok_or("no envelope")?;
    assert_ne!(format!("Bearer {}", inner.user_security_token), bearer);
    assert_eq!(inner.user_security_token.split('.').count(), 3);
    assert_eq!(inner.tenant_id, "t-a");
    assert_eq!(inner.security_context_name, invoke.security_context_name);

    // Without a key, each call runs.
    let plain = [("authorization", bearer.as_str())];
    let (_, one) = post(&relay, &path, &plain, &echo_body(&["x"])).await?;
    let (_, two) = post(&relay, &path, &plain, &echo_body(&["x"])).await?;
    assert_ne!(one["command_id"], two["command_id"]);
    let seen =
        commands_before_marker(&relay, running.node_id, &bearer, &mut running.commands).await?;
    assert_eq!(invokes(&seen), 2, "{seen:?}");

    // A failing command reports its exit.
    let body = serde_json::json!({"tool_name": "cmd.run", "args": {"command": "exit", "args": ["3"]}, "security_context_name": "zaru-free"});
    let (_, failed) = post(&relay, &path, &plain, &body.to_string()).await?;
    assert_eq!(
        (failed["ok"].clone(), failed["exit_code"].clone()),
        (false.into(), 3.into())
    );
    assert_eq!(failed["error_kind"], "nonzero_exit");
    drop(running);
    assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn invoke_requests_are_validated_and_tenant_scoped() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    let mut running = run_edge(&relay, &edge.state, EdgeOptions::default()).await?;
    let path = format!("/v1/edge/hosts/{}/invoke", running.node_id);
    let other = tenant_bearer(&relay, "t-b").await?;
    let own = tenant_bearer(&relay, "t-a").await?;
    for control in ["invoke", "drain", "shutdown", "push-config"] {
        let path = format!("/v1/edge/hosts/{}/{control}", running.node_id);
        let (status, body) =
            post(&relay, &path, &[("authorization", &other)], &echo_body(&[])).await?;
        assert_eq!(status, 404, "{control}: {body}");
    }
    let (status, _) = post(&relay, &path, &[], &echo_body(&[])).await?;
    assert_eq!(status, 401);
    let auth = [("authorization", own.as_str())];
    let cases = [
        ("{not json", "JSON"),
        (
            r#"{"tool_name": 5, "args": {}, "security_context_name": "x"}"#,
            "tool_name",
        ),
        (
            r#"{"tool_name": "cmd.run", "args": [], "security_context_name": "x"}"#,
            "args",
        ),
        (
            r#"{"tool_name": "cmd.run", "args": {}}"#,
            "security_context_name",
        ),
        (
            r#"{"tool_name": "cmd.run", "args": {}, "security_context_name": "x", "deadline_secs": 0}"#,
            "deadline",
        ),
    ];
    for (body, mention) in cases {
        let (status, answer) = post(&relay, &path, &auth, body).await?;
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(mention), "{body}: {message}");
    }
    let (status, _) = post(
        &relay,
        &path,
        &[("authorization", &own), ("idempotency-key", "nope")],
        &echo_body(&[]),
    )
    .await?;
    assert_eq!(status, 400);
    let huge = format!(
        r#"{{"tool_name":"cmd.run","args":{{"pad":"{}"}},"security_context_name":"x"}}"#,
        "x".repeat(70_000)
    );
    let (status, _) = post(&relay, &path, &auth, &huge).await?;
    assert_eq!(status, 413);
    // Neither the other tenant's invoke, drain, shutdown and push-config nor
    // any refused request sent the edge a command of any kind.
    let seen = commands_before_marker(&relay, running.node_id, &own, &mut running.commands).await?;
    assert!(
        seen.is_empty(),
        "refused requests reached the edge: {seen:?}"
    );

    // An unknown host and a known but disconnected one.
    let (status, _) = post(
        &relay,
        &format!(
            "/v1/edge/hosts/{}/invoke",
            aegis_relay::runtime::OsEntropy.uuid()
        ),
        &auth,
        &echo_body(&[]),
    )
    .await?;
    assert_eq!(status, 404);
    drop(running);
    let owner = Arc::clone(relay.owner());
    let node_id = edge.state.node_id;
    common::eventually(Duration::from_secs(5), "disconnect", || {
        let owner = Arc::clone(&owner);
        async move { (!owner.is_connected(node_id)).then_some(()) }
    })
    .await?;
    let (status, body) = post(&relay, &path, &auth, &echo_body(&[])).await?;
    assert_eq!(status, 409, "{body}");
    Ok(())
}

#[tokio::test]
async fn progress_arrives_in_order_then_the_result() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    let mut stream = open_stream(&relay, &edge.state).await?;
    let command_id = aegis_relay::runtime::OsEntropy.uuid();
    let mut handle = relay
        .owner()
        .invoke(
            Some("t-a"),
            edge.state.node_id,
            command_id,
            &call("echo", &[], Duration::from_secs(10)),
        )
        .await?;
    let Ok(command) = stream.next().await? else {
        return Err("no command".into());
    };
    assert!(matches!(
        command.command,
        Some(edge_command::Command::InvokeTool(_))
    ));
    let id = command_id.to_string();
    for (seq, stderr, line) in [
        (0, false, "a\n"),
        (0, true, "e\n"),
        (1, false, "b\n"),
        (2, false, "c\n"),
    ] {
        stream
            .send(
                stream
                    .signer
                    .progress(now_ms(), &id, seq, stderr, line.as_bytes().to_vec()),
            )
            .await?;
    }
    let result = EdgeResult {
        ok: true,
        stdout: b"a\nb\nc\n".to_vec(),
        stderr: b"e\n".to_vec(),
        ..EdgeResult::default()
    };
    stream
        .send(stream.signer.result(now_ms(), &id, result))
        .await?;
    let mut seen = Vec::new();
    while let Some(event) = handle.next().await {
        match event {
            CallEvent::Progress(p) => seen.push((
                p.sequence,
                p.stderr,
                String::from_utf8_lossy(&p.chunk).into_owned(),
            )),
            CallEvent::Done(outcome) => {
                assert!(outcome.result.ok);
                assert_eq!(outcome.result.stdout, b"a\nb\nc\n");
            }
        }
    }
    let expected: Vec<(u32, bool, String)> = [
        (0, false, "a\n"),
        (0, true, "e\n"),
        (1, false, "b\n"),
        (2, false, "c\n"),
    ]
    .into_iter()
    .map(|(s, e, l)| (s, e, l.to_owned()))
    .collect();
    assert_eq!(seen, expected);
    Ok(())
}

#[tokio::test]
async fn cancel_timeout_and_a_lost_stream_each_end_the_call() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    let node = edge.state.node_id;
    let owner = Arc::clone(relay.owner());

    // Timeout: the edge never answers; the call ends `timeout` and a Cancel reaches the edge.
    let mut stream = open_stream(&relay, &edge.state).await?;
    let started = tokio::time::Instant::now();
    let id = aegis_relay::runtime::OsEntropy.uuid();
    let handle = owner
        .invoke(
            None,
            node,
            id,
            &call("sleep", &["30"], Duration::from_millis(500)),
        )
        .await?;
    let outcome = handle.outcome().await;
    // The kind says the deadline ended it; the lower bound (which load
    // cannot break) says it did not end early.
    assert_eq!(outcome.result.error_kind, "timeout", "{outcome:?}");
    assert!(started.elapsed() >= Duration::from_millis(500));
    let _invoke = stream.next().await?.map_err(|s| s.to_string())?;
    let cancel = stream.next().await?.map_err(|s| s.to_string())?;
    assert!(
        matches!(cancel.command, Some(edge_command::Command::Cancel(c)) if c.command_id == id.to_string())
    );

    // Cancel by the caller.
    let id = aegis_relay::runtime::OsEntropy.uuid();
    let handle = owner
        .invoke(
            None,
            node,
            id,
            &call("sleep", &["30"], Duration::from_secs(30)),
        )
        .await?;
    let _invoke = stream.next().await?.map_err(|s| s.to_string())?;
    let outcome = handle.cancel("stopped by test").await;
    assert_eq!(outcome.result.error_kind, "cancelled");
    let cancel = stream.next().await?.map_err(|s| s.to_string())?;
    assert!(
        matches!(cancel.command, Some(edge_command::Command::Cancel(c)) if c.command_id == id.to_string())
    );

    // The stream is lost with a command in flight: `edge_disconnected`, and a
    // retry of that command id gets the same answer without reaching an edge.
    let id = aegis_relay::runtime::OsEntropy.uuid();
    let handle = owner
        .invoke(
            None,
            node,
            id,
            &call("sleep", &["30"], Duration::from_secs(30)),
        )
        .await?;
    let _invoke = stream.next().await?.map_err(|s| s.to_string())?;
    drop(stream);
    let outcome = handle.outcome().await;
    assert_eq!(outcome.result.error_kind, "edge_disconnected");
    let mut again = open_stream(&relay, &edge.state).await?;
    let retry = owner
        .invoke(
            None,
            node,
            id,
            &call("sleep", &["30"], Duration::from_secs(30)),
        )
        .await?;
    assert_eq!(retry.outcome().await.result.error_kind, "edge_disconnected");
    again.send(again.signer.heartbeat(now_ms())).await?;
    // A barrier: commands reach a stream in order, so the next one the edge
    // sees is this marker unless the retry reached it first.
    let marker = aegis_relay::runtime::OsEntropy.uuid();
    let _marker_call = owner
        .invoke(
            None,
            node,
            marker,
            &call("echo", &[], Duration::from_secs(30)),
        )
        .await?;
    let next = again.next().await?.map_err(|s| s.to_string())?;
    match next.command {
        Some(edge_command::Command::InvokeTool(invoke)) => assert_eq!(
            invoke.command_id,
            marker.to_string(),
            "a retried lost command reached the edge"
        ),
        other => return Err(format!("expected the marker invoke, got {other:?}").into()),
    }
    Ok(())
}

#[tokio::test]
async fn operator_commands_reach_the_edge() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    let mut running = run_edge(
        &relay,
        &edge.state,
        EdgeOptions {
            backoff: vec![Duration::from_millis(100)],
            ..EdgeOptions::default()
        },
    )
    .await?;
    let admin = admin_bearer(&relay).await?;
    let auth = [("authorization", admin.as_str())];
    let base = format!("/v1/edge/hosts/{}", running.node_id);
    let (status, _) = post(
        &relay,
        &format!("{base}/push-config"),
        &auth,
        r#"{"log_level":"debug"}"#,
    )
    .await?;
    assert_eq!(status, 202);
    let (status, _) = post(&relay, &format!("{base}/drain"), &auth, "").await?;
    assert_eq!(status, 202);
    // A drained edge refuses work, as the daemon does.
    let (_, drained) = post(&relay, &format!("{base}/invoke"), &auth, &echo_body(&["x"])).await?;
    assert_eq!(drained["error_kind"], "draining", "{drained}");
    let before = relay
        .owner()
        .registry()
        .get(running.node_id)
        .ok_or("not connected")?;
    let seen =
        commands_before_marker(&relay, running.node_id, &admin, &mut running.commands).await?;
    let (status, _) = post(&relay, &format!("{base}/shutdown"), &auth, "").await?;
    assert_eq!(status, 202);
    let kinds: Vec<&str> = seen
        .iter()
        .map(|c| match c {
            edge_command::Command::PushConfig(_) => "push_config",
            edge_command::Command::Drain(_) => "drain",
            edge_command::Command::Shutdown(_) => "shutdown",
            edge_command::Command::InvokeTool(_) => "invoke",
            edge_command::Command::Cancel(_) => "cancel",
        })
        .collect();
    assert_eq!(kinds, ["push_config", "drain", "invoke"]);
    let shutdown = tokio::time::timeout(Duration::from_secs(10), running.commands.recv())
        .await?
        .ok_or("the edge stopped")?;
    assert!(
        matches!(shutdown.command, Some(edge_command::Command::Shutdown(_))),
        "{shutdown:?}"
    );
    // Shutdown ends the stream; the edge reconnects on a new one.
    let owner = Arc::clone(relay.owner());
    let node_id = running.node_id;
    common::registered_session(&owner, node_id, "a reconnect on a new stream", |entry| {
        entry.key.stream_id != before.key.stream_id
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_same_idempotency_key_on_two_tenants_edges_stays_apart() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let a = enroll_edge(&relay, "t-a").await?;
    let b = enroll_edge(&relay, "t-b").await?;
    let mut edge_a = run_edge(&relay, &a.state, EdgeOptions::default()).await?;
    let mut edge_b = run_edge(&relay, &b.state, EdgeOptions::default()).await?;
    let key = aegis_relay::runtime::OsEntropy.uuid().to_string();
    let (bearer_a, bearer_b) = (
        tenant_bearer(&relay, "t-a").await?,
        tenant_bearer(&relay, "t-b").await?,
    );
    // Different bodies under one key: were the key shared across tenants,
    // one side would get the other's output or its edge no command.
    let headers_a = [
        ("authorization", bearer_a.as_str()),
        ("idempotency-key", key.as_str()),
    ];
    let headers_b = [
        ("authorization", bearer_b.as_str()),
        ("idempotency-key", key.as_str()),
    ];
    let path_a = format!("/v1/edge/hosts/{}/invoke", a.state.node_id);
    let path_b = format!("/v1/edge/hosts/{}/invoke", b.state.node_id);
    let body_a = echo_body(&["from", "tenant-a"]);
    let body_b = echo_body(&["from", "tenant-b"]);
    let call_a = post(&relay, &path_a, &headers_a, &body_a);
    let call_b = post(&relay, &path_b, &headers_b, &body_b);
    let ((status_a, answer_a), (status_b, answer_b)) = tokio::try_join!(call_a, call_b)?;
    assert_eq!((status_a, status_b), (200, 200), "{answer_a} {answer_b}");
    assert_eq!(answer_a["ok"], true, "{answer_a}");
    assert_eq!(answer_b["ok"], true, "{answer_b}");
    assert_eq!(answer_a["stdout"], "from tenant-a\n", "{answer_a}");
    assert_eq!(answer_b["stdout"], "from tenant-b\n", "{answer_b}");
    assert_eq!(answer_a["command_id"], key.as_str());
    assert_eq!(answer_b["command_id"], key.as_str());
    for (edge, bearer, words, tenant) in [
        (&mut edge_a, &bearer_a, "tenant-a", "t-a"),
        (&mut edge_b, &bearer_b, "tenant-b", "t-b"),
    ] {
        let seen = commands_before_marker(&relay, edge.node_id, bearer, &mut edge.commands).await?;
        let [edge_command::Command::InvokeTool(invoke)] = seen.as_slice() else {
            return Err(format!("{tenant}: expected one InvokeTool, got {seen:?}").into());
        };
        assert_eq!(invoke.command_id, key, "{tenant}");
        let args = format!("{:?}", invoke.args);
        assert!(args.contains(words), "{tenant}: {args}");
        let envelope = invoke.seal_envelope.as_ref().ok_or("no envelope")?;
        assert_eq!(envelope.tenant_id, tenant);
    }
    drop((edge_a, edge_b));
    assert_graceful(relay.shutdown().await);
    Ok(())
}

//! The drain's phases in order on one replica: a stream with nothing in
//! flight is sent away at once; one whose command outlives the wait for
//! commands in flight is ended before the drain deadline (its call ends
//! `edge_disconnected`), so the drain needs no abort.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aegis_relay::owner::ToolCall;
use aegis_relay::proto::cluster::edge_command;
use aegis_relay::runtime::OsEntropy;
use common::edges::{enroll_edge, open_stream};
use common::{assert_graceful, start_relay, TestResult};

fn sleep_call(seconds: &str) -> ToolCall {
    let mut args = serde_json::Map::new();
    args.insert("command".into(), "sleep".into());
    args.insert("args".into(), serde_json::json!([seconds]));
    ToolCall {
        tool_name: "cmd.run".into(),
        args,
        security_context_name: "zaru-free".into(),
        user_security_token: Some("a.b.c".into()),
        caller_subject: "test".into(),
        deadline: Duration::from_secs(60),
    }
}

#[tokio::test]
async fn streams_still_busy_when_the_wait_for_commands_ends_are_ended_before_the_deadline(
) -> TestResult {
    let drain = Duration::from_secs(2);
    let relay = start_relay(drain).await?;
    let (busy, idle) = (
        enroll_edge(&relay, "t-a").await?,
        enroll_edge(&relay, "t-a").await?,
    );
    let mut busy_stream = open_stream(&relay, &busy.state).await?;
    let mut idle_stream = open_stream(&relay, &idle.state).await?;
    let owner = Arc::clone(relay.owner());
    // The raw stream never answers: the command stays in flight.
    let call = owner
        .invoke(
            Some("t-a"),
            busy.state.node_id,
            OsEntropy.uuid(),
            &sleep_call("60"),
        )
        .await?;
    let sent = busy_stream
        .next()
        .await?
        .map_err(|status| format!("the busy stream ended: {status:?}"))?;
    assert!(
        matches!(sent.command, Some(edge_command::Command::InvokeTool(_))),
        "{sent:?}"
    );

    let started = tokio::time::Instant::now();
    let shutdown = tokio::spawn(relay.shutdown());
    let idle_end = idle_stream.ended().await?;
    assert_eq!(idle_end.code(), tonic::Code::Unavailable, "{idle_end:?}");
    let sent_away_after = started.elapsed();
    let busy_end = busy_stream.ended().await?;
    let busy_ended_after = started.elapsed();
    assert_eq!(busy_end.code(), tonic::Code::Unavailable, "{busy_end:?}");
    assert!(busy_end.message().contains("shutting down"), "{busy_end:?}");
    assert!(
        sent_away_after < Duration::from_secs(1),
        "the idle stream waited for another's command: {sent_away_after:?}"
    );
    assert!(
        busy_ended_after >= drain.mul_f64(0.8) && busy_ended_after < drain,
        "the busy stream ended after {busy_ended_after:?} of a {drain:?} drain"
    );
    let outcome = call.outcome().await;
    assert_eq!(
        outcome.result.error_kind, "edge_disconnected",
        "{outcome:?}"
    );
    assert_graceful(tokio::time::timeout(Duration::from_secs(10), shutdown).await??);
    Ok(())
}

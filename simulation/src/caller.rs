//! Callers: per tenant, callers (on one host) that invoke tools on the tenant's edges over
//! the relay's REST API with the relay's own tokens. Until forwarding
//! exists a call goes to the replica holding the edge and is retried with
//! the same idempotency key only there, until its deadline. A call with no
//! answer by deadline + 5 s ends as `NoAnswer`.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::edge::short;
use crate::fixture::EdgeFixture;
use crate::http::post_json;
use crate::replica::{self, HTTP_PORT};
use crate::scenario::mix;
use crate::world::{now, Call, Outcome, World};

/// How much later than its deadline a call may end.
pub const ANSWER_GRACE: Duration = Duration::from_secs(5);
/// Pause between attempts of one call.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
const CALLER_STREAM: u64 = 0x6361_6c6c;

/// What the caller hosts are built from.
#[derive(Clone)]
pub struct CallerParts {
    /// Scenario seed.
    pub seed: u64,
    /// Every edge, by index.
    pub edges: Arc<Vec<EdgeFixture>>,
    /// `Bearer ...` per tenant index.
    pub bearers: Arc<Vec<String>>,
    /// Callers per tenant.
    pub per_tenant: usize,
    /// No call starts after this (simulated time), so every call can end
    /// before the run does.
    pub last_start: Duration,
    /// Where calls are recorded.
    pub world: World,
}

/// Adds one host running `per_tenant` callers for every tenant (turmoil's
/// cost grows with hosts times ticks, so callers share a host; each keeps
/// its own connections and random stream).
pub fn add(sim: &mut turmoil::Sim<'_>, parts: &CallerParts) {
    let parts = parts.clone();
    sim.host("callers", move || {
        let parts = parts.clone();
        async move {
            let mut callers = JoinSet::new();
            for tenant in 0..parts.bearers.len() {
                for caller in 0..parts.per_tenant {
                    let stream = (tenant as u64) << 16 | caller as u64;
                    let rng = StdRng::seed_from_u64(mix(parts.seed, CALLER_STREAM, stream));
                    callers.spawn(calls(parts.clone(), tenant, rng));
                }
            }
            while let Some(ended) = callers.join_next().await {
                ended?;
            }
            Ok(())
        }
    });
}

/// What one call asks for.
struct Ask {
    key: Uuid,
    edge: usize,
    replica: usize,
    body: String,
    deadline: Duration,
}

async fn calls(parts: CallerParts, tenant: usize, mut rng: StdRng) {
    let mine: Vec<usize> = (0..parts.edges.len())
        .filter(|&i| parts.edges[i].tenant == tenant)
        .collect();
    if mine.is_empty() {
        return;
    }
    let mut running = JoinSet::new();
    loop {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..3000))).await;
        if now() > parts.last_start {
            break;
        }
        let edge = mine[rng.random_range(0..mine.len())];
        let key = uuid::Builder::from_random_bytes(rng.random()).into_uuid();
        let (body, deadline) = command(&mut rng);
        let node_id = parts.edges[edge].state.node_id;
        let Some(replica) = parts.world.holder(node_id) else {
            parts
                .world
                .note(format!("c{tenant}: e{edge} is connected nowhere; no call"));
            continue;
        };
        let ask = Ask {
            key,
            edge,
            replica,
            body,
            deadline,
        };
        running.spawn(call(parts.clone(), tenant, ask));
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

/// A random command and its deadline.
fn command(rng: &mut StdRng) -> (String, Duration) {
    let deadline_secs: u64 = if rng.random_bool(0.5) { 5 } else { 10 };
    let args = match rng.random_range(0..10) {
        0..=5 => {
            serde_json::json!({"command": "echo", "args": ["hello", rng.random_range(0..1000)]})
        }
        6..=8 => {
            let millis: u64 = rng.random_range(100..4000);
            serde_json::json!({"command": "sleep", "args": [format!("{}", millis as f64 / 1000.0)]})
        }
        _ => serde_json::json!({"command": "exit", "args": ["3"]}),
    };
    let body = serde_json::json!({
        "tool_name": "cmd.run",
        "args": args,
        "security_context_name": "zaru-free",
        "deadline_secs": deadline_secs,
    });
    (body.to_string(), Duration::from_secs(deadline_secs))
}

async fn call(parts: CallerParts, tenant: usize, ask: Ask) {
    let started = now();
    let id = ask.key.to_string();
    let host = replica::name(ask.replica);
    parts.world.note(format!(
        "c{tenant} calls {} on e{} via {host}: {}",
        short(&id),
        ask.edge,
        ask.body
    ));
    parts.world.lock().calls.insert(
        ask.key,
        Call {
            tenant,
            edge: ask.edge,
            replica: ask.replica,
            started,
            deadline: ask.deadline,
            attempts: Vec::new(),
            outcome: None,
        },
    );
    let path = format!(
        "/v1/edge/hosts/{}/invoke",
        parts.edges[ask.edge].state.node_id
    );
    let headers = [
        ("authorization", parts.bearers[tenant].as_str()),
        ("idempotency-key", id.as_str()),
    ];
    let give_up = started + ask.deadline;
    let no_answer = give_up + ANSWER_GRACE;
    // Derived from the key, so the choice draws nothing from the caller's
    // stream.
    let retries_unknown = ask.key.as_bytes()[15] & 1 == 1;
    let mut attempt = 0;
    let outcome = loop {
        attempt += 1;
        if let Some(call) = parts.world.lock().calls.get_mut(&ask.key) {
            call.attempts.push(now());
        }
        let wait = no_answer.saturating_sub(now());
        let answer = tokio::time::timeout(
            wait,
            post_json(&host, HTTP_PORT, &path, &headers, ask.body.clone()),
        )
        .await;
        let retry = match answer {
            Err(_) => break Outcome::NoAnswer,
            Ok(Ok((200, body))) => match result(&body) {
                outcome if retries_unknown && outcome.is_unknown() => outcome,
                outcome => break outcome,
            },
            Ok(Ok((status, body))) if matches!(status, 409 | 502 | 503) => {
                Outcome::Status(status, body)
            }
            Ok(Ok((status, body))) => break Outcome::Status(status, body),
            Ok(Err(err)) => Outcome::Unreachable(err.to_string()),
        };
        if now() + RETRY_PAUSE >= give_up {
            break retry;
        }
        let why = if retry.is_unknown() {
            "outcome unknown, "
        } else {
            ""
        };
        parts.world.note(format!(
            "c{tenant} {} attempt {attempt}: {retry:?}; {why}retrying with the same key at {host}",
            short(&id)
        ));
        tokio::time::sleep(RETRY_PAUSE).await;
    };
    let ended = now();
    parts.world.note(format!(
        "c{tenant} {} ends after {attempt} attempt(s): {outcome:?}",
        short(&id)
    ));
    if let Some(call) = parts.world.lock().calls.get_mut(&ask.key) {
        call.outcome = Some((ended, outcome));
    }
}

fn result(body: &str) -> Outcome {
    let value: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    Outcome::Result {
        ok: value["ok"].as_bool().unwrap_or(false),
        error_kind: value["error_kind"].as_str().unwrap_or_default().to_owned(),
    }
}

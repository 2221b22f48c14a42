//! Fleet run records between `run` processes: two replicas clustered over
//! gossip on one store (one SQLite file in a shared data dir, or one
//! PostgreSQL database), edges connected to A. A finished run and a running
//! one started on A are read on B at once (A's name and generation), B's
//! cancel answers 409 naming A, A killed with SIGKILL has its run marked
//! `lost` by B `lost_after` after gossip declares A dead, and B restarted
//! still lists both runs.
//!
//! Prints how long the lost-marking took after the kill and after B's
//! membership dropped A.

mod common;

use std::time::Duration;

use aegis_relay::edge_client::{self, EdgeOptions, EnrollOptions, Minter};
use aegis_relay::runtime::Runtime;
use common::edges::{spawn_edge, RunningEdge};
use common::enroll::BoxError;
use common::fleet_calls::{
    fleet_body, get_json, listed_ids, listed_states, sse_events, start_streaming,
};
use common::replica_processes::{members, terminate, write_configs, Layout, ReplicaProcess};
use common::{eventually, http_request};
use serde_json::{json, Value};

const EDGES: usize = 2;
/// `relay.fleet_runs.lost_after` here (its minimum).
const LOST_AFTER: Duration = Duration::from_secs(1);
/// How often the recorder checks for lost runs: a quarter of `lost_after`.
const LOST_CHECK: Duration = Duration::from_millis(250);
/// Polling and scheduling on a loaded 2-core machine.
const SLACK: Duration = Duration::from_secs(1);
/// SIGKILL to gone from the survivor's members (the README's target is 3 s
/// with the default 300 ms gossip; this test gossips every 100 ms).
const DETECTION_LIMIT: Duration = Duration::from_secs(3);

/// Gossip every 100 ms, run outcomes flushed every 50 ms, `LOST_AFTER`.
fn relay_extra() -> String {
    format!(
        "  gossip_interval: 100ms\n  failure_detector:\n    initial_interval: 100ms\n  \
         fleet_runs:\n    flush_interval: 50ms\n    lost_after: {}ms\n",
        LOST_AFTER.as_millis()
    )
}

/// Enrolls `EDGES` edges of `tenant` through `relay` (tokens minted over
/// REST as `admin`) and runs them against it until dropped.
async fn edges_on(
    relay: &ReplicaProcess,
    admin: &str,
    tenant: &str,
    dir: &std::path::Path,
) -> Result<Vec<RunningEdge>, BoxError> {
    let minter = Minter::new(
        &relay.http(),
        admin.trim_start_matches("Bearer "),
        Duration::from_secs(10),
    )?;
    let mut edges = Vec::new();
    for index in 0..EDGES {
        let token = minter.mint(tenant, &format!("edge-{index}")).await?;
        let enrolled = edge_client::enroll(
            &Runtime::real(),
            &token,
            &dir.join(format!("edge-{index}")),
            &EnrollOptions::default(),
        )
        .await?;
        edges.push(spawn_edge(&relay.grpc(), &enrolled.state, EdgeOptions::default()).await?);
    }
    Ok(edges)
}

/// The ids of the hosts `relay` says are connected.
async fn connected(relay: &ReplicaProcess, bearer: &str) -> Option<Vec<String>> {
    let (status, hosts) = get_json(&format!("{}/v1/edge/hosts", relay.http()), bearer)
        .await
        .ok()?;
    (status == 200).then_some(())?;
    Some(
        hosts
            .as_array()?
            .iter()
            .filter(|host| host["connected"] == true)
            .filter_map(|host| host["id"].as_str().map(str::to_owned))
            .collect(),
    )
}

async fn run_on(relay: &ReplicaProcess, id: &str, bearer: &str) -> Result<Value, BoxError> {
    let (status, run) =
        get_json(&format!("{}/v1/edge/fleet/runs/{id}", relay.http()), bearer).await?;
    if status != 200 {
        return Err(format!("{} answered {status} for run {id}: {run}", relay.name).into());
    }
    Ok(run)
}

async fn runs_on(relay: &ReplicaProcess, bearer: &str) -> Result<Value, BoxError> {
    let (status, runs) = get_json(&format!("{}/v1/edge/fleet/runs", relay.http()), bearer).await?;
    if status != 200 {
        return Err(format!("{} answered {status} for the runs: {runs}", relay.name).into());
    }
    Ok(runs)
}

async fn run_is_lost_with_its_replica(postgres: Option<&str>) -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let replicas = write_configs(
        dir.path(),
        &Layout {
            names: &["relay-a", "relay-b"],
            postgres,
            gossip: true,
            relay_extra: &relay_extra(),
        },
    )?;
    let [a, b] = &replicas[..] else {
        return Err("two replicas".into());
    };
    a.migrate()?;
    let admin = a.bearer(None)?;
    let bearer = a.bearer(Some("t-a"))?;
    let mut a_process = a.start().await?;
    let mut b_process = b.start().await?;
    let both = [a.name.clone(), b.name.clone()].into();
    let a_generation = eventually(Duration::from_secs(30), "B to see A", || async {
        let status = b.status(&admin).await?;
        (members(&status) == both).then_some(())?;
        let a_status = a.status(&admin).await?;
        (members(&a_status) == both).then(|| a_status["generation"].as_u64())?
    })
    .await
    .map_err(|err| b.with_log(&err))?;

    let edges = edges_on(a, &admin, "t-a", dir.path()).await?;
    let node_ids = eventually(Duration::from_secs(20), "A to hold the edges", || async {
        let ids = connected(a, &bearer).await?;
        (ids.len() == EDGES).then_some(ids)
    })
    .await?;

    // A run that ended on A is read, whole, on B as soon as A's stream ends.
    let (status, text) = http_request(
        "POST",
        &format!("{}/v1/edge/fleet/invoke", a.http()),
        &[("authorization", &bearer)],
        &fleet_body("echo", &["hi"]),
    )
    .await?;
    assert_eq!(status, 200, "{text}");
    let events = sse_events(&text);
    let done_id = events
        .iter()
        .find_map(|event| event["Started"]["fleet_command_id"].as_str())
        .ok_or_else(|| format!("no Started: {text}"))?
        .to_owned();
    assert!(
        events.iter().any(|event| event.get("Done").is_some()),
        "{text}"
    );
    let done = run_on(b, &done_id, &bearer).await?;
    assert_eq!(
        (&done["state"], &done["replica"], &done["generation"]),
        (&json!("done"), &json!("relay-a"), &json!(a_generation)),
        "{done}"
    );
    assert_eq!(
        done["summary"],
        json!({"ok": EDGES, "err": 0, "timed_out": 0, "skipped": 0})
    );
    let mut dispatched: Vec<String> = done["nodes"]
        .as_array()
        .ok_or("no nodes")?
        .iter()
        .filter(|node| node["state"] == "completed" && node["ok"] == true)
        .filter_map(|node| node["node_id"].as_str().map(str::to_owned))
        .collect();
    dispatched.sort();
    assert_eq!(dispatched, node_ids, "{done}");

    // A long run: read and listed on B the moment its Started arrives.
    let (id, _stream) = start_streaming(&a.http(), &bearer, fleet_body("sleep", &["30"])).await?;
    let running = run_on(b, &id, &bearer).await?;
    assert_eq!(
        (
            &running["state"],
            &running["replica"],
            &running["generation"]
        ),
        (&json!("running"), &json!("relay-a"), &json!(a_generation)),
        "{running}"
    );
    assert!(running["finished_at"].is_null(), "{running}");
    let runs = runs_on(b, &bearer).await?;
    assert_eq!(listed_ids(&runs), vec![id.clone(), done_id.clone()]);

    // B does not run it: its cancel names A, and the run goes on.
    let (status, text) = http_request(
        "POST",
        &format!("{}/v1/edge/fleet/{id}/cancel", b.http()),
        &[("authorization", &bearer)],
        "",
    )
    .await?;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("relay-a"), "{text}");
    assert_eq!(run_on(a, &id, &bearer).await?["state"], "running");

    // SIGKILL A: B's gossip declares it dead, then B marks the run lost.
    a_process.0.kill()?;
    let killed_at = tokio::time::Instant::now();
    let dead_at = std::cell::Cell::new(None);
    let lost = eventually(
        Duration::from_secs(30),
        "B to mark the run lost",
        || async {
            if dead_at.get().is_none() {
                let status = b.status(&admin).await?;
                if !members(&status).contains("relay-a") {
                    dead_at.set(Some(tokio::time::Instant::now()));
                }
            }
            let run = run_on(b, &id, &bearer).await.ok()?;
            (run["state"] != "running").then_some(run)
        },
    )
    .await
    .map_err(|err| b.with_log(&err))?;
    let lost_at = tokio::time::Instant::now();
    let dead_at = dead_at
        .get()
        .ok_or("the run left `running` before B's members dropped A")?;
    let (detected, marked) = (dead_at - killed_at, lost_at - dead_at);
    eprintln!(
        "relay-a killed: gone from relay-b's members after {detected:?}, its run marked lost \
         {marked:?} later ({:?} after the kill; lost_after {LOST_AFTER:?})",
        lost_at - killed_at
    );
    assert_eq!(lost["state"], "lost", "{lost}");
    assert_eq!(
        (&lost["replica"], &lost["generation"]),
        (&json!("relay-a"), &json!(a_generation)),
        "{lost}"
    );
    assert!(lost["finished_at"].is_string(), "{lost}");
    assert!(detected <= DETECTION_LIMIT, "detection took {detected:?}");
    // Never before lost_after on B's clock, and soon after it.
    assert!(
        marked + Duration::from_millis(200) >= LOST_AFTER,
        "marked lost {marked:?} after A left B's members, before lost_after"
    );
    assert!(
        marked <= LOST_AFTER + LOST_CHECK + SLACK,
        "marked lost {marked:?} after A left B's members"
    );

    // History survives a restart of B (alone now).
    assert_eq!(terminate(&mut b_process, Duration::from_secs(15)).await?, 0);
    let _b_process = b.start().await?;
    let runs = runs_on(b, &bearer).await?;
    assert_eq!(
        listed_states(&runs),
        vec![
            (id.clone(), "lost".to_owned()),
            (done_id.clone(), "done".to_owned())
        ]
    );
    assert_eq!(
        run_on(b, &done_id, &bearer).await?["summary"],
        done["summary"]
    );
    drop(edges);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_runs_on_one_sqlite_file_are_read_on_b_and_lost_with_a() -> Result<(), BoxError> {
    run_is_lost_with_its_replica(None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_runs_on_one_postgres_database_are_read_on_b_and_lost_with_a() -> Result<(), BoxError>
{
    let Some(url) = common::postgres::fresh_database("fleet_runs_processes").await? else {
        return Ok(());
    };
    run_is_lost_with_its_replica(Some(&url)).await?;
    common::postgres::drop_database(&url).await
}

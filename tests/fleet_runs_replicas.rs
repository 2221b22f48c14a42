//! Fleet run records shared by replicas: two in-process replicas gossiping
//! over 127.0.0.1 on one SQLite store. A run started on A is listed and read
//! on B as soon as its `Started` event arrives; B refuses to cancel it (409
//! naming A); once A is gone (dropped, as a crash ends it, so nothing more is
//! written) B marks the run `lost`; the history survives a restart.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aegis_relay::auth::{CallerAuth, LocalCallerAuth};
use aegis_relay::edge_client::EdgeOptions;
use aegis_relay::membership::GossipSettings;
use aegis_relay::store::{SqliteStore, Store};
use common::edges::{enroll_edge, run_edge, tenant_bearer};
use common::enroll::BoxError;
use common::fleet_calls::{fleet_body, get_json, listed_ids, listed_states, start_streaming};
use common::{eventually, http_request, TestRelay};
use serde_json::{json, Value};

const SECRET: &str = "fleet-runs-replicas-test-secret-0123456789";

fn gossip(seeds: Vec<String>) -> Result<GossipSettings, BoxError> {
    common::replicas::loopback_gossip("fleet-runs-test", SECRET, seeds)
}

/// A replica named `name` on `store`, gossiping with `seeds` when clustered,
/// accepting the callers `callers` accepts.
async fn replica(
    store: &Arc<dyn Store>,
    name: &str,
    seeds: Option<Vec<String>>,
    callers: Option<Arc<dyn CallerAuth>>,
) -> Result<TestRelay, BoxError> {
    let gossip = seeds.map(gossip).transpose()?;
    let relay = common::start_relay_authenticating(Arc::clone(store), callers, |s| {
        s.name = name.to_owned();
        s.gossip = gossip;
        s.fleet_runs.lost_after = Duration::from_millis(500);
        s.fleet_runs.flush_interval = Duration::from_millis(50);
    })
    .await
    .map_err(|err| err.to_string())?;
    Ok(relay)
}

async fn get(relay: &TestRelay, path: &str, bearer: &str) -> Result<(u16, Value), BoxError> {
    get_json(&format!("http://{}{path}", relay.http_addr()), bearer).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_started_on_a_is_read_on_b_and_lost_with_a() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("relay.db");
    let sqlite = SqliteStore::open(&path).await?;
    sqlite.migrate().await?;
    let store: Arc<dyn Store> = Arc::new(sqlite);
    let a = replica(&store, "relay-a", Some(Vec::new()), None).await?;
    let seed = a.membership().gossip_addr().ok_or("A gossips")?.to_string();
    // B accepts A's caller tokens: one bearer for both.
    let callers: Arc<dyn CallerAuth> = Arc::new(LocalCallerAuth::new(Arc::clone(a.tokens())));
    let b = replica(
        &store,
        "relay-b",
        Some(vec![seed]),
        Some(Arc::clone(&callers)),
    )
    .await?;
    let a_generation = a.membership().generation();
    eventually(Duration::from_secs(15), "B to see A", || {
        let view = b.membership().view();
        async move { view.snapshot.get("relay-a", a_generation).map(|_| ()) }
    })
    .await?;
    let bearer = tenant_bearer(&a, "t-a").await?;
    let mut edges = Vec::new();
    for _ in 0..2 {
        let enrolled = enroll_edge(&a, "t-a").await?;
        edges.push((
            run_edge(&a, &enrolled.state, EdgeOptions::default()).await?,
            enrolled,
        ));
    }

    // A run that ends on A is read, whole, on B.
    let url = format!("http://{}/v1/edge/fleet/invoke", a.http_addr());
    let (status, text) = http_request(
        "POST",
        &url,
        &[("authorization", &bearer)],
        &fleet_body("echo", &["hi"]),
    )
    .await
    .map_err(|err| err.to_string())?;
    assert_eq!(status, 200, "{text}");
    let (_, runs) = get(&b, "/v1/edge/fleet/runs", &bearer).await?;
    let done_id = runs["runs"][0]["fleet_command_id"]
        .as_str()
        .ok_or("no run on B")?
        .to_owned();
    let (status, done) = get(&b, &format!("/v1/edge/fleet/runs/{done_id}"), &bearer).await?;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (&done["state"], &done["replica"], &done["generation"]),
        (&json!("done"), &json!("relay-a"), &json!(a_generation)),
        "{done}"
    );
    assert_eq!(
        done["summary"],
        json!({"ok": 2, "err": 0, "timed_out": 0, "skipped": 0})
    );
    assert_eq!(done["target"], json!("All"));
    assert_eq!(done["policy"]["mode"], "parallel");
    let nodes = done["nodes"].as_array().ok_or("no nodes")?;
    assert!(
        nodes.len() == 2
            && nodes
                .iter()
                .all(|n| n["state"] == "completed" && n["ok"] == true),
        "{done}"
    );

    // A long run: on B the moment its Started arrives.
    let (id, _stream) = start_streaming(
        &format!("http://{}", a.http_addr()),
        &bearer,
        fleet_body("sleep", &["10"]),
    )
    .await?;
    let (status, running) = get(&b, &format!("/v1/edge/fleet/runs/{id}"), &bearer).await?;
    assert_eq!(status, 200, "{running}");
    assert_eq!(
        (&running["state"], &running["replica"]),
        (&json!("running"), &json!("relay-a"))
    );
    let (_, runs) = get(&b, "/v1/edge/fleet/runs", &bearer).await?;
    assert_eq!(listed_ids(&runs), vec![id.clone(), done_id.clone()]);

    // B does not run it: its cancel names A.
    let cancel = format!("http://{}/v1/edge/fleet/{id}/cancel", b.http_addr());
    let (status, text) = http_request("POST", &cancel, &[("authorization", &bearer)], "")
        .await
        .map_err(|err| err.to_string())?;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("relay-a"), "{text}");

    // A crashes: once its generation leaves B's view, B marks the run lost.
    drop(a);
    let lost = eventually(Duration::from_secs(30), "B to mark the run lost", || {
        let (b, bearer, id) = (&b, &bearer, &id);
        async move {
            let (_, run) = get(b, &format!("/v1/edge/fleet/runs/{id}"), bearer)
                .await
                .ok()?;
            (run["state"] == "lost").then_some(run)
        }
    })
    .await?;
    assert!(lost["finished_at"].is_string(), "{lost}");
    assert_eq!(lost["generation"], json!(a_generation));

    // History survives a restart of B.
    common::assert_graceful(b.shutdown().await);
    let b = replica(&store, "relay-b", None, Some(callers)).await?;
    let (_, runs) = get(&b, "/v1/edge/fleet/runs", &bearer).await?;
    assert_eq!(
        listed_states(&runs),
        vec![
            (id.clone(), "lost".to_owned()),
            (done_id.clone(), "done".to_owned())
        ]
    );
    drop(edges);
    common::assert_graceful(b.shutdown().await);
    Ok(())
}

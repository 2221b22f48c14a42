//! The status API on three in-process replicas gossiping over 127.0.0.1
//! (ephemeral UDP ports): they converge to the same members and ring
//! epoch, agree on every tenant's owner, locate an edge, and refuse
//! callers who are not operators.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aegis_relay::edge_client::EdgeOptions;
use aegis_relay::membership::GossipSettings;
use aegis_relay::store::SqliteStore;
use common::edges::{enroll_edge, run_edge, tenant_bearer};
use common::enroll::{admin_bearer, BoxError};
use common::rest::Rest;
use common::{eventually, TestRelay};
use serde_json::Value;

const SECRET: &str = "cluster-status-test-secret-0123456789abcdef";
const NAMES: [&str; 3] = ["relay-a", "relay-b", "relay-c"];

fn gossip(seeds: Vec<String>) -> Result<GossipSettings, BoxError> {
    common::replicas::loopback_gossip("status-test", SECRET, seeds)
}

async fn start_cluster() -> Result<(Vec<TestRelay>, tempfile::TempDir), BoxError> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("relay.db")).await?;
    store.migrate().await?;
    let store: Arc<dyn aegis_relay::store::Store> = Arc::new(store);
    let mut relays: Vec<TestRelay> = Vec::new();
    let mut seeds = Vec::new();
    for name in NAMES {
        let settings = gossip(seeds.clone())?;
        let relay = common::start_relay_with(Arc::clone(&store), |s| {
            s.name = name.to_owned();
            s.gossip = Some(settings);
        })
        .await?;
        let addr = relay
            .membership()
            .gossip_addr()
            .ok_or("a clustered replica has a gossip address")?;
        // Two seeds at most, as an operator would configure.
        if seeds.len() < 2 {
            seeds.push(addr.to_string());
        }
        relays.push(relay);
    }
    Ok((relays, dir))
}

async fn status(client: &Rest) -> Result<Value, BoxError> {
    let answer = client.get("/v1/relay/status").await?;
    if answer.status != 200 {
        return Err(format!("status answered {}: {}", answer.status, answer.text).into());
    }
    Ok(answer.json)
}

fn member_names(status: &Value) -> BTreeSet<String> {
    status["members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .filter_map(|m| m["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn three_replicas_agree_on_members_epoch_and_owners() -> Result<(), BoxError> {
    let (relays, _dir) = start_cluster().await?;
    let mut clients = Vec::new();
    for relay in &relays {
        clients.push(Rest::new(relay, Some(&admin_bearer(relay).await?)));
    }
    let all: BTreeSet<String> = NAMES.iter().map(|n| (*n).to_owned()).collect();
    let started = tokio::time::Instant::now();
    let statuses = eventually(Duration::from_secs(15), "three converged views", || {
        let clients = clients.clone();
        let all = all.clone();
        async move {
            let mut statuses = Vec::new();
            for client in &clients {
                let status = status(client).await.ok()?;
                let serving = status["ring"]["shares"].as_object()?.len();
                (member_names(&status) == all && serving == 3).then_some(())?;
                statuses.push(status);
            }
            Some(statuses)
        }
    })
    .await?;
    eprintln!(
        "three in-process replicas converged in {:?}",
        started.elapsed()
    );

    let epoch = statuses[0]["ring"]["epoch"].clone();
    assert_eq!(epoch.as_str().map(str::len), Some(16), "{epoch}");
    for (status, name) in statuses.iter().zip(NAMES) {
        assert_eq!(status["replica"], name);
        assert_eq!(status["ring"]["epoch"], epoch);
        assert!(status["generation"].as_u64().is_some_and(|g| g > 0));
        assert_eq!(status["edges_as_ingress"], 0);
        assert_eq!(status["sessions_as_owner"], 0);
        for member in status["members"].as_array().ok_or("members")? {
            assert_eq!(member["phase"], "serving", "{member}");
            assert!(member["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("http://")));
            assert!(member["version"].is_string());
            assert!(member["last_heard_ms_ago"].as_u64().is_some());
        }
        let shares: f64 = status["ring"]["shares"]
            .as_object()
            .ok_or("shares")?
            .values()
            .filter_map(Value::as_f64)
            .sum();
        assert!((shares - 1.0).abs() < 1e-6, "{shares}");
    }

    // Every replica names the same owner for every tenant.
    for tenant in ["acme", "globex", "initech", "umbrella", "t-0001", "t-0002"] {
        let mut owners = BTreeSet::new();
        for client in &clients {
            let answer = client
                .get(&format!("/v1/relay/where/tenant/{tenant}"))
                .await?;
            assert_eq!(answer.status, 200, "{}", answer.text);
            assert_eq!(answer.json["tenant_id"], tenant);
            assert_eq!(answer.json["epoch"], epoch);
            owners.insert(answer.json["owner"].as_str().unwrap_or_default().to_owned());
        }
        assert_eq!(owners.len(), 1, "{tenant}: {owners:?}");
        assert!(owners.iter().all(|owner| all.contains(owner)), "{owners:?}");
    }

    // An edge connected to relay-a: located from every replica.
    let enrolled = enroll_edge(&relays[0], "acme").await?;
    let edge = run_edge(&relays[0], &enrolled.state, EdgeOptions::default()).await?;
    let owner = clients[1].get("/v1/relay/where/tenant/acme").await?.json["owner"].clone();
    for (index, client) in clients.iter().enumerate() {
        let answer = client
            .get(&format!("/v1/relay/where/edge/{}", edge.node_id))
            .await?;
        assert_eq!(answer.status, 200, "{}", answer.text);
        assert_eq!(answer.json["tenant_id"], "acme");
        assert_eq!(answer.json["owner"], owner);
        if index == 0 {
            assert_eq!(answer.json["ingress"], "relay-a");
            assert!(answer.json["connected_since"].is_string());
        } else {
            assert!(answer.json["ingress"].is_null(), "{}", answer.text);
        }
    }
    let held = status(&clients[0]).await?;
    assert_eq!(held["edges_as_ingress"], 1);
    assert_eq!(held["sessions_as_owner"], 1);
    let unknown = clients[2]
        .get("/v1/relay/where/edge/00000000-0000-4000-8000-000000000001")
        .await?;
    assert_eq!(unknown.status, 404, "{}", unknown.text);
    assert!(
        unknown.message().contains("no enrolled edge"),
        "{}",
        unknown.text
    );
    drop(edge);

    // Gossip metrics.
    let metrics = relays[1].metrics().render();
    assert!(
        common::counter_value(&metrics, "aegis_relay_members{phase=\"serving\"}") == 3.0,
        "{metrics}"
    );
    assert!(common::counter_value(&metrics, "aegis_relay_gossip_sent_bytes_total") > 0.0);
    assert!(common::counter_value(&metrics, "aegis_relay_gossip_received_bytes_total") > 0.0);

    for relay in relays {
        common::assert_graceful(relay.shutdown().await);
    }
    Ok(())
}

#[tokio::test]
async fn the_status_api_is_for_operators_only() -> Result<(), BoxError> {
    let relay = common::start_relay(Duration::from_secs(5)).await?;
    let tenant = Rest::new(&relay, Some(&tenant_bearer(&relay, "acme").await?));
    for path in [
        "/v1/relay/status",
        "/v1/relay/where/tenant/acme",
        "/v1/relay/where/edge/00000000-0000-4000-8000-000000000001",
    ] {
        let answer = tenant.get(path).await?;
        assert_eq!(answer.status, 403, "{path}: {}", answer.text);
        assert!(answer.message().contains("aegis:admin"), "{}", answer.text);
        let anonymous = Rest::new(&relay, None).get(path).await?;
        assert_eq!(anonymous.status, 401, "{path}: {}", anonymous.text);
    }
    // Alone, a replica is its own cluster and serves every tenant.
    let admin = Rest::new(&relay, Some(&admin_bearer(&relay).await?));
    let status = status(&admin).await?;
    assert_eq!(member_names(&status).len(), 1);
    assert_eq!(status["phase"], "serving");
    let owner = admin.get("/v1/relay/where/tenant/anything").await?;
    assert_eq!(owner.json["owner"], "relay-test");
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

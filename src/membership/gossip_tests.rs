//! Three memberships gossiping over real loopback UDP: they converge, the
//! younger of two namesakes stays joining, draining leaves the serving set,
//! a stopped member is declared dead.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::membership::{ClusterSecrets, FailureDetectorSettings, SecretError};
use crate::runtime::{Clock, Runtime};

const SECRET: &str = "test-secret-0123456789abcdef0123456789";

/// A clock whose every reading is 1 s after the previous one, so each start
/// gets a larger generation.
struct Steps(AtomicU64);

impl Clock for Steps {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + self.0.fetch_add(1, Ordering::Relaxed))
    }
}

fn runtime(clock: &Arc<Steps>) -> Runtime {
    Runtime {
        clock: Arc::clone(clock) as Arc<dyn Clock>,
        ..Runtime::real()
    }
}

fn settings(name: &str, seeds: Vec<String>) -> Result<MembershipSettings, SecretError> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    Ok(MembershipSettings {
        name: name.to_owned(),
        peer_url: format!("http://{name}:50057"),
        gossip: Some(GossipSettings {
            listen: loopback,
            advertise: loopback,
            seeds,
            cluster_id: "test".to_owned(),
            secrets: ClusterSecrets::parse(SECRET)?,
            interval: Duration::from_millis(100),
            failure_detector: FailureDetectorSettings {
                initial_interval: Duration::from_millis(100),
                ..FailureDetectorSettings::default()
            },
        }),
    })
}

async fn wait_for(
    membership: &Membership,
    what: &str,
    check: impl Fn(&View) -> bool,
) -> Result<(), String> {
    let mut views = membership.subscribe();
    tokio::time::timeout(Duration::from_secs(20), views.wait_for(|view| check(view)))
        .await
        .map_err(|_| {
            format!(
                "{}: timed out waiting for {what}: {:?}",
                membership.name(),
                membership.view()
            )
        })?
        .map_err(|err| err.to_string())?;
    Ok(())
}

fn serving(view: &View) -> Vec<String> {
    view.snapshot.serving_names().into_iter().collect()
}

#[tokio::test]
async fn replicas_converge_and_namesakes_and_drains_are_handled(
) -> Result<(), Box<dyn std::error::Error>> {
    let clock = Arc::new(Steps(AtomicU64::new(0)));
    let metrics = crate::telemetry::Metrics::new("test");
    let (first, first_task) = Membership::start(
        settings("relay-0", Vec::new())?,
        &runtime(&clock),
        metrics.clone(),
    )
    .await?;
    let seed = first.gossip_addr().ok_or("no gossip address")?.to_string();
    let mut started = vec![(first, first_task)];
    for name in ["relay-1", "relay-2"] {
        started.push(
            Membership::start(
                settings(name, vec![seed.clone()])?,
                &runtime(&clock),
                crate::telemetry::Metrics::new(name),
            )
            .await?,
        );
    }
    for (membership, _) in &started {
        membership.set_phase(Phase::Serving).await;
    }
    let all = vec!["relay-0", "relay-1", "relay-2"];
    for (membership, _) in &started {
        wait_for(membership, "three serving members", |view| {
            serving(view) == all
        })
        .await?;
    }
    let view = started[1].0.view();
    let peer = view
        .snapshot
        .members()
        .iter()
        .find(|m| m.name == "relay-0")
        .and_then(|m| m.peer.clone());
    assert_eq!(peer.as_deref(), Some("http://relay-0:50057"));
    assert!(metrics
        .render()
        .contains("aegis_relay_gossip_sent_bytes_total"));

    // A second relay-1, started later, must not serve while the first lives.
    let (twin, twin_task) = Membership::start(
        settings("relay-1", vec![seed.clone()])?,
        &runtime(&clock),
        crate::telemetry::Metrics::new("twin"),
    )
    .await?;
    twin.set_phase(Phase::Serving).await;
    wait_for(&twin, "the older relay-1", |view| {
        view.snapshot
            .members()
            .iter()
            .filter(|m| m.name == "relay-1")
            .count()
            == 2
            && view.phase == Phase::Joining
            && view.phase_reason.is_some()
    })
    .await?;
    assert_eq!(started[1].0.view().phase, Phase::Serving);

    // relay-2 drains: every other member drops it from the serving set.
    started[2].0.set_phase(Phase::Draining).await;
    wait_for(&started[0].0, "relay-2 draining", |view| {
        serving(view) == vec!["relay-0", "relay-1"]
            && view
                .snapshot
                .members()
                .iter()
                .any(|m| m.name == "relay-2" && m.phase == Phase::Draining)
    })
    .await?;

    // The first relay-1 stops: the twin takes over and serves.
    let (gone, gone_task) = started.remove(1);
    gone_task.stop().await;
    drop(gone);
    wait_for(&twin, "taking over after the older namesake left", |view| {
        view.phase == Phase::Serving
            && view.phase_reason.is_none()
            && view
                .snapshot
                .members()
                .iter()
                .filter(|m| m.name == "relay-1")
                .count()
                == 1
    })
    .await?;
    wait_for(&started[0].0, "the twin serving", |view| {
        serving(view) == vec!["relay-0", "relay-1"]
    })
    .await?;
    twin_task.stop().await;
    for (_, task) in started {
        task.stop().await;
    }
    Ok(())
}

#[tokio::test]
async fn an_unclustered_replica_sees_only_itself() -> Result<(), Box<dyn std::error::Error>> {
    let clock = Arc::new(Steps(AtomicU64::new(0)));
    let settings = MembershipSettings {
        name: "solo".to_owned(),
        peer_url: "http://127.0.0.1:50057".to_owned(),
        gossip: None,
    };
    let (membership, task) = Membership::start(
        settings,
        &runtime(&clock),
        crate::telemetry::Metrics::new("solo"),
    )
    .await?;
    assert!(membership.gossip_addr().is_none());
    assert_eq!(membership.view().phase, Phase::Joining);
    membership.set_phase(Phase::Serving).await;
    let view = membership.view();
    assert_eq!(serving(&view), vec!["solo"]);
    assert_eq!(view.snapshot.members().len(), 1);
    assert_eq!(
        view.snapshot.members()[0].generation,
        membership.generation()
    );
    task.stop().await;
    Ok(())
}

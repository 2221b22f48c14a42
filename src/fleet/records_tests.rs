//! The recorder on `MemoryStore`: many events are one flush, a failed flush
//! is kept, and a lone replica marks only its own earlier starts' runs lost.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::RunRecorder;
use crate::fleet::RunRetention;
use crate::membership::{Membership, MembershipSettings};
use crate::runtime::{Clock, Runtime};
use crate::store::test_outcome as outcome;
use crate::store::{
    FleetRunCounts, FleetRunEnd, FleetRunStart, FleetRunState, MemoryStore, Store, StoreError,
};
use crate::telemetry::Metrics;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A wall clock the test moves.
struct ManualClock(Mutex<SystemTime>);

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ManualClock {
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }
}

struct Fixture {
    store: Arc<MemoryStore>,
    clock: Arc<ManualClock>,
    recorder: Arc<RunRecorder>,
    _gossip: crate::membership::GossipTask,
}

async fn fixture(settings: RunRetention) -> Result<Fixture, Box<dyn std::error::Error>> {
    let clock = Arc::new(ManualClock(Mutex::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    )));
    let runtime = Runtime {
        clock: Arc::clone(&clock) as Arc<dyn Clock>,
        ..Runtime::real()
    };
    let (membership, gossip) = Membership::start(
        MembershipSettings {
            name: "relay-t".to_owned(),
            peer_url: "http://127.0.0.1:1".to_owned(),
            gossip: None,
        },
        &runtime,
        Metrics::new("relay-t"),
    )
    .await?;
    let store = Arc::new(MemoryStore::new());
    let recorder = Arc::new(RunRecorder::new(
        Arc::clone(&store) as Arc<dyn Store>,
        Arc::clone(&clock) as Arc<dyn Clock>,
        membership,
        settings,
    ));
    Ok(Fixture {
        store,
        clock,
        recorder,
        _gossip: gossip,
    })
}

fn run(replica: &str, generation: u64) -> FleetRunStart {
    FleetRunStart {
        id: crate::runtime::test_id(),
        tenant_id: "t-a".to_owned(),
        created_by: "alice".to_owned(),
        tool_name: "echo".to_owned(),
        target: serde_json::json!("All"),
        policy: serde_json::json!({}),
        resolved: Vec::new(),
        replica: replica.to_owned(),
        generation,
        started_at: DateTime::<Utc>::UNIX_EPOCH,
    }
}

#[tokio::test]
async fn a_thousand_targets_and_an_end_are_one_flush() -> TestResult {
    let settings = RunRetention {
        flush_interval: Duration::from_secs(3600),
        ..RunRetention::default()
    };
    let fixture = fixture(settings).await?;
    let (name, generation) = fixture.recorder.replica();
    let started = run(name, generation);
    fixture.recorder.start(&started).await?;
    let stop = CancellationToken::new();
    let writer = tokio::spawn({
        let (recorder, stop) = (Arc::clone(&fixture.recorder), stop.clone());
        async move { recorder.run(stop).await }
    });
    for node in 0..1000 {
        fixture.recorder.target(started.id, outcome(node, false));
    }
    for node in 0..1000 {
        fixture.recorder.target(started.id, outcome(node, true));
    }
    let end = FleetRunEnd {
        state: FleetRunState::Done,
        finished_at: DateTime::<Utc>::UNIX_EPOCH,
        counts: FleetRunCounts {
            ok: 1000,
            ..FleetRunCounts::default()
        },
    };
    assert!(fixture.recorder.end(started.id, end).await);
    // 2,001 events, one committed batch.
    assert_eq!(*fixture.recorder.flushed.borrow(), 1);
    let detail = fixture
        .store
        .get_fleet_run(None, started.id)
        .await?
        .ok_or("run missing")?;
    assert_eq!(detail.run.state, FleetRunState::Done);
    assert_eq!(detail.targets.len(), 1000);
    assert!(detail.targets.iter().all(|target| target.completed));
    stop.cancel();
    writer.await?;
    Ok(())
}

#[tokio::test]
async fn a_failed_flush_is_kept_for_the_next() -> TestResult {
    let fixture = fixture(RunRetention::default()).await?;
    let (name, generation) = fixture.recorder.replica();
    let started = run(name, generation);
    fixture.recorder.start(&started).await?;
    fixture.recorder.target(started.id, outcome(1, true));
    fixture.store.set_available(false);
    fixture.recorder.flush().await;
    fixture.recorder.target(started.id, outcome(2, false));
    fixture.store.set_available(true);
    assert!(matches!(
        fixture.store.get_fleet_run(None, started.id).await?,
        Some(detail) if detail.targets.is_empty()
    ));
    fixture.recorder.flush().await;
    let detail = fixture
        .store
        .get_fleet_run(None, started.id)
        .await?
        .ok_or("run missing")?;
    assert_eq!(detail.targets, vec![outcome(1, true), outcome(2, false)]);
    assert_eq!(*fixture.recorder.flushed.borrow(), 2);
    Ok(())
}

#[tokio::test]
async fn alone_a_replica_marks_only_its_own_earlier_starts_lost() -> Result<(), StoreError> {
    let settings = RunRetention {
        lost_after: Duration::from_secs(10),
        ..RunRetention::default()
    };
    let fixture = fixture(settings)
        .await
        .map_err(|err| StoreError::Database(err.to_string()))?;
    let (name, generation) = fixture.recorder.replica();
    let earlier = run(name, generation - 1);
    let current = run(name, generation);
    let other = run("relay-other", 5);
    for started in [&earlier, &current, &other] {
        fixture.recorder.start(started).await?;
    }
    let state = |id| {
        let store = Arc::clone(&fixture.store);
        async move {
            let detail = store.get_fleet_run(None, id).await?;
            Ok::<_, StoreError>(detail.map(|detail| detail.run.state))
        }
    };
    let mut suspects = std::collections::HashMap::new();
    fixture.recorder.check_lost(&mut suspects).await?;
    fixture.clock.advance(Duration::from_secs(9));
    fixture.recorder.check_lost(&mut suspects).await?;
    assert_eq!(state(earlier.id).await?, Some(FleetRunState::Running));
    fixture.clock.advance(Duration::from_secs(1));
    fixture.recorder.check_lost(&mut suspects).await?;
    assert_eq!(state(earlier.id).await?, Some(FleetRunState::Lost));
    assert_eq!(state(current.id).await?, Some(FleetRunState::Running));
    assert_eq!(state(other.id).await?, Some(FleetRunState::Running));
    assert!(suspects.is_empty());
    Ok(())
}

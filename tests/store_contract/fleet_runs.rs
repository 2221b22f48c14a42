//! The fleet-run part of the store contract: a run's start, batched target
//! outcomes and end, listing and scoping, the lost mark, retention.

use std::time::Duration;

use aegis_relay::store::{
    FleetRunCounts, FleetRunEnd, FleetRunFlush, FleetRunStart, FleetRunState, FleetRunsPurge,
    FleetTargetOutcome, RunningFleetRun, Store, StoreError,
};
use uuid::Uuid;

use super::{at, TestResult};

fn start(tenant: &str, started: i64, replica: &str, generation: u64) -> FleetRunStart {
    FleetRunStart {
        id: aegis_relay::runtime::OsEntropy.uuid(),
        tenant_id: tenant.into(),
        created_by: "alice".into(),
        tool_name: "echo".into(),
        target: serde_json::json!({"Group": "web"}),
        policy: serde_json::json!({"mode": "parallel", "deadline_secs": 60}),
        resolved: vec![Uuid::from_u128(1), Uuid::from_u128(2)],
        replica: replica.into(),
        generation,
        started_at: at(started),
    }
}

fn target(node: u128, completed: bool, ok: bool) -> FleetTargetOutcome {
    FleetTargetOutcome {
        node_id: Uuid::from_u128(node),
        completed,
        ok: completed.then_some(ok),
        exit_code: completed.then_some(if ok { 0 } else { 2 }),
        error_kind: (completed && !ok).then(|| "tool_failed".to_owned()),
        error_message: (completed && !ok).then(|| "exit 2".to_owned()),
    }
}

fn end(state: FleetRunState, finished: i64, ok: u64, err: u64) -> FleetRunEnd {
    FleetRunEnd {
        state,
        finished_at: at(finished),
        counts: FleetRunCounts {
            ok,
            err,
            timed_out: 0,
            skipped: 0,
        },
    }
}

pub async fn fleet_runs_record_batches_and_read_back_in_scope(store: &dyn Store) -> TestResult {
    let first = start("t-a", 10, "relay-0", 1_700_000_000_000);
    let second = start("t-a", 20, "relay-1", 1_700_000_000_001);
    let foreign = start("t-b", 30, "relay-0", 1_700_000_000_000);
    for run in [&first, &second, &foreign] {
        store.start_fleet_run(run).await?;
    }
    let again = store.start_fleet_run(&first).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");

    // One flush: two runs' targets, an unknown run (skipped); then a second
    // flush completes them, ends one and never sets a completed one back.
    store
        .record_fleet_runs(&[
            FleetRunFlush {
                run_id: first.id,
                targets: vec![target(1, false, false), target(2, true, false)],
                ..FleetRunFlush::default()
            },
            FleetRunFlush {
                run_id: Uuid::from_u128(99),
                targets: vec![target(1, true, true)],
                end: Some(end(FleetRunState::Done, 11, 1, 0)),
                ..FleetRunFlush::default()
            },
            FleetRunFlush {
                run_id: second.id,
                targets: vec![target(1, false, false)],
                ..FleetRunFlush::default()
            },
        ])
        .await?;
    let running = store.get_fleet_run(Some("t-a"), first.id).await?;
    let running = running.ok_or("first run missing")?;
    assert_eq!(running.run.state, FleetRunState::Running);
    assert_eq!(running.run.start, first);
    assert_eq!(running.run.finished_at, None);
    assert_eq!(running.run.counts, None);
    assert_eq!(
        running.targets,
        vec![target(1, false, false), target(2, true, false)]
    );
    store
        .record_fleet_runs(&[FleetRunFlush {
            run_id: first.id,
            targets: vec![target(1, true, true), target(2, false, false)],
            cancel_reason: Some("cancelled by the caller".into()),
            end: Some(end(FleetRunState::Cancelled, 15, 1, 1)),
        }])
        .await?;
    let ended = store
        .get_fleet_run(None, first.id)
        .await?
        .ok_or("first run missing")?;
    assert_eq!(ended.run.state, FleetRunState::Cancelled);
    assert_eq!(ended.run.finished_at, Some(at(15)));
    assert_eq!(
        ended.run.counts,
        Some(FleetRunCounts {
            ok: 1,
            err: 1,
            timed_out: 0,
            skipped: 0
        })
    );
    assert_eq!(
        ended.run.cancel_reason.as_deref(),
        Some("cancelled by the caller")
    );
    assert_eq!(
        ended.targets,
        vec![target(1, true, true), target(2, true, false)]
    );
    assert_eq!(store.get_fleet_run(None, Uuid::from_u128(99)).await?, None);

    // Scoped: another tenant sees nothing of t-a's; newest first.
    assert_eq!(store.get_fleet_run(Some("t-b"), first.id).await?, None);
    let listed: Vec<Uuid> = store
        .list_fleet_runs(Some("t-a"), 10)
        .await?
        .iter()
        .map(|run| run.start.id)
        .collect();
    assert_eq!(listed, vec![second.id, first.id]);
    let all = store.list_fleet_runs(None, 10).await?;
    let all: Vec<Uuid> = all.iter().map(|run| run.start.id).collect();
    assert_eq!(all, vec![foreign.id, second.id, first.id]);
    assert_eq!(store.list_fleet_runs(None, 1).await?.len(), 1);
    Ok(())
}

pub async fn fleet_runs_of_a_gone_replica_are_marked_lost(store: &dyn Store) -> TestResult {
    let gone = start("t-a", 10, "relay-0", 100);
    let live = start("t-a", 11, "relay-1", 200);
    let ended = start("t-a", 12, "relay-0", 100);
    for run in [&gone, &live, &ended] {
        store.start_fleet_run(run).await?;
    }
    store
        .record_fleet_runs(&[FleetRunFlush {
            run_id: ended.id,
            end: Some(end(FleetRunState::Done, 13, 2, 0)),
            ..FleetRunFlush::default()
        }])
        .await?;
    let mut expected = vec![
        RunningFleetRun {
            id: gone.id,
            replica: "relay-0".into(),
            generation: 100,
        },
        RunningFleetRun {
            id: live.id,
            replica: "relay-1".into(),
            generation: 200,
        },
    ];
    expected.sort();
    assert_eq!(store.running_fleet_runs().await?, expected);
    // Only a running run is marked; the ended one keeps its end.
    assert_eq!(
        store
            .mark_fleet_runs_lost(&[gone.id, ended.id, Uuid::from_u128(5)], at(20))
            .await?,
        1
    );
    assert_eq!(store.mark_fleet_runs_lost(&[gone.id], at(21)).await?, 0);
    let lost = store
        .get_fleet_run(None, gone.id)
        .await?
        .ok_or("lost run missing")?;
    assert_eq!(
        (lost.run.state, lost.run.finished_at),
        (FleetRunState::Lost, Some(at(20)))
    );
    let kept = store
        .get_fleet_run(None, ended.id)
        .await?
        .ok_or("ended run missing")?;
    assert_eq!(kept.run.state, FleetRunState::Done);
    assert_eq!(
        store.running_fleet_runs().await?,
        vec![RunningFleetRun {
            id: live.id,
            replica: "relay-1".into(),
            generation: 200,
        }]
    );
    // The replica that ran it, back after all, knows better.
    store
        .record_fleet_runs(&[FleetRunFlush {
            run_id: gone.id,
            end: Some(end(FleetRunState::Done, 25, 2, 0)),
            ..FleetRunFlush::default()
        }])
        .await?;
    let back = store
        .get_fleet_run(None, gone.id)
        .await?
        .ok_or("run missing")?;
    assert_eq!(
        (back.run.state, back.run.finished_at),
        (FleetRunState::Done, Some(at(25)))
    );
    Ok(())
}

pub async fn fleet_runs_are_purged_by_count_and_age(store: &dyn Store) -> TestResult {
    // t-a: four ended runs and one running (the oldest); t-b: one old run.
    let mut runs = Vec::new();
    for started in [100, 200, 300, 400] {
        let run = start("t-a", started, "relay-0", 1);
        store.start_fleet_run(&run).await?;
        store
            .record_fleet_runs(&[FleetRunFlush {
                run_id: run.id,
                targets: vec![target(1, true, true)],
                end: Some(end(FleetRunState::Done, started + 10, 1, 0)),
                ..FleetRunFlush::default()
            }])
            .await?;
        runs.push(run);
    }
    let running = start("t-a", 50, "relay-0", 1);
    store.start_fleet_run(&running).await?;
    let old = start("t-b", 0, "relay-0", 1);
    store.start_fleet_run(&old).await?;
    store
        .record_fleet_runs(&[FleetRunFlush {
            run_id: old.id,
            end: Some(end(FleetRunState::Done, 5, 0, 0)),
            ..FleetRunFlush::default()
        }])
        .await?;
    let purge = FleetRunsPurge {
        per_tenant: 2,
        max_age: Duration::from_secs(3600),
    };
    // At 1000 s nothing is too old; t-a keeps its two newest and the
    // running one.
    assert_eq!(store.purge_fleet_runs(&purge, at(1000)).await?, 2);
    let kept: Vec<Uuid> = store
        .list_fleet_runs(Some("t-a"), 10)
        .await?
        .iter()
        .map(|run| run.start.id)
        .collect();
    assert_eq!(kept, vec![runs[3].id, runs[2].id, running.id]);
    assert_eq!(store.get_fleet_run(None, runs[0].id).await?, None);
    // An hour after t-b's run ended (at 5 s) it goes; t-a's ended ones stay
    // until an hour after theirs.
    assert_eq!(store.purge_fleet_runs(&purge, at(3605)).await?, 1);
    assert_eq!(store.list_fleet_runs(Some("t-b"), 10).await?, vec![]);
    assert_eq!(store.purge_fleet_runs(&purge, at(3900)).await?, 0);
    assert_eq!(store.purge_fleet_runs(&purge, at(4410)).await?, 2);
    let left: Vec<Uuid> = store
        .list_fleet_runs(None, 10)
        .await?
        .iter()
        .map(|run| run.start.id)
        .collect();
    assert_eq!(left, vec![running.id]);
    Ok(())
}

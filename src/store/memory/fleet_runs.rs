//! Memory store: fleet run records, listed newest first (ties by id) and
//! purged as the SQL backends do.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{in_scope, Tables};
use crate::store::fleet_runs::coalesce_flushes;
use crate::store::{
    FleetRunDetail, FleetRunFlush, FleetRunRecord, FleetRunStart, FleetRunState, FleetRunsPurge,
    FleetTargetOutcome, RunningFleetRun, StoreError, StoreResult,
};

/// `fleet_runs` and `fleet_run_targets`.
#[derive(Debug, Default)]
pub(super) struct FleetRunTables {
    runs: HashMap<Uuid, StoredRun>,
}

#[derive(Debug)]
struct StoredRun {
    record: FleetRunRecord,
    targets: BTreeMap<Uuid, FleetTargetOutcome>,
}

/// Newest first, ties by id (the SQL `ORDER BY started_at DESC, id`).
fn newest_first(a: &FleetRunRecord, b: &FleetRunRecord) -> std::cmp::Ordering {
    b.start
        .started_at
        .cmp(&a.start.started_at)
        .then(a.start.id.cmp(&b.start.id))
}

impl Tables {
    pub(super) fn start_fleet_run(&mut self, run: &FleetRunStart) -> StoreResult<()> {
        let runs = &mut self.fleet_runs.runs;
        if runs.contains_key(&run.id) {
            return Err(StoreError::Conflict(format!(
                "fleet run {} already exists",
                run.id
            )));
        }
        runs.insert(
            run.id,
            StoredRun {
                record: FleetRunRecord {
                    start: run.clone(),
                    state: FleetRunState::Running,
                    finished_at: None,
                    counts: None,
                    cancel_reason: None,
                },
                targets: BTreeMap::new(),
            },
        );
        Ok(())
    }

    pub(super) fn record_fleet_runs(&mut self, flushes: &[FleetRunFlush]) {
        for flush in coalesce_flushes(flushes) {
            let Some(run) = self.fleet_runs.runs.get_mut(&flush.run_id) else {
                continue;
            };
            for target in flush.targets {
                let done = run
                    .targets
                    .get(&target.node_id)
                    .is_some_and(|old| old.completed);
                if !done {
                    run.targets.insert(target.node_id, target);
                }
            }
            let record = &mut run.record;
            if flush.cancel_reason.is_some() {
                record.cancel_reason = flush.cancel_reason;
            }
            if let Some(end) = flush.end {
                if matches!(record.state, FleetRunState::Running | FleetRunState::Lost) {
                    record.state = end.state;
                    record.finished_at = Some(end.finished_at);
                }
                record.counts = Some(end.counts);
            }
        }
    }

    pub(super) fn list_fleet_runs(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Vec<FleetRunRecord> {
        let mut runs: Vec<FleetRunRecord> = self
            .fleet_runs
            .runs
            .values()
            .filter(|run| in_scope(tenant, &run.record.start.tenant_id))
            .map(|run| run.record.clone())
            .collect();
        runs.sort_by(newest_first);
        runs.truncate(limit);
        runs
    }

    pub(super) fn get_fleet_run(&self, tenant: Option<&str>, id: Uuid) -> Option<FleetRunDetail> {
        let run = self
            .fleet_runs
            .runs
            .get(&id)
            .filter(|run| in_scope(tenant, &run.record.start.tenant_id))?;
        Some(FleetRunDetail {
            run: run.record.clone(),
            targets: run.targets.values().cloned().collect(),
        })
    }

    pub(super) fn running_fleet_runs(&self) -> Vec<RunningFleetRun> {
        let mut running: Vec<RunningFleetRun> = self
            .fleet_runs
            .runs
            .values()
            .filter(|run| run.record.state == FleetRunState::Running)
            .map(|run| RunningFleetRun {
                id: run.record.start.id,
                replica: run.record.start.replica.clone(),
                generation: run.record.start.generation,
            })
            .collect();
        running.sort();
        running
    }

    pub(super) fn mark_fleet_runs_lost(&mut self, ids: &[Uuid], now: DateTime<Utc>) -> u64 {
        let mut marked = 0;
        for id in ids {
            if let Some(run) = self.fleet_runs.runs.get_mut(id) {
                if run.record.state == FleetRunState::Running {
                    run.record.state = FleetRunState::Lost;
                    run.record.finished_at = Some(now);
                    marked += 1;
                }
            }
        }
        marked
    }

    pub(super) fn purge_fleet_runs(&mut self, purge: &FleetRunsPurge, now: DateTime<Utc>) -> u64 {
        let max_age = chrono::TimeDelta::from_std(purge.max_age).unwrap_or(chrono::TimeDelta::MAX);
        let cutoff = now
            .checked_sub_signed(max_age)
            .unwrap_or(DateTime::UNIX_EPOCH);
        let runs = &mut self.fleet_runs.runs;
        let before = runs.len();
        runs.retain(|_, run| {
            run.record.state == FleetRunState::Running
                || run.record.finished_at.is_none_or(|at| at > cutoff)
        });
        let mut by_tenant: BTreeMap<&str, Vec<&FleetRunRecord>> = BTreeMap::new();
        for run in runs.values() {
            by_tenant
                .entry(run.record.start.tenant_id.as_str())
                .or_default()
                .push(&run.record);
        }
        let mut excess = Vec::new();
        for records in by_tenant.values_mut() {
            records.sort_by(|a, b| newest_first(a, b));
            excess.extend(
                records
                    .iter()
                    .skip(purge.per_tenant)
                    .filter(|record| record.state != FleetRunState::Running)
                    .map(|record| record.start.id),
            );
        }
        for id in excess {
            runs.remove(&id);
        }
        u64::try_from(before - runs.len()).unwrap_or(u64::MAX)
    }
}

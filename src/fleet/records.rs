//! Fleet run records in the store, so any replica answers for a run and its
//! history survives restarts. Events never cost a statement each: the
//! running replica buffers target outcomes and writes them every
//! `flush_interval` in one transaction; a run's end is flushed at once, and
//! its `Done` waits for that commit, so a caller reading after `Done` sees
//! it. The same task marks runs `lost` whose replica start has left the
//! cluster (any replica may) and purges old history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::runs::RunRetention;
use crate::membership::Membership;
use crate::runtime::{utc_now, Clock};
use crate::store::{
    coalesce_flushes, FleetRunEnd, FleetRunFlush, FleetRunStart, FleetRunsPurge,
    FleetTargetOutcome, RunningFleetRun, Store, StoreResult,
};

/// Longest a run's `Done` waits for its end to be committed.
const END_WAIT: Duration = Duration::from_secs(5);

/// How often old history is purged.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// What the writer has not written yet.
#[derive(Default)]
struct Pending {
    /// Number of the batch being filled; batch `n` is committed when
    /// `flushed` reaches `n + 1`.
    batch: u64,
    /// Changes in arrival order (coalesced when written).
    flushes: Vec<FleetRunFlush>,
}

/// Writes this replica's run records and watches everyone's for lost runs.
pub struct RunRecorder {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    membership: Membership,
    settings: RunRetention,
    pending: Mutex<Pending>,
    wake: Notify,
    flushed: watch::Sender<u64>,
}

impl std::fmt::Debug for RunRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunRecorder")
            .field("membership", &self.membership)
            .finish_non_exhaustive()
    }
}

impl RunRecorder {
    /// A recorder of this replica (`membership` names its start).
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        membership: Membership,
        settings: RunRetention,
    ) -> Self {
        Self {
            store,
            clock,
            membership,
            settings,
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            flushed: watch::Sender::new(0),
        }
    }

    /// The store the records live in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// This replica start: (name, generation).
    pub fn replica(&self) -> (&str, u64) {
        (self.membership.name(), self.membership.generation())
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Commits a run's start (before its first event is sent).
    pub async fn start(&self, run: &FleetRunStart) -> StoreResult<()> {
        self.store.start_fleet_run(run).await
    }

    /// Buffers a target's state for the next flush.
    pub fn target(&self, run_id: Uuid, outcome: FleetTargetOutcome) {
        self.pending().flushes.push(FleetRunFlush {
            run_id,
            targets: vec![outcome],
            ..FleetRunFlush::default()
        });
    }

    /// Buffers why a run was cancelled.
    pub fn cancelled(&self, run_id: Uuid, reason: String) {
        self.pending().flushes.push(FleetRunFlush {
            run_id,
            cancel_reason: Some(reason),
            ..FleetRunFlush::default()
        });
    }

    /// Records a run's end and waits (up to [`END_WAIT`]) until it and
    /// everything buffered before it is committed; false if it was not.
    pub async fn end(&self, run_id: Uuid, end: FleetRunEnd) -> bool {
        let mut flushed = self.flushed.subscribe();
        let batch = {
            let mut pending = self.pending();
            pending.flushes.push(FleetRunFlush {
                run_id,
                end: Some(end),
                ..FleetRunFlush::default()
            });
            pending.batch
        };
        self.wake.notify_one();
        let committed =
            tokio::time::timeout(END_WAIT, flushed.wait_for(|done| *done > batch)).await;
        matches!(committed, Ok(Ok(_)))
    }

    /// Writes what is buffered in one transaction; on failure keeps it for
    /// the next flush.
    async fn flush(&self) {
        let (batch, flushes) = {
            let mut pending = self.pending();
            if pending.flushes.is_empty() {
                return;
            }
            let batch = pending.batch;
            pending.batch += 1;
            (
                batch,
                coalesce_flushes(&std::mem::take(&mut pending.flushes)),
            )
        };
        match self.store.record_fleet_runs(&flushes).await {
            Ok(()) => {
                self.flushed.send_if_modified(|done| {
                    let before = *done;
                    *done = before.max(batch + 1);
                    *done != before
                });
            }
            Err(err) => {
                tracing::warn!(error = %err, runs = flushes.len(), "fleet run records not written; retrying");
                let mut pending = self.pending();
                let newer = std::mem::replace(&mut pending.flushes, flushes);
                pending.flushes.extend(newer);
            }
        }
    }

    /// Flushes on a timer and on every end, checks for lost runs and purges
    /// old history until `stop`; then flushes what is left.
    pub async fn run(&self, stop: CancellationToken) {
        let mut flush = tokio::time::interval(self.settings.flush_interval);
        let mut lost = tokio::time::interval(lost_check_interval(self.settings.lost_after));
        let mut purge = tokio::time::interval(PURGE_INTERVAL);
        for timer in [&mut flush, &mut lost, &mut purge] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let mut suspects = HashMap::new();
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                () = self.wake.notified() => self.flush().await,
                _ = flush.tick() => self.flush().await,
                _ = lost.tick() => {
                    if let Err(err) = self.check_lost(&mut suspects).await {
                        tracing::warn!(error = %err, "fleet runs not checked for lost replicas");
                    }
                }
                _ = purge.tick() => self.purge().await,
            }
        }
        self.flush().await;
    }

    async fn purge(&self) {
        let purge = FleetRunsPurge {
            per_tenant: self.settings.per_tenant,
            max_age: self.settings.max_age,
        };
        match self
            .store
            .purge_fleet_runs(&purge, utc_now(self.clock.as_ref()))
            .await
        {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "old fleet runs purged"),
            Err(err) => tracing::warn!(error = %err, "old fleet runs not purged"),
        }
    }

    /// Whether `run`'s replica start is known to be gone. Clustered, that is
    /// any start missing from the membership view; alone, a replica knows
    /// only its own earlier starts.
    fn gone(&self, run: &RunningFleetRun) -> bool {
        let (name, generation) = self.replica();
        if run.replica == name && run.generation == generation {
            return false;
        }
        if self.membership.gossip_addr().is_none() {
            return run.replica == name;
        }
        self.membership
            .view()
            .snapshot
            .get(&run.replica, run.generation)
            .is_none()
    }

    /// Marks runs lost whose replica start has been gone for `lost_after`
    /// by this replica's own clock (`suspects`: since when each was seen
    /// gone), so a view still converging after a start is never trusted.
    async fn check_lost(&self, suspects: &mut HashMap<Uuid, SystemTime>) -> StoreResult<()> {
        let running = self.store.running_fleet_runs().await?;
        let now = self.clock.now();
        let mut still = HashMap::with_capacity(suspects.len());
        for run in running.iter().filter(|run| self.gone(run)) {
            let since = suspects.get(&run.id).copied().unwrap_or(now);
            still.insert(run.id, since);
        }
        *suspects = still;
        let lost: Vec<Uuid> = suspects
            .iter()
            .filter(|(_, since)| {
                now.duration_since(**since).unwrap_or_default() >= self.settings.lost_after
            })
            .map(|(id, _)| *id)
            .collect();
        if lost.is_empty() {
            return Ok(());
        }
        let marked = self
            .store
            .mark_fleet_runs_lost(&lost, utc_now(self.clock.as_ref()))
            .await?;
        for id in &lost {
            suspects.remove(id);
            if let Some(run) = running.iter().find(|run| run.id == *id) {
                tracing::warn!(
                    fleet_command_id = %id,
                    replica = %run.replica,
                    generation = run.generation,
                    "fleet run lost: its replica left the cluster before it ended"
                );
            }
        }
        tracing::debug!(marked, "fleet runs marked lost");
        Ok(())
    }
}

/// A quarter of `lost_after`, between 100 ms and 5 s.
fn lost_check_interval(lost_after: Duration) -> Duration {
    (lost_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;

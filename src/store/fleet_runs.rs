//! Fleet run records: what a run targeted and how, which replica start
//! (name and generation) runs it, each target's outcome and the run's end.
//! Any replica reads them (`GET /v1/edge/fleet/runs`), so they outlive the
//! process that ran the run. The running replica writes them in batches
//! ([`FleetRunFlush`]), never a statement per event.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// Most runs one listing returns.
pub const FLEET_RUNS_LIST_LIMIT: usize = 1_000;

/// State of a run, as stored in `fleet_runs.state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FleetRunState {
    /// Its replica is working on it.
    Running,
    /// Every dispatched target has an outcome.
    Done,
    /// Stopped by its caller or by `require_min_targets`.
    Cancelled,
    /// Its replica start left the cluster before the run ended: outcomes
    /// not recorded are unknown.
    Lost,
}

impl FleetRunState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Done => "done",
            Self::Cancelled => "cancelled",
            Self::Lost => "lost",
        }
    }

    /// Parses the stored text.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "running" => Some(Self::Running),
            "done" => Some(Self::Done),
            "cancelled" => Some(Self::Cancelled),
            "lost" => Some(Self::Lost),
            _ => None,
        }
    }
}

/// Final counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FleetRunCounts {
    /// Targets that succeeded.
    pub ok: u64,
    /// Targets that failed.
    pub err: u64,
    /// Targets that timed out.
    pub timed_out: u64,
    /// Targets never dispatched.
    pub skipped: u64,
}

/// A run as it starts (committed before its first event is sent).
#[derive(Debug, Clone, PartialEq)]
pub struct FleetRunStart {
    /// Run id (`fleet_command_id`).
    pub id: Uuid,
    /// Owning tenant.
    pub tenant_id: String,
    /// The caller's subject.
    pub created_by: String,
    /// The tool.
    pub tool_name: String,
    /// What the caller targeted (the request's `target`).
    pub target: serde_json::Value,
    /// How (mode, failure policy, deadline...).
    pub policy: serde_json::Value,
    /// The targets it resolved to, in dispatch order.
    pub resolved: Vec<Uuid>,
    /// Name of the replica running it.
    pub replica: String,
    /// That replica's generation (its start).
    pub generation: u64,
    /// Start time.
    pub started_at: DateTime<Utc>,
}

/// One target's part of a run, as stored in `fleet_run_targets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetTargetOutcome {
    /// The edge.
    pub node_id: Uuid,
    /// Whether it has an outcome (`false`: dispatched, still working).
    pub completed: bool,
    /// Whether the tool succeeded.
    pub ok: Option<bool>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Failure kind.
    pub error_kind: Option<String>,
    /// Failure text.
    pub error_message: Option<String>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetRunEnd {
    /// `Done` or `Cancelled`.
    pub state: FleetRunState,
    /// End time.
    pub finished_at: DateTime<Utc>,
    /// Final counts.
    pub counts: FleetRunCounts,
}

/// What one flush writes for one run: target outcomes since the last flush,
/// a cancel reason, and its end. A completed target is never set back to
/// running; an end replaces `running` or `lost` (the replica that ran the
/// run knows better than one that gave up on it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetRunFlush {
    /// The run.
    pub run_id: Uuid,
    /// Target rows to insert or update.
    pub targets: Vec<FleetTargetOutcome>,
    /// Why it was cancelled, once known.
    pub cancel_reason: Option<String>,
    /// Its end, once over.
    pub end: Option<FleetRunEnd>,
}

/// A stored run.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetRunRecord {
    /// How it started.
    pub start: FleetRunStart,
    /// Its state.
    pub state: FleetRunState,
    /// End time (also set when marked lost).
    pub finished_at: Option<DateTime<Utc>>,
    /// Final counts, once ended by its replica.
    pub counts: Option<FleetRunCounts>,
    /// Why it was cancelled.
    pub cancel_reason: Option<String>,
}

/// A run with its targets (ordered by node id).
#[derive(Debug, Clone, PartialEq)]
pub struct FleetRunDetail {
    /// The run.
    pub run: FleetRunRecord,
    /// Dispatched targets.
    pub targets: Vec<FleetTargetOutcome>,
}

/// A running run and the replica start that runs it (the lost check).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunningFleetRun {
    /// Run id.
    pub id: Uuid,
    /// Replica name.
    pub replica: String,
    /// Replica generation.
    pub generation: u64,
}

/// How much run history the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetRunsPurge {
    /// Newest runs kept per tenant (running ones always stay).
    pub per_tenant: usize,
    /// Ended runs older than this go.
    pub max_age: Duration,
}

/// `generation` as stored (BIGINT); generations are start times in ms.
pub(crate) fn generation_to_db(generation: u64) -> i64 {
    i64::try_from(generation).unwrap_or(i64::MAX)
}

/// A stored generation; a negative one is corrupt.
pub(crate) fn generation_from_db(run: Uuid, value: i64) -> Result<u64, super::StoreError> {
    u64::try_from(value).map_err(|_| {
        super::StoreError::Corrupt(format!("fleet run {run}: negative generation {value}"))
    })
}

/// Merges flushes of the same run (in order) into one per run, ordered by
/// run id, each target once (ordered by node id): a completed outcome wins
/// over a running one, a later one over an earlier; the latest reason and
/// end win. Every backend writes the result, so a batch is the same
/// statements whatever its order.
pub fn coalesce_flushes(flushes: &[FleetRunFlush]) -> Vec<FleetRunFlush> {
    use std::collections::BTreeMap;
    let mut runs: BTreeMap<Uuid, (BTreeMap<Uuid, FleetTargetOutcome>, FleetRunFlush)> =
        BTreeMap::new();
    for flush in flushes {
        let (targets, merged) = runs.entry(flush.run_id).or_insert_with(|| {
            (
                BTreeMap::new(),
                FleetRunFlush {
                    run_id: flush.run_id,
                    ..FleetRunFlush::default()
                },
            )
        });
        for target in &flush.targets {
            let keep_old = targets
                .get(&target.node_id)
                .is_some_and(|old| old.completed && !target.completed);
            if !keep_old {
                targets.insert(target.node_id, target.clone());
            }
        }
        if flush.cancel_reason.is_some() {
            merged.cancel_reason.clone_from(&flush.cancel_reason);
        }
        if flush.end.is_some() {
            merged.end.clone_from(&flush.end);
        }
    }
    runs.into_values()
        .map(|(targets, mut merged)| {
            merged.targets = targets.into_values().collect();
            merged
        })
        .collect()
}

/// A target outcome for unit tests: succeeded when `completed`, else
/// still working.
#[cfg(test)]
pub(crate) fn test_outcome(node: u128, completed: bool) -> FleetTargetOutcome {
    FleetTargetOutcome {
        node_id: Uuid::from_u128(node),
        completed,
        ok: completed.then_some(true),
        exit_code: completed.then_some(0),
        error_kind: None,
        error_message: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::test_outcome as outcome;

    #[test]
    fn a_completed_target_is_never_set_back_and_later_ends_win() {
        let run = Uuid::from_u128(7);
        let end = |skipped| FleetRunEnd {
            state: FleetRunState::Done,
            finished_at: DateTime::<Utc>::default(),
            counts: FleetRunCounts {
                skipped,
                ..FleetRunCounts::default()
            },
        };
        let merged = coalesce_flushes(&[
            FleetRunFlush {
                run_id: run,
                targets: vec![outcome(2, true), outcome(1, false)],
                cancel_reason: Some("first".into()),
                end: Some(end(1)),
            },
            FleetRunFlush {
                run_id: Uuid::from_u128(3),
                ..FleetRunFlush::default()
            },
            FleetRunFlush {
                run_id: run,
                targets: vec![outcome(2, false), outcome(1, true)],
                cancel_reason: None,
                end: Some(end(2)),
            },
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].run_id, Uuid::from_u128(3));
        let merged = &merged[1];
        assert_eq!(merged.targets, vec![outcome(1, true), outcome(2, true)]);
        assert_eq!(merged.cancel_reason.as_deref(), Some("first"));
        assert_eq!(merged.end, Some(end(2)));
    }
}

//! Fleet runs as `GET /v1/edge/fleet/runs[/{id}]` shows them, built from
//! the store's records: which replica start runs (or ran) each one, its
//! state (`running`, `done`, `cancelled`, `lost`) and, for one run, every
//! dispatched target.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::events::FleetSummary;
use crate::store::{FleetRunDetail, FleetRunRecord, FleetRunState, FleetTargetOutcome};

/// One edge's part of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeView {
    /// The edge.
    pub node_id: Uuid,
    /// `running` or `completed`.
    pub state: &'static str,
    /// Whether the tool succeeded.
    pub ok: Option<bool>,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Failure kind.
    pub error_kind: Option<String>,
    /// Failure text.
    pub error_message: Option<String>,
}

/// A run as the REST surface shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunView {
    /// Run id.
    pub fleet_command_id: Uuid,
    /// Owning tenant.
    pub tenant_id: String,
    /// Who started it.
    pub created_by: String,
    /// The tool.
    pub tool_name: String,
    /// `running`, `done`, `cancelled` or `lost`.
    pub state: FleetRunState,
    /// The replica running it (or that ran it).
    pub replica: String,
    /// That replica's generation (which start of it).
    pub generation: u64,
    /// What the caller targeted.
    pub target: serde_json::Value,
    /// How (mode, failure policy, deadline...).
    pub policy: serde_json::Value,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// End time (for a lost run, when it was found lost).
    pub finished_at: Option<DateTime<Utc>>,
    /// Resolved targets.
    pub resolved: Vec<Uuid>,
    /// Final counts.
    pub summary: Option<FleetSummary>,
    /// Why it was cancelled.
    pub cancel_reason: Option<String>,
    /// Per edge (only in the single-run view).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<NodeView>>,
}

fn count(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

impl From<FleetRunRecord> for RunView {
    fn from(record: FleetRunRecord) -> Self {
        let start = record.start;
        Self {
            fleet_command_id: start.id,
            tenant_id: start.tenant_id,
            created_by: start.created_by,
            tool_name: start.tool_name,
            state: record.state,
            replica: start.replica,
            generation: start.generation,
            target: start.target,
            policy: start.policy,
            started_at: start.started_at,
            finished_at: record.finished_at,
            resolved: start.resolved,
            summary: record.counts.map(|counts| FleetSummary {
                ok: count(counts.ok),
                err: count(counts.err),
                timed_out: count(counts.timed_out),
                skipped: count(counts.skipped),
            }),
            cancel_reason: record.cancel_reason,
            nodes: None,
        }
    }
}

impl From<FleetTargetOutcome> for NodeView {
    fn from(target: FleetTargetOutcome) -> Self {
        Self {
            node_id: target.node_id,
            state: if target.completed {
                "completed"
            } else {
                "running"
            },
            ok: target.ok,
            exit_code: target.exit_code,
            error_kind: target.error_kind,
            error_message: target.error_message,
        }
    }
}

impl From<FleetRunDetail> for RunView {
    fn from(detail: FleetRunDetail) -> Self {
        let mut view = Self::from(detail.run);
        view.nodes = Some(detail.targets.into_iter().map(NodeView::from).collect());
        view
    }
}

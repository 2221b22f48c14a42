//! Recent fleet runs of this replica: the cancel handle of each running
//! call and a bounded history (per tenant, by count and age) behind
//! `GET /v1/edge/fleet/runs`. The reference keeps nothing; operators expect
//! to look back at what ran where.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::events::{FleetEvent, FleetSummary};
use super::run::EventSink;

/// How much history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunRetention {
    /// Most runs kept per tenant (the oldest finished ones go first).
    pub per_tenant: usize,
    /// Finished runs older than this go.
    pub max_age: Duration,
    /// Runs of one tenant running at once (more get 429).
    pub running_per_tenant: usize,
    /// Bytes of serialized events buffered for a slow SSE reader.
    pub sse_buffer_bytes: usize,
}

impl Default for RunRetention {
    fn default() -> Self {
        Self {
            per_tenant: 100,
            max_age: Duration::from_secs(24 * 3600),
            running_per_tenant: 20,
            sse_buffer_bytes: 4 * 1024 * 1024,
        }
    }
}

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunView {
    /// Run id.
    pub fleet_command_id: Uuid,
    /// Owning tenant.
    pub tenant_id: String,
    /// Who started it.
    pub created_by: String,
    /// The tool.
    pub tool_name: String,
    /// `running`, `done` or `cancelled`.
    pub state: &'static str,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// End time.
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

struct Record {
    view: RunView,
    nodes: BTreeMap<Uuid, NodeView>,
    cancel: CancellationToken,
}

/// What a new run is.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// Run id.
    pub fleet_command_id: Uuid,
    /// Owning tenant.
    pub tenant_id: String,
    /// Who started it.
    pub created_by: String,
    /// The tool.
    pub tool_name: String,
    /// Start time.
    pub started_at: DateTime<Utc>,
}

/// Why a run could not be cancelled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelError {
    /// Unknown, or another tenant's.
    #[error("fleet run {0} not found")]
    NotFound(Uuid),
    /// Already over.
    #[error("fleet run {0} has already finished")]
    Finished(Uuid),
}

/// Why a run may not start.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StartError {
    /// The tenant has as many runs running as allowed.
    #[error(
        "tenant {tenant} already has {running} fleet runs running (relay.fleet_runs.running_per_tenant); \
         wait for one to finish or cancel one"
    )]
    TooManyRunning {
        /// The tenant.
        tenant: String,
        /// Its running runs.
        running: usize,
    },
}

/// Running and recent fleet runs.
pub struct FleetRuns {
    runs: Mutex<HashMap<Uuid, Record>>,
    retention: RunRetention,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl std::fmt::Debug for FleetRuns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetRuns")
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

fn visible(view: &RunView, scope: Option<&str>) -> bool {
    scope.is_none_or(|tenant| view.tenant_id == tenant)
}

impl FleetRuns {
    /// No runs yet; `stop` cancels every run (replica shutdown).
    pub fn new(retention: RunRetention, stop: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            runs: Mutex::new(HashMap::new()),
            retention,
            tasks: TaskTracker::new(),
            stop,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Record>> {
        self.runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The bounds in force.
    pub fn retention(&self) -> RunRetention {
        self.retention
    }

    /// Registers `run`; returns the token that cancels it.
    pub fn start(&self, run: NewRun) -> Result<CancellationToken, StartError> {
        let mut runs = self.lock();
        let running = runs
            .values()
            .filter(|r| r.view.tenant_id == run.tenant_id && r.view.finished_at.is_none())
            .count();
        if running >= self.retention.running_per_tenant {
            return Err(StartError::TooManyRunning {
                tenant: run.tenant_id,
                running,
            });
        }
        let cancel = self.stop.child_token();
        self.evict(&mut runs, &run.tenant_id, run.started_at);
        runs.insert(
            run.fleet_command_id,
            Record {
                view: RunView {
                    fleet_command_id: run.fleet_command_id,
                    tenant_id: run.tenant_id,
                    created_by: run.created_by,
                    tool_name: run.tool_name,
                    state: "running",
                    started_at: run.started_at,
                    finished_at: None,
                    resolved: Vec::new(),
                    summary: None,
                    cancel_reason: None,
                    nodes: None,
                },
                nodes: BTreeMap::new(),
                cancel: cancel.clone(),
            },
        );
        Ok(cancel)
    }

    /// Runs `run` as a task owned by this registry.
    pub fn spawn(&self, run: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(run);
    }

    /// Waits for every run task (after `stop` fired or runs finished).
    pub async fn wait(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Cancels a run visible in `scope`.
    pub fn cancel(&self, scope: Option<&str>, id: Uuid) -> Result<(), CancelError> {
        let runs = self.lock();
        match runs.get(&id) {
            Some(record) if visible(&record.view, scope) => {
                if record.view.finished_at.is_some() {
                    return Err(CancelError::Finished(id));
                }
                record.cancel.cancel();
                Ok(())
            }
            _ => Err(CancelError::NotFound(id)),
        }
    }

    /// Runs visible in `scope`, newest first, without per-edge detail.
    pub fn list(&self, scope: Option<&str>) -> Vec<RunView> {
        let runs = self.lock();
        let mut views: Vec<RunView> = runs
            .values()
            .filter(|record| visible(&record.view, scope))
            .map(|record| record.view.clone())
            .collect();
        // Newest first; runs started in the same instant by id, so the order
        // never depends on the map's.
        views.sort_by_key(|view| (std::cmp::Reverse(view.started_at), view.fleet_command_id));
        views
    }

    /// One run visible in `scope`, with per-edge detail.
    pub fn get(&self, scope: Option<&str>, id: Uuid) -> Option<RunView> {
        let runs = self.lock();
        let record = runs.get(&id).filter(|r| visible(&r.view, scope))?;
        let mut view = record.view.clone();
        view.nodes = Some(record.nodes.values().cloned().collect());
        Some(view)
    }

    fn record(&self, id: Uuid, event: &FleetEvent, now: DateTime<Utc>) {
        let mut runs = self.lock();
        let Some(record) = runs.get_mut(&id) else {
            return;
        };
        match event {
            FleetEvent::Started { resolved, .. } => record.view.resolved.clone_from(resolved),
            FleetEvent::NodeStarted { node_id } => {
                record.nodes.insert(
                    *node_id,
                    NodeView {
                        node_id: *node_id,
                        state: "running",
                        ok: None,
                        exit_code: None,
                        error_kind: None,
                        error_message: None,
                    },
                );
            }
            FleetEvent::NodeCompleted {
                node_id,
                ok,
                exit_code,
                error_kind,
                error_message,
            } => {
                record.nodes.insert(
                    *node_id,
                    NodeView {
                        node_id: *node_id,
                        state: "completed",
                        ok: Some(*ok),
                        exit_code: Some(*exit_code),
                        error_kind: error_kind.clone(),
                        error_message: error_message.clone(),
                    },
                );
            }
            FleetEvent::NodeProgress { .. } => {}
            FleetEvent::Cancelled { reason } => {
                record.view.state = "cancelled";
                record.view.cancel_reason = Some(reason.clone());
            }
            FleetEvent::Done { summary } => {
                if record.view.state == "running" {
                    record.view.state = "done";
                }
                record.view.summary = Some(*summary);
                record.view.finished_at = Some(now);
            }
        }
    }

    fn evict(&self, runs: &mut HashMap<Uuid, Record>, tenant: &str, now: DateTime<Utc>) {
        let max_age =
            chrono::TimeDelta::from_std(self.retention.max_age).unwrap_or(chrono::TimeDelta::MAX);
        runs.retain(|_, record| {
            record
                .view
                .finished_at
                .is_none_or(|finished| now - finished <= max_age)
        });
        let mut finished: Vec<(DateTime<Utc>, Uuid)> = runs
            .values()
            .filter(|r| r.view.tenant_id == tenant)
            .filter_map(|r| {
                r.view
                    .finished_at
                    .map(|_| (r.view.started_at, r.view.fleet_command_id))
            })
            .collect();
        let tenant_runs = runs.values().filter(|r| r.view.tenant_id == tenant).count();
        // Room for the run about to be added.
        let excess = (tenant_runs + 1).saturating_sub(self.retention.per_tenant.max(1));
        finished.sort();
        for (_, id) in finished.into_iter().take(excess) {
            runs.remove(&id);
        }
    }
}

/// How long a run waits for a caller that stopped reading before it stops
/// streaming to that caller (the run itself goes on).
const STALLED_CALLER: Duration = Duration::from_secs(5);

/// Sends a run's events to its caller and records them in the history. A
/// caller that stops reading never holds the run up: progress chunks are
/// dropped when its buffer (bounded in bytes) is full, and after
/// [`STALLED_CALLER`] without room for another event the caller is given up.
pub struct RecordingSink {
    runs: Arc<FleetRuns>,
    id: Uuid,
    caller: super::BufferSender,
    clock: Arc<dyn crate::runtime::Clock>,
    caller_gone: std::sync::atomic::AtomicBool,
}

impl RecordingSink {
    /// Records run `id` into `runs` and forwards to `caller`.
    pub fn new(
        runs: Arc<FleetRuns>,
        id: Uuid,
        caller: super::BufferSender,
        clock: Arc<dyn crate::runtime::Clock>,
    ) -> Self {
        Self {
            runs,
            id,
            caller,
            clock,
            caller_gone: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl EventSink for RecordingSink {
    fn emit(&self, event: FleetEvent) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(async move {
            use std::sync::atomic::Ordering;
            self.runs
                .record(self.id, &event, DateTime::from(self.clock.now()));
            if self.caller_gone.load(Ordering::Relaxed) {
                return;
            }
            if matches!(event, FleetEvent::NodeProgress { .. }) {
                if self.caller.try_send(&event) == Err(super::Unsent::Gone) {
                    self.caller_gone.store(true, Ordering::Relaxed);
                }
                return;
            }
            if self.caller.send(&event, STALLED_CALLER).await.is_err() {
                self.caller_gone.store(true, Ordering::Relaxed);
            }
        })
    }
}

//! Fleet runs: the cancel handle of each run this replica runs (in memory,
//! like its live progress), and the history behind `GET /v1/edge/fleet/runs`
//! (in the store, through [`RunRecorder`], so any replica answers and it
//! survives restarts). The reference keeps nothing; operators expect to look
//! back at what ran where.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::events::{FleetEvent, FleetSummary};
use super::records::RunRecorder;
use super::run::EventSink;
use super::views::RunView;
use crate::membership::Membership;
use crate::runtime::Runtime;
use crate::store::{
    FleetRunCounts, FleetRunEnd, FleetRunStart, FleetRunState, FleetTargetOutcome, Store,
    StoreError, FLEET_RUNS_LIST_LIMIT,
};

/// How much history is kept, and how it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunRetention {
    /// Most runs kept per tenant (the oldest finished ones go first).
    pub per_tenant: usize,
    /// Finished runs older than this go.
    pub max_age: Duration,
    /// Runs of one tenant running at once on one replica (more get 429).
    pub running_per_tenant: usize,
    /// Bytes of serialized events buffered for a slow SSE reader.
    pub sse_buffer_bytes: usize,
    /// How often buffered target outcomes are written to the store.
    pub flush_interval: Duration,
    /// How long a run's replica start must be gone from the membership
    /// before the run is marked `lost`.
    pub lost_after: Duration,
}

impl Default for RunRetention {
    fn default() -> Self {
        Self {
            per_tenant: 100,
            max_age: Duration::from_secs(24 * 3600),
            running_per_tenant: 20,
            sse_buffer_bytes: 4 * 1024 * 1024,
            flush_interval: Duration::from_millis(250),
            lost_after: Duration::from_secs(10),
        }
    }
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
    /// What the caller targeted.
    pub target: serde_json::Value,
    /// How.
    pub policy: serde_json::Value,
    /// The resolved targets.
    pub resolved: Vec<Uuid>,
    /// Start time.
    pub started_at: DateTime<Utc>,
}

/// Why a run could not be cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    /// Unknown, or another tenant's.
    #[error("fleet run {0} not found")]
    NotFound(Uuid),
    /// Already over.
    #[error("fleet run {id} has already ended ({state})", state = state.as_str())]
    Finished {
        /// The run.
        id: Uuid,
        /// How it ended.
        state: FleetRunState,
    },
    /// Another replica (start) runs it.
    #[error(
        "fleet run {id} runs on replica {replica} (generation {generation}), not on this one; \
         send the cancel to {replica}"
    )]
    Elsewhere {
        /// The run.
        id: Uuid,
        /// The replica running it.
        replica: String,
        /// Its generation.
        generation: u64,
    },
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a run may not start.
#[derive(Debug, thiserror::Error)]
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
    /// Its record could not be written (nothing was sent to any edge).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A run this replica runs.
struct Running {
    tenant_id: String,
    cancel: CancellationToken,
}

/// This replica's running fleet runs, and the way to every replica's.
pub struct FleetRuns {
    running: Mutex<HashMap<Uuid, Running>>,
    recorder: RunRecorder,
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

impl FleetRuns {
    /// No runs yet; `stop` cancels every run (replica shutdown); records go
    /// to `store`, named after this replica start (`membership`).
    pub fn new(
        retention: RunRetention,
        stop: &CancellationToken,
        store: &Arc<dyn Store>,
        runtime: &Runtime,
        membership: &Membership,
    ) -> Arc<Self> {
        let recorder = RunRecorder::new(
            Arc::clone(store),
            Arc::clone(&runtime.clock),
            membership.clone(),
            retention,
        );
        Arc::new(Self {
            running: Mutex::new(HashMap::new()),
            recorder,
            retention,
            tasks: TaskTracker::new(),
            stop: stop.clone(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Running>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The bounds in force.
    pub fn retention(&self) -> RunRetention {
        self.retention
    }

    /// Writes the records until `stop` (after the last run ended), flushing
    /// what is left; a task of the replica.
    pub fn write_records(
        self: &Arc<Self>,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let runs = Arc::clone(self);
        async move { runs.recorder.run(stop).await }
    }

    /// Registers `run` and commits its record; returns the token that
    /// cancels it.
    pub async fn start(&self, run: NewRun) -> Result<CancellationToken, StartError> {
        let cancel = {
            let mut running = self.lock();
            let count = running
                .values()
                .filter(|r| r.tenant_id == run.tenant_id)
                .count();
            if count >= self.retention.running_per_tenant {
                return Err(StartError::TooManyRunning {
                    tenant: run.tenant_id,
                    running: count,
                });
            }
            let cancel = self.stop.child_token();
            running.insert(
                run.fleet_command_id,
                Running {
                    tenant_id: run.tenant_id.clone(),
                    cancel: cancel.clone(),
                },
            );
            cancel
        };
        let (replica, generation) = self.recorder.replica();
        let record = FleetRunStart {
            id: run.fleet_command_id,
            tenant_id: run.tenant_id,
            created_by: run.created_by,
            tool_name: run.tool_name,
            target: run.target,
            policy: run.policy,
            resolved: run.resolved,
            replica: replica.to_owned(),
            generation,
            started_at: run.started_at,
        };
        if let Err(err) = self.recorder.start(&record).await {
            self.lock().remove(&run.fleet_command_id);
            return Err(err.into());
        }
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

    /// Cancels a run visible in `scope`: this replica's at once; another
    /// replica's is refused, naming it.
    pub async fn cancel(&self, scope: Option<&str>, id: Uuid) -> Result<(), CancelError> {
        {
            let running = self.lock();
            if let Some(run) = running.get(&id) {
                if scope.is_some_and(|tenant| tenant != run.tenant_id) {
                    return Err(CancelError::NotFound(id));
                }
                run.cancel.cancel();
                return Ok(());
            }
        }
        let detail = self.recorder.store().get_fleet_run(scope, id).await?;
        let run = detail.ok_or(CancelError::NotFound(id))?.run;
        let (replica, generation) = self.recorder.replica();
        let here = run.start.replica == replica && run.start.generation == generation;
        match run.state {
            FleetRunState::Running if !here => Err(CancelError::Elsewhere {
                id,
                replica: run.start.replica,
                generation: run.start.generation,
            }),
            // Ended here a moment ago.
            FleetRunState::Running => Err(CancelError::Finished {
                id,
                state: FleetRunState::Done,
            }),
            state => Err(CancelError::Finished { id, state }),
        }
    }

    /// Runs visible in `scope` (every replica's), newest first, without
    /// per-edge detail.
    pub async fn list(&self, scope: Option<&str>) -> Result<Vec<RunView>, StoreError> {
        let limit = match scope {
            Some(_) => self.retention.per_tenant,
            None => FLEET_RUNS_LIST_LIMIT,
        };
        let runs = self.recorder.store().list_fleet_runs(scope, limit).await?;
        Ok(runs.into_iter().map(RunView::from).collect())
    }

    /// One run visible in `scope`, with per-edge detail.
    pub async fn get(&self, scope: Option<&str>, id: Uuid) -> Result<Option<RunView>, StoreError> {
        let run = self.recorder.store().get_fleet_run(scope, id).await?;
        Ok(run.map(RunView::from))
    }

    fn finished(&self, id: Uuid) {
        self.lock().remove(&id);
    }
}

/// How long a run waits for a caller that stopped reading before it stops
/// streaming to that caller (the run itself goes on).
const STALLED_CALLER: Duration = Duration::from_secs(5);

/// Sends a run's events to its caller and records them. A caller that stops
/// reading never holds the run up: progress chunks are dropped when its
/// buffer (bounded in bytes) is full, and after [`STALLED_CALLER`] without
/// room for another event the caller is given up. Records are buffered for
/// the next flush; `Done` goes to the caller once the end is committed.
pub struct RecordingSink {
    runs: Arc<FleetRuns>,
    id: Uuid,
    caller: super::BufferSender,
    clock: Arc<dyn crate::runtime::Clock>,
    caller_gone: AtomicBool,
    cancelled: AtomicBool,
}

impl RecordingSink {
    /// Records run `id` through `runs` and forwards to `caller`.
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
            caller_gone: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
        }
    }

    async fn record(&self, event: &FleetEvent) {
        let recorder = &self.runs.recorder;
        match event {
            FleetEvent::Started { .. } | FleetEvent::NodeProgress { .. } => {}
            FleetEvent::NodeStarted { node_id } => recorder.target(
                self.id,
                FleetTargetOutcome {
                    node_id: *node_id,
                    completed: false,
                    ok: None,
                    exit_code: None,
                    error_kind: None,
                    error_message: None,
                },
            ),
            FleetEvent::NodeCompleted {
                node_id,
                ok,
                exit_code,
                error_kind,
                error_message,
            } => recorder.target(
                self.id,
                FleetTargetOutcome {
                    node_id: *node_id,
                    completed: true,
                    ok: Some(*ok),
                    exit_code: Some(*exit_code),
                    error_kind: error_kind.clone(),
                    error_message: error_message.clone(),
                },
            ),
            FleetEvent::Cancelled { reason } => {
                self.cancelled.store(true, Ordering::Relaxed);
                recorder.cancelled(self.id, reason.clone());
            }
            FleetEvent::Done { summary } => {
                let end = FleetRunEnd {
                    state: if self.cancelled.load(Ordering::Relaxed) {
                        FleetRunState::Cancelled
                    } else {
                        FleetRunState::Done
                    },
                    finished_at: DateTime::from(self.clock.now()),
                    counts: counts(summary),
                };
                if !recorder.end(self.id, end).await {
                    tracing::warn!(fleet_command_id = %self.id, "the end of this fleet run is not in the store yet");
                }
                self.runs.finished(self.id);
            }
        }
    }
}

fn counts(summary: &FleetSummary) -> FleetRunCounts {
    let count = |value: usize| u64::try_from(value).unwrap_or(u64::MAX);
    FleetRunCounts {
        ok: count(summary.ok),
        err: count(summary.err),
        timed_out: count(summary.timed_out),
        skipped: count(summary.skipped),
    }
}

impl EventSink for RecordingSink {
    fn emit(&self, event: FleetEvent) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(async move {
            self.record(&event).await;
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

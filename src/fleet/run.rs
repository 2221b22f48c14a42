//! Running one fleet call (protocol.md §8.4, with the reference's bugs
//! fixed): every resolved target gets exactly one `NodeCompleted` or is
//! counted as skipped; a stop (failure policy or caller cancel) sends a
//! Cancel to every edge still working; sequential runs see a cancel too.
//! Per-target command ids are UUIDv5(idempotency key, node id) when the
//! caller gave a key, so a retried fleet call never runs a tool twice.

use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::events::{FleetEvent, FleetSummary};
use super::policy::{FleetMode, FleetPolicy};
use crate::owner::{CallEvent, Owner, ToolCall};

/// One fleet call, resolved and validated.
#[derive(Debug, Clone)]
pub struct FleetCall {
    /// Id of the run.
    pub fleet_command_id: Uuid,
    /// Tenant scope of the caller (`None`: an operator, every tenant).
    pub scope: Option<String>,
    /// Targets, in dispatch order.
    pub targets: Vec<Uuid>,
    /// What to run.
    pub call: ToolCall,
    /// How.
    pub policy: FleetPolicy,
    /// The caller's `Idempotency-Key`, if any.
    pub idempotency_key: Option<Uuid>,
}

impl FleetCall {
    /// The command id `node_id` gets: derived from the caller's
    /// `Idempotency-Key` (a retry gets the same ids), else from the run's id
    /// (unique per run and node, and no randomness beyond the run's).
    pub fn command_id(&self, node_id: Uuid) -> Uuid {
        let namespace = self.idempotency_key.unwrap_or(self.fleet_command_id);
        Uuid::new_v5(&namespace, node_id.as_bytes())
    }
}

/// Where a run's events go (the caller's stream and the run history).
pub trait EventSink: Send + Sync {
    /// Takes one event; may wait (a slow reader slows the run).
    fn emit(&self, event: FleetEvent) -> futures::future::BoxFuture<'_, ()>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeResult {
    Ok,
    Err,
    TimedOut,
}

/// Runs `fleet` to the end; returns its summary (also emitted as `Done`).
pub async fn run_fleet(
    owner: Arc<Owner>,
    fleet: FleetCall,
    sink: &dyn EventSink,
    cancel: CancellationToken,
) -> FleetSummary {
    sink.emit(FleetEvent::Started {
        fleet_command_id: fleet.fleet_command_id,
        resolved: fleet.targets.clone(),
        skipped: Vec::new(),
    })
    .await;
    let mut summary = FleetSummary::default();
    if let Some(min) = fleet.policy.require_min_targets {
        if fleet.targets.len() < min {
            sink.emit(FleetEvent::Cancelled {
                reason: format!(
                    "{} target(s) resolved, fewer than require_min_targets = {min}",
                    fleet.targets.len()
                ),
            })
            .await;
            summary.skipped = fleet.targets.len();
            sink.emit(FleetEvent::Done { summary }).await;
            return summary;
        }
    }
    let chunk = match fleet.policy.mode {
        FleetMode::Sequential => 1,
        FleetMode::Parallel => fleet
            .policy
            .max_concurrency
            .unwrap_or(fleet.targets.len())
            .max(1),
        FleetMode::Rolling { batch } => batch.max(1),
    };
    // Parallel keeps `chunk` calls in flight; the others wait for a whole
    // chunk before deciding whether to go on.
    let sliding = fleet.policy.mode == FleetMode::Parallel;
    let stop = cancel.child_token();
    let mut pending = fleet.targets.iter().copied();
    let mut running = FuturesUnordered::new();
    let mut dispatched = 0usize;
    loop {
        if sliding || running.is_empty() {
            while running.len() < chunk && !stop.is_cancelled() {
                let Some(node_id) = pending.next() else { break };
                dispatched += 1;
                running.push(run_node(&owner, &fleet, node_id, sink, stop.clone()));
            }
        }
        let Some(result) = running.next().await else {
            break;
        };
        match result {
            NodeResult::Ok => summary.ok += 1,
            NodeResult::Err => summary.err += 1,
            NodeResult::TimedOut => summary.timed_out += 1,
        }
        let chunk_done = sliding || running.is_empty();
        if chunk_done
            && !stop.is_cancelled()
            && fleet
                .policy
                .failure_policy
                .should_stop(summary.failed(), result == NodeResult::Ok)
        {
            stop.cancel();
        }
    }
    summary.skipped = fleet.targets.len() - dispatched;
    if cancel.is_cancelled() {
        sink.emit(FleetEvent::Cancelled {
            reason: "cancelled by the caller".to_owned(),
        })
        .await;
    }
    sink.emit(FleetEvent::Done { summary }).await;
    summary
}

async fn run_node(
    owner: &Arc<Owner>,
    fleet: &FleetCall,
    node_id: Uuid,
    sink: &dyn EventSink,
    stop: CancellationToken,
) -> NodeResult {
    sink.emit(FleetEvent::NodeStarted { node_id }).await;
    let command_id = fleet.command_id(node_id);
    let completed = |ok: bool, exit_code: i32, kind: &str, message: &str| {
        let some = |text: &str| (!text.is_empty()).then(|| text.to_owned());
        FleetEvent::NodeCompleted {
            node_id,
            ok,
            exit_code,
            error_kind: some(kind),
            error_message: some(message),
        }
    };
    let mut handle = match owner
        .invoke(fleet.scope.as_deref(), node_id, command_id, &fleet.call)
        .await
    {
        Ok(handle) => handle,
        Err(err) => {
            sink.emit(completed(false, -1, "error", &err.to_string()))
                .await;
            return NodeResult::Err;
        }
    };
    let outcome = loop {
        tokio::select! {
            event = handle.next() => match event {
                Some(CallEvent::Progress(p)) => {
                    sink.emit(FleetEvent::node_progress(node_id, command_id, p.sequence, p.stderr, &p.chunk)).await;
                }
                Some(CallEvent::Done(outcome)) => break *outcome,
                None => break crate::hop::failure(command_id, "internal", "call ended without an outcome"),
            },
            () = stop.cancelled() => break handle.cancel("the fleet run was stopped").await,
        }
    };
    let result = &outcome.result;
    if result.error_kind == "timeout" && result.exit_code == -1 {
        sink.emit(completed(false, -1, "timeout", &result.error_message))
            .await;
        return NodeResult::TimedOut;
    }
    sink.emit(completed(
        result.ok,
        result.exit_code,
        &result.error_kind,
        &result.error_message,
    ))
    .await;
    if result.ok {
        NodeResult::Ok
    } else {
        NodeResult::Err
    }
}

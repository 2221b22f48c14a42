//! The named checks, run every 100 ms of simulated time and at the end:
//!
//! - `one_live_session_per_node`: no edge is registered on two replicas
//!   for longer than a takeover takes (3 s);
//! - `call_ends_within_deadline`: every call ends with an outcome by its
//!   deadline + 5 s;
//! - `tenant_isolation`: an edge only runs commands of its own tenant;
//! - `no_tool_run_twice`: no command id runs twice while the ingress that
//!   ran it lives (architecture §6, invariant 2: dedup lives in the
//!   ingress's memory, so a caller's retry with the same key after that
//!   replica generation died may run the tool again; the trace says so);
//! - `ring_epoch_agreement`: once membership has settled (every replica up
//!   for 10 s), every replica has the same ring epoch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::caller::ANSWER_GRACE;
use crate::fixture::EdgeFixture;
use crate::replica;
use crate::world::{at, Outcome, State};

mod reruns;

use reruns::{rerun, via, Earlier, Rerun};

/// An edge registered on two replicas.
pub const ONE_SESSION: &str = "one_live_session_per_node";
/// A call without an outcome in time.
pub const CALL_ENDS: &str = "call_ends_within_deadline";
/// A command of another tenant ran.
pub const TENANT_ISOLATION: &str = "tenant_isolation";
/// A command id ran twice.
pub const RUN_ONCE: &str = "no_tool_run_twice";
/// Settled replicas disagree on the ring.
pub const RING_AGREEMENT: &str = "ring_epoch_agreement";
/// A host of the simulation failed (a replica's server stopped, ...).
pub const HOST_FAILED: &str = "host_failed";

/// How long an edge may be registered on two replicas (the old one notices
/// the closed stream).
const SESSION_GRACE: Duration = Duration::from_secs(3);
/// Membership settles this long after the last replica start or crash.
const SETTLE: Duration = Duration::from_secs(10);
/// Checks run this often; a deadline may be seen this late.
pub const CHECK_EVERY: Duration = Duration::from_millis(100);

/// A broken check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The check's name.
    pub check: &'static str,
    /// Simulated time it was seen.
    pub at: Duration,
    /// What was wrong.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}: {}", self.check, at(self.at), self.detail)
    }
}

/// What the checks remember between passes.
pub struct Checks {
    edges: Arc<Vec<EdgeFixture>>,
    replicas: usize,
    runs_seen: usize,
    runs_per_command: BTreeMap<String, Vec<Earlier>>,
    reruns_allowed: usize,
    doubled_since: BTreeMap<usize, Duration>,
}

impl Checks {
    /// Checks for a run of `replicas` and `edges`.
    pub fn new(edges: Arc<Vec<EdgeFixture>>, replicas: usize) -> Self {
        Self {
            edges,
            replicas,
            runs_seen: 0,
            runs_per_command: BTreeMap::new(),
            reruns_allowed: 0,
            doubled_since: BTreeMap::new(),
        }
    }

    /// Reruns allowed so far (each one's first ingress had died).
    pub fn reruns_allowed(&self) -> usize {
        self.reruns_allowed
    }

    /// Every check against `state` at simulated time `now`; an allowed
    /// rerun is noted in the trace with its reason.
    pub fn check(&mut self, state: &mut State, now: Duration) -> Vec<Violation> {
        let mut found = Vec::new();
        let mut violation = |check, detail| {
            found.push(Violation {
                check,
                at: now,
                detail,
            })
        };
        for (check, detail) in self.sessions(state, now) {
            violation(check, detail);
        }
        for (check, detail) in self.runs(state) {
            violation(check, detail);
        }
        for (check, detail) in calls(state, now) {
            violation(check, detail);
        }
        for (check, detail) in self.ring(state, now) {
            violation(check, detail);
        }
        found
    }

    fn sessions(&mut self, state: &State, now: Duration) -> Vec<(&'static str, String)> {
        let mut found = Vec::new();
        for (index, edge) in self.edges.iter().enumerate() {
            let holders: Vec<usize> = state
                .live
                .iter()
                .filter(|(_, live)| live.owner.is_connected(edge.state.node_id))
                .map(|(replica, _)| *replica)
                .collect();
            if holders.len() < 2 {
                self.doubled_since.remove(&index);
                continue;
            }
            let since = *self.doubled_since.entry(index).or_insert(now);
            if now.saturating_sub(since) > SESSION_GRACE {
                let names: Vec<String> = holders.into_iter().map(replica::name).collect();
                found.push((
                    ONE_SESSION,
                    format!("e{index} registered on {names:?} since {}", at(since)),
                ));
            }
        }
        found
    }

    fn runs(&mut self, state: &mut State) -> Vec<(&'static str, String)> {
        let mut found = Vec::new();
        let mut notes = Vec::new();
        for run in state.runs.iter().skip(self.runs_seen) {
            let earlier = self
                .runs_per_command
                .entry(run.command_id.clone())
                .or_default();
            match rerun(earlier, run, state) {
                Rerun::First => {}
                Rerun::Allowed(reason) => {
                    self.reruns_allowed += 1;
                    notes.push(format!(
                        "[{}] {RUN_ONCE}: {} ran again on e{} via {}; allowed (invariant 2): {reason}",
                        at(run.at),
                        run.command_id,
                        run.edge,
                        via(run.ingress)
                    ));
                }
                Rerun::Violation(reason) => found.push((
                    RUN_ONCE,
                    format!(
                        "command {} ran {} times (now on e{} via {} at {}): {reason}",
                        run.command_id,
                        earlier.len() + 1,
                        run.edge,
                        via(run.ingress),
                        at(run.at)
                    ),
                )),
            }
            earlier.push(Earlier {
                edge: run.edge,
                at: run.at,
                ingress: run.ingress,
            });
            let Some(edge) = self.edges.get(run.edge) else {
                continue;
            };
            if run.envelope_tenant != edge.state.tenant_id {
                found.push((
                    TENANT_ISOLATION,
                    format!(
                        "e{} of {} ran {} sealed for {}",
                        run.edge, edge.state.tenant_id, run.command_id, run.envelope_tenant
                    ),
                ));
            }
            let call = Uuid::parse_str(&run.command_id)
                .ok()
                .and_then(|id| state.calls.get(&id));
            match call {
                Some(call) if call.tenant == edge.tenant && call.edge == run.edge => {}
                Some(call) => found.push((
                    TENANT_ISOLATION,
                    format!(
                        "e{} of tenant {} ran {}, a call of tenant {} to e{}",
                        run.edge, edge.tenant, run.command_id, call.tenant, call.edge
                    ),
                )),
                None => found.push((
                    TENANT_ISOLATION,
                    format!("e{} ran {}, which no caller sent", run.edge, run.command_id),
                )),
            }
        }
        self.runs_seen = state.runs.len();
        state.trace.append(&mut notes);
        found
    }

    fn ring(&self, state: &State, now: Duration) -> Vec<(&'static str, String)> {
        if state.live.len() < self.replicas || now.saturating_sub(state.membership_changed) < SETTLE
        {
            return Vec::new();
        }
        let epochs: BTreeMap<String, (String, usize)> = state
            .live
            .iter()
            .map(|(index, live)| {
                let view = live.membership.view();
                (
                    replica::name(*index),
                    (
                        view.ring.epoch().as_str().to_owned(),
                        view.snapshot.serving_names().len(),
                    ),
                )
            })
            .collect();
        let mut distinct: Vec<&String> = epochs.values().map(|(epoch, _)| epoch).collect();
        distinct.sort();
        distinct.dedup();
        if distinct.len() > 1 {
            return vec![(
                RING_AGREEMENT,
                format!(
                    "{} s after the last membership change: (epoch, serving) per replica {epochs:?}",
                    SETTLE.as_secs()
                ),
            )];
        }
        Vec::new()
    }
}

fn calls(state: &State, now: Duration) -> Vec<(&'static str, String)> {
    let mut found = Vec::new();
    for (id, call) in &state.calls {
        let limit = call.started + call.deadline + ANSWER_GRACE;
        let late = match &call.outcome {
            Some((_, Outcome::NoAnswer)) => true,
            Some(_) => false,
            None => now > limit + CHECK_EVERY,
        };
        if late {
            found.push((
                CALL_ENDS,
                format!(
                    "call {id} (tenant {}, e{} via {}, started {}, deadline {} s) had no answer by {}",
                    call.tenant,
                    call.edge,
                    replica::name(call.replica),
                    at(call.started),
                    call.deadline.as_secs(),
                    at(limit)
                ),
            ));
        }
    }
    found
}

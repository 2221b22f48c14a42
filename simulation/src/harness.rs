//! One run of a scenario: build the fixture, add the replicas, edges and
//! callers as turmoil hosts, step simulated time applying the plan's
//! restarts, run the checks every 100 ms and at the end, and report the
//! first violations with the trace that led to them.

use std::sync::Arc;
use std::time::Duration;

use crate::caller::{self, CallerParts, ANSWER_GRACE};
use crate::checks::{Checks, Violation, CHECK_EVERY, HOST_FAILED};
use crate::edge::{self, EdgeParts};
use crate::fixture::{self, Fixture, FixtureError};
use crate::replica::{self, ReplicaParts};
use crate::scenario::Scenario;
use crate::world::{Outcome, World};

/// Trace lines printed with a violation.
pub const TRACE_TAIL: usize = 60;
/// Longest call deadline callers use.
const LONGEST_DEADLINE: Duration = Duration::from_secs(10);

/// Why a scenario could not run at all (a violation is not an error).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The fixture could not be made.
    #[error(transparent)]
    Fixture(#[from] FixtureError),
    /// The fixture's runtime could not be built.
    #[error("cannot build a runtime for the fixture: {0}")]
    Runtime(#[from] std::io::Error),
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Simulated time run.
    pub simulated: Duration,
    /// Calls made.
    pub calls: usize,
    /// Calls that ended with the edge's result.
    pub results: usize,
    /// Commands edges ran.
    pub runs: usize,
    /// Replica starts (restarts included).
    pub starts: u64,
    /// Reruns of a command id that invariant 2 allows (its first ingress
    /// died, then the caller retried with the same key).
    pub reruns_allowed: usize,
}

impl std::ops::AddAssign<&Stats> for Stats {
    fn add_assign(&mut self, other: &Stats) {
        self.simulated += other.simulated;
        self.calls += other.calls;
        self.results += other.results;
        self.runs += other.runs;
        self.starts += other.starts;
        self.reruns_allowed += other.reruns_allowed;
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct Report {
    /// What ran.
    pub scenario: Scenario,
    /// Broken checks (empty: the run passed).
    pub violations: Vec<Violation>,
    /// Every event, in order.
    pub trace: Vec<String>,
    /// Counts.
    pub stats: Stats,
}

impl Report {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The seed, the violations and the trace's last events: what to read
    /// at 3 a.m.
    pub fn describe(&self) -> String {
        let mut text = format!("seed {}: ", self.scenario.seed);
        if self.passed() {
            text.push_str("every check held\n");
            return text;
        }
        text.push_str(&format!("{} violation(s)\n", self.violations.len()));
        for violation in &self.violations {
            text.push_str(&format!("  {violation}\n"));
        }
        let skip = self.trace.len().saturating_sub(TRACE_TAIL);
        text.push_str(&format!(
            "last {} of {} trace events; replay with {}:\n",
            self.trace.len() - skip,
            self.trace.len(),
            self.scenario.replay_command()
        ));
        for line in &self.trace[skip..] {
            text.push_str(&format!("  {line}\n"));
        }
        text
    }
}

enum Step {
    Crash(usize),
    Start(usize),
}

/// Runs `scenario` to its end or its first violation.
pub fn run(scenario: &Scenario) -> Result<Report, HarnessError> {
    let plan = scenario.plan();
    let signer = fixture::signer()?;
    let fixture = tokio::runtime::Builder::new_current_thread()
        .build()?
        .block_on(Fixture::new(scenario, signer))?;
    let edges = Arc::new(fixture.edges);
    let world = World::default();
    let mut sim = turmoil::Builder::new()
        .rng_seed(scenario.seed)
        .simulation_duration(scenario.duration + Duration::from_secs(120))
        .max_message_latency(Duration::from_millis(10))
        .build();
    let replicas = ReplicaParts {
        seed: scenario.seed,
        replicas: scenario.replicas,
        store: fixture.store,
        signer: fixture.signer,
        world: world.clone(),
    };
    for index in 0..scenario.replicas {
        replica::add(&mut sim, index, &replicas);
    }
    edge::add(
        &mut sim,
        &EdgeParts {
            seed: scenario.seed,
            replicas: scenario.replicas,
            edges: Arc::clone(&edges),
            first_dial: Arc::new(plan.first_dial.clone()),
            restarts: Arc::new(plan.edge_restarts.clone()),
            per_host: scenario.edges_per_host,
            double_run_edge: scenario.double_run_edge,
            world: world.clone(),
        },
    );
    caller::add(
        &mut sim,
        &CallerParts {
            seed: scenario.seed,
            edges: Arc::clone(&edges),
            bearers: Arc::new(fixture.bearers),
            per_tenant: scenario.callers_per_tenant,
            last_start: scenario
                .duration
                .saturating_sub(LONGEST_DEADLINE + ANSWER_GRACE + Duration::from_secs(1)),
            world: world.clone(),
        },
    );
    let mut steps: Vec<(Duration, Step)> = Vec::new();
    for restart in &plan.restarts {
        steps.push((restart.at, Step::Crash(restart.replica)));
        steps.push((restart.at + restart.down_for, Step::Start(restart.replica)));
    }
    steps.sort_by_key(|(time, _)| *time);
    steps.reverse();
    let mut checks = Checks::new(Arc::clone(&edges), scenario.replicas);
    let mut next_check = CHECK_EVERY;
    let mut violations = Vec::new();
    while sim.elapsed() < scenario.duration {
        while steps.last().is_some_and(|(time, _)| *time <= sim.elapsed()) {
            let Some((_, step)) = steps.pop() else { break };
            let now = sim.elapsed();
            match step {
                Step::Crash(index) if index < scenario.replicas => {
                    sim.crash(replica::name(index));
                    world.replica_down(index, now);
                    world.note_at(now, format!("{} crashed", replica::name(index)));
                }
                Step::Start(index) if index < scenario.replicas => {
                    world.note_at(now, format!("{} restarting", replica::name(index)));
                    sim.bounce(replica::name(index));
                }
                Step::Crash(_) | Step::Start(_) => {}
            }
        }
        if let Err(err) = sim.step() {
            violations.push(Violation {
                check: HOST_FAILED,
                at: sim.elapsed(),
                detail: err.to_string(),
            });
            break;
        }
        if sim.elapsed() >= next_check {
            next_check += CHECK_EVERY;
            violations = checks.check(&mut world.lock(), sim.elapsed());
            if !violations.is_empty() {
                break;
            }
        }
    }
    if violations.is_empty() {
        violations = checks.check(&mut world.lock(), sim.elapsed());
    }
    let state = world.lock();
    let stats = Stats {
        simulated: sim.elapsed(),
        calls: state.calls.len(),
        results: state
            .calls
            .values()
            .filter(|call| matches!(call.outcome, Some((_, Outcome::Result { .. }))))
            .count(),
        runs: state.runs.len(),
        starts: state.starts.values().sum(),
        reruns_allowed: checks.reruns_allowed(),
    };
    let mut trace = state.trace.clone();
    for violation in &violations {
        trace.push(format!("VIOLATION {violation}"));
    }
    Ok(Report {
        scenario: scenario.clone(),
        violations,
        trace,
        stats,
    })
}

//! What one run is: a seed and its parameters, and the plan the seed draws
//! (where each edge dials first, which replica restarts when).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A scenario: everything a run depends on. The same scenario replays the
/// same run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// Chooses every random decision of the run.
    pub seed: u64,
    /// Relay replicas (`r0`, `r1`, ...).
    pub replicas: usize,
    /// Simulated edge daemons; edge `i` belongs to tenant `i % tenants`.
    pub edges: usize,
    /// Tenants (`tenant-0`, ...).
    pub tenants: usize,
    /// Callers per tenant.
    pub callers_per_tenant: usize,
    /// Edges per turmoil host (each edge still has its own connections).
    /// turmoil's cost grows with hosts times ticks; a fault that must cut
    /// off one edge alone needs 1.
    pub edges_per_host: usize,
    /// Simulated time the workload runs.
    pub duration: Duration,
    /// Replica restarts.
    pub restarts: Restarts,
    /// Test hook: this edge records every command it runs twice, as if it
    /// had run it twice (proves the checks can fail).
    pub double_run_edge: Option<usize>,
}

/// Which replicas (and edge daemons) restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restarts {
    /// The seed chooses: none, or one replica restart in the run's middle
    /// half; and about one edge daemon in twenty restarts once then.
    Seeded,
    /// None.
    Never,
    /// Exactly these replica restarts (no edge daemon restarts).
    Exactly(Vec<Restart>),
}

/// One replica crash and its restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restart {
    /// Replica index.
    pub replica: usize,
    /// When it crashes (simulated time since the start).
    pub at: Duration,
    /// How long it stays down before it starts again.
    pub down_for: Duration,
}

impl Scenario {
    /// The default scenario for `seed`: 5 replicas, 100 edges (on one
    /// host), 10 tenants, one caller per tenant, 60 s.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            replicas: 5,
            edges: 100,
            tenants: 10,
            callers_per_tenant: 1,
            edges_per_host: 100,
            duration: Duration::from_secs(60),
            restarts: Restarts::Seeded,
            double_run_edge: None,
        }
    }

    /// The seed runner's command that replays this scenario, or why none
    /// does (what only a test can set).
    pub fn replay_command(&self) -> String {
        let command = format!(
            "cargo run -p aegis-relay-simulation --release -- --seed {} --replicas {} --edges {} --edges-per-host {} --tenants {} --duration {} --trace",
            self.seed,
            self.replicas,
            self.edges,
            self.edges_per_host,
            self.tenants,
            self.duration.as_secs()
        );
        if self.restarts != Restarts::Seeded
            || self.double_run_edge.is_some()
            || self.callers_per_tenant != 1
        {
            return format!("the test that set its restarts, callers or hooks (the runner's nearest: {command})");
        }
        command
    }

    /// Tenant of edge `edge`.
    pub fn tenant_of(&self, edge: usize) -> usize {
        edge % self.tenants.max(1)
    }

    /// The plan the seed draws.
    pub fn plan(&self) -> Plan {
        let mut rng = StdRng::seed_from_u64(mix(self.seed, PLAN_STREAM, 0));
        let replicas = self.replicas.max(1);
        let first_dial = (0..self.edges)
            .map(|_| rng.random_range(0..replicas))
            .collect();
        let restarts = match &self.restarts {
            Restarts::Never => Vec::new(),
            Restarts::Exactly(restarts) => restarts.clone(),
            Restarts::Seeded => {
                let quarter = self.duration.as_millis() as u64 / 4;
                if rng.random_bool(0.5) && quarter > 0 {
                    vec![Restart {
                        replica: rng.random_range(0..replicas),
                        at: Duration::from_millis(rng.random_range(quarter..2 * quarter)),
                        down_for: Duration::from_millis(rng.random_range(1000..5000)),
                    }]
                } else {
                    Vec::new()
                }
            }
        };
        // Drawn last, so the draws above stay what they were.
        let edge_restarts = match &self.restarts {
            Restarts::Seeded => {
                let quarter = self.duration.as_millis() as u64 / 4;
                (0..self.edges)
                    .map(|_| {
                        (rng.random_bool(EDGE_RESTART_SHARE) && quarter > 0)
                            .then(|| Duration::from_millis(rng.random_range(quarter..3 * quarter)))
                    })
                    .collect()
            }
            Restarts::Never | Restarts::Exactly(_) => vec![None; self.edges],
        };
        Plan {
            first_dial,
            restarts,
            edge_restarts,
        }
    }
}

/// What the seed chose before the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Replica each edge dials first.
    pub first_dial: Vec<usize>,
    /// Restarts, in any order.
    pub restarts: Vec<Restart>,
    /// When each edge's daemon restarts (its stream and any running
    /// command end; it dials again at once), if it does.
    pub edge_restarts: Vec<Option<Duration>>,
}

/// The share of edges whose daemon restarts once, when the seed chooses
/// restarts.
const EDGE_RESTART_SHARE: f64 = 0.05;

const PLAN_STREAM: u64 = 0x706c_616e;

/// A per-purpose seed derived from the scenario's (splitmix64 steps), so
/// each random stream is independent of how much the others draw.
pub fn mix(seed: u64, stream: u64, index: u64) -> u64 {
    let mut x = seed ^ stream.rotate_left(17) ^ index.rotate_left(41);
    for _ in 0..2 {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_fixes_the_plan() {
        let a = Scenario::new(3).plan();
        assert_eq!(a, Scenario::new(3).plan());
        assert_eq!(a.first_dial.len(), 100);
        assert!(a.first_dial.iter().all(|&r| r < 5));
        let differs = (0..20).any(|s| Scenario::new(s).plan() != a);
        assert!(differs);
    }
}

//! Simulated wall clock and seeded randomness for the relay's runtime seam.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aegis_relay::runtime::{Clock, Entropy, Runtime};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

use crate::net::TurmoilNetwork;

/// Wall-clock time at the start of every simulation (2026-01-01T00:00:00Z),
/// fixed so that runs do not depend on when they happen.
pub const SIM_EPOCH: Duration = Duration::from_secs(1_767_225_600);

/// Wall clock that follows turmoil's simulated time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimClock;

impl Clock for SimClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + SIM_EPOCH + turmoil::sim_elapsed().unwrap_or_default()
    }
}

/// Randomness from one seed.
#[derive(Debug)]
pub struct SeededEntropy {
    rng: Mutex<StdRng>,
}

impl SeededEntropy {
    /// A generator fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }
}

impl Entropy for SeededEntropy {
    fn fill(&self, dest: &mut [u8]) {
        self.rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fill_bytes(dest);
    }
}

/// The runtime seam wired to the simulation: turmoil sockets, simulated
/// clock, entropy from `seed`.
pub fn sim_runtime(seed: u64) -> Runtime {
    Runtime {
        net: Arc::new(TurmoilNetwork),
        clock: Arc::new(SimClock),
        entropy: Arc::new(SeededEntropy::new(seed)),
    }
}

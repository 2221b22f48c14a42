//! A seed on a fresh thread: std and rand seed their per-thread state once,
//! so a reused thread would carry one seed's state into the next. (The
//! seed runner also gives every seed its own process: tokio's runtime seeds
//! come from a process-wide counter; see `seed_process.rs`.)

use crate::harness::{run, Report};
use crate::scenario::Scenario;

/// A seed's result: its report, or why it could not run.
pub type SeedResult = Result<Report, String>;

/// Called first on each seed's fresh thread with the seed (the binary seeds
/// its randomness interposer there).
pub type ThreadStart = fn(u64);

/// Runs one scenario on a fresh thread.
pub fn run_on_fresh_thread(scenario: Scenario, start: ThreadStart) -> SeedResult {
    let seed = scenario.seed;
    std::thread::Builder::new()
        .name(format!("seed-{seed}"))
        .spawn(move || {
            start(seed);
            run(&scenario).map_err(|err| err.to_string())
        })
        .map_err(|err| format!("seed {seed}: cannot start a thread: {err}"))?
        .join()
        .map_err(|_| format!("seed {seed}: the simulation panicked"))?
}

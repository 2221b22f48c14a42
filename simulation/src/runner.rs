//! Many seeds at once: each seed runs on a fresh thread (std and rand seed
//! their per-thread state once, so a reused thread would carry one seed's
//! state into the next), `workers` seeds at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

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

/// Runs every scenario, `workers` at a time, calling `done` as each ends
/// (in completion order); the results come back in `scenarios`' order.
pub fn run_many(
    scenarios: Vec<Scenario>,
    workers: usize,
    start: ThreadStart,
    done: &(dyn Fn(&Scenario, &SeedResult) + Sync),
) -> Vec<SeedResult> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<SeedResult>>> = Mutex::new(vec![None; scenarios.len()]);
    let scenarios = Arc::new(scenarios);
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(scenario) = scenarios.get(index) else {
                    return;
                };
                let result = run_on_fresh_thread(scenario.clone(), start);
                done(scenario, &result);
                results.lock().unwrap_or_else(PoisonError::into_inner)[index] = Some(result);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .into_iter()
        .map(|result| result.unwrap_or_else(|| Err("not run".to_owned())))
        .collect()
}

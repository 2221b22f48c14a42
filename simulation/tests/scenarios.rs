//! Whole scenarios: N real replicas, simulated edges and callers, the named
//! checks throughout.
//!
//! - a fixed set of seeds passes every check (one with a restart);
//! - a replica restarting mid-run leaves every check holding;
//! - an edge that runs each command twice (test hook) is caught.

use std::time::Duration;

// The seed runner's randomness interposer, so these seeds replay exactly as
// `--seed S --trace` does.
#[path = "../src/interpose.rs"]
mod interpose;

use aegis_relay_simulation::checks::RUN_ONCE;
use aegis_relay_simulation::{run_many, run_on_fresh_thread, Report, Restart, Restarts, Scenario};

type Error = Box<dyn std::error::Error>;

fn passed(report: &Report) -> Result<(), Error> {
    eprintln!("seed {}: {:?}", report.scenario.seed, report.stats);
    if report.passed() {
        Ok(())
    } else {
        Err(report.describe().into())
    }
}

/// Seeds every `cargo test` runs: default scenarios (5 replicas, 100
/// edges, 10 tenants, 60 s), restarts as the seed chooses.
const FIXED_SEEDS: [u64; 2] = [1, 4];

#[test]
fn the_fixed_seeds_hold_every_check() -> Result<(), Error> {
    let restarting = FIXED_SEEDS
        .iter()
        .filter(|&&seed| !Scenario::new(seed).plan().restarts.is_empty())
        .count();
    assert_eq!(restarting, 1, "one fixed seed restarts a replica");
    let scenarios = FIXED_SEEDS
        .iter()
        .map(|&seed| Scenario::new(seed))
        .collect();
    let results = run_many(
        scenarios,
        FIXED_SEEDS.len(),
        interpose::seed_this_thread,
        &|_, _| {},
    );
    for result in results {
        let report = result?;
        passed(&report)?;
        assert!(report.stats.results > 100, "{:?}", report.stats);
    }
    Ok(())
}

#[test]
fn a_replica_restarting_mid_run_leaves_every_check_holding() -> Result<(), Error> {
    let report = run_on_fresh_thread(
        Scenario {
            duration: Duration::from_secs(45),
            restarts: Restarts::Exactly(vec![Restart {
                replica: 2,
                at: Duration::from_secs(15),
                down_for: Duration::from_secs(3),
            }]),
            ..Scenario::new(2)
        },
        interpose::seed_this_thread,
    )?;
    passed(&report)?;
    assert_eq!(report.stats.starts, 6, "{:?}", report.stats);
    let restarted = report
        .trace
        .iter()
        .any(|line| line.contains("r2 serving (start 2)"));
    assert!(restarted, "r2 never served again");
    Ok(())
}

#[test]
fn an_edge_running_a_command_twice_is_caught() -> Result<(), Error> {
    let report = run_on_fresh_thread(
        Scenario {
            edges: 4,
            tenants: 2,
            duration: Duration::from_secs(30),
            restarts: Restarts::Never,
            double_run_edge: Some(1),
            ..Scenario::new(3)
        },
        interpose::seed_this_thread,
    )?;
    let described = report.describe();
    eprintln!("{described}");
    let violation = report
        .violations
        .first()
        .ok_or("the doubled run went unnoticed")?;
    assert_eq!(violation.check, RUN_ONCE);
    assert!(violation.detail.contains("on e1"), "{violation}");
    assert!(described.contains("seed 3"), "{described}");
    assert!(described.contains("e1 runs"), "{described}");
    Ok(())
}

//! Whole scenarios: N real replicas, simulated edges and callers, the named
//! checks throughout.
//!
//! - a fixed set of seeds passes every check (one with a restart), each
//!   run by the seed runner in its own process, as `--seeds` does;
//! - a replica restarting mid-run leaves every check holding;
//! - an edge that runs each command twice (test hook) is caught.

use std::process::Command;
use std::time::Duration;

// The seed runner's randomness interposer, so the runs below draw from the
// seed (they share this process, so tokio's runtime seeds still depend on
// the order tests build runtimes in; their reports say only the test
// replays them).
#[path = "../src/interpose.rs"]
mod interpose;

use aegis_relay_simulation::checks::RUN_ONCE;
use aegis_relay_simulation::{run_on_fresh_thread, Report, Restart, Restarts, Scenario};

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

/// Runs `seed` as the seed runner does under `--seeds`: its own process
/// (tokio seeds runtimes from a process-wide counter, so only a fresh
/// process replays exactly as `--seed S --trace`). Its JSON summary.
fn seed_process(seed: u64) -> Result<serde_json::Value, String> {
    let output = Command::new(env!("CARGO_BIN_EXE_aegis-relay-simulation"))
        .args(["--seed", &seed.to_string(), "--json"])
        .output()
        .map_err(|err| format!("seed {seed}: cannot start the runner: {err}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .ok_or_else(|| {
            format!(
                "seed {seed}: no summary ({}): {stdout}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

#[test]
fn the_fixed_seeds_hold_every_check() -> Result<(), Error> {
    let restarting = FIXED_SEEDS
        .iter()
        .filter(|&&seed| !Scenario::new(seed).plan().restarts.is_empty())
        .count();
    assert_eq!(restarting, 1, "one fixed seed restarts a replica");
    let summaries: Vec<Result<serde_json::Value, String>> = std::thread::scope(|scope| {
        let runs: Vec<_> = FIXED_SEEDS
            .iter()
            .map(|&seed| scope.spawn(move || seed_process(seed)))
            .collect();
        runs.into_iter()
            .map(|run| run.join().unwrap_or_else(|_| Err("panicked".to_owned())))
            .collect()
    });
    for summary in summaries {
        let summary = summary?;
        eprintln!("seed {}: {}", summary["seed"], summary["stats"]);
        if summary["passed"] != serde_json::Value::Bool(true) {
            return Err(summary["report"].as_str().unwrap_or("no report").into());
        }
        let results = summary["stats"]["results"].as_u64().unwrap_or_default();
        assert!(results > 100, "{summary}");
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

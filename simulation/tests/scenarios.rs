//! Whole scenarios: N real replicas, simulated edges and callers, the named
//! checks throughout.
//!
//! - a fixed set of seeds passes every check;
//! - a replica restarting mid-run leaves every check holding;
//! - an edge that runs each command twice (test hook) is caught.

use std::time::Duration;

use aegis_relay_simulation::checks::RUN_ONCE;
use aegis_relay_simulation::{run, Report, Restart, Restarts, Scenario};

type Error = Box<dyn std::error::Error>;

fn passed(report: &Report) -> Result<(), Error> {
    eprintln!("seed {}: {:?}", report.scenario.seed, report.stats);
    if report.passed() {
        Ok(())
    } else {
        Err(report.describe().into())
    }
}

#[test]
fn a_default_scenario_holds_every_check() -> Result<(), Error> {
    let report = run(&Scenario {
        restarts: Restarts::Never,
        ..Scenario::new(1)
    })?;
    passed(&report)?;
    assert!(report.stats.results > 20, "{:?}", report.stats);
    Ok(())
}

#[test]
fn a_replica_restarting_mid_run_leaves_every_check_holding() -> Result<(), Error> {
    let report = run(&Scenario {
        duration: Duration::from_secs(45),
        restarts: Restarts::Exactly(vec![Restart {
            replica: 2,
            at: Duration::from_secs(15),
            down_for: Duration::from_secs(3),
        }]),
        ..Scenario::new(2)
    })?;
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
    let report = run(&Scenario {
        edges: 4,
        tenants: 2,
        duration: Duration::from_secs(30),
        restarts: Restarts::Never,
        double_run_edge: Some(1),
        ..Scenario::new(3)
    })?;
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

//! Each seed of `--seeds` runs in its own process (this binary with `--seed
//! S --json`), not just on its own thread: tokio seeds every runtime from a
//! process-wide counter (`tokio::loom::std::rand::seed`), so in a shared
//! process a seed's `select!` order would depend on how many runtimes other
//! seeds had built before it, and a failing seed would not replay with
//! `--seed S --trace`. In its own process it is exactly that replay.

use std::process::Command;
use std::time::Duration;

use aegis_relay_simulation::{Report, Stats};

/// One line of JSON: what a seed's process tells the runner.
pub fn summary(report: &Report) -> String {
    let stats = &report.stats;
    serde_json::json!({
        "seed": report.scenario.seed,
        "passed": report.passed(),
        "report": report.describe(),
        "stats": {
            "simulated_ms": stats.simulated.as_millis() as u64,
            "calls": stats.calls,
            "results": stats.results,
            "runs": stats.runs,
            "starts": stats.starts,
            "reruns_allowed": stats.reruns_allowed,
        },
    })
    .to_string()
}

/// A seed's outcome as its process reported it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Every check held.
    pub passed: bool,
    /// `Report::describe`.
    pub report: String,
    /// The run's counts.
    pub stats: Stats,
}

/// Why a seed's process told nothing usable.
#[derive(Debug, thiserror::Error)]
pub enum SeedProcessError {
    /// It could not start.
    #[error("cannot start {0}: {1}")]
    Spawn(String, std::io::Error),
    /// Its last line was no summary.
    #[error("no summary from the seed's process ({status}); stderr: {stderr}")]
    NoSummary {
        /// Its exit status.
        status: String,
        /// Its stderr.
        stderr: String,
    },
}

/// Runs `exe` with `args` (which include `--seed S --json`) and reads its
/// summary.
pub fn run(exe: &std::path::Path, args: &[String]) -> Result<Outcome, SeedProcessError> {
    let output = Command::new(exe)
        .args(args)
        .output()
        .map_err(|err| SeedProcessError::Spawn(exe.display().to_string(), err))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let parsed = stdout
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .and_then(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .and_then(|value| parse(&value));
    parsed.ok_or_else(|| SeedProcessError::NoSummary {
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

fn parse(value: &serde_json::Value) -> Option<Outcome> {
    let stats = &value["stats"];
    let count = |name: &str| stats[name].as_u64();
    Some(Outcome {
        passed: value["passed"].as_bool()?,
        report: value["report"].as_str()?.to_owned(),
        stats: Stats {
            simulated: Duration::from_millis(count("simulated_ms")?),
            calls: usize::try_from(count("calls")?).ok()?,
            results: usize::try_from(count("results")?).ok()?,
            runs: usize::try_from(count("runs")?).ok()?,
            starts: count("starts")?,
            reruns_allowed: usize::try_from(count("reruns_allowed")?).ok()?,
        },
    })
}

//! The seed runner: `--seeds N [--start S]` runs seeds S..S+N-1 on every
//! core with a progress line, prints each failing seed with its trace tail
//! and exits non-zero if any failed; `--seed S --trace` replays one seed and
//! prints its whole trace (nothing time-dependent: identical for identical
//! seeds). The binary interposes libc's randomness (`interpose.rs`), so a
//! seed also fixes what dependencies draw from the OS.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod interpose;

use aegis_relay_simulation::{run_many, run_on_fresh_thread, Scenario};
use anyhow::{bail, Result};
use clap::Parser;

/// Deterministic simulation of aegis-relay replicas.
#[derive(Debug, Parser)]
#[command(name = "aegis-relay-simulation")]
struct Args {
    /// Run this many seeds.
    #[arg(long)]
    seeds: Option<u64>,
    /// First seed of `--seeds`.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Run (or replay, with `--trace`) this one seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Print the seed's whole event trace.
    #[arg(long, requires = "seed")]
    trace: bool,
    /// Replicas.
    #[arg(long, default_value_t = 5)]
    replicas: usize,
    /// Edges.
    #[arg(long, default_value_t = 100)]
    edges: usize,
    /// Tenants.
    #[arg(long, default_value_t = 10)]
    tenants: usize,
    /// Edges per simulated host (1: every edge its own host).
    #[arg(long, default_value_t = 100)]
    edges_per_host: usize,
    /// Simulated seconds per scenario.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Seeds run at once (default: every core).
    #[arg(long)]
    jobs: Option<usize>,
}

impl Args {
    fn scenario(&self, seed: u64) -> Scenario {
        Scenario {
            replicas: self.replicas.max(1),
            edges: self.edges,
            tenants: self.tenants.max(1),
            edges_per_host: self.edges_per_host.max(1),
            duration: Duration::from_secs(self.duration),
            ..Scenario::new(seed)
        }
    }
}

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    match (args.seed, args.seeds) {
        (Some(seed), _) => one(&args, seed),
        (None, Some(count)) => many(&args, count),
        (None, None) => bail!("give --seeds N (with --start S) or --seed S [--trace]"),
    }
}

/// One seed; with `--trace` its whole trace.
fn one(args: &Args, seed: u64) -> Result<ExitCode> {
    let report = run_on_fresh_thread(args.scenario(seed), interpose::seed_this_thread)
        .map_err(anyhow::Error::msg)?;
    let mut out = std::io::stdout().lock();
    if args.trace {
        for line in &report.trace {
            writeln!(out, "{line}")?;
        }
    }
    write!(out, "{}", report.describe())?;
    writeln!(out, "{:?}", report.stats)?;
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Wall time, for the progress line only (never inside a simulation).
#[allow(clippy::disallowed_methods)]
fn wall_now() -> Instant {
    Instant::now()
}

/// Seeds `start..start+count` on every core.
fn many(args: &Args, count: u64) -> Result<ExitCode> {
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let scenarios: Vec<Scenario> = (args.start..args.start + count)
        .map(|seed| args.scenario(seed))
        .collect();
    let total = scenarios.len();
    let started = wall_now();
    let done = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    let simulated = Mutex::new(Duration::ZERO);
    let report = |scenario: &Scenario, result: &aegis_relay_simulation::SeedResult| {
        let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
        let mut failures = failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(report) => {
                *simulated
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) += report.stats.simulated;
                if !report.passed() {
                    failures.push(scenario.seed);
                    eprint!("\n{}", report.describe());
                }
            }
            Err(err) => {
                failures.push(scenario.seed);
                eprintln!("\nseed {}: could not run: {err}", scenario.seed);
            }
        }
        let minutes = started.elapsed().as_secs_f64() / 60.0;
        eprint!(
            "\r{finished}/{total} seeds done, {:.1} seeds/min, {} failed   ",
            finished as f64 / minutes.max(1e-9),
            failures.len()
        );
    };
    run_many(scenarios, jobs, interpose::seed_this_thread, &report);
    let wall = started.elapsed();
    let simulated = *simulated
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut failures = failed
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    failures.sort_unstable();
    eprintln!();
    println!(
        "{total} seeds in {:.1} s wall on {jobs} thread(s): {:.2} simulated s per wall s, {:.1} scenarios per wall minute",
        wall.as_secs_f64(),
        simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9),
        total as f64 / (wall.as_secs_f64() / 60.0).max(1e-9),
    );
    if failures.is_empty() {
        println!("every seed passed");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("failing seeds: {failures:?}");
        Ok(ExitCode::FAILURE)
    }
}

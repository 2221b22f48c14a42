//! The seed runner: `--seeds N [--start S]` runs seeds S..S+N-1 on every
//! core, each in its own process (`seed_process.rs`), with a progress line,
//! prints each failing seed with its trace tail and exits non-zero if any
//! failed; `--seed S --trace` replays one seed and prints its whole trace
//! (nothing time-dependent: identical for identical seeds, and identical to
//! that seed's run under `--seeds`). The binary interposes libc's
//! randomness (`interpose.rs`), so a seed also fixes what dependencies draw
//! from the OS.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

mod interpose;
mod seed_process;

use aegis_relay_simulation::{run_on_fresh_thread, Scenario, Stats};
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
    /// Print one JSON line (seed, passed, report, stats) instead: what
    /// `--seeds` reads from each seed's process.
    #[arg(long, requires = "seed", conflicts_with = "trace")]
    json: bool,
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

    /// The arguments that run `seed` of this scenario in a seed process.
    fn child(&self, seed: u64) -> Vec<String> {
        let mut child = vec!["--seed".to_owned(), seed.to_string(), "--json".to_owned()];
        for (flag, value) in [
            ("--replicas", self.replicas as u64),
            ("--edges", self.edges as u64),
            ("--edges-per-host", self.edges_per_host as u64),
            ("--tenants", self.tenants as u64),
            ("--duration", self.duration),
        ] {
            child.push(flag.to_owned());
            child.push(value.to_string());
        }
        child
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
    if args.json {
        writeln!(out, "{}", seed_process::summary(&report))?;
        return Ok(ExitCode::SUCCESS);
    }
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

/// Seeds `start..start+count` on every core, each in its own process.
fn many(args: &Args, count: u64) -> Result<ExitCode> {
    let jobs = args
        .jobs
        .unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
        .max(1);
    let exe = std::env::current_exe()?;
    let seeds: Vec<u64> = (args.start..args.start + count).collect();
    let total = seeds.len();
    let started = wall_now();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    let totals = Mutex::new(Stats::default());
    let report =
        |seed: u64, result: Result<seed_process::Outcome, seed_process::SeedProcessError>| {
            let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
            let mut failures = failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match result {
                Ok(outcome) => {
                    *totals
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) += &outcome.stats;
                    if !outcome.passed {
                        failures.push(seed);
                        eprint!("\n{}", outcome.report);
                    }
                }
                Err(err) => {
                    failures.push(seed);
                    eprintln!("\nseed {seed}: could not run: {err}");
                }
            }
            let minutes = started.elapsed().as_secs_f64() / 60.0;
            eprint!(
                "\r{finished}/{total} seeds done, {:.1} seeds/min, {} failed   ",
                finished as f64 / minutes.max(1e-9),
                failures.len()
            );
        };
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                while let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::Relaxed)) {
                    report(seed, seed_process::run(&exe, &args.child(seed)));
                }
            });
        }
    });
    let wall = started.elapsed();
    let totals = totals
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let simulated = totals.simulated;
    let mut failures = failed
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    failures.sort_unstable();
    eprintln!();
    println!(
        "{total} seeds in {:.1} s wall on {jobs} process(es) at a time: {:.2} simulated s per wall s, {:.1} scenarios per wall minute",
        wall.as_secs_f64(),
        simulated.as_secs_f64() / wall.as_secs_f64().max(1e-9),
        total as f64 / (wall.as_secs_f64() / 60.0).max(1e-9),
    );
    println!(
        "{} calls, {} ended with the edge's result, {} commands run, {} replica starts, {} reruns allowed by invariant 2",
        totals.calls, totals.results, totals.runs, totals.starts, totals.reruns_allowed
    );
    if failures.is_empty() {
        println!("every seed passed");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("failing seeds: {failures:?}");
        Ok(ExitCode::FAILURE)
    }
}

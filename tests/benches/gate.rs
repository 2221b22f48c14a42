//! Targets that gate: each bench harness records its figures here, and a
//! missed target, a failed check or a figure that could not be read makes
//! the process exit non-zero. Every verdict is printed as one tab-separated
//! `GATE` line (bench, name, figure, target, verdict) that `cluster/bench`
//! collects into its summary table.
//!
//! `--target NAME=VALUE` replaces a target for one run (to prove a gate
//! fails, give an impossible one).

// Each harness includes this file and uses a part of it.
#![allow(dead_code)]

use std::process::Command;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Verdict {
    name: String,
    figure: String,
    target: String,
    /// `None` for a figure printed without a target.
    pass: Option<bool>,
}

/// The verdicts of one harness run.
pub struct Gates {
    bench: &'static str,
    overrides: Vec<(String, f64)>,
    verdicts: Vec<Verdict>,
}

impl Gates {
    /// Gates for `bench`, with the `--target NAME=VALUE` overrides of the
    /// command line.
    pub fn from_args(bench: &'static str) -> Result<Self, BoxError> {
        let args: Vec<String> = std::env::args().collect();
        let mut overrides = Vec::new();
        for pair in args.windows(2).filter(|pair| pair[0] == "--target") {
            let (name, value) = pair[1]
                .split_once('=')
                .ok_or_else(|| format!("--target wants NAME=VALUE, got {:?}", pair[1]))?;
            let value: f64 = value
                .parse()
                .map_err(|_| format!("--target {name}: {value:?} is not a number"))?;
            overrides.push((name.to_owned(), value));
        }
        Ok(Self {
            bench,
            overrides,
            verdicts: Vec::new(),
        })
    }

    fn target(&self, name: &str, default: f64) -> (f64, &'static str) {
        match self.overrides.iter().rev().find(|(n, _)| n == name) {
            Some((_, value)) => (*value, " (overridden)"),
            None => (default, ""),
        }
    }

    /// `figure` must be at most `target` (a NaN or infinite figure fails);
    /// `about` says what was measured, and on which store.
    pub fn at_most(
        &mut self,
        name: &str,
        about: &str,
        figure: f64,
        target: f64,
        unit: &str,
    ) -> bool {
        let (target, note) = self.target(name, target);
        let pass = figure.is_finite() && figure <= target;
        self.push(
            &format!("{name} ({about})"),
            format!("{figure:.3} {unit}"),
            format!("≤ {target} {unit}{note}"),
            Some(pass),
        )
    }

    /// `figure` must be at least `target` (a NaN or infinite figure fails);
    /// `about` says what was measured, and on which store.
    pub fn at_least(
        &mut self,
        name: &str,
        about: &str,
        figure: f64,
        target: f64,
        unit: &str,
    ) -> bool {
        let (target, note) = self.target(name, target);
        let pass = figure.is_finite() && figure >= target;
        self.push(
            &format!("{name} ({about})"),
            format!("{figure:.3} {unit}"),
            format!("≥ {target} {unit}{note}"),
            Some(pass),
        )
    }

    /// A correctness check: `pass`, described by `figure` and `wanted`.
    pub fn check(&mut self, name: &str, pass: bool, figure: String, wanted: &str) -> bool {
        self.push(name, figure, wanted.to_owned(), Some(pass))
    }

    /// A figure printed without a target.
    pub fn info(&mut self, name: &str, figure: String) {
        self.push(name, figure, "no target".to_owned(), None);
    }

    fn push(&mut self, name: &str, figure: String, target: String, pass: Option<bool>) -> bool {
        self.verdicts.push(Verdict {
            name: name.to_owned(),
            figure,
            target,
            pass,
        });
        pass.unwrap_or(true)
    }

    /// Prints every verdict; an error when any failed or none was gated.
    pub fn finish(self) -> Result<(), BoxError> {
        println!();
        for v in &self.verdicts {
            let verdict = match v.pass {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "INFO",
            };
            println!(
                "GATE\t{}\t{}\t{}\t{}\t{verdict}",
                self.bench, v.name, v.figure, v.target
            );
        }
        let failed: Vec<&str> = self
            .verdicts
            .iter()
            .filter(|v| v.pass == Some(false))
            .map(|v| v.name.as_str())
            .collect();
        if !failed.is_empty() {
            return Err(format!("{}: missed {}", self.bench, failed.join(", ")).into());
        }
        if !self.verdicts.iter().any(|v| v.pass.is_some()) {
            return Err(format!("{}: nothing was gated", self.bench).into());
        }
        Ok(())
    }
}

/// The median of `values`: the mean of the middle two for an even count;
/// `None` when empty or when any value is not finite.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// Clock ticks per second of /proc's CPU times, from `getconf CLK_TCK`.
pub fn clock_ticks_per_second() -> Result<u64, BoxError> {
    let output = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .map_err(|e| format!("cannot run `getconf CLK_TCK`: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    match text.trim().parse::<u64>() {
        Ok(ticks) if output.status.success() && ticks > 0 => Ok(ticks),
        _ => Err(format!(
            "`getconf CLK_TCK` gave {:?} ({}); cannot convert /proc CPU ticks",
            text.trim(),
            output.status
        )
        .into()),
    }
}

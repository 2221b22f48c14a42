//! Percentiles, bounded load loops and the printed figures.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::BoxError;

/// Round-trip times of one system, sorted on demand.
#[derive(Default)]
pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn push(&mut self, sample: Duration) {
        self.0.push(sample);
    }

    /// The `p`th percentile (nearest rank).
    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    pub fn min(&self) -> Duration {
        self.0.iter().copied().min().unwrap_or_default()
    }

    pub fn max(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Microseconds, whole.
pub fn us(duration: Duration) -> String {
    format!("{} µs", duration.as_micros())
}

/// Milliseconds, one decimal.
pub fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

/// `a / b` as a float.
pub fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// The scenario header with the command that reproduces it.
pub fn header(scenario: &str, flags: &str, what: &str) {
    println!("\n== {scenario}: {what}");
    println!("   cargo bench --bench edges -- {scenario}{flags}");
}

/// Completed calls in a window.
pub struct Rate {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub first_error: Option<String>,
}

impl Rate {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Adds another window.
    pub fn add(&mut self, other: Rate) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.elapsed += other.elapsed;
        self.first_error = self.first_error.take().or(other.first_error);
    }
}

/// `concurrency` workers each calling `call(worker, n)` back to back until
/// `duration` passes or `cap` calls were started.
pub async fn saturate<F, Fut>(concurrency: usize, duration: Duration, cap: u64, call: F) -> Rate
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let call = Arc::new(call);
    let started_calls = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = JoinSet::new();
    for worker in 0..concurrency {
        let (call, started_calls) = (Arc::clone(&call), Arc::clone(&started_calls));
        workers.spawn(async move {
            let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
            while Instant::now() < deadline {
                let n = started_calls.fetch_add(1, Ordering::Relaxed);
                if n >= cap {
                    break;
                }
                match call(worker, n).await {
                    Ok(()) => ok += 1,
                    Err(err) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| err.to_string());
                    }
                }
            }
            (ok, errors, first_error)
        });
    }
    let mut rate = Rate {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        first_error: None,
    };
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok((ok, errors, first_error)) => {
                rate.ok += ok;
                rate.errors += errors;
                rate.first_error = rate.first_error.take().or(first_error);
            }
            Err(err) => {
                rate.errors += 1;
                rate.first_error.get_or_insert_with(|| err.to_string());
            }
        }
    }
    rate.elapsed = started.elapsed();
    rate
}

//! Rate-limits the sweep of expired challenges: a sweep is a table-wide
//! DELETE, so it runs at most once per interval per store handle instead of
//! on every ChallengeNode. Expired rows are still never returned or revived:
//! a read that finds one deletes it.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

/// Shortest time between two sweeps.
const SWEEP_EVERY_MS: i64 = 30_000;

/// When the last sweep ran (unix ms; `i64::MIN` before the first).
#[derive(Debug)]
pub struct SweepClock(AtomicI64);

impl Default for SweepClock {
    fn default() -> Self {
        Self(AtomicI64::new(i64::MIN))
    }
}

impl SweepClock {
    /// Whether a sweep is due at `now`; claims it if so (one caller wins).
    pub fn claim(&self, now: DateTime<Utc>) -> bool {
        let now_ms = now.timestamp_millis();
        let last = self.0.load(Ordering::Relaxed);
        let due =
            last == i64::MIN || now_ms.saturating_sub(last) >= SWEEP_EVERY_MS || now_ms < last;
        due && self
            .0
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn sweeps_once_per_interval() {
        let clock = SweepClock::default();
        let t = |s: i64| {
            Utc.timestamp_opt(1_000_000 + s, 0)
                .single()
                .unwrap_or_default()
        };
        assert!(clock.claim(t(0)));
        assert!(!clock.claim(t(10)));
        assert!(clock.claim(t(30)));
        assert!(clock.claim(t(5)), "a clock that went back sweeps again");
    }
}

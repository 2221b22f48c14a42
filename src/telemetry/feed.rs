//! Metrics of the change feed: how far this replica's follower is behind
//! (in seconds and in changes), resyncs after falling behind the retention,
//! failed polls, and the shared-mode checks of the AEGIS rows.

use super::metrics::Metrics;

/// Gauge: age of the oldest change not yet applied here (0 when caught up).
pub const FEED_LAG_SECONDS: &str = "aegis_relay_change_feed_lag_seconds";
/// Gauge: changes committed but not yet applied here.
pub const FEED_LAG_SEQS: &str = "aegis_relay_change_feed_lag_seqs";
/// Counter of changes applied from the feed.
pub const FEED_APPLIED: &str = "aegis_relay_change_feed_applied_total";
/// Counter of resyncs (changes missed past the retention, or a first poll).
pub const FEED_RESYNCS: &str = "aegis_relay_change_feed_resyncs_total";
/// Counter of feed reads (polls, resyncs, shared checks) that failed.
pub const FEED_FAILURES: &str = "aegis_relay_change_feed_failures_total";
/// Counter of shared-mode checks of the held nodes' rows.
pub const FEED_SHARED_CHECKS: &str = "aegis_relay_change_feed_shared_checks_total";

impl Metrics {
    /// Sets the follower's lag.
    pub fn feed_lag(&self, seconds: f64, seqs: i64) {
        self.record(|| {
            metrics::gauge!(FEED_LAG_SECONDS).set(seconds.max(0.0));
            metrics::gauge!(FEED_LAG_SEQS).set(seqs.max(0) as f64);
        });
    }

    /// Counts changes applied from the feed.
    pub fn feed_applied(&self, count: usize) {
        self.record(|| metrics::counter!(FEED_APPLIED).increment(count as u64));
    }

    /// Counts a resync.
    pub fn feed_resync(&self) {
        self.record(|| metrics::counter!(FEED_RESYNCS).increment(1));
    }

    /// Counts a failed feed read (`what`: poll, resync, purge, shared_check).
    pub fn feed_failure(&self, what: &'static str) {
        self.record(|| metrics::counter!(FEED_FAILURES, "what" => what).increment(1));
    }

    /// Counts a shared-mode check.
    pub fn feed_shared_check(&self) {
        self.record(|| metrics::counter!(FEED_SHARED_CHECKS).increment(1));
    }
}

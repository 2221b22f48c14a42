//! Metrics of the limits on peers: connections held and refused, calls
//! refused by a rate limit, and calls that ran out of time.

use super::metrics::Metrics;

/// Gauge of connections held across both ports.
pub const CONNECTIONS_OPEN: &str = "aegis_relay_connections_open";
/// Counter of connections closed at accept or before their first headers,
/// by reason (`max_connections`, `max_connections_per_source`,
/// `header_read_timeout`).
pub const CONNECTIONS_REFUSED: &str = "aegis_relay_connections_refused_total";
/// Counter of calls refused by a rate limit, by RPC.
pub const RATE_LIMITED: &str = "aegis_relay_rate_limited_total";

impl Metrics {
    /// Sets the number of connections held.
    pub fn connections_open(&self, count: usize) {
        self.record(|| metrics::gauge!(CONNECTIONS_OPEN).set(count as f64));
    }

    /// Counts a connection the relay closed for `reason`.
    pub fn connection_refused(&self, reason: &'static str) {
        self.record(|| metrics::counter!(CONNECTIONS_REFUSED, "reason" => reason).increment(1));
    }

    /// Counts a call refused by the rate limit of `rpc`.
    pub fn rate_limited(&self, rpc: &'static str) {
        self.record(|| metrics::counter!(RATE_LIMITED, "rpc" => rpc).increment(1));
    }
}

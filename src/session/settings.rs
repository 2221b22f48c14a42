//! Timing and limits of edge sessions, from `relay.edges` and
//! `relay.heartbeat_timeout`.

use std::time::Duration;

use crate::outcomes::{OutcomeLimits, MAX_BYTES};

/// Timing and limits of edge sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// Allowed distance between an event's timestamp and the relay's clock.
    pub clock_skew: Duration,
    /// An edge silent this long is evicted.
    pub heartbeat_timeout: Duration,
    /// How long a new stream may take to send its Hello.
    pub hello_timeout: Duration,
    /// How long completed command outcomes are kept for retries.
    pub idempotency_retention: Duration,
    /// Most completed outcomes kept.
    pub idempotency_capacity: usize,
    /// Most output bytes of completed outcomes kept per tenant.
    pub idempotency_bytes_per_tenant: usize,
    /// How long past its deadline a call waits for an edge that still
    /// heartbeats but never answers.
    pub call_grace: Duration,
    /// Commands queued per session.
    pub command_queue: usize,
    /// How often heartbeats and capabilities are written to the store.
    pub store_flush_interval: Duration,
}

impl SessionSettings {
    /// The bounds of kept command outcomes (the ingress's ledger and the
    /// owner's record alike).
    pub fn outcome_limits(&self) -> OutcomeLimits {
        OutcomeLimits {
            retention: self.idempotency_retention,
            max_entries: self.idempotency_capacity,
            bytes_per_tenant: self.idempotency_bytes_per_tenant,
            max_bytes: MAX_BYTES,
        }
    }
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            clock_skew: Duration::from_secs(300),
            heartbeat_timeout: Duration::from_secs(90),
            hello_timeout: Duration::from_secs(10),
            idempotency_retention: Duration::from_secs(600),
            idempotency_capacity: 100_000,
            idempotency_bytes_per_tenant: 16 * 1024 * 1024,
            call_grace: Duration::from_secs(5),
            command_queue: 16,
            store_flush_interval: Duration::from_secs(1),
        }
    }
}

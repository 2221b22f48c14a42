//! Metrics of fleet runs' SSE readers: bytes buffered for them (bounded by
//! `relay.fleet_runs.sse_buffer_bytes` each), progress dropped for a reader
//! whose buffer was full, and readers given up after a stall.

use metrics::{Counter, Gauge};

use super::metrics::Metrics;

/// Gauge of serialized fleet events buffered for SSE readers, in bytes.
pub const FLEET_SSE_BUFFERED: &str = "aegis_relay_fleet_sse_buffered_bytes";
/// Counter of progress chunks not sent to a reader whose buffer was full.
pub const FLEET_SSE_PROGRESS_DROPPED: &str = "aegis_relay_fleet_sse_progress_dropped_total";
/// Counter of SSE readers given up (no room for an event within the wait).
pub const FLEET_SSE_GIVEN_UP: &str = "aegis_relay_fleet_sse_readers_given_up_total";

/// Handles an SSE buffer updates without a registry lookup per event.
#[derive(Clone)]
pub struct SseMeters {
    buffered: Gauge,
    dropped: Counter,
    given_up: Counter,
}

impl Default for SseMeters {
    /// Handles that record nothing (unit tests).
    fn default() -> Self {
        Self {
            buffered: Gauge::noop(),
            dropped: Counter::noop(),
            given_up: Counter::noop(),
        }
    }
}

impl std::fmt::Debug for SseMeters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseMeters").finish_non_exhaustive()
    }
}

impl SseMeters {
    /// `bytes` more are buffered.
    pub fn held(&self, bytes: u32) {
        self.buffered.increment(f64::from(bytes));
    }

    /// `bytes` left the buffer (read, or dropped with it).
    pub fn released(&self, bytes: u32) {
        self.buffered.decrement(f64::from(bytes));
    }

    /// A progress chunk found the buffer full.
    pub fn dropped(&self) {
        self.dropped.increment(1);
    }

    /// A reader left no room for an event within the wait.
    pub fn given_up(&self) {
        self.given_up.increment(1);
    }
}

impl Metrics {
    /// Handles for one SSE reader's buffer.
    pub fn fleet_sse(&self) -> SseMeters {
        self.record(|| SseMeters {
            buffered: metrics::gauge!(FLEET_SSE_BUFFERED),
            dropped: metrics::counter!(FLEET_SSE_PROGRESS_DROPPED),
            given_up: metrics::counter!(FLEET_SSE_GIVEN_UP),
        })
    }
}

//! Readiness of one replica: a set of named conditions, all of which must
//! hold before the replica takes new work.
//!
//! Liveness is separate and simpler: the process answers. Readiness is what a
//! load balancer should route by; it turns false while starting, while a
//! dependency (the store, in a later issue) is unreachable, and for good once
//! the replica drains. gRPC health and `/readyz` both read it from here.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;

/// Condition set while listeners are being bound.
pub const STARTING: &str = "starting";
/// Condition set once shutdown begins; never cleared.
pub const DRAINING: &str = "draining";

/// A snapshot of readiness.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadyState {
    /// Conditions that do not hold, with the reason.
    pub failing: BTreeMap<&'static str, String>,
}

impl ReadyState {
    /// Whether every condition holds.
    pub fn is_ready(&self) -> bool {
        self.failing.is_empty()
    }
}

/// Shared, observable readiness. Cloning shares the same state.
#[derive(Debug, Clone)]
pub struct Readiness {
    state: Arc<watch::Sender<ReadyState>>,
}

impl Readiness {
    /// Starts not ready, with [`STARTING`] failing.
    pub fn new() -> Self {
        let mut initial = ReadyState::default();
        initial
            .failing
            .insert(STARTING, "listeners are being bound".to_owned());
        Self {
            state: Arc::new(watch::Sender::new(initial)),
        }
    }

    /// Marks a condition as holding.
    pub fn set_ok(&self, condition: &'static str) {
        self.state
            .send_if_modified(|state| state.failing.remove(condition).is_some());
    }

    /// Marks a condition as failing with a reason an operator can act on.
    pub fn set_failing(&self, condition: &'static str, reason: impl Into<String>) {
        let reason = reason.into();
        self.state.send_if_modified(|state| {
            let changed = state.failing.get(condition) != Some(&reason);
            state.failing.insert(condition, reason);
            changed
        });
    }

    /// The current state.
    pub fn snapshot(&self) -> ReadyState {
        self.state.borrow().clone()
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<ReadyState> {
        self.state.subscribe()
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_no_condition_fails() {
        let readiness = Readiness::new();
        assert!(!readiness.snapshot().is_ready());
        readiness.set_ok(STARTING);
        assert!(readiness.snapshot().is_ready());
        readiness.set_failing(DRAINING, "shutting down");
        let state = readiness.snapshot();
        assert!(!state.is_ready());
        assert_eq!(
            state.failing.get(DRAINING).map(String::as_str),
            Some("shutting down")
        );
    }

    #[test]
    fn subscribers_see_changes() {
        let readiness = Readiness::new();
        let mut rx = readiness.subscribe();
        rx.mark_unchanged();
        readiness.set_ok(STARTING);
        assert!(rx.has_changed().unwrap_or(false));
    }
}

//! The dispatch policy of one fleet call (protocol.md §8.4): scheduling mode,
//! failure policy and per-target deadline, and the stop rule the dispatcher
//! consults after each target (or each rolling chunk).
//!
//! Invariant: a `FleetPolicy` built here never holds a zero batch, zero
//! stop-after limit, zero concurrency or a deadline outside 1..=3600 s.

use std::time::Duration;

use super::request::FleetRequestError;

/// Per-target deadline when the request names none.
pub const DEFAULT_DEADLINE_SECS: u64 = 60;

/// Largest accepted per-target deadline.
pub const MAX_DEADLINE_SECS: u64 = 3600;

/// How a fleet call spreads over its targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FleetMode {
    /// One target at a time.
    #[default]
    Sequential,
    /// Every target at once, bounded by `max_concurrency`.
    Parallel,
    /// Chunks of `batch` targets, each chunk in parallel.
    Rolling {
        /// Targets per chunk, at least 1.
        batch: usize,
    },
}

/// When a fleet call stops dispatching to further targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Stop at the first target that is not ok.
    #[default]
    FailFast,
    /// Never stop early.
    ContinueOnError,
    /// Stop once this many targets failed or timed out (at least 1).
    StopAfter(usize),
}

/// Validated dispatch policy of one fleet call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetPolicy {
    /// How targets are scheduled.
    pub mode: FleetMode,
    /// Parallel width (ignored by Rolling); all targets when `None`.
    pub max_concurrency: Option<usize>,
    /// When to stop early.
    pub failure_policy: FailurePolicy,
    /// Fewest resolved targets for the run to start.
    pub require_min_targets: Option<usize>,
    /// Deadline of each per-target call.
    pub per_target_deadline: Duration,
}

impl FleetMode {
    /// Reads a request's `mode` word: `parallel`, `rolling`, anything else
    /// (or nothing) sequential; `batch` matters only for rolling.
    pub fn from_word(word: Option<&str>, batch: usize) -> Result<Self, FleetRequestError> {
        match normalized_word(word).as_str() {
            "parallel" => Ok(Self::Parallel),
            "rolling" if batch == 0 => Err(FleetRequestError::ZeroBatch),
            "rolling" => Ok(Self::Rolling { batch }),
            _ => Ok(Self::Sequential),
        }
    }
}

impl FailurePolicy {
    /// Reads a request's `failure_policy` word: `continue` or
    /// `continue-on-error`, `stop-after`, anything else (or nothing)
    /// fail-fast; `_` and `-` are interchangeable and case is ignored.
    pub fn from_word(word: Option<&str>, stop_after: usize) -> Result<Self, FleetRequestError> {
        match normalized_word(word).as_str() {
            "continue" | "continue-on-error" => Ok(Self::ContinueOnError),
            "stop-after" if stop_after == 0 => Err(FleetRequestError::ZeroStopAfter),
            "stop-after" => Ok(Self::StopAfter(stop_after)),
            _ => Ok(Self::FailFast),
        }
    }

    /// Tells whether to stop dispatching, given the failures so far (errors
    /// plus timeouts) and whether the latest target was ok.
    pub fn should_stop(&self, failed: usize, last_ok: bool) -> bool {
        match *self {
            Self::FailFast => failed > 0 || !last_ok,
            Self::ContinueOnError => false,
            Self::StopAfter(limit) => failed >= limit,
        }
    }
}

impl FleetPolicy {
    /// The policy as stored with a run and shown in its view, in the
    /// request's words.
    pub fn describe(&self) -> serde_json::Value {
        let (mode, batch) = match self.mode {
            FleetMode::Sequential => ("sequential", None),
            FleetMode::Parallel => ("parallel", None),
            FleetMode::Rolling { batch } => ("rolling", Some(batch)),
        };
        let (failure_policy, stop_after) = match self.failure_policy {
            FailurePolicy::FailFast => ("fail-fast", None),
            FailurePolicy::ContinueOnError => ("continue-on-error", None),
            FailurePolicy::StopAfter(limit) => ("stop-after", Some(limit)),
        };
        serde_json::json!({
            "mode": mode,
            "batch": batch,
            "max_concurrency": self.max_concurrency,
            "failure_policy": failure_policy,
            "stop_after": stop_after,
            "require_min_targets": self.require_min_targets,
            "deadline_secs": self.per_target_deadline.as_secs(),
        })
    }
}

impl Default for FleetPolicy {
    fn default() -> Self {
        Self {
            mode: FleetMode::default(),
            max_concurrency: None,
            failure_policy: FailurePolicy::default(),
            require_min_targets: None,
            per_target_deadline: Duration::from_secs(DEFAULT_DEADLINE_SECS),
        }
    }
}

/// Lower-cases a policy word and spells `_` as `-`, so `Stop_After` reads as `stop-after`.
fn normalized_word(word: Option<&str>) -> String {
    word.unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
        .replace('_', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sequential_fail_fast_sixty_seconds() {
        let policy = FleetPolicy::default();
        assert_eq!(policy.mode, FleetMode::Sequential);
        assert_eq!(policy.failure_policy, FailurePolicy::FailFast);
        assert_eq!(policy.max_concurrency, None);
        assert_eq!(policy.require_min_targets, None);
        assert_eq!(policy.per_target_deadline, Duration::from_secs(60));
    }

    #[test]
    fn mode_words() {
        let cases = [
            (Some("parallel"), Ok(FleetMode::Parallel)),
            (Some(" Parallel "), Ok(FleetMode::Parallel)),
            (Some("rolling"), Ok(FleetMode::Rolling { batch: 3 })),
            (Some("sequential"), Ok(FleetMode::Sequential)),
            (Some("bogus"), Ok(FleetMode::Sequential)),
            (Some(""), Ok(FleetMode::Sequential)),
            (None, Ok(FleetMode::Sequential)),
        ];
        for (word, expected) in cases {
            assert_eq!(FleetMode::from_word(word, 3), expected, "{word:?}");
        }
        assert_eq!(
            FleetMode::from_word(Some("rolling"), 0),
            Err(FleetRequestError::ZeroBatch)
        );
        assert_eq!(
            FleetMode::from_word(Some("parallel"), 0),
            Ok(FleetMode::Parallel)
        );
    }

    #[test]
    fn failure_policy_words() {
        let cases = [
            (Some("continue"), FailurePolicy::ContinueOnError),
            (Some("continue-on-error"), FailurePolicy::ContinueOnError),
            (Some("continue_on_error"), FailurePolicy::ContinueOnError),
            (Some("stop-after"), FailurePolicy::StopAfter(2)),
            (Some("stop_after"), FailurePolicy::StopAfter(2)),
            (Some("Stop-After"), FailurePolicy::StopAfter(2)),
            (Some("fail-fast"), FailurePolicy::FailFast),
            (Some("fail_fast"), FailurePolicy::FailFast),
            (Some("whatever"), FailurePolicy::FailFast),
            (None, FailurePolicy::FailFast),
        ];
        for (word, expected) in cases {
            assert_eq!(FailurePolicy::from_word(word, 2), Ok(expected), "{word:?}");
        }
        assert_eq!(
            FailurePolicy::from_word(Some("stop-after"), 0),
            Err(FleetRequestError::ZeroStopAfter)
        );
        assert_eq!(
            FailurePolicy::from_word(Some("continue"), 0),
            Ok(FailurePolicy::ContinueOnError)
        );
    }

    #[test]
    fn should_stop_follows_the_accounting() {
        let cases = [
            (FailurePolicy::FailFast, 0, true, false),
            (FailurePolicy::FailFast, 1, false, true),
            (FailurePolicy::FailFast, 1, true, true),
            (FailurePolicy::FailFast, 0, false, true),
            (FailurePolicy::ContinueOnError, 0, true, false),
            (FailurePolicy::ContinueOnError, 9, false, false),
            (FailurePolicy::StopAfter(2), 0, true, false),
            (FailurePolicy::StopAfter(2), 1, false, false),
            (FailurePolicy::StopAfter(2), 2, false, true),
            (FailurePolicy::StopAfter(2), 3, true, true),
        ];
        for (policy, failed, last_ok, expected) in cases {
            assert_eq!(
                policy.should_stop(failed, last_ok),
                expected,
                "{policy:?} failed={failed} last_ok={last_ok}"
            );
        }
    }
}

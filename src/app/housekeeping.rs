//! Timers that keep per-source and per-challenge state bounded, off the
//! callers' paths.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::RelayError;
use crate::enroll::RpcRateLimits;
use crate::runtime::Clock;
use crate::store::Store;

/// How often expired AttestNode challenges are deleted.
const CHALLENGE_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Timers that keep per-source and per-challenge state bounded: rate-limit
/// buckets are pruned every [`crate::enroll::PRUNE_INTERVAL`] and expired
/// challenges swept every [`CHALLENGE_SWEEP_INTERVAL`], so neither happens
/// on a caller's path.
pub(super) async fn housekeeping(
    limits: Arc<RpcRateLimits>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) -> (&'static str, Result<(), RelayError>) {
    let mut prune = tokio::time::interval(crate::enroll::PRUNE_INTERVAL);
    let mut sweep = tokio::time::interval(CHALLENGE_SWEEP_INTERVAL);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return ("housekeeping", Ok(())),
            now = prune.tick() => {
                limits.prune(now);
            }
            _ = sweep.tick() => {
                let now = chrono::DateTime::from(clock.now());
                match store.sweep_challenges(now).await {
                    Ok(0) => {}
                    Ok(swept) => tracing::debug!(swept, "expired challenges deleted"),
                    Err(err) => tracing::warn!(error = %err, "sweeping expired challenges failed"),
                }
            }
        }
    }
}

//! Keeps the `store` readiness condition current: pings the store on a fixed
//! interval with a timeout, so readiness turns NOT_SERVING while the database
//! is unreachable and SERVING again once it answers.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::readiness::Readiness;
use crate::store::Store;

/// Readiness condition owned by this task.
pub const STORE: &str = "store";

/// How often and how patiently the store is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreCheck {
    /// Time between checks.
    pub interval: Duration,
    /// Longest a check may take before it counts as a failure.
    pub timeout: Duration,
}

impl Default for StoreCheck {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(3),
        }
    }
}

/// Checks until `stop` fires.
pub async fn watch_store(
    store: Arc<dyn Store>,
    check: StoreCheck,
    readiness: Readiness,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let outcome = tokio::time::timeout(check.timeout, store.ping()).await;
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(err.to_string()),
            Err(_) => Some(format!("no answer within {:?}", check.timeout)),
        };
        match failure {
            None => {
                if !healthy {
                    tracing::info!(backend = store.backend(), "store reachable again");
                }
                healthy = true;
                readiness.set_ok(STORE);
            }
            Some(reason) => {
                if healthy {
                    tracing::warn!(backend = store.backend(), %reason, "store unreachable; readiness off");
                }
                healthy = false;
                readiness.set_failing(
                    STORE,
                    format!("{} store unreachable: {reason}", store.backend()),
                );
            }
        }
    }
}

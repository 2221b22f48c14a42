//! Every replica follows the store's change feed, so that a revoke, key
//! rotation, tag change or re-enrollment written through any replica
//! reaches the sessions this one holds (architecture.md §6, invariants 5
//! and 7). The writing replica applies its own change at once; the feed is
//! how the others learn it, within one poll interval.
//!
//! One task per replica, owned by `RunningRelay`: it polls the feed (one
//! query per poll), applies each change through the owner, resyncs when it
//! fell behind the retention, purges old changes now and then, and, in
//! shared mode, checks that the AEGIS rows of the held nodes still exist
//! with the keys the sessions hold (the AEGIS controller bypasses the
//! feed).

mod follower;
mod shared;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use follower::Follower;

use crate::owner::Owner;
use crate::runtime::Clock;
use crate::store::Store;
use crate::telemetry::Metrics;

/// `relay.change_feed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedSettings {
    /// How often the feed is read.
    pub poll_interval: Duration,
    /// How long changes are kept; a replica further behind resyncs.
    pub retention: Duration,
    /// How often, in shared mode, the held nodes' AEGIS rows are checked.
    pub shared_check_interval: Duration,
}

impl Default for FeedSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(3600),
            shared_check_interval: Duration::from_secs(5),
        }
    }
}

impl FeedSettings {
    /// How often this replica purges changes older than the retention: a
    /// tenth of it, at least every poll and at most every ten minutes.
    pub fn purge_interval(&self) -> Duration {
        (self.retention / 10)
            .min(Duration::from_secs(600))
            .max(self.poll_interval)
    }
}

/// What the feed task works with.
pub struct FeedParts {
    /// The store holding the feed.
    pub store: Arc<dyn Store>,
    /// The sessions changes are applied to.
    pub owner: Arc<Owner>,
    /// Wall clock (change times, lag, purge cutoff).
    pub clock: Arc<dyn Clock>,
    /// This replica's metrics.
    pub metrics: Metrics,
}

/// Follows the feed (and, in shared mode, checks the AEGIS rows) until
/// `stop`. `follower` is made by [`Follower::start`] before the replica
/// serves, so it knows where the feed stood.
pub async fn run(
    settings: FeedSettings,
    follower: Follower,
    parts: Arc<FeedParts>,
    stop: CancellationToken,
) {
    let shared = parts.store.shared_with_aegis().then(|| {
        shared::run(
            settings.shared_check_interval,
            Arc::clone(&parts),
            stop.clone(),
        )
    });
    let follow = follower::run(follower, settings, parts, stop);
    match shared {
        Some(shared) => {
            tokio::join!(follow, shared);
        }
        None => follow.await,
    }
}

#[cfg(test)]
mod tests;

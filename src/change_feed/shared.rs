//! Shared mode: the AEGIS controller writes `edge_daemons` directly (its
//! revoke hard-deletes the row, its re-enrollment overwrites the key) and
//! writes no change to the feed. Every interval, one query reads the keys of
//! every node held here; a session whose row is gone ends as a revoke does,
//! one whose key changed reloads it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::FeedParts;

/// Checks the held nodes' rows every `interval` until `stop`.
pub(super) async fn run(interval: Duration, parts: Arc<FeedParts>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => check(&parts).await,
        }
    }
}

/// One check of every session held now.
pub async fn check(parts: &FeedParts) {
    let asked = parts.owner.held();
    if asked.is_empty() {
        return;
    }
    let ids: Vec<Uuid> = asked.iter().map(|key| key.node_id).collect();
    match parts.store.edge_keys(&ids).await {
        Ok(keys) => {
            parts.metrics.feed_shared_check();
            parts.owner.check_keys(&asked, &keys).await;
        }
        Err(err) => {
            parts.metrics.feed_failure("shared_check");
            tracing::warn!(error = %err, "cannot check the held edges' rows (shared mode)");
        }
    }
}

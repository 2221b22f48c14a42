//! Edge facts (heartbeats, capabilities, statuses) are written by the
//! ingress that holds the edge's stream, so they never cross the hop to the
//! owner and survive owner moves. They reach the store in batches: each
//! event only updates an in-memory entry per edge, and a flusher writes all
//! of them with one statement per interval ([`Store::apply_edge_updates`]).
//! A lost flush is retried with the next.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::{EdgeCapabilities, EdgeStatus, EdgeUpdate, Store};
use crate::telemetry::Metrics;

/// Pending session writes, one entry per edge.
#[derive(Default)]
pub struct UpdateBuffer {
    pending: Mutex<HashMap<Uuid, EdgeUpdate>>,
}

impl std::fmt::Debug for UpdateBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateBuffer").finish_non_exhaustive()
    }
}

/// An update of `node_id` that changes nothing yet.
fn nothing_for(node_id: Uuid) -> EdgeUpdate {
    EdgeUpdate {
        node_id,
        last_heartbeat_at: None,
        capabilities: None,
        status: None,
    }
}

impl UpdateBuffer {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, EdgeUpdate>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn entry(&self, node_id: Uuid, apply: impl FnOnce(&mut EdgeUpdate)) {
        let mut pending = self.lock();
        apply(
            pending
                .entry(node_id)
                .or_insert_with(|| nothing_for(node_id)),
        );
    }

    /// The edge was heard from at `at`: it is active.
    pub fn heartbeat(&self, node_id: Uuid, at: DateTime<Utc>) {
        self.entry(node_id, |update| {
            update.last_heartbeat_at = Some(at);
            update.status = Some(EdgeStatus::Active);
        });
    }

    /// The edge reported capabilities.
    pub fn capabilities(&self, node_id: Uuid, capabilities: EdgeCapabilities) {
        self.entry(node_id, |update| update.capabilities = Some(capabilities));
    }

    /// The edge's status changed.
    pub fn status(&self, node_id: Uuid, status: EdgeStatus) {
        self.entry(node_id, |update| update.status = Some(status));
    }

    fn take(&self) -> Vec<EdgeUpdate> {
        let mut pending = self.lock();
        let mut batch: Vec<EdgeUpdate> = pending.drain().map(|(_, update)| update).collect();
        batch.sort_by_key(|update| update.node_id);
        batch
    }

    /// Puts back a batch that failed; fields updated since win, the failed
    /// batch fills the others (a heartbeat arriving meanwhile must not drop
    /// the capabilities of the Hello before it).
    fn restore(&self, batch: Vec<EdgeUpdate>) {
        let mut pending = self.lock();
        for older in batch {
            let newer = pending
                .entry(older.node_id)
                .or_insert_with(|| nothing_for(older.node_id));
            newer.last_heartbeat_at = newer.last_heartbeat_at.or(older.last_heartbeat_at);
            newer.capabilities = newer.capabilities.take().or(older.capabilities);
            newer.status = newer.status.or(older.status);
        }
    }

    /// Writes everything pending in one statement; returns the rows written.
    pub async fn flush(&self, store: &dyn Store, metrics: &Metrics) -> usize {
        let batch = self.take();
        if batch.is_empty() {
            return 0;
        }
        let count = batch.len();
        match store.apply_edge_updates(&batch).await {
            Ok(_) => {
                metrics.edge_updates_flushed(count);
                count
            }
            Err(err) => {
                tracing::warn!(error = %err, edges = count, "cannot write edge heartbeats; retrying with the next flush");
                self.restore(batch);
                0
            }
        }
    }

    /// Flushes every `interval` until `stop`, then once more.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        metrics: Metrics,
        interval: Duration,
        stop: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = stop.cancelled() => break,
            }
            self.flush(store.as_ref(), &metrics).await;
        }
        self.flush(store.as_ref(), &metrics).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_batch_fills_what_newer_updates_left_empty() {
        let buffer = UpdateBuffer::default();
        let node = crate::runtime::test_id();
        let then = crate::runtime::utc_now(&crate::runtime::SystemClock);
        let reported = |os: &str| EdgeCapabilities {
            os: os.to_owned(),
            ..EdgeCapabilities::default()
        };
        buffer.heartbeat(node, then);
        buffer.status(node, EdgeStatus::Unhealthy);
        buffer.capabilities(node, reported("linux"));
        let failed = buffer.take();
        // Only new capabilities arrived while the write failed.
        buffer.capabilities(node, reported("freebsd"));
        buffer.restore(failed);
        let batch = buffer.take();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].last_heartbeat_at, Some(then));
        assert_eq!(batch[0].status, Some(EdgeStatus::Unhealthy));
        assert_eq!(batch[0].capabilities, Some(reported("freebsd")));
        // A newer heartbeat wins over the failed one.
        let failed = vec![batch[0].clone()];
        let now = then + chrono::Duration::seconds(1);
        buffer.heartbeat(node, now);
        buffer.restore(failed);
        let batch = buffer.take();
        assert_eq!(batch[0].last_heartbeat_at, Some(now));
        assert_eq!(batch[0].status, Some(EdgeStatus::Active));
        assert_eq!(batch[0].capabilities, Some(reported("freebsd")));
    }
}

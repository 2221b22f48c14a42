//! Edge facts (heartbeats, capabilities, statuses) are written by the
//! ingress that holds the edge's stream, so they never cross the hop to the
//! owner and survive owner moves. They reach the store in batches: each
//! event only updates an in-memory entry per edge, and a flusher writes all
//! of them with one statement per interval ([`Store::apply_edge_updates`]).
//! A lost flush is retried with the next.
//!
//! Only the stream holding a node writes its facts: the one with the newest
//! Hello this ingress accepted (the owner's rule too: an older Hello never
//! takes over). A superseded stream still reads events until its Close
//! arrives; what it reports meanwhile must not overwrite the newer
//! stream's capabilities, nor mark a live edge unhealthy.

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
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    pending: HashMap<Uuid, EdgeUpdate>,
    /// The stream allowed to write each connected node's facts.
    holders: HashMap<Uuid, FactsStream>,
}

/// One stream of a node, as the facts writer orders them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactsStream {
    /// The ingress's number for the stream (`SessionKey::connection`).
    pub connection: u64,
    /// Its Hello's signed timestamp (Unix ms).
    pub hello_ms: i64,
    /// Its Hello's stream id (a replayed Hello has the same).
    pub stream_id: Arc<str>,
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
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Makes `stream` the writer of `node_id`'s facts unless a stream with
    /// a newer Hello (or this Hello itself, replayed) holds them; whether
    /// it does now.
    pub fn hold(&self, node_id: Uuid, stream: &FactsStream) -> bool {
        let mut inner = self.lock();
        let takes_over = inner.holders.get(&node_id).is_none_or(|holder| {
            stream.hello_ms > holder.hello_ms
                || (stream.hello_ms == holder.hello_ms && stream.stream_id != holder.stream_id)
        });
        if takes_over {
            inner.holders.insert(node_id, stream.clone());
        }
        takes_over
    }

    /// The stream `connection` of `node_id` ended: it writes nothing more.
    pub fn release(&self, node_id: Uuid, connection: u64) {
        let mut inner = self.lock();
        if inner
            .holders
            .get(&node_id)
            .is_some_and(|holder| holder.connection == connection)
        {
            inner.holders.remove(&node_id);
        }
    }

    /// Applies `apply` to the node's pending update if stream `connection`
    /// holds the node.
    fn entry(&self, node_id: Uuid, connection: u64, apply: impl FnOnce(&mut EdgeUpdate)) {
        let mut inner = self.lock();
        if inner
            .holders
            .get(&node_id)
            .is_none_or(|holder| holder.connection != connection)
        {
            return;
        }
        apply(
            inner
                .pending
                .entry(node_id)
                .or_insert_with(|| nothing_for(node_id)),
        );
    }

    /// The edge was heard from at `at` on stream `connection`: it is active.
    pub fn heartbeat(&self, node_id: Uuid, connection: u64, at: DateTime<Utc>) {
        self.entry(node_id, connection, |update| {
            update.last_heartbeat_at = Some(at);
            update.status = Some(EdgeStatus::Active);
        });
    }

    /// The edge reported capabilities on stream `connection`.
    pub fn capabilities(&self, node_id: Uuid, connection: u64, capabilities: EdgeCapabilities) {
        self.entry(node_id, connection, |update| {
            update.capabilities = Some(capabilities);
        });
    }

    /// The edge's status changed, as stream `connection` saw it.
    pub fn status(&self, node_id: Uuid, connection: u64, status: EdgeStatus) {
        self.entry(node_id, connection, |update| update.status = Some(status));
    }

    fn take(&self) -> Vec<EdgeUpdate> {
        let mut inner = self.lock();
        let mut batch: Vec<EdgeUpdate> = inner.pending.drain().map(|(_, update)| update).collect();
        batch.sort_by_key(|update| update.node_id);
        batch
    }

    /// Puts back a batch that failed; fields updated since win, the failed
    /// batch fills the others (a heartbeat arriving meanwhile must not drop
    /// the capabilities of the Hello before it).
    fn restore(&self, batch: Vec<EdgeUpdate>) {
        let mut inner = self.lock();
        for older in batch {
            let newer = inner
                .pending
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

    fn stream(connection: u64, hello_ms: i64, stream_id: &str) -> FactsStream {
        FactsStream {
            connection,
            hello_ms,
            stream_id: stream_id.into(),
        }
    }

    fn reported(os: &str) -> EdgeCapabilities {
        EdgeCapabilities {
            os: os.to_owned(),
            ..EdgeCapabilities::default()
        }
    }

    #[test]
    fn only_the_stream_with_the_newest_hello_writes_a_nodes_facts() {
        let buffer = UpdateBuffer::default();
        let node = crate::runtime::test_id();
        let at = crate::runtime::utc_now(&crate::runtime::SystemClock);
        assert!(buffer.hold(node, &stream(1, 100, "old")));
        assert!(buffer.hold(node, &stream(2, 200, "new")));
        assert!(!buffer.hold(node, &stream(3, 150, "older")), "older Hello");
        assert!(!buffer.hold(node, &stream(4, 200, "new")), "replayed Hello");
        // The superseded stream reads on until its Close arrives.
        buffer.capabilities(node, 2, reported("linux"));
        buffer.capabilities(node, 1, reported("stale"));
        buffer.status(node, 1, EdgeStatus::Unhealthy);
        buffer.heartbeat(node, 3, at);
        let batch = buffer.take();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].capabilities, Some(reported("linux")));
        assert_eq!(batch[0].status, None);
        assert_eq!(batch[0].last_heartbeat_at, None);
        // The old stream's end leaves the holder alone; the holder's ends it.
        buffer.release(node, 1);
        buffer.heartbeat(node, 2, at);
        assert_eq!(buffer.take().len(), 1);
        buffer.release(node, 2);
        buffer.heartbeat(node, 2, at);
        assert!(buffer.take().is_empty(), "an ended stream writes nothing");
        assert!(buffer.hold(node, &stream(5, 50, "after a restart")));
    }

    #[test]
    fn a_failed_batch_fills_what_newer_updates_left_empty() {
        let buffer = UpdateBuffer::default();
        let node = crate::runtime::test_id();
        assert!(buffer.hold(node, &stream(1, 100, "s")));
        let then = crate::runtime::utc_now(&crate::runtime::SystemClock);
        buffer.heartbeat(node, 1, then);
        buffer.status(node, 1, EdgeStatus::Unhealthy);
        buffer.capabilities(node, 1, reported("linux"));
        let failed = buffer.take();
        // Only new capabilities arrived while the write failed.
        buffer.capabilities(node, 1, reported("freebsd"));
        buffer.restore(failed);
        let batch = buffer.take();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].last_heartbeat_at, Some(then));
        assert_eq!(batch[0].status, Some(EdgeStatus::Unhealthy));
        assert_eq!(batch[0].capabilities, Some(reported("freebsd")));
        // A newer heartbeat wins over the failed one.
        let failed = vec![batch[0].clone()];
        let now = then + chrono::Duration::seconds(1);
        buffer.heartbeat(node, 1, now);
        buffer.restore(failed);
        let batch = buffer.take();
        assert_eq!(batch[0].last_heartbeat_at, Some(now));
        assert_eq!(batch[0].status, Some(EdgeStatus::Active));
        assert_eq!(batch[0].capabilities, Some(reported("freebsd")));
    }
}

//! The follower: where this replica stands in the feed (`cursor`, the last
//! `seq` applied) and one poll, which reads the changes after it in pages
//! of [`PAGE`] (one query each), applies them in order, and resyncs when
//! changes it never saw were purged.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use super::{FeedParts, FeedSettings};
use crate::store::{StoreError, StoreResult};

/// Changes read per query.
pub const PAGE: u32 = 1000;

/// How long a replica waits, at start, to learn where the feed stands.
const START_READ: Duration = Duration::from_secs(5);

/// One replica's position in the feed.
#[derive(Debug)]
pub struct Follower {
    /// Every change up to this `seq` is applied; `None`: not known yet
    /// (the store did not answer at start), so the first poll resyncs.
    cursor: Option<i64>,
}

impl Follower {
    /// A follower starting at the feed's head, read before the replica
    /// serves (no session can have missed an earlier change); at an unknown
    /// position when the store does not answer in time.
    pub async fn start(parts: &FeedParts) -> Self {
        let head = tokio::time::timeout(START_READ, parts.store.changes_since(0, 0)).await;
        let cursor = match head {
            Ok(Ok(page)) => Some(page.head),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "cannot read the change feed's head; the first poll resyncs");
                None
            }
            Err(_elapsed) => None,
        };
        Self { cursor }
    }

    /// A follower at `cursor` (tests).
    pub fn at(cursor: Option<i64>) -> Self {
        Self { cursor }
    }

    /// The last `seq` applied.
    pub fn cursor(&self) -> Option<i64> {
        self.cursor
    }

    /// Applies every change committed after the cursor, page by page; a
    /// follower that missed purged changes (or never knew its position)
    /// resyncs instead.
    pub async fn poll(&mut self, parts: &FeedParts) -> StoreResult<()> {
        loop {
            let Some(after) = self.cursor else {
                let head = parts.store.changes_since(0, 0).await?.head;
                return self.resync(parts, head).await;
            };
            let page = parts.store.changes_since(after, PAGE).await?;
            if page.missed(after) {
                tracing::warn!(
                    cursor = after,
                    oldest = page.oldest,
                    "fell behind the change feed's retention; resyncing every held session"
                );
                return self.resync(parts, page.head).await;
            }
            let now = crate::runtime::utc_now(parts.clock.as_ref());
            let lag = page
                .changes
                .first()
                .map_or(0.0, |first| seconds_since(first.at, now));
            parts.metrics.feed_lag(lag, page.head - after);
            for change in &page.changes {
                parts.owner.apply_change(change).await;
                self.cursor = Some(change.seq);
            }
            parts.metrics.feed_applied(page.changes.len());
            let full = page.changes.len() >= PAGE as usize;
            if !full {
                if let Some(cursor) = self.cursor {
                    parts.metrics.feed_lag(0.0, page.head - cursor);
                }
                return Ok(());
            }
        }
    }

    /// Reloads the state of every held session from the stored rows, read
    /// after `head`; the changes after `head` are then applied again by
    /// the next polls, which skip what the sessions already reflect.
    async fn resync(&mut self, parts: &FeedParts, head: i64) -> StoreResult<()> {
        let edges = parts.store.list_edges(None).await?;
        parts.owner.resync(&edges).await;
        self.cursor = Some(head);
        parts.metrics.feed_resync();
        Ok(())
    }
}

fn seconds_since(at: DateTime<Utc>, now: DateTime<Utc>) -> f64 {
    (now - at).to_std().map_or(0.0, |age| age.as_secs_f64())
}

/// Polls every `settings.poll_interval` and purges every
/// [`FeedSettings::purge_interval`] until `stop`.
pub(super) async fn run(
    mut follower: Follower,
    settings: FeedSettings,
    parts: Arc<FeedParts>,
    stop: CancellationToken,
) {
    let mut polls = tokio::time::interval(settings.poll_interval);
    polls.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut purges = tokio::time::interval(settings.purge_interval());
    purges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = polls.tick() => {
                if let Err(err) = follower.poll(&parts).await {
                    parts.metrics.feed_failure("poll");
                    tracing::warn!(error = %err, "cannot read the change feed; retrying next poll");
                }
            }
            _ = purges.tick() => {
                if let Err(err) = purge(&parts, settings.retention).await {
                    parts.metrics.feed_failure("purge");
                    tracing::warn!(error = %err, "cannot purge the change feed");
                }
            }
        }
    }
}

/// Deletes changes older than `retention`.
pub async fn purge(parts: &FeedParts, retention: Duration) -> Result<u64, StoreError> {
    let now = crate::runtime::utc_now(parts.clock.as_ref());
    let retention = TimeDelta::from_std(retention).unwrap_or(TimeDelta::MAX);
    let cutoff = now
        .checked_sub_signed(retention)
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    parts.store.purge_changes(cutoff).await
}

//! Timers that keep per-source and per-challenge state bounded: rate-limit
//! buckets are pruned and expired AttestNode challenges swept on a schedule,
//! so neither happens on a caller's path (and an abandoned challenge does
//! not wait for the next ChallengeNode to be deleted).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::enroll::RpcRateLimits;
use crate::runtime::Clock;
use crate::store::Store;

/// How often expired AttestNode challenges are deleted.
pub const CHALLENGE_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// How often each timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    /// Pruning refilled rate-limit buckets.
    pub prune: Duration,
    /// Sweeping expired challenges.
    pub sweep: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Self {
            prune: crate::enroll::PRUNE_INTERVAL,
            sweep: CHALLENGE_SWEEP_INTERVAL,
        }
    }
}

/// Runs both timers until `stop` fires. A failed sweep is logged and tried
/// again at the next tick.
pub async fn run(
    intervals: Intervals,
    limits: Arc<RpcRateLimits>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    let mut prune = tokio::time::interval(intervals.prune);
    let mut sweep = tokio::time::interval(intervals.sweep);
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            now = prune.tick() => {
                limits.prune(now);
            }
            _ = sweep.tick() => {
                let now = crate::runtime::utc_now(clock.as_ref());
                match store.sweep_challenges(now).await {
                    Ok(0) => {}
                    Ok(swept) => tracing::debug!(swept, "expired challenges deleted"),
                    Err(err) => tracing::warn!(error = %err, "sweeping expired challenges failed"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::SystemTime;

    use chrono::{DateTime, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::store::{AttestedCapabilities, NodeChallenge, SqliteStore, CHALLENGE_TTL};

    /// A wall clock the test moves.
    struct ManualClock(Mutex<SystemTime>);

    impl ManualClock {
        fn advance(&self, by: Duration) {
            let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
            *now += by;
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> SystemTime {
            *self.0.lock().unwrap_or_else(|p| p.into_inner())
        }
    }

    fn challenge(created_at: DateTime<Utc>) -> NodeChallenge {
        NodeChallenge {
            challenge_id: crate::runtime::test_id(),
            node_id: crate::runtime::test_id(),
            nonce: vec![7; 32],
            public_key: vec![9; 32],
            role: "edge".to_owned(),
            capabilities: AttestedCapabilities::default(),
            grpc_address: String::new(),
            created_at,
        }
    }

    /// Whether `id`'s row is still stored. Asked as of `created_at`, when it
    /// was fresh, so the read itself never deletes it as expired.
    async fn stored(store: &dyn Store, id: Uuid, created_at: DateTime<Utc>) -> bool {
        matches!(store.get_challenge(id, created_at).await, Ok(Some(_)))
    }

    #[tokio::test]
    async fn expired_challenges_are_swept_on_the_timer_without_a_challenge_node_call(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let sqlite = SqliteStore::open(&dir.path().join("relay.db")).await?;
        sqlite.migrate().await?;
        let store: Arc<dyn Store> = Arc::new(sqlite);
        let clock = Arc::new(ManualClock(Mutex::new(crate::runtime::SystemClock.now())));
        let t0 = crate::runtime::utc_now(clock.as_ref());
        let ttl = chrono::TimeDelta::from_std(CHALLENGE_TTL)?;
        // One already expired (proof that a sweep ran), three fresh.
        let canary = challenge(t0 - ttl - chrono::TimeDelta::seconds(1));
        let fresh: Vec<NodeChallenge> = (0..3).map(|_| challenge(t0)).collect();
        for c in fresh.iter().chain([&canary]) {
            store.put_challenge(c).await?;
        }
        let intervals = Intervals {
            prune: Duration::from_secs(3600),
            sweep: Duration::from_millis(200),
        };
        let stop = CancellationToken::new();
        let limits = Arc::new(RpcRateLimits::new(&crate::config::RateLimitConfig {
            per_second: 10.0,
            burst: 50,
            trusted_proxies: Vec::new(),
            forwarded_header: "x-forwarded-for".to_owned(),
        }));
        let timers = tokio::spawn(run(
            intervals,
            limits,
            Arc::clone(&store),
            Arc::clone(&clock) as Arc<dyn Clock>,
            stop.clone(),
        ));

        // Within one interval the expired one is gone, the fresh ones kept.
        let within = |interval: Duration| tokio::time::Instant::now() + interval * 3;
        let until = within(intervals.sweep);
        while stored(store.as_ref(), canary.challenge_id, canary.created_at).await {
            assert!(
                tokio::time::Instant::now() < until,
                "the expired challenge was not swept"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for c in &fresh {
            assert!(
                stored(store.as_ref(), c.challenge_id, t0).await,
                "a fresh one was swept"
            );
        }

        // Past the TTL, with no ChallengeNode call, the timer deletes them.
        clock.advance(CHALLENGE_TTL + Duration::from_secs(1));
        let until = within(intervals.sweep);
        for c in &fresh {
            while stored(store.as_ref(), c.challenge_id, t0).await {
                assert!(
                    tokio::time::Instant::now() < until,
                    "an expired challenge was kept"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        stop.cancel();
        timers.await?;
        Ok(())
    }
}

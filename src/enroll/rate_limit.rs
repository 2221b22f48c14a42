//! Per-source token buckets for AttestNode: the only unauthenticated call
//! that writes to the store, so a single source cannot flood it.
//!
//! Sans-IO: the caller passes the time, so the buckets are tested without
//! sleeping and follow simulated time. Memory stays bounded: once the table
//! is large, buckets that have refilled completely are dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimitConfig;

/// Sources tracked before idle (full) buckets are pruned.
const PRUNE_AT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by source address.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    trusted_proxies: Vec<IpAddr>,
    forwarded_header: String,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    /// Buckets as configured.
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            per_second: config.per_second,
            burst: f64::from(config.burst),
            trusted_proxies: config.trusted_proxies.clone(),
            forwarded_header: config.forwarded_header.clone(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The header that names the source behind a trusted proxy.
    pub fn forwarded_header(&self) -> &str {
        &self.forwarded_header
    }

    /// The source to charge: the peer, or, when the peer is a trusted proxy,
    /// the right-most address in the forwarded header that is not itself a
    /// trusted proxy (left-most entries are whatever the client claimed).
    pub fn source(&self, peer: IpAddr, forwarded: Option<&str>) -> IpAddr {
        if !self.trusted_proxies.contains(&peer) {
            return peer;
        }
        forwarded
            .into_iter()
            .flat_map(|header| header.rsplit(','))
            .map(str::trim)
            .filter_map(|entry| entry.parse::<IpAddr>().ok())
            .find(|ip| !self.trusted_proxies.contains(ip))
            .unwrap_or(peer)
    }

    /// Takes one token for `source`; `Err(wait)` when empty, with the time
    /// until the next token.
    pub fn check(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= PRUNE_AT {
            let (per_second, burst) = (self.per_second, self.burst);
            buckets.retain(|_, bucket| refilled(bucket, now, per_second, burst) < burst);
        }
        let bucket = buckets.entry(source).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        bucket.tokens = refilled(bucket, now, self.per_second, self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

fn refilled(bucket: &Bucket, now: Instant, per_second: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    (bucket.tokens + elapsed * per_second).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(proxies: &[&str]) -> RateLimiter {
        RateLimiter::new(&RateLimitConfig {
            per_second: 10.0,
            burst: 5,
            trusted_proxies: proxies.iter().filter_map(|p| p.parse().ok()).collect(),
            forwarded_header: "x-forwarded-for".into(),
        })
    }

    #[test]
    fn burst_then_refill() {
        let limiter = limiter(&[]);
        let source: IpAddr = [10, 0, 0, 1].into();
        let start = Instant::now();
        for _ in 0..5 {
            assert!(limiter.check(source, start).is_ok());
        }
        let wait = limiter.check(source, start).err();
        assert!(wait.is_some_and(|wait| wait <= Duration::from_millis(100)));
        assert!(
            limiter.check([10, 0, 0, 2].into(), start).is_ok(),
            "per source"
        );
        assert!(limiter
            .check(source, start + Duration::from_millis(100))
            .is_ok());
        assert!(limiter
            .check(source, start + Duration::from_millis(100))
            .is_err());
    }

    #[test]
    fn forwarded_header_is_trusted_only_from_proxies() {
        let limiter = limiter(&["10.0.0.9"]);
        let proxy: IpAddr = [10, 0, 0, 9].into();
        let stranger: IpAddr = [192, 0, 2, 1].into();
        assert_eq!(limiter.source(stranger, Some("203.0.113.5")), stranger);
        assert_eq!(
            limiter.source(proxy, Some("198.51.100.1, 203.0.113.5")),
            "203.0.113.5".parse::<IpAddr>().unwrap_or(proxy)
        );
        assert_eq!(limiter.source(proxy, Some("garbage")), proxy);
        assert_eq!(limiter.source(proxy, None), proxy);
    }
}

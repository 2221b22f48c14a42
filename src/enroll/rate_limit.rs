//! Per-source token buckets for the unauthenticated enrollment RPCs
//! (AttestNode, ChallengeNode, RotateEdgeKey: one bucket per RPC per
//! source), checked before any store read so a single source cannot flood
//! the store.
//!
//! Sans-IO: the caller passes the time, so the buckets are tested without
//! sleeping and follow simulated time. A source is an IPv4 address or an
//! IPv6 /64 ([`source_key`]). Memory stays bounded without scanning on the
//! call path: [`RateLimiter::prune`] runs on a timer and drops refilled
//! buckets, and past [`MAX_SOURCES`] new sources share one overflow bucket
//! until the next prune.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::admission::source_key;
use crate::config::RateLimitConfig;

/// Sources tracked per RPC before new ones share the overflow bucket.
pub const MAX_SOURCES: usize = 100_000;
/// How often the replica prunes refilled buckets.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(10);
/// The key of the shared overflow bucket.
const OVERFLOW: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets keyed by source.
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

    /// The source to charge ([`source_key`] of it): the peer, or, when the
    /// peer is a trusted proxy, the right-most address in the forwarded
    /// header that is not itself a trusted proxy (left-most entries are
    /// whatever the client claimed).
    pub fn source(&self, peer: IpAddr, forwarded: Option<&str>) -> IpAddr {
        if !self.trusted_proxies.contains(&peer) {
            return source_key(peer);
        }
        let named = forwarded
            .into_iter()
            .flat_map(|header| header.rsplit(','))
            .map(str::trim)
            .filter_map(|entry| entry.parse::<IpAddr>().ok())
            .find(|ip| !self.trusted_proxies.contains(ip))
            .unwrap_or(peer);
        source_key(named)
    }

    /// Takes one token for `source`; `Err(wait)` when empty, with the time
    /// until the next token.
    pub fn check(&self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let key = if buckets.len() < MAX_SOURCES || buckets.contains_key(&source) {
            source
        } else {
            OVERFLOW
        };
        let bucket = buckets.entry(key).or_insert(Bucket {
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

    /// Drops the buckets that have refilled completely by `now` (they
    /// behave exactly like absent ones); returns how many remain.
    pub fn prune(&self, now: Instant) -> usize {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let (per_second, burst) = (self.per_second, self.burst);
        buckets.retain(|_, bucket| refilled(bucket, now, per_second, burst) < burst);
        buckets.len()
    }
}

fn refilled(bucket: &Bucket, now: Instant, per_second: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    (bucket.tokens + elapsed * per_second).min(burst)
}

/// The unauthenticated RPCs that are rate-limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitedRpc {
    /// AttestNode.
    Attest,
    /// ChallengeNode.
    Challenge,
    /// RotateEdgeKey.
    Rotate,
}

impl LimitedRpc {
    /// The RPC's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Attest => "AttestNode",
            Self::Challenge => "ChallengeNode",
            Self::Rotate => "RotateEdgeKey",
        }
    }
}

/// One limiter per RPC, all with `relay.attest_rate_limit`'s settings.
#[derive(Debug)]
pub struct RpcRateLimits {
    attest: RateLimiter,
    challenge: RateLimiter,
    rotate: RateLimiter,
}

impl RpcRateLimits {
    /// Limiters as configured.
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            attest: RateLimiter::new(config),
            challenge: RateLimiter::new(config),
            rotate: RateLimiter::new(config),
        }
    }

    /// The limiter of `rpc`.
    pub fn of(&self, rpc: LimitedRpc) -> &RateLimiter {
        match rpc {
            LimitedRpc::Attest => &self.attest,
            LimitedRpc::Challenge => &self.challenge,
            LimitedRpc::Rotate => &self.rotate,
        }
    }

    /// Prunes every limiter; returns the buckets that remain.
    pub fn prune(&self, now: Instant) -> usize {
        self.attest.prune(now) + self.challenge.prune(now) + self.rotate.prune(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(proxies: &[&str]) -> RateLimitConfig {
        RateLimitConfig {
            per_second: 10.0,
            burst: 5,
            trusted_proxies: proxies.iter().filter_map(|p| p.parse().ok()).collect(),
            forwarded_header: "x-forwarded-for".into(),
        }
    }

    fn limiter(proxies: &[&str]) -> RateLimiter {
        RateLimiter::new(&config(proxies))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or(IpAddr::V4([0, 0, 0, 0].into()))
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
            ip("203.0.113.5")
        );
        assert_eq!(limiter.source(proxy, Some("garbage")), proxy);
        assert_eq!(limiter.source(proxy, None), proxy);
    }

    #[test]
    fn one_ipv6_64_is_one_source() {
        let limiter = limiter(&["10.0.0.9"]);
        let proxy = ip("10.0.0.9");
        let a = limiter.source(proxy, Some("2001:db8:7:7::1"));
        let b = limiter.source(proxy, Some("2001:db8:7:7:abcd::99"));
        assert_eq!(a, b);
        assert_ne!(a, limiter.source(proxy, Some("2001:db8:7:8::1")));
        let now = Instant::now();
        let passed = (0..100u16)
            .filter(|i| {
                let source = limiter.source(proxy, Some(&format!("2001:db8:7:7::{i:x}")));
                limiter.check(source, now).is_ok()
            })
            .count();
        assert_eq!(passed, 5, "the burst of one /64");
    }

    #[test]
    fn pruning_drops_refilled_buckets_and_overflow_is_shared() {
        let limiter = limiter(&[]);
        let start = Instant::now();
        for i in 0..50u8 {
            assert!(limiter.check([10, 1, 0, i].into(), start).is_ok());
        }
        assert_eq!(limiter.prune(start), 50);
        assert_eq!(limiter.prune(start + Duration::from_secs(1)), 0);
    }

    #[test]
    fn each_rpc_has_its_own_buckets() {
        let limits = RpcRateLimits::new(&config(&[]));
        let source = ip("192.0.2.1");
        let now = Instant::now();
        for _ in 0..5 {
            assert!(limits.of(LimitedRpc::Attest).check(source, now).is_ok());
        }
        assert!(limits.of(LimitedRpc::Attest).check(source, now).is_err());
        assert!(limits.of(LimitedRpc::Rotate).check(source, now).is_ok());
        assert!(limits.of(LimitedRpc::Challenge).check(source, now).is_ok());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn limiter(per_second: f64, burst: u32) -> RateLimiter {
            RateLimiter::new(&RateLimitConfig {
                per_second,
                burst,
                trusted_proxies: Vec::new(),
                forwarded_header: "x-forwarded-for".into(),
            })
        }

        proptest! {
            /// Whatever the request times, a source never gets more than a
            /// full bucket plus what the elapsed time refilled.
            #[test]
            fn grants_never_exceed_burst_plus_refill(
                per_second in 0.5f64..500.0,
                burst in 1u32..50,
                steps in proptest::collection::vec(0u64..2_000, 1..200),
            ) {
                let limiter = limiter(per_second, burst);
                let source: IpAddr = [10, 0, 0, 1].into();
                let start = Instant::now();
                let mut at = start;
                let mut granted = 0u64;
                for step_ms in steps {
                    at += Duration::from_millis(step_ms);
                    if limiter.check(source, at).is_ok() {
                        granted += 1;
                    }
                    let elapsed = at.duration_since(start).as_secs_f64();
                    let most = f64::from(burst) + per_second * elapsed + 1e-6;
                    prop_assert!(granted as f64 <= most, "{granted} grants after {elapsed} s (at most {most})");
                }
                // After any idle time, one instant grants at most a burst.
                at += Duration::from_secs(3_600);
                let at_once = (0..burst + 5).filter(|_| limiter.check(source, at).is_ok()).count();
                prop_assert_eq!(at_once, burst as usize);
            }

            /// Refill only grows with time and stops at the burst.
            #[test]
            fn refill_is_monotone_and_capped(
                per_second in 0.01f64..1_000.0,
                burst in 1u32..100,
                fill in 0.0f64..1.0,
                first_ms in 0u64..100_000,
                more_ms in 0u64..100_000,
            ) {
                let burst = f64::from(burst);
                let start = Instant::now();
                let bucket = Bucket { tokens: fill * burst, updated: start };
                let earlier = refilled(&bucket, start + Duration::from_millis(first_ms), per_second, burst);
                let later = refilled(&bucket, start + Duration::from_millis(first_ms + more_ms), per_second, burst);
                prop_assert!(bucket.tokens <= earlier && earlier <= later && later <= burst);
                // A time before the last update refills nothing.
                prop_assert_eq!(refilled(&Bucket { updated: start + Duration::from_secs(1), ..bucket }, start, per_second, burst), bucket.tokens);
            }

            /// The wait a refusal names is enough: a token is there after it.
            #[test]
            fn the_named_wait_is_enough(per_second in 0.5f64..500.0, burst in 1u32..20) {
                let limiter = limiter(per_second, burst);
                let source: IpAddr = [10, 0, 0, 2].into();
                let now = Instant::now();
                for _ in 0..burst {
                    prop_assert!(limiter.check(source, now).is_ok());
                }
                let wait = limiter.check(source, now).err().ok_or_else(|| TestCaseError::fail("not refused"))?;
                prop_assert!(limiter.check(source, now + wait + Duration::from_millis(1)).is_ok());
            }
        }
    }
}

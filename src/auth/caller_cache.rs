//! Remembers callers whose bearer tokens verified, so a busy caller does not
//! pay a signature check (RS256 or a JWKS lookup) on every request. Entries
//! live until the token's `exp` or one minute, whichever comes first; the
//! cache is bounded and keyed by the token's SHA-256, never the token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use sha2::{Digest, Sha256};

use super::caller::{Caller, CallerAuth, CallerError};
use super::jws::JwsParts;

/// Longest a verified token is trusted without a new check.
const MAX_AGE: TimeDelta = TimeDelta::seconds(60);
/// Most tokens remembered; the cache starts over beyond.
const CAPACITY: usize = 10_000;

/// Verified callers by token digest, with the end of their validity.
type Verified = HashMap<[u8; 32], (Caller, DateTime<Utc>)>;

/// A [`CallerAuth`] that remembers successful authentications.
pub struct CachedCallerAuth {
    inner: Arc<dyn CallerAuth>,
    verified: Mutex<Verified>,
}

impl std::fmt::Debug for CachedCallerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedCallerAuth").finish_non_exhaustive()
    }
}

impl CachedCallerAuth {
    /// Caches what `inner` accepts.
    pub fn new(inner: Arc<dyn CallerAuth>) -> Self {
        Self {
            inner,
            verified: Mutex::new(HashMap::new()),
        }
    }
}

/// The `exp` of an already verified token.
fn expiry(bearer: &str) -> Option<DateTime<Utc>> {
    let parts = JwsParts::split(bearer)?;
    let claims: serde_json::Value = serde_json::from_slice(&parts.claims).ok()?;
    DateTime::from_timestamp(claims.get("exp")?.as_i64()?, 0)
}

#[async_trait]
impl CallerAuth for CachedCallerAuth {
    async fn authenticate(&self, bearer: &str, now: DateTime<Utc>) -> Result<Caller, CallerError> {
        let key: [u8; 32] = Sha256::digest(bearer.as_bytes()).into();
        {
            let verified = self
                .verified
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some((caller, until)) = verified.get(&key) {
                if now < *until {
                    return Ok(caller.clone());
                }
            }
        }
        let caller = self.inner.authenticate(bearer, now).await?;
        let until = expiry(bearer).map_or(now + MAX_AGE, |exp| exp.min(now + MAX_AGE));
        let mut verified = self
            .verified
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if verified.len() >= CAPACITY {
            verified.retain(|_, (_, until)| now < *until);
            if verified.len() >= CAPACITY {
                verified.clear();
            }
        }
        verified.insert(key, (caller.clone(), until));
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(AtomicUsize);

    #[async_trait]
    impl CallerAuth for Counting {
        async fn authenticate(
            &self,
            bearer: &str,
            _: DateTime<Utc>,
        ) -> Result<Caller, CallerError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            if bearer.starts_with("bad") {
                return Err(CallerError::Invalid("bad".into()));
            }
            Ok(Caller {
                subject: "s".into(),
                tenant_id: "t".into(),
                roles: Vec::new(),
                operator: None,
                service_account: false,
            })
        }
    }

    #[tokio::test]
    async fn verified_tokens_are_reused_until_expiry_and_failures_never() {
        let inner = Arc::new(Counting(AtomicUsize::new(0)));
        let cache = CachedCallerAuth::new(inner.clone());
        let now = crate::runtime::utc_now(&crate::runtime::SystemClock);
        // A JWT-shaped token expiring in 10 s.
        let claims =
            crate::auth::b64url(format!("{{\"exp\":{}}}", now.timestamp() + 10).as_bytes());
        let token = format!("e30.{claims}.c2ln");
        for _ in 0..3 {
            assert!(cache.authenticate(&token, now).await.is_ok());
        }
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
        assert!(cache
            .authenticate(&token, now + TimeDelta::seconds(11))
            .await
            .is_ok());
        assert_eq!(inner.0.load(Ordering::SeqCst), 2);
        for _ in 0..2 {
            assert!(cache.authenticate("bad.token.x", now).await.is_err());
        }
        assert_eq!(inner.0.load(Ordering::SeqCst), 4);
    }
}

//! The identity provider's signing keys: OIDC discovery
//! (`<issuer>/.well-known/openid-configuration`), the JWKS it points to, and
//! a cache that refreshes when the keys age out or a token names an unknown
//! `kid` (a key rotation), at most once per [`MIN_REFETCH`], so a flood of
//! tokens with made-up key ids cannot hammer the provider.
//!
//! Requests never wait on a lock while verifying with cached keys: the key
//! set is an `Arc` swapped under a `std::sync::RwLock` held only to clone or
//! replace it. Fetches are serialised by a `tokio::sync::Mutex` (one fetch
//! in flight; tasks that need it wait for its result instead of fetching
//! again). When a refresh fails the previous keys stay in use, so a provider
//! outage does not lock out callers whose keys are known.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::Jwk;
use serde_json::Value;
use tokio::time::Instant;

use super::verify::SigningKey;
use crate::auth::CallerError;

/// Bound on each request to the provider (connect, and the whole exchange).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Least time between two fetches, whatever the tokens ask for.
pub const MIN_REFETCH: Duration = Duration::from_secs(5);
/// Largest discovery document or JWKS read.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// One fetched JWKS.
#[derive(Debug)]
pub struct KeySet {
    /// The keys that can verify signatures.
    pub keys: Vec<SigningKey>,
    fetched_at: Instant,
}

impl KeySet {
    fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|key| key.kid() == Some(kid))
    }
}

#[derive(Debug, Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_error: Option<String>,
}

/// Discovery and JWKS cache of one realm.
#[derive(Debug)]
pub struct KeyCache {
    http: reqwest::Client,
    issuer: String,
    discovery_url: String,
    max_age: Duration,
    current: RwLock<Option<Arc<KeySet>>>,
    fetch: tokio::sync::Mutex<FetchState>,
}

fn unreachable(detail: impl std::fmt::Display) -> String {
    format!("cannot check the token: the identity provider is unreachable ({detail})")
}

/// `err` and its sources, `: `-joined (reqwest hides the cause in them).
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl KeyCache {
    /// A cache for `issuer`'s keys, kept at most `max_age`.
    pub fn new(issuer: &str, max_age: Duration) -> Result<Self, CallerError> {
        let http = reqwest::Client::builder()
            .connect_timeout(HTTP_TIMEOUT)
            .timeout(HTTP_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|err| {
                CallerError::Invalid(format!(
                    "cannot build the HTTP client for the identity provider: {}",
                    chain(&err)
                ))
            })?;
        Ok(Self {
            http,
            issuer: issuer.to_owned(),
            discovery_url: format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            ),
            max_age,
            current: RwLock::new(None),
            fetch: tokio::sync::Mutex::new(FetchState::default()),
        })
    }

    fn snapshot(&self) -> Option<Arc<KeySet>> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn replace(&self, set: Arc<KeySet>) {
        match self.current.write() {
            Ok(mut guard) => *guard = Some(set),
            Err(poisoned) => *poisoned.into_inner() = Some(set),
        }
    }

    fn is_fresh(&self, set: &KeySet) -> bool {
        set.fetched_at.elapsed() < self.max_age
    }

    /// Keys to verify a token whose header names `kid`: from the cache when
    /// fresh and holding `kid`, else after a refresh (rate-limited).
    pub async fn keys_for(&self, kid: Option<&str>) -> Result<Arc<KeySet>, CallerError> {
        let holds = |set: &KeySet| kid.is_none_or(|kid| set.has_kid(kid));
        let cached = self.snapshot();
        if let Some(set) = &cached {
            if holds(set) {
                if self.is_fresh(set) {
                    return Ok(Arc::clone(set));
                }
                // Aged out but usable: refresh only if no fetch is under way,
                // otherwise keep verifying with what is known.
                return match self.fetch.try_lock() {
                    Ok(state) => self.refresh(state, kid).await,
                    Err(_) => Ok(Arc::clone(set)),
                };
            }
        }
        let state = self.fetch.lock().await;
        // Another task may have refreshed while this one waited.
        if let Some(set) = self.snapshot() {
            if holds(&set) && self.is_fresh(&set) {
                return Ok(set);
            }
        }
        self.refresh(state, kid).await
    }

    async fn refresh(
        &self,
        mut state: tokio::sync::MutexGuard<'_, FetchState>,
        kid: Option<&str>,
    ) -> Result<Arc<KeySet>, CallerError> {
        let recent = state
            .last_attempt
            .is_some_and(|at| at.elapsed() < MIN_REFETCH);
        let fetch_error = if recent {
            state.last_error.clone()
        } else {
            state.last_attempt = Some(Instant::now());
            match self.fetch_keys().await {
                Ok(set) => {
                    tracing::info!(
                        issuer = %self.issuer,
                        keys = set.keys.len(),
                        "identity provider keys fetched"
                    );
                    self.replace(Arc::new(set));
                    state.last_error = None;
                    None
                }
                Err(reason) => {
                    tracing::warn!(issuer = %self.issuer, %reason, "identity provider keys not refreshed");
                    state.last_error = Some(reason.clone());
                    Some(reason)
                }
            }
        };
        drop(state);
        let current = self.snapshot();
        match (current, fetch_error) {
            (Some(set), _) if kid.is_none_or(|kid| set.has_kid(kid)) => Ok(set),
            (_, Some(reason)) => Err(CallerError::Invalid(reason)),
            (Some(_), None) => Err(CallerError::Invalid(format!(
                "unknown key id (kid) {:?}: the identity provider does not publish it",
                kid.unwrap_or_default()
            ))),
            (None, None) => Err(CallerError::Invalid(unreachable("no keys fetched yet"))),
        }
    }

    /// Discovery, then the JWKS it names. Errors are complete reasons.
    async fn fetch_keys(&self) -> Result<KeySet, String> {
        let discovery = self
            .get_json(&self.discovery_url, "discovery document")
            .await?;
        match discovery.get("issuer").and_then(Value::as_str) {
            Some(issuer) if issuer == self.issuer => {}
            other => {
                return Err(format!(
                    "the identity provider's discovery document names issuer {other:?}, expected \
                     {:?} (check keycloak.endpoint and keycloak.realm)",
                    self.issuer
                ))
            }
        }
        let jwks_uri = discovery
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{} has no jwks_uri", self.discovery_url))?;
        let jwks = self.get_json(jwks_uri, "JWKS").await?;
        let Some(published) = jwks.get("keys").and_then(Value::as_array) else {
            return Err(format!("the JWKS at {jwks_uri} has no keys array"));
        };
        let keys: Vec<SigningKey> = published
            .iter()
            .filter_map(|key| serde_json::from_value::<Jwk>(key.clone()).ok())
            .filter_map(SigningKey::from_jwk)
            .collect();
        if keys.len() < published.len() {
            tracing::debug!(
                skipped = published.len() - keys.len(),
                "JWKS entries that cannot verify signatures ignored"
            );
        }
        Ok(KeySet {
            keys,
            fetched_at: Instant::now(),
        })
    }

    async fn get_json(&self, url: &str, what: &str) -> Result<Value, String> {
        let failed =
            |err: reqwest::Error| unreachable(format_args!("GET {what} {url}: {}", chain(&err)));
        let mut response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(failed)?;
        let status = response.status();
        if !status.is_success() {
            let hint = if status == reqwest::StatusCode::NOT_FOUND {
                " (check keycloak.endpoint and keycloak.realm)"
            } else {
                ""
            };
            return Err(format!(
                "the identity provider answered {status} to GET {what} {url}{hint}"
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!(
                    "the identity provider's {what} at {url} is larger than {MAX_DOCUMENT_BYTES} bytes"
                ));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body)
            .map_err(|err| format!("the identity provider's {what} at {url} is not JSON: {err}"))
    }
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;

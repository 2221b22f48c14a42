//! The OpenBao signer's client session: an AppRole login whose token is
//! renewed before it expires and replaced when OpenBao stops accepting it.
//!
//! Renewal is lazy: before each call, a token with less than a third of its
//! TTL left is renewed (or, once renewal is capped by the role's max TTL,
//! replaced by a fresh login). A call answered 403 logs in again and is
//! retried once. Only one renewal or login runs at a time; concurrent
//! callers wait for it and then use its result. Tokens and secret ids never
//! reach a log line or an error message.
//!
//! Calls vaultrs lacks (batched Transit signing) go through [`post_json`],
//! which sends the session client's token over the client's own reqwest
//! connection pool (same timeout, same TLS settings); [`Sessions::call`]
//! treats its errors exactly like vaultrs' ([`CallError`]).

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use vaultrs::client::{Client as _, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;

use super::super::signer::SignError;
use crate::config::Secret;

/// Whole-request timeout of every OpenBao call (connect included).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom to log in.
pub(crate) struct LoginTarget {
    /// OpenBao base URL.
    pub endpoint: String,
    /// AppRole auth mount.
    pub mount: String,
    /// AppRole role id.
    pub role_id: Secret,
    /// AppRole secret id.
    pub secret_id: Secret,
}

/// One logged-in token and its lifetime.
#[derive(Clone)]
pub(crate) struct Session {
    /// A client carrying the token.
    pub client: Arc<VaultClient>,
    /// Which login produced the token (renewals keep it).
    generation: u64,
    /// The TTL the login granted.
    login_ttl: Duration,
    /// When to renew (`None`: the token never expires).
    renew_at: Option<Instant>,
    /// When the token expires.
    expires_at: Option<Instant>,
    /// Renewal is possible and not yet capped by the max TTL.
    renew_not_relogin: bool,
}

impl Session {
    fn new(client: VaultClient, generation: u64, ttl_secs: u64, renewable: bool) -> Self {
        let now = Instant::now();
        let ttl = Duration::from_secs(ttl_secs);
        Self {
            client: Arc::new(client),
            generation,
            login_ttl: ttl,
            renew_at: (ttl_secs > 0).then(|| now + ttl * 2 / 3),
            expires_at: (ttl_secs > 0).then(|| now + ttl),
            renew_not_relogin: renewable,
        }
    }

    fn renewed(&self, ttl_secs: u64, renewable: bool) -> Self {
        let now = Instant::now();
        let ttl = Duration::from_secs(ttl_secs);
        Self {
            client: Arc::clone(&self.client),
            generation: self.generation,
            login_ttl: self.login_ttl,
            renew_at: (ttl_secs > 0).then(|| now + ttl * 2 / 3),
            expires_at: (ttl_secs > 0).then(|| now + ttl),
            // A shorter TTL than the login's means the max TTL caps it:
            // the next refresh must be a new login.
            renew_not_relogin: renewable && ttl >= self.login_ttl,
        }
    }

    fn due(&self, now: Instant) -> bool {
        self.renew_at.is_some_and(|at| now >= at)
    }

    fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// The current session and the means to refresh it.
pub(crate) struct Sessions {
    target: LoginTarget,
    current: Mutex<Arc<Session>>,
    /// Serialises renewals and logins (single flight). An async mutex, held
    /// across the OpenBao call on purpose; `current` is a sync lock and is
    /// only ever held to read or swap the `Arc`.
    refresh: tokio::sync::Mutex<u64>,
}

impl Sessions {
    /// Logs in once; fails when OpenBao is unreachable or refuses the
    /// credentials.
    pub(crate) async fn login(target: LoginTarget) -> Result<Self, SignError> {
        let session = login(&target, 1).await?;
        Ok(Self {
            target,
            current: Mutex::new(Arc::new(session)),
            refresh: tokio::sync::Mutex::new(1),
        })
    }

    fn snapshot(&self) -> Arc<Session> {
        Arc::clone(&self.current.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn install(&self, session: Session) -> Arc<Session> {
        let session = Arc::new(session);
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&session);
        session
    }

    /// A session whose token is not about to expire.
    async fn fresh(&self) -> Result<Arc<Session>, SignError> {
        let session = self.snapshot();
        if !session.due(Instant::now()) {
            return Ok(session);
        }
        let mut generations = self.refresh.lock().await;
        let session = self.snapshot();
        if !session.due(Instant::now()) {
            return Ok(session);
        }
        let refreshed = if session.renew_not_relogin {
            match vaultrs::token::renew_self(session.client.as_ref(), None).await {
                Ok(auth) => Ok(session.renewed(auth.lease_duration, auth.renewable)),
                Err(ClientError::APIError { code, .. }) if (400..500).contains(&code) => {
                    tracing::info!(
                        status = code,
                        "openbao refused to renew the token; logging in again"
                    );
                    *generations += 1;
                    login(&self.target, *generations).await
                }
                Err(err) => Err(api_error("renewing the openbao token", err)),
            }
        } else {
            *generations += 1;
            login(&self.target, *generations).await
        };
        match refreshed {
            Ok(fresh) => {
                tracing::debug!(
                    relogin = fresh.generation != session.generation,
                    "openbao token refreshed"
                );
                Ok(self.install(fresh))
            }
            Err(err) if !session.expired(Instant::now()) => {
                // The old token still works for a while: keep signing with
                // it, and try again in a second rather than on every call.
                tracing::warn!(error = %err, "cannot refresh the openbao token yet; still using the current one");
                let mut retry = (*session).clone();
                retry.renew_at = Some(Instant::now() + Duration::from_secs(1));
                Ok(self.install(retry))
            }
            Err(err) => Err(err),
        }
    }

    /// Logs in again after `denied` was refused, unless another caller
    /// already replaced it.
    async fn replace(&self, denied: &Session) -> Result<Arc<Session>, SignError> {
        let mut generations = self.refresh.lock().await;
        let current = self.snapshot();
        if current.generation != denied.generation {
            return Ok(current);
        }
        *generations += 1;
        let fresh = login(&self.target, *generations).await?;
        Ok(self.install(fresh))
    }

    /// Runs `op` with a fresh session's client; on 403, logs in again and
    /// runs it once more. `what` names the call in errors.
    pub(crate) async fn call<T, E, F, Fut>(&self, what: &str, op: F) -> Result<T, SignError>
    where
        E: CallError,
        F: Fn(Arc<VaultClient>) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let session = self.fresh().await?;
        match op(Arc::clone(&session.client)).await {
            Err(err) if err.forbidden() => {
                tracing::info!(
                    call = what,
                    "openbao refused the token (403); logging in again"
                );
                let session = self.replace(&session).await?;
                op(Arc::clone(&session.client))
                    .await
                    .map_err(|err| err.into_sign_error(what))
            }
            result => result.map_err(|err| err.into_sign_error(what)),
        }
    }
}

/// An error of one OpenBao call, as [`Sessions::call`] needs to see it.
pub(crate) trait CallError {
    /// OpenBao refused the token (403): log in again and retry.
    fn forbidden(&self) -> bool;
    /// The error for the caller; `what` names the call.
    fn into_sign_error(self, what: &str) -> SignError;
}

impl CallError for ClientError {
    fn forbidden(&self) -> bool {
        matches!(self, ClientError::APIError { code: 403, .. })
    }

    fn into_sign_error(self, what: &str) -> SignError {
        api_error(what, self)
    }
}

/// Why a [`post_json`] call failed.
#[derive(Debug)]
pub(crate) enum HttpError {
    /// No usable answer: connect failure, timeout, broken connection.
    Transport(reqwest::Error),
    /// A non-2xx status, with OpenBao's `errors` and the answer's JSON body
    /// (`None` when it was not JSON, e.g. a proxy's error page).
    Status {
        code: u16,
        errors: Vec<String>,
        body: Option<serde_json::Value>,
    },
    /// A 2xx answer that is not JSON, or a request that cannot be built.
    Unusable(String),
}

impl CallError for HttpError {
    fn forbidden(&self) -> bool {
        matches!(self, HttpError::Status { code: 403, .. })
    }

    fn into_sign_error(self, what: &str) -> SignError {
        match self {
            HttpError::Transport(err) => match transport_failure(&err) {
                Some(cause) => {
                    SignError::Unavailable(format!("openbao unreachable during {what}: {cause}"))
                }
                None => SignError::Backend(format!("openbao answer to {what} unusable: {err}")),
            },
            HttpError::Status { code, errors, .. } => {
                status_error(what, code, &server_errors(&errors))
            }
            HttpError::Unusable(reason) => {
                SignError::Backend(format!("openbao answer to {what} unusable: {reason}"))
            }
        }
    }
}

/// POSTs `body` as JSON to `/v1/<path>` with `client`'s token, over
/// `client`'s connection pool and within [`REQUEST_TIMEOUT`]; the answer's
/// JSON (`Null` when empty). The token header is marked sensitive and never
/// appears in an error.
pub(crate) async fn post_json<B>(
    client: &VaultClient,
    path: &str,
    body: &B,
) -> Result<serde_json::Value, HttpError>
where
    B: serde::Serialize + ?Sized,
{
    let base = client.settings.address.as_str().trim_end_matches('/');
    let url = format!("{base}/v1/{path}");
    let mut token = reqwest::header::HeaderValue::from_str(&client.settings.token)
        .map_err(|_| HttpError::Unusable("the openbao token is not a valid header".to_owned()))?;
    token.set_sensitive(true);
    let response = client
        .http
        .http
        .post(url)
        .header("X-Vault-Token", token)
        .header("X-Vault-Request", "true")
        .timeout(REQUEST_TIMEOUT)
        .json(body)
        .send()
        .await
        .map_err(HttpError::Transport)?;
    let status = response.status();
    let bytes = response.bytes().await.map_err(HttpError::Transport)?;
    let json = if bytes.is_empty() {
        Some(serde_json::Value::Null)
    } else {
        serde_json::from_slice::<serde_json::Value>(&bytes).ok()
    };
    if status.is_success() {
        return json.ok_or_else(|| HttpError::Unusable("the answer is not JSON".to_owned()));
    }
    let errors = json
        .as_ref()
        .and_then(|json| json.get("errors"))
        .and_then(serde_json::Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .filter_map(|error| error.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Err(HttpError::Status {
        code: status.as_u16(),
        errors,
        body: json,
    })
}

/// A client for `endpoint` without a token.
pub(crate) fn client(endpoint: &str) -> Result<VaultClient, SignError> {
    let url = reqwest::Url::parse(endpoint)
        .map_err(|err| SignError::Backend(format!("openbao endpoint {endpoint:?}: {err}")))?;
    let settings = VaultClientSettingsBuilder::default()
        .address(url.as_str())
        .token("")
        .timeout(Some(REQUEST_TIMEOUT))
        .verify(true)
        .build()
        .map_err(|err| SignError::Backend(format!("openbao endpoint {endpoint:?}: {err}")))?;
    VaultClient::new(settings)
        .map_err(|err| SignError::Backend(format!("openbao client for {endpoint}: {err}")))
}

async fn login(target: &LoginTarget, generation: u64) -> Result<Session, SignError> {
    let mut client = client(&target.endpoint)?;
    let auth = vaultrs::auth::approle::login(
        &client,
        &target.mount,
        target.role_id.expose(),
        target.secret_id.expose(),
    )
    .await
    .map_err(|err| match err {
        ClientError::APIError { code, errors } if (400..500).contains(&code) => {
            SignError::Key(format!(
                "openbao at {} refused the AppRole login on mount {:?} (status {code}: {}); \
                 check the role id and secret id",
                target.endpoint,
                target.mount,
                server_errors(&errors),
            ))
        }
        other => api_error("AppRole login", other),
    })?;
    client.set_token(&auth.client_token);
    tracing::debug!(
        ttl_secs = auth.lease_duration,
        renewable = auth.renewable,
        "logged in to openbao with approle"
    );
    Ok(Session::new(
        client,
        generation,
        auth.lease_duration,
        auth.renewable,
    ))
}

fn server_errors(errors: &[String]) -> String {
    if errors.is_empty() {
        "no reason given".to_owned()
    } else {
        errors.join("; ")
    }
}

/// Maps a vaultrs error to a [`SignError`]: transport failures (refused
/// connections, timeouts) and overload or seal answers are `Unavailable`,
/// the rest `Backend`. An error answer whose body is not OpenBao's JSON
/// (a proxy's error page) carries no status through vaultrs and is `Backend`.
pub(crate) fn api_error(what: &str, err: ClientError) -> SignError {
    match err {
        ClientError::APIError { code, errors } => status_error(what, code, &server_errors(&errors)),
        ClientError::RestClientError { source } => match transport_failure(&source) {
            Some(cause) => {
                SignError::Unavailable(format!("openbao unreachable during {what}: {cause}"))
            }
            None => SignError::Backend(format!("openbao answer to {what} unusable: {source}")),
        },
        other => SignError::Backend(format!("openbao answer to {what} unusable: {other}")),
    }
}

/// The innermost cause when `err` comes from a request that never got an
/// answer (connect failure, timeout, broken connection).
fn transport_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(err);
    let mut transport = false;
    let mut innermost = err;
    while let Some(current) = cause {
        if let Some(http) = current.downcast_ref::<reqwest::Error>() {
            transport |= http.is_connect() || http.is_timeout() || http.is_request();
        }
        innermost = current;
        cause = current.source();
    }
    transport.then(|| innermost.to_string())
}

fn status_error(what: &str, code: u16, reason: &str) -> SignError {
    match code {
        429 | 502 | 503 | 504 => SignError::Unavailable(format!(
            "openbao cannot serve {what} now (status {code}: {reason})"
        )),
        403 => SignError::Backend(format!(
            "openbao refused {what} (status 403: {reason}); the AppRole's policy must allow it"
        )),
        _ => SignError::Backend(format!("openbao refused {what} (status {code}: {reason})")),
    }
}

//! The JSON error body every HTTP error uses, as AEGIS's controller does:
//! `{"status": 404, "code": "not_found", "message": "..."}`.

use axum::extract::Request;
use axum::http::header::{ALLOW, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::auth::{CallerError, SignError};
use crate::enroll::EnrollError;
use crate::store::StoreError;

/// An HTTP error with AEGIS's error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// Machine-readable kind: bad_request, not_found, conflict, internal,
    /// unauthorized, forbidden, unavailable.
    pub code: &'static str,
    /// What went wrong and what to do about it.
    pub message: String,
    /// RFC 6750 `error` of a 401's `WWW-Authenticate: Bearer` challenge.
    #[serde(skip)]
    pub bearer_error: Option<&'static str>,
    /// Seconds for the `Retry-After` header of a 429 or 503 (1 when unset).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

/// The realm named in every `WWW-Authenticate` challenge.
const BEARER_REALM: &str = "aegis-relay";

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            bearer_error: None,
            retry_after: None,
        }
    }

    /// This error with `Retry-After: wait` (rounded up to whole seconds).
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// A 500 that tells the client only where to look: the details (which
    /// may hold database text) go to the log, under the request's id.
    pub fn internal(what: &str, detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "{what} failed");
        Self::new(
            500,
            "internal",
            format!(
                "{what} failed inside the relay; its log has the details under this response's \
                 x-request-id"
            ),
        )
    }

    /// A 503 for a dependency that is down for now, without its details.
    pub fn unavailable(what: &str, detail: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %detail, "{what} unavailable");
        Self::new(
            503,
            "unavailable",
            format!("{what} is unavailable right now; retry shortly"),
        )
    }

    /// A 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    /// A 404 with `message`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }
}

impl ApiError {
    /// A 403 with `message`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }

    /// A 409 with `message`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "conflict", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let challenge = (status == StatusCode::UNAUTHORIZED).then(|| match self.bearer_error {
            Some(error) => format!("Bearer realm=\"{BEARER_REALM}\", error=\"{error}\""),
            None => format!("Bearer realm=\"{BEARER_REALM}\""),
        });
        let retry_after = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        )
        .then(|| self.retry_after.unwrap_or(1));
        let mut response = (status, Json(self)).into_response();
        if let Some(value) = challenge.and_then(|text| HeaderValue::from_str(&text).ok()) {
            response.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<CallerError> for ApiError {
    fn from(err: CallerError) -> Self {
        let message = err.to_string();
        match err {
            CallerError::Missing => Self::new(401, "unauthorized", message),
            CallerError::Invalid(_) => Self {
                bearer_error: Some("invalid_token"),
                ..Self::new(401, "unauthorized", message)
            },
            CallerError::Forbidden(_) => Self::new(403, "forbidden", message),
            CallerError::BadRequest(_) => Self::new(400, "bad_request", message),
        }
    }
}

/// Gives axum's bare 405 (which already carries `Allow`) the JSON error
/// body every other error has.
pub async fn json_method_not_allowed(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    if response.status() != StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let allow = response.headers().get(ALLOW).cloned();
    let allowed = allow
        .as_ref()
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let mut answer = ApiError::new(
        405,
        "method_not_allowed",
        format!("{method} is not allowed on {path}; use one of: {allowed}"),
    )
    .into_response();
    if let Some(allow) = allow {
        answer.headers_mut().insert(ALLOW, allow);
    }
    answer
}

/// Fallback for paths no route matches.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route for {}; this relay serves /v1/edge/enrollment-tokens, /v1/edge/hosts[/{{id}}], /v1/edge/groups[/{{id}}], /v1/edge/fleet/preview, /healthz, /readyz and /metrics",
        uri.path()
    ))
}

impl From<EnrollError> for ApiError {
    fn from(err: EnrollError) -> Self {
        match err {
            EnrollError::Caller(caller) => caller.into(),
            EnrollError::Store(store) => store.into(),
            EnrollError::Signer(SignError::Unavailable(detail)) => {
                Self::unavailable("the token signer", &detail)
            }
            EnrollError::Signer(signer) => Self::internal("signing", &signer),
            EnrollError::RateLimited { retry_after, .. } => {
                let (status, code) = err.http_status();
                Self::new(status, code, err.to_string()).retry_after(retry_after)
            }
            other => {
                let (status, code) = other.http_status();
                Self::new(status, code, other.to_string())
            }
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        let status = rejection.status().as_u16();
        let text = rejection.body_text();
        if text.contains(super::BODY_TIMEOUT_KEY) {
            return Self::new(408, "request_timeout", text);
        }
        if status == 413 {
            return Self::new(
                status,
                "payload_too_large",
                format!("request body larger than {} bytes", super::MAX_BODY_BYTES),
            );
        }
        Self::new(status, "bad_request", text)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match &err {
            StoreError::Conflict(detail) => {
                tracing::info!(error = %detail, "store conflict");
                Self::new(
                    409,
                    "conflict",
                    "the change conflicts with what is stored (a concurrent change, or a \
                     duplicate); read the current state and retry",
                )
            }
            transient if transient.is_transient() => Self::unavailable("the store", &err),
            _ => Self::internal("a store operation", &err),
        }
    }
}

impl From<crate::fleet::ResolveError> for ApiError {
    fn from(err: crate::fleet::ResolveError) -> Self {
        if let crate::fleet::ResolveError::Store(store) = err {
            return store.into();
        }
        let (status, code) = err.http_status();
        Self::new(status, code, err.to_string())
    }
}

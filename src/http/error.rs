//! The JSON error body every HTTP error uses, as AEGIS's controller does:
//! `{"status": 404, "code": "not_found", "message": "..."}`.

use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

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
}

impl ApiError {
    /// A 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            code: "bad_request",
            message: message.into(),
        }
    }

    /// A 404 with `message`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: 404,
            code: "not_found",
            message: message.into(),
        }
    }
}

impl ApiError {
    /// A 403 with `message`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self {
            status: 403,
            code: "forbidden",
            message: message.into(),
        }
    }

    /// A 409 with `message`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            status: 409,
            code: "conflict",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self)).into_response()
    }
}

/// Fallback for paths no route matches.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route for {}; this relay serves /v1/edge/enrollment-tokens, /v1/edge/hosts[/{{id}}], /v1/edge/groups[/{{id}}], /v1/edge/fleet/preview, /healthz, /readyz and /metrics",
        uri.path()
    ))
}

impl From<crate::enroll::EnrollError> for ApiError {
    fn from(err: crate::enroll::EnrollError) -> Self {
        let (status, code) = err.http_status();
        Self {
            status,
            code,
            message: err.to_string(),
        }
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        let status = rejection.status().as_u16();
        Self {
            status,
            code: if status == 413 {
                "payload_too_large"
            } else {
                "bad_request"
            },
            message: if status == 413 {
                format!("request body larger than {} bytes", super::MAX_BODY_BYTES)
            } else {
                rejection.body_text()
            },
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(err: crate::store::StoreError) -> Self {
        let (status, code) = match &err {
            crate::store::StoreError::Conflict(_) => (409, "conflict"),
            other if other.is_transient() => (503, "unavailable"),
            _ => (500, "internal"),
        };
        Self {
            status,
            code,
            message: err.to_string(),
        }
    }
}

impl From<crate::fleet::ResolveError> for ApiError {
    fn from(err: crate::fleet::ResolveError) -> Self {
        let (status, code) = err.http_status();
        Self {
            status,
            code,
            message: err.to_string(),
        }
    }
}

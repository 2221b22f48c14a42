//! Liveness, readiness and metrics endpoints.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::{ApiError, HttpState};

/// `GET /healthz`: the process answers.
pub async fn healthz(State(state): State<HttpState>) -> impl IntoResponse {
    Json(json!({"status": "ok", "replica": state.replica}))
}

/// `GET /readyz`: 200 when every readiness condition holds, else 503 with the
/// failing conditions and their reasons.
pub async fn readyz(State(state): State<HttpState>) -> impl IntoResponse {
    let snapshot = state.readiness.snapshot();
    if snapshot.is_ready() {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "replica": state.replica})),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            // The store is checked every 2 s.
            [(header::RETRY_AFTER, "2")],
            Json(json!({
                "status": "not_ready",
                "replica": state.replica,
                "failing": snapshot.failing,
            })),
        )
            .into_response()
    }
}

/// `GET /metrics`: Prometheus text exposition.
/// With `relay.metrics_token_file` set, only `Authorization: Bearer <that
/// token>` may read it (401 otherwise).
pub async fn metrics(
    State(state): State<HttpState>,
    headers: axum::http::HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if let Some(expected) = &state.metrics_token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        let matches = presented.is_some_and(|token| {
            // Constant time in the token's content.
            token.len() == expected.len()
                && token
                    .bytes()
                    .zip(expected.bytes())
                    .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                    == 0
        });
        if !matches {
            let mut err = ApiError::new(
                401,
                "unauthorized",
                "/metrics needs `Authorization: Bearer <token>` with the token in \
                 relay.metrics_token_file",
            );
            if presented.is_some() {
                err.bearer_error = Some("invalid_token");
            }
            return Err(err);
        }
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    ))
}

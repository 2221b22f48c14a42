//! Liveness, readiness and metrics endpoints.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::HttpState;

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
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "not_ready",
                "replica": state.replica,
                "failing": snapshot.failing,
            })),
        )
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

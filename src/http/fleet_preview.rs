//! `POST /v1/edge/fleet/preview` (protocol.md §8.5): which connected edges a
//! fleet target resolves to right now, without running anything. Same
//! resolution as fleet invoke, so a preview shows what a run would address.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::body::json_body;
use super::caller::request_caller;
use super::error::ApiError;
use super::HttpState;
use crate::fleet::{resolve, EdgeTarget};

/// Body of the preview: only `target` (other fields are ignored).
#[derive(Debug, Deserialize)]
struct PreviewRequest {
    target: EdgeTarget,
}

/// The resolved edges, by node id.
#[derive(Debug, Serialize)]
pub struct PreviewResponse {
    /// Connected edges the target addresses.
    pub resolved: Vec<Uuid>,
}

/// Resolves `{target}` within the tenant the request acts for, as fleet
/// invoke does: 200 `{resolved}`, or the resolution error (400 / 404).
pub async fn preview(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PreviewResponse>, ApiError> {
    let (_caller, acting_for) = request_caller(&state, &headers).await?;
    let request: PreviewRequest = json_body(body)?;
    let api = &state.api;
    let resolved = resolve(
        &request.target,
        Some(acting_for.as_str()),
        api.store.as_ref(),
        &api.owner,
    )
    .await?;
    Ok(Json(PreviewResponse { resolved }))
}

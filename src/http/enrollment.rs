//! `POST /v1/edge/enrollment-tokens` (protocol.md §4.3): the REST face of
//! token issuance, same rules as the gRPC IssueEnrollmentToken.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::caller::request_caller;
use super::error::ApiError;
use super::HttpState;

/// Request body. Unknown fields are ignored (AEGIS clients send extras);
/// `name` is accepted as the deployment guide's smoke test sends it.
/// `replace_node` issues a token that may re-enroll that enrolled node.
#[derive(Debug, Default, Deserialize)]
struct IssueRequest {
    issued_to: Option<String>,
    name: Option<String>,
    replace_node: Option<String>,
}

/// Response body, as the AEGIS controller answers.
#[derive(Debug, Serialize)]
struct IssueResponse {
    token: String,
    expires_at: String,
    controller_endpoint: String,
    qr_payload: String,
    command_hint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    replace_node: Option<String>,
}

/// Issues an enrollment token for the caller's (resolved) tenant.
pub async fn issue_enrollment_token(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<impl Serialize>, ApiError> {
    let (caller, tenant) = request_caller(&state, &headers).await?;
    let body = body.map_err(ApiError::from)?;
    let request: IssueRequest = if body.iter().all(u8::is_ascii_whitespace) {
        IssueRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|err| ApiError::bad_request(format!("invalid JSON body: {err}")))?
    };
    let issued_to = request.issued_to.or(request.name).unwrap_or_default();
    let issued = state
        .api
        .enrollment
        .issue(
            &caller,
            &tenant,
            &issued_to,
            request.replace_node.as_deref(),
        )
        .await?;
    Ok(Json(IssueResponse {
        qr_payload: issued.command_hint.clone(),
        command_hint: issued.command_hint,
        token: issued.token,
        expires_at: issued.expires_at,
        controller_endpoint: issued.controller_endpoint,
        replace_node: issued.replace_node.map(|node| node.to_string()),
    }))
}

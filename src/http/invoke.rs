//! Commands to one host: `POST /v1/edge/hosts/{id}/invoke` runs a tool and
//! answers when the result is in; `/drain`, `/shutdown` and `/push-config`
//! send the operator commands the reference relay never sends. An
//! `Idempotency-Key` (a UUID) becomes the command id, so a retry returns
//! the first outcome instead of running the tool twice.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use tracing::Instrument;
use uuid::Uuid;

use super::body::json_body;
use super::caller::require_manager;
use super::error::ApiError;
use super::hosts::scoped_caller;
use super::HttpState;
use crate::fleet::HostInvokeBody;
use crate::hop::CommandOutcome;
use crate::owner::{Control, DispatchError, ToolCall};

/// Header whose UUID value becomes the command id.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The answer of a single-host invoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InvokeResult {
    /// Command id the edge saw.
    pub command_id: Uuid,
    /// Whether the tool succeeded.
    pub ok: bool,
    /// Exit code (-1 for relay-side failures).
    pub exit_code: i32,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
    /// `nonzero_exit`, `timeout`, `edge_disconnected`, ...; null on success.
    pub error_kind: Option<String>,
    /// Details of a failure.
    pub error_message: Option<String>,
}

impl From<CommandOutcome> for InvokeResult {
    fn from(outcome: CommandOutcome) -> Self {
        let result = outcome.result;
        let some = |text: &str| (!text.is_empty()).then(|| text.to_owned());
        Self {
            command_id: outcome.command_id,
            ok: result.ok,
            exit_code: result.exit_code,
            stdout: String::from_utf8_lossy(&result.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&result.stderr).into_owned(),
            error_kind: some(&result.error_kind),
            error_message: some(&result.error_message),
        }
    }
}

impl From<DispatchError> for ApiError {
    fn from(err: DispatchError) -> Self {
        let (status, code) = match err {
            DispatchError::NotConnected(_) => (409, "conflict"),
            DispatchError::Busy(_) | DispatchError::Draining => (503, "unavailable"),
            DispatchError::Command(_) => return Self::internal("building the command", &err),
        };
        Self::new(status, code, err.to_string())
    }
}

/// The `Idempotency-Key` as a command id, if sent.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<Uuid>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| Uuid::parse_str(text.trim()).ok())
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("Idempotency-Key must be a UUID"))
}

/// The user token the caller chose for the inner envelope (the body's
/// `user_security_token`), if any; otherwise the owner mints one per
/// command. The caller's bearer is never forwarded to an edge.
pub fn caller_token(body_token: &str) -> Option<String> {
    (!body_token.is_empty()).then(|| body_token.to_owned())
}

/// The host if it is in the caller's scope: from the registry when it is
/// connected (no store read on the hot path), else from the store (so an
/// offline host is told apart from an unknown one).
async fn host_in_scope(state: &HttpState, scope: Option<&str>, id: &str) -> Result<Uuid, ApiError> {
    let node_id = Uuid::parse_str(id)
        .map_err(|_| ApiError::bad_request(format!("host id {id:?} is not a UUID")))?;
    let in_scope = |tenant: &str| scope.is_none_or(|scope| scope == tenant);
    if let Some(tenant) = state.api.owner.registry().tenant_of(node_id) {
        if in_scope(&tenant) {
            return Ok(node_id);
        }
        return Err(ApiError::not_found(format!("host {node_id} not found")));
    }
    let edge = state
        .api
        .store
        .get_edge(node_id)
        .await
        .map_err(crate::enroll::EnrollError::from)?;
    match edge {
        Some(edge) if in_scope(&edge.tenant_id) => Ok(node_id),
        _ => Err(ApiError::not_found(format!("host {node_id} not found"))),
    }
}

/// `POST /v1/edge/hosts/{id}/invoke`.
pub async fn invoke_host(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<InvokeResult>, ApiError> {
    let (caller, scope) = scoped_caller(&state, &headers).await?;
    require_manager(&caller, "invoke tools")?;
    let body: HostInvokeBody = json_body(body)?;
    let policy = body
        .policy()
        .map_err(|err| ApiError::bad_request(err.to_string()))?;
    let node_id = host_in_scope(&state, scope.as_deref(), &id).await?;
    let command_id = match idempotency_key(&headers)? {
        Some(key) => key,
        None => state.api.entropy.uuid_v4(),
    };
    let call = ToolCall {
        user_security_token: caller_token(&body.user_security_token),
        caller_subject: caller.subject.clone(),
        tool_name: body.tool_name,
        args: body.args,
        security_context_name: body.security_context_name,
        deadline: policy.per_target_deadline,
    };
    let span = tracing::info_span!("invoke", node_id = %node_id, command_id = %command_id, tenant = %caller.tenant_id);
    let owner = &state.api.owner;
    async move {
        let handle = owner
            .invoke(scope.as_deref(), node_id, command_id, &call)
            .await?;
        let outcome = InvokeResult::from(handle.outcome().await);
        tracing::info!(ok = outcome.ok, error_kind = ?outcome.error_kind, "invoke finished");
        Ok(Json(outcome))
    }
    .instrument(span)
    .await
}

async fn control(
    state: HttpState,
    id: String,
    headers: HeaderMap,
    control: Control,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let (caller, scope) = scoped_caller(&state, &headers).await?;
    require_manager(&caller, &format!("send {}", control.name()))?;
    let node_id = host_in_scope(&state, scope.as_deref(), &id).await?;
    state
        .api
        .owner
        .control(scope.as_deref(), node_id, &control)
        .await?;
    tracing::info!(node_id = %node_id, command = control.name(), by = %caller.subject, "operator command sent");
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "node_id": node_id, "command": control.name(), "sent": true })),
    ))
}

/// `POST /v1/edge/hosts/{id}/drain`.
pub async fn drain_host(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    control(state, id, headers, Control::Drain).await
}

/// `POST /v1/edge/hosts/{id}/shutdown`.
pub async fn shutdown_host(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    control(state, id, headers, Control::Shutdown).await
}

/// `POST /v1/edge/hosts/{id}/push-config`: the body (a JSON object, or
/// empty) is the merged config delta.
pub async fn push_config_host(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let body = body?;
    let delta = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Map::new()
    } else {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(serde_json::Value::Object(delta)) => delta,
            Ok(_) => {
                return Err(ApiError::bad_request(
                    "the push-config body must be a JSON object",
                ))
            }
            Err(err) => return Err(ApiError::bad_request(format!("malformed JSON: {err}"))),
        }
    };
    control(state, id, headers, Control::PushConfig(delta)).await
}

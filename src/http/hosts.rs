//! `/v1/edge/hosts/{id}` (protocol.md §8.5): host management on the REST
//! surface. For now: revoke (`DELETE`), which hard-deletes the edge and keeps
//! a tombstone so the node can neither rotate its key nor connect again.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use uuid::Uuid;

use super::caller::request_caller;
use super::error::ApiError;
use super::HttpState;
use crate::auth::{Caller, OperatorLevel};
use crate::enroll::EnrollError;

/// Authenticates the request; returns the caller and the tenant scope of
/// its operations (`None`: every tenant, for admins and operators).
pub async fn scoped_caller(
    state: &HttpState,
    headers: &HeaderMap,
) -> Result<(Caller, Option<String>), ApiError> {
    let (caller, tenant) = request_caller(state, headers).await?;
    let scope = match caller.operator {
        Some(OperatorLevel::Admin | OperatorLevel::Operator) => None,
        _ => Some(tenant),
    };
    Ok((caller, scope))
}

fn host_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::bad_request(format!("host id {id:?} is not a UUID")))
}

/// `DELETE /v1/edge/hosts/{id}`: revoke. 204, or 404 when the host does
/// not exist in the caller's scope.
pub async fn revoke_host(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (caller, scope) = scoped_caller(&state, &headers).await?;
    if caller.operator == Some(OperatorLevel::Readonly) {
        return Err(EnrollError::from(crate::auth::CallerError::Forbidden(
            "aegis:readonly operators cannot revoke hosts".to_owned(),
        ))
        .into());
    }
    let node_id = host_id(&id)?;
    let revoked = state
        .api
        .store
        .revoke_edge(scope.as_deref(), node_id, &caller.subject, state.api.now())
        .await
        .map_err(EnrollError::from)?;
    match revoked {
        Some(tombstone) => {
            tracing::info!(node_id = %node_id, tenant = %tombstone.tenant_id, by = %caller.subject, "edge revoked");
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::not_found(format!("host {node_id} not found"))),
    }
}

//! Authenticating a REST request: the bearer token and the tenant headers,
//! with the same rules as gRPC (`auth::authorize`).

use axum::http::HeaderMap;

use super::error::ApiError;
use super::HttpState;
use crate::auth::{authorize, Caller, TenantHeaders};

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The caller of a request and the tenant it acts for.
pub async fn request_caller(
    state: &HttpState,
    headers: &HeaderMap,
) -> Result<(Caller, String), ApiError> {
    let api = &state.api;
    let resolved = authorize(
        api.callers.as_ref(),
        api.now(),
        header(headers, "authorization"),
        TenantHeaders {
            aegis_tenant: header(headers, "x-aegis-tenant"),
            tenant_id: header(headers, "x-tenant-id"),
        },
    )
    .await?;
    Ok(resolved)
}

/// Refuses a caller who may not run tools on edges or change them
/// (`Caller::may_manage_fleet`), with a 403 naming the missing role.
pub fn require_manager(caller: &Caller, action: &str) -> Result<(), ApiError> {
    Ok(caller.require_fleet_manager(action)?)
}

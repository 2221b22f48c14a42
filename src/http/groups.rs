//! `/v1/edge/groups[/{id}]` (protocol.md §8.5): named edge groups, a stored
//! selector plus pinned members, used as `{"Group":"<uuid>"}` fleet targets.
//!
//! Invariants: a selector is only stored once it parses as an
//! [`EdgeSelector`] (and is stored in its canonical serde form); a caller
//! only ever sees or changes groups of its tenant scope, and another
//! tenant's group answers 404 exactly like a missing one.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::body::json_body;
use super::caller::{request_caller, require_manager};
use super::error::ApiError;
use super::hosts::scoped_caller;
use super::HttpState;
use crate::fleet::EdgeSelector;
use crate::store::{EdgeGroup, GroupUpdate, StoreError};

/// One group as the REST surface shows it (protocol.md §8.5, GroupView).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupView {
    /// Group id.
    pub id: Uuid,
    /// Name, unique per tenant.
    pub name: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// The stored selector (AEGIS's serde `EdgeSelector`).
    pub selector: serde_json::Value,
    /// Edges always in the group.
    pub pinned_members: Vec<Uuid>,
    /// Creator.
    pub created_by: String,
    /// Creation time (RFC 3339).
    pub created_at: DateTime<Utc>,
}

impl From<EdgeGroup> for GroupView {
    fn from(group: EdgeGroup) -> Self {
        Self {
            id: group.id,
            name: group.name,
            tenant_id: group.tenant_id,
            selector: group.selector,
            pinned_members: group.pinned_members,
            created_by: group.created_by,
            created_at: group.created_at,
        }
    }
}

/// Body of `POST /v1/edge/groups`.
#[derive(Debug, Deserialize)]
struct NewGroup {
    name: String,
    selector: EdgeSelector,
    pinned_members: Option<Vec<Uuid>>,
    // The CLI also sends `created_by`; it is ignored: a group's creator is
    // the authenticated caller, not what a body claims.
}

/// Body of `PATCH /v1/edge/groups/{id}`; absent fields are kept.
#[derive(Debug, Deserialize)]
struct GroupPatch {
    name: Option<String>,
    selector: Option<EdgeSelector>,
    pinned_members: Option<Vec<Uuid>>,
}

fn group_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::bad_request(format!("group id {id:?} is not a UUID")))
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::not_found(format!("group {id} not found"))
}

fn checked_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::bad_request("`name` must not be empty"));
    }
    Ok(())
}

/// The canonical stored form of a selector.
fn selector_json(selector: &EdgeSelector) -> Result<serde_json::Value, ApiError> {
    serde_json::to_value(selector)
        .map_err(|err| ApiError::bad_request(format!("`selector` cannot be stored: {err}")))
}

/// Pinned members in the order sent, without repeats.
fn unique(members: Vec<Uuid>) -> Vec<Uuid> {
    let mut out: Vec<Uuid> = Vec::with_capacity(members.len());
    for member in members {
        if !out.contains(&member) {
            out.push(member);
        }
    }
    out
}

fn name_taken(err: StoreError, name: &str) -> ApiError {
    match err {
        StoreError::Conflict(_) => ApiError::conflict(format!(
            "group exists: this tenant already has a group named {name:?}; choose another name \
             or change that group with PATCH /v1/edge/groups/{{id}}"
        )),
        other => other.into(),
    }
}

/// `GET /v1/edge/groups`: the groups of the caller's scope, by tenant and name.
pub async fn list_groups(
    State(state): State<HttpState>,
    headers: HeaderMap,
) -> Result<Json<Vec<GroupView>>, ApiError> {
    let (_caller, scope) = scoped_caller(&state, &headers).await?;
    let groups = state.api.store.list_groups(scope.as_deref()).await?;
    Ok(Json(groups.into_iter().map(GroupView::from).collect()))
}

/// `POST /v1/edge/groups`: creates a group in the caller's resolved tenant.
pub async fn create_group(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<GroupView>, ApiError> {
    // The resolved tenant, not the scope: an operator's group still has one.
    let (caller, tenant) = request_caller(&state, &headers).await?;
    require_manager(&caller, "change groups")?;
    let new: NewGroup = json_body(body)?;
    checked_name(&new.name)?;
    let group = EdgeGroup {
        id: state.api.entropy.uuid_v4(),
        tenant_id: tenant,
        selector: selector_json(&new.selector)?,
        pinned_members: unique(new.pinned_members.unwrap_or_default()),
        created_by: caller.subject.clone(),
        created_at: state.api.now(),
        name: new.name,
    };
    let created = state
        .api
        .store
        .create_group(&group)
        .await
        .map_err(|err| name_taken(err, &group.name))?;
    tracing::info!(group_id = %created.id, tenant = %created.tenant_id, name = %created.name, by = %caller.subject, "group created");
    Ok(Json(created.into()))
}

/// `GET /v1/edge/groups/{id}`.
pub async fn get_group(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<GroupView>, ApiError> {
    let (_caller, scope) = scoped_caller(&state, &headers).await?;
    let id = group_id(&id)?;
    let group = state
        .api
        .store
        .get_group(scope.as_deref(), id)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok(Json(group.into()))
}

/// `PATCH /v1/edge/groups/{id}`: `{name?, selector?, pinned_members?}`.
pub async fn patch_group(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<GroupView>, ApiError> {
    let (caller, scope) = scoped_caller(&state, &headers).await?;
    require_manager(&caller, "change groups")?;
    let id = group_id(&id)?;
    let patch: GroupPatch = json_body(body)?;
    if let Some(name) = &patch.name {
        checked_name(name)?;
    }
    let update = GroupUpdate {
        selector: patch.selector.as_ref().map(selector_json).transpose()?,
        pinned_members: patch.pinned_members.map(unique),
        name: patch.name,
    };
    let updated = state
        .api
        .store
        .update_group(scope.as_deref(), id, &update)
        .await
        .map_err(|err| name_taken(err, update.name.as_deref().unwrap_or_default()))?
        .ok_or_else(|| not_found(id))?;
    tracing::info!(group_id = %id, tenant = %updated.tenant_id, by = %caller.subject, "group changed");
    Ok(Json(updated.into()))
}

/// `DELETE /v1/edge/groups/{id}`: 204, or 404 when not in scope.
pub async fn delete_group(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let (caller, scope) = scoped_caller(&state, &headers).await?;
    require_manager(&caller, "change groups")?;
    let id = group_id(&id)?;
    if !state.api.store.delete_group(scope.as_deref(), id).await? {
        return Err(not_found(id));
    }
    tracing::info!(group_id = %id, by = %caller.subject, "group deleted");
    Ok(StatusCode::NO_CONTENT)
}

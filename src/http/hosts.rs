//! `/v1/edge/hosts[/{id}]` (protocol.md §8.5): host management on the REST
//! surface. List, get, patch tags, and revoke (`DELETE`), which hard-deletes
//! the edge and keeps a tombstone so the node can neither rotate its key nor
//! connect again.
//!
//! Invariant: a caller only ever sees or changes hosts of its tenant scope;
//! another tenant's host answers 404 exactly like a missing one.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::body::json_body;
use super::caller::{request_caller, require_manager};
use super::error::ApiError;
use super::HttpState;
use crate::auth::{Caller, OperatorLevel};
use crate::enroll::EnrollError;
use crate::store::{EdgeRecord, EdgeStatus, TagChange};

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
    require_manager(&caller, "revoke hosts")?;
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
            state.api.owner.revoke(node_id).await;
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::not_found(format!("host {node_id} not found"))),
    }
}

/// A stored active edge that is not connected and has been silent this long
/// reports `unhealthy`.
const SILENT_AFTER: TimeDelta = TimeDelta::seconds(90);

/// One host as the REST surface shows it (protocol.md §8.5, EdgeHostView).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeHostView {
    /// Node id.
    pub id: Uuid,
    /// Display name, or `edge-<first 8 chars of the id>`.
    pub name: String,
    /// Owning tenant.
    pub tenant_id: String,
    /// `active`, `draining` or `unhealthy`.
    pub status: &'static str,
    /// Whether the edge has a live session now.
    pub connected: bool,
    /// Server-side tags.
    pub tags: Vec<String>,
    /// Reported operating system.
    pub os: String,
    /// Reported CPU architecture.
    pub arch: String,
    /// First enrollment (RFC 3339).
    pub enrolled_at: DateTime<Utc>,
    /// Last heartbeat written (RFC 3339), if any.
    pub last_seen_at: Option<DateTime<Utc>>,
}

impl EdgeHostView {
    /// The view of `edge`, given whether it is connected, at `now`.
    pub fn new(edge: EdgeRecord, connected: bool, now: DateTime<Utc>) -> Self {
        let silent_since = edge.last_heartbeat_at.unwrap_or(edge.enrolled_at);
        let status = match edge.status {
            EdgeStatus::Active if !connected && now - silent_since > SILENT_AFTER => {
                EdgeStatus::Unhealthy
            }
            stored => stored,
        };
        Self {
            name: host_name(&edge),
            id: edge.node_id,
            tenant_id: edge.tenant_id,
            status: status.as_str(),
            connected,
            tags: edge.tags,
            os: edge.capabilities.os,
            arch: edge.capabilities.arch,
            enrolled_at: edge.enrolled_at,
            last_seen_at: edge.last_heartbeat_at,
        }
    }
}

fn host_name(edge: &EdgeRecord) -> String {
    if edge.display_name.is_empty() {
        let id = edge.node_id.simple().to_string();
        format!("edge-{}", &id[..8])
    } else {
        edge.display_name.clone()
    }
}

/// The view of `edge`; a connected edge shows the os and arch of its live
/// session (the store catches up with the next batched write).
fn view(state: &HttpState, edge: EdgeRecord) -> EdgeHostView {
    let session = state.api.owner.registry().get(edge.node_id);
    let mut host = EdgeHostView::new(edge, session.is_some(), state.api.now());
    if let Some(session) = session {
        host.os.clone_from(&session.capabilities.os);
        host.arch.clone_from(&session.capabilities.arch);
    }
    host
}

/// The edge `id` if it exists in `scope`; 404 otherwise, cross-tenant too.
async fn edge_in_scope(
    state: &HttpState,
    scope: Option<&str>,
    node_id: Uuid,
) -> Result<EdgeRecord, ApiError> {
    match state.api.store.get_edge(node_id).await? {
        Some(edge) if scope.is_none_or(|tenant| tenant == edge.tenant_id) => Ok(edge),
        _ => Err(ApiError::not_found(format!("host {node_id} not found"))),
    }
}

/// `GET /v1/edge/hosts`: the hosts of the caller's scope, by id.
pub async fn list_hosts(
    State(state): State<HttpState>,
    headers: HeaderMap,
) -> Result<Json<Vec<EdgeHostView>>, ApiError> {
    let (_caller, scope) = scoped_caller(&state, &headers).await?;
    let edges = state.api.store.list_edges(scope.as_deref()).await?;
    let mut hosts: Vec<EdgeHostView> = edges.into_iter().map(|edge| view(&state, edge)).collect();
    hosts.sort_by_key(|host| host.id);
    Ok(Json(hosts))
}

/// `GET /v1/edge/hosts/{id}`.
pub async fn get_host(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<EdgeHostView>, ApiError> {
    let (_caller, scope) = scoped_caller(&state, &headers).await?;
    let node_id = host_id(&id)?;
    let edge = edge_in_scope(&state, scope.as_deref(), node_id).await?;
    Ok(Json(view(&state, edge)))
}

/// Body of `PATCH /v1/edge/hosts/{id}`; absent fields are kept.
#[derive(Debug, Default, Deserialize)]
struct HostPatch {
    name: Option<String>,
    tags: Option<Vec<String>>,
    add_tags: Option<Vec<String>>,
    remove_tags: Option<Vec<String>>,
}

impl HostPatch {
    /// The store's change for `tags` (replace), then `add_tags`, then
    /// `remove_tags`; `None` when the patch does not touch tags. The store
    /// applies it atomically, so concurrent patches do not lose tags.
    fn tag_change(&self) -> Result<Option<TagChange>, ApiError> {
        if self.tags.is_none() && self.add_tags.is_none() && self.remove_tags.is_none() {
            return Ok(None);
        }
        for (field, list) in [("tags", &self.tags), ("add_tags", &self.add_tags)] {
            if list.iter().flatten().any(|tag| tag.trim().is_empty()) {
                return Err(ApiError::bad_request(format!(
                    "`{field}` must not contain empty tags"
                )));
            }
        }
        Ok(Some(TagChange {
            replace: self.tags.clone(),
            add: self.add_tags.clone().unwrap_or_default(),
            remove: self.remove_tags.clone().unwrap_or_default(),
        }))
    }

    /// The new display name, if the patch changes it. Sending the current
    /// name back changes nothing (clients echo views).
    fn new_name(&self, edge: &EdgeRecord) -> Result<Option<String>, ApiError> {
        let Some(name) = &self.name else {
            return Ok(None);
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(ApiError::bad_request(
                "`name` must not be empty; omit it to keep the current name",
            ));
        }
        if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(ApiError::bad_request(format!(
                "`name` must be at most {MAX_NAME_CHARS} characters without control characters"
            )));
        }
        if name == host_name(edge) {
            return Ok(None);
        }
        Ok(Some(name.to_owned()))
    }
}

/// Longest host display name.
const MAX_NAME_CHARS: usize = 128;

/// `PATCH /v1/edge/hosts/{id}`: `{name?, tags?, add_tags?, remove_tags?}`.
pub async fn patch_host(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EdgeHostView>, ApiError> {
    let (caller, scope) = scoped_caller(&state, &headers).await?;
    require_manager(&caller, "rename or tag hosts")?;
    let node_id = host_id(&id)?;
    let patch: HostPatch = json_body(body)?;
    let mut edge = edge_in_scope(&state, scope.as_deref(), node_id).await?;
    let name = patch.new_name(&edge)?;
    let tag_change = patch.tag_change()?;
    if let Some(name) = name {
        edge = state
            .api
            .store
            .set_edge_name(scope.as_deref(), node_id, &name, state.api.now())
            .await?
            .ok_or_else(|| ApiError::not_found(format!("host {node_id} not found")))?;
        tracing::info!(node_id = %node_id, name = %name, by = %caller.subject, "host renamed");
    }
    let Some(tag_change) = tag_change else {
        return Ok(Json(view(&state, edge)));
    };
    let api = &state.api;
    let updated = api
        .owner
        .change_tags(
            api.store.as_ref(),
            scope.as_deref(),
            node_id,
            &tag_change,
            api.now(),
        )
        .await?
        .ok_or_else(|| ApiError::not_found(format!("host {node_id} not found")))?;
    tracing::info!(node_id = %node_id, tags = ?updated.tags, by = %caller.subject, "host tags changed");
    Ok(Json(view(&state, updated)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EdgeCapabilities;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    fn edge(display_name: &str, last_heartbeat_secs: Option<i64>) -> EdgeRecord {
        let at = |secs| DateTime::from_timestamp(secs, 0).unwrap_or_default();
        EdgeRecord {
            node_id: Uuid::from_u128(0x6f1c2c9e_5b8a_4c7d_9e0f_123456789abc),
            tenant_id: "t-a".to_owned(),
            public_key: vec![0; 32],
            capabilities: EdgeCapabilities::default(),
            tags: strings(&["a", "b"]),
            status: EdgeStatus::Active,
            display_name: display_name.to_owned(),
            enrolled_at: at(1_000),
            last_heartbeat_at: last_heartbeat_secs.map(at),
            seq: 0,
        }
    }

    #[test]
    fn tag_patches_become_one_store_change() -> Result<(), ApiError> {
        let patch =
            |tags: Option<&[&str]>, add: Option<&[&str]>, remove: Option<&[&str]>| HostPatch {
                name: None,
                tags: tags.map(strings),
                add_tags: add.map(strings),
                remove_tags: remove.map(strings),
            };
        assert_eq!(patch(None, None, None).tag_change()?, None);
        let change = patch(Some(&["x"]), Some(&["y"]), Some(&["x"])).tag_change()?;
        assert_eq!(
            change,
            Some(TagChange {
                replace: Some(strings(&["x"])),
                add: strings(&["y"]),
                remove: strings(&["x"]),
            })
        );
        // Clearing every tag is a change, unlike leaving `tags` out.
        let clear = patch(Some(&[]), None, None).tag_change()?;
        assert_eq!(
            clear.map(|change| change.apply(&strings(&["a", "b"]))),
            Some(Vec::new())
        );
        let add_only = patch(None, Some(&["b", "c"]), None).tag_change()?;
        assert_eq!(
            add_only.map(|change| change.apply(&strings(&["a", "b"]))),
            Some(strings(&["a", "b", "c"]))
        );
        let empty = patch(None, Some(&[" "]), None).tag_change();
        assert!(matches!(empty, Err(err) if err.message.contains("`add_tags`")));
        let empty = patch(Some(&["ok", ""]), None, None).tag_change();
        assert!(matches!(empty, Err(err) if err.message.contains("`tags`")));
        Ok(())
    }

    #[test]
    fn names_fall_back_to_the_id_and_change_only_when_new() {
        assert_eq!(host_name(&edge("", None)), "edge-6f1c2c9e");
        assert_eq!(host_name(&edge("laptop", None)), "laptop");
        let rename = |name: &str| HostPatch {
            name: Some(name.to_owned()),
            ..HostPatch::default()
        };
        let same = rename("laptop").new_name(&edge("laptop", None));
        assert!(matches!(same, Ok(None)));
        let fallback = rename("edge-6f1c2c9e").new_name(&edge("", None));
        assert!(matches!(fallback, Ok(None)));
        let renamed = rename(" db-1 ").new_name(&edge("laptop", None));
        assert!(matches!(renamed, Ok(Some(name)) if name == "db-1"));
        let err = rename("  ").new_name(&edge("laptop", None)).err();
        assert!(err.is_some_and(|err| err.message.contains("must not be empty")));
        let err = rename(&"x".repeat(129))
            .new_name(&edge("laptop", None))
            .err();
        assert!(err.is_some_and(|err| err.message.contains("at most 128")));
    }

    #[test]
    fn a_silent_disconnected_active_edge_reports_unhealthy() {
        let now = DateTime::from_timestamp(1_200, 0).unwrap_or_default();
        let fresh = edge("", Some(1_150));
        let stale = edge("", Some(1_100));
        assert_eq!(EdgeHostView::new(fresh, false, now).status, "active");
        assert_eq!(
            EdgeHostView::new(stale.clone(), false, now).status,
            "unhealthy"
        );
        assert_eq!(EdgeHostView::new(stale.clone(), true, now).status, "active");
        // Never heard from: silent since enrollment.
        assert_eq!(
            EdgeHostView::new(edge("", None), false, now).status,
            "unhealthy"
        );
        let draining = EdgeRecord {
            status: EdgeStatus::Draining,
            ..stale
        };
        assert_eq!(EdgeHostView::new(draining, false, now).status, "draining");
    }
}

//! `/v1/relay/*`: the cluster as this replica sees it, for operators and
//! for tests and the simulator (field names are a contract scripts read).
//!
//! - `GET /v1/relay/status`: this replica, every live member, the ring.
//! - `GET /v1/relay/where/tenant/{tenant_id}`: the owner of any tenant id.
//! - `GET /v1/relay/where/edge/{node_id}`: an enrolled edge's tenant, owner
//!   and the replica holding its stream.
//!
//! Answered from this replica's own view; `aegis:admin` operators only.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::caller::request_caller;
use super::error::ApiError;
use super::HttpState;
use crate::enroll::EnrollError;
use crate::membership::{Member, RingEpoch};

/// `GET /v1/relay/status`.
#[derive(Debug, Serialize)]
pub struct StatusView {
    /// This replica's name.
    pub replica: String,
    /// This start's generation.
    pub generation: u64,
    /// This replica's published phase.
    pub phase: String,
    /// Why it is not in the phase it was asked for (e.g. an older namesake).
    pub phase_reason: Option<String>,
    /// Every live member, this one included, by name then generation.
    pub members: Vec<MemberView>,
    /// The ownership ring.
    pub ring: RingView,
    /// Live edge streams this replica holds.
    pub edges_as_ingress: usize,
    /// Sessions registered at this replica's owner half.
    pub sessions_as_owner: usize,
}

/// One member in [`StatusView`].
#[derive(Debug, Serialize)]
pub struct MemberView {
    /// Stable name.
    pub name: String,
    /// Start time in ms.
    pub generation: u64,
    /// `joining`, `serving`, `draining` (or a newer build's phase).
    pub phase: String,
    /// Build version.
    pub version: Option<String>,
    /// Peer service URL.
    pub peer: Option<String>,
    /// Since its heartbeat last advanced, as this replica saw it.
    pub last_heard_ms_ago: u64,
}

/// The ring in [`StatusView`].
#[derive(Debug, Serialize)]
pub struct RingView {
    /// 16 hex digits; equal on replicas with the same serving set.
    pub epoch: RingEpoch,
    /// Fraction of the tenant key space per serving member.
    pub shares: BTreeMap<String, f64>,
}

/// `GET /v1/relay/where/tenant/{tenant_id}`.
#[derive(Debug, Serialize)]
pub struct TenantOwner {
    /// The tenant asked about.
    pub tenant_id: String,
    /// Its owner, `null` when no replica serves.
    pub owner: Option<String>,
    /// The epoch of the ring that answered.
    pub epoch: RingEpoch,
}

/// `GET /v1/relay/where/edge/{node_id}`.
#[derive(Debug, Serialize)]
pub struct EdgeWhere {
    /// The edge.
    pub node_id: Uuid,
    /// Its tenant.
    pub tenant_id: String,
    /// The owner of its tenant.
    pub owner: Option<String>,
    /// This replica's name when it holds the edge's stream, else `null`.
    pub ingress: Option<String>,
    /// When the held stream was opened.
    pub connected_since: Option<DateTime<Utc>>,
}

async fn require_operator(state: &HttpState, headers: &HeaderMap) -> Result<(), ApiError> {
    let (caller, _) = request_caller(state, headers).await?;
    if caller.is_admin() {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "caller {:?} may not read the relay's cluster status: it needs operator level \
         aegis:admin",
        caller.subject
    )))
}

fn member_view(member: &Member) -> MemberView {
    MemberView {
        name: member.name.clone(),
        generation: member.generation,
        phase: member.phase.as_str().to_owned(),
        version: member.version.clone(),
        peer: member.peer.clone(),
        last_heard_ms_ago: u64::try_from(member.last_heard.as_millis()).unwrap_or(u64::MAX),
    }
}

/// `GET /v1/relay/status`.
pub async fn status(
    State(state): State<HttpState>,
    headers: HeaderMap,
) -> Result<Json<StatusView>, ApiError> {
    require_operator(&state, &headers).await?;
    let membership = &state.api.membership;
    let view = membership.view();
    Ok(Json(StatusView {
        replica: membership.name().to_owned(),
        generation: membership.generation(),
        phase: view.phase.as_str().to_owned(),
        phase_reason: view.phase_reason.clone(),
        members: view.snapshot.members().iter().map(member_view).collect(),
        ring: RingView {
            epoch: view.ring.epoch().clone(),
            shares: view.ring.shares(),
        },
        edges_as_ingress: state.api.ingress.live_streams(),
        sessions_as_owner: state.api.owner.registry().len(),
    }))
}

/// `GET /v1/relay/where/tenant/{tenant_id}`.
pub async fn where_tenant(
    State(state): State<HttpState>,
    Path(tenant_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<TenantOwner>, ApiError> {
    require_operator(&state, &headers).await?;
    let view = state.api.membership.view();
    Ok(Json(TenantOwner {
        owner: view.ring.owner(&tenant_id).map(str::to_owned),
        epoch: view.ring.epoch().clone(),
        tenant_id,
    }))
}

/// `GET /v1/relay/where/edge/{node_id}`: 404 for an edge that is not
/// enrolled.
pub async fn where_edge(
    State(state): State<HttpState>,
    Path(node_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<EdgeWhere>, ApiError> {
    require_operator(&state, &headers).await?;
    let node_id = Uuid::parse_str(&node_id)
        .map_err(|_| ApiError::bad_request(format!("node id {node_id:?} is not a UUID")))?;
    let edge = state
        .api
        .store
        .get_edge(node_id)
        .await
        .map_err(EnrollError::from)?
        .ok_or_else(|| ApiError::not_found(format!("no enrolled edge has node id {node_id}")))?;
    let view = state.api.membership.view();
    let held = state.api.owner.registry().get(node_id);
    Ok(Json(EdgeWhere {
        node_id,
        owner: view.ring.owner(&edge.tenant_id).map(str::to_owned),
        ingress: held
            .as_ref()
            .map(|_| state.api.membership.name().to_owned()),
        connected_since: held.map(|entry| entry.connected_at),
        tenant_id: edge.tenant_id,
    }))
}

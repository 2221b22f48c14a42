//! Resolving a fleet target to the connected edges it addresses (protocol.md
//! §8.3, "Resolution"): the one rule behind fleet preview and fleet invoke.
//!
//! Invariant: a resolution only ever names edges that are connected now
//! (in the owner's registry) and belong to the caller's tenant (every tenant
//! for operators, `scope == None`); the result is sorted by node id and has
//! no duplicates. A node of another tenant is reported exactly like an
//! unknown one, so callers learn nothing about other tenants.

use std::collections::BTreeSet;

use uuid::Uuid;

use super::target::{EdgeFacts, EdgeSelector, EdgeTarget};
use crate::owner::{Owner, SessionEntry};
use crate::store::{Store, StoreError};

/// Why a target resolved to nothing usable.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The node is unknown, or belongs to another tenant (AEGIS's
    /// CrossTenantAccessDenied, worded so it reveals neither).
    #[error("edge {0} not found in your tenant; list your edges with GET /v1/edge/hosts")]
    NotFound(Uuid),
    /// The node is enrolled in the caller's tenant but not connected.
    #[error(
        "edge {0} is enrolled but not connected; start its daemon, or check `connected` in \
         GET /v1/edge/hosts/{0}"
    )]
    Unavailable(Uuid),
    /// A selector (or `All`) matched no connected edge.
    #[error(
        "no connected edge matches the target; compare it with the tags, os, arch and \
         `connected` of GET /v1/edge/hosts"
    )]
    NoMatchingEdges,
    /// The group is unknown, or belongs to another tenant.
    #[error("group {0} not found in your tenant; list your groups with GET /v1/edge/groups")]
    GroupNotFound(Uuid),
    /// The group's stored selector is not a valid `EdgeSelector`.
    #[error(
        "group {group} has an invalid stored selector at `{path}`: {reason}; replace it with \
         PATCH /v1/edge/groups/{group}"
    )]
    InvalidGroupSelector {
        /// The group.
        group: Uuid,
        /// JSON path of the bad value inside the selector.
        path: String,
        /// The parser's explanation.
        reason: String,
    },
    /// The store could not be read.
    #[error("could not read edges or groups: {0}")]
    Store(#[from] StoreError),
}

impl ResolveError {
    /// The HTTP status and AEGIS error code of this error.
    pub fn http_status(&self) -> (u16, &'static str) {
        match self {
            Self::NotFound(_) | Self::GroupNotFound(_) => (404, "not_found"),
            Self::Unavailable(_) | Self::NoMatchingEdges | Self::InvalidGroupSelector { .. } => {
                (400, "bad_request")
            }
            Self::Store(err) if err.is_transient() => (503, "unavailable"),
            Self::Store(_) => (500, "internal"),
        }
    }
}

/// The connected edges `target` addresses for a caller whose tenant scope is
/// `scope` (`None`: every tenant), sorted by node id.
pub async fn resolve(
    target: &EdgeTarget,
    scope: Option<&str>,
    store: &dyn Store,
    owner: &Owner,
) -> Result<Vec<Uuid>, ResolveError> {
    match target {
        EdgeTarget::Node(node_id) => resolve_node(*node_id, scope, store, owner).await,
        EdgeTarget::All => non_empty(matching(owner, scope, &EdgeSelector::default(), &[])),
        EdgeTarget::Selector(selector) => non_empty(matching(owner, scope, selector, &[])),
        EdgeTarget::Group(group_id) => resolve_group(*group_id, scope, store, owner).await,
    }
}

fn in_scope(tenant: &str, scope: Option<&str>) -> bool {
    scope.is_none_or(|scope| scope == tenant)
}

async fn resolve_node(
    node_id: Uuid,
    scope: Option<&str>,
    store: &dyn Store,
    owner: &Owner,
) -> Result<Vec<Uuid>, ResolveError> {
    if let Some(session) = owner.registry().get(node_id) {
        return if in_scope(&session.tenant_id, scope) {
            Ok(vec![node_id])
        } else {
            Err(ResolveError::NotFound(node_id))
        };
    }
    match store.get_edge(node_id).await? {
        Some(edge) if in_scope(&edge.tenant_id, scope) => Err(ResolveError::Unavailable(node_id)),
        _ => Err(ResolveError::NotFound(node_id)),
    }
}

async fn resolve_group(
    group_id: Uuid,
    scope: Option<&str>,
    store: &dyn Store,
    owner: &Owner,
) -> Result<Vec<Uuid>, ResolveError> {
    let group = store
        .get_group(scope, group_id)
        .await?
        .ok_or(ResolveError::GroupNotFound(group_id))?;
    let selector: EdgeSelector =
        serde_path_to_error::deserialize(group.selector).map_err(|err| {
            ResolveError::InvalidGroupSelector {
                group: group_id,
                path: err.path().to_string(),
                reason: err.into_inner().to_string(),
            }
        })?;
    // A group only ever spans its own tenant, even for an operator caller.
    Ok(matching(
        owner,
        Some(&group.tenant_id),
        &selector,
        &group.pinned_members,
    ))
}

/// Connected edges of `scope` that match `selector` or are `pinned`.
fn matching(
    owner: &Owner,
    scope: Option<&str>,
    selector: &EdgeSelector,
    pinned: &[Uuid],
) -> Vec<Uuid> {
    let resolved: BTreeSet<Uuid> = owner
        .registry()
        .sessions(scope)
        .into_iter()
        .filter(|(node_id, session)| pinned.contains(node_id) || selector.matches(&facts(session)))
        .map(|(node_id, _)| node_id)
        .collect();
    resolved.into_iter().collect()
}

fn facts(session: &SessionEntry) -> EdgeFacts<'_> {
    let capabilities = &session.capabilities;
    EdgeFacts {
        os: &capabilities.os,
        arch: &capabilities.arch,
        local_tools: &capabilities.local_tools,
        custom_labels: &capabilities.custom_labels,
        tags: &session.tags,
    }
}

fn non_empty(resolved: Vec<Uuid>) -> Result<Vec<Uuid>, ResolveError> {
    if resolved.is_empty() {
        Err(ResolveError::NoMatchingEdges)
    } else {
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests;

//! Rows as PostgreSQL returns them, and their checked conversion into the
//! store's records: JSON columns are decoded here, and anything the relay
//! cannot interpret becomes [`StoreError::Corrupt`] naming the row.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::store::{
    AttestedCapabilities, EdgeCapabilities, EdgeGroup, EdgeRecord, EdgeStatus, NodeChallenge,
    StoreError, StoreResult, Tombstone,
};

/// Columns selected for an [`EdgeRow`] from `edge_daemons` (unaliased),
/// with the `seq` of the node's latest change.
pub(super) const EDGE_COLUMNS: &str = "node_id, tenant_id, public_key, capabilities_json, tags, \
     status, display_name, enrolled_at, last_heartbeat_at, \
     COALESCE((SELECT max(c.seq) FROM edge_changes c \
     WHERE c.node_id = edge_daemons.node_id), 0) AS seq";

/// Columns an UPDATE returns for an [`EdgeRow`]; the caller sets `seq`
/// from the change it writes.
pub(super) const EDGE_RETURNING: &str = "node_id, tenant_id, public_key, capabilities_json, \
     tags, status, display_name, enrolled_at, last_heartbeat_at, 0::bigint AS seq";

/// Columns selected for a [`ChallengeRow`].
pub(super) const CHALLENGE_COLUMNS: &str =
    "challenge_id, node_id, nonce, public_key, role, capabilities_json, grpc_address, created_at";

/// Columns selected for a [`GroupRow`].
pub(super) const GROUP_COLUMNS: &str =
    "id, tenant_id, name, selector_json, pinned_members, created_by, created_at";

/// Columns selected for a [`TombstoneRow`].
pub(super) const TOMBSTONE_COLUMNS: &str = "node_id, tenant_id, revoked_at, revoked_by";

/// One `edge_daemons` row.
#[derive(sqlx::FromRow)]
pub(super) struct EdgeRow {
    node_id: Uuid,
    tenant_id: String,
    public_key: Vec<u8>,
    capabilities_json: serde_json::Value,
    tags: Vec<String>,
    status: String,
    display_name: String,
    // Nullable in AEGIS's DDL (a default, no NOT NULL).
    enrolled_at: Option<DateTime<Utc>>,
    last_heartbeat_at: Option<DateTime<Utc>>,
    seq: i64,
}

impl TryFrom<EdgeRow> for EdgeRecord {
    type Error = StoreError;

    fn try_from(row: EdgeRow) -> StoreResult<Self> {
        let node = row.node_id;
        let status = EdgeStatus::parse(&row.status).ok_or_else(|| {
            StoreError::Corrupt(format!("edge {node}: unknown status {:?}", row.status))
        })?;
        let mut capabilities: EdgeCapabilities = serde_json::from_value(row.capabilities_json)
            .map_err(|err| StoreError::Corrupt(format!("edge {node}: capabilities_json: {err}")))?;
        capabilities.tags.clone_from(&row.tags);
        let enrolled_at = row
            .enrolled_at
            .ok_or_else(|| StoreError::Corrupt(format!("edge {node}: enrolled_at is NULL")))?;
        Ok(Self {
            node_id: node,
            tenant_id: row.tenant_id,
            public_key: row.public_key,
            capabilities,
            tags: row.tags,
            status,
            display_name: row.display_name,
            enrolled_at,
            last_heartbeat_at: row.last_heartbeat_at,
            seq: row.seq,
        })
    }
}

/// Converts many edge rows, failing on the first corrupt one.
pub(super) fn edges(rows: Vec<EdgeRow>) -> StoreResult<Vec<EdgeRecord>> {
    rows.into_iter().map(EdgeRecord::try_from).collect()
}

/// One `edge_challenges` row.
#[derive(sqlx::FromRow)]
pub(super) struct ChallengeRow {
    challenge_id: Uuid,
    node_id: Uuid,
    nonce: Vec<u8>,
    public_key: Vec<u8>,
    role: String,
    capabilities_json: serde_json::Value,
    grpc_address: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<ChallengeRow> for NodeChallenge {
    type Error = StoreError;

    fn try_from(row: ChallengeRow) -> StoreResult<Self> {
        let capabilities: AttestedCapabilities = serde_json::from_value(row.capabilities_json)
            .map_err(|err| {
                StoreError::Corrupt(format!(
                    "challenge {}: capabilities_json: {err}",
                    row.challenge_id
                ))
            })?;
        Ok(Self {
            challenge_id: row.challenge_id,
            node_id: row.node_id,
            nonce: row.nonce,
            public_key: row.public_key,
            role: row.role,
            capabilities,
            grpc_address: row.grpc_address,
            created_at: row.created_at,
        })
    }
}

/// One `edge_groups` row. AEGIS's DDL leaves some columns nullable; a NULL
/// array reads as empty, a NULL creator as "".
#[derive(sqlx::FromRow)]
pub(super) struct GroupRow {
    id: Uuid,
    tenant_id: String,
    name: String,
    selector_json: serde_json::Value,
    pinned_members: Option<Vec<Uuid>>,
    created_by: Option<String>,
    created_at: Option<DateTime<Utc>>,
}

impl TryFrom<GroupRow> for EdgeGroup {
    type Error = StoreError;

    fn try_from(row: GroupRow) -> StoreResult<Self> {
        let created_at = row
            .created_at
            .ok_or_else(|| StoreError::Corrupt(format!("group {}: created_at is NULL", row.id)))?;
        Ok(Self {
            id: row.id,
            tenant_id: row.tenant_id,
            name: row.name,
            selector: row.selector_json,
            pinned_members: row.pinned_members.unwrap_or_default(),
            created_by: row.created_by.unwrap_or_default(),
            created_at,
        })
    }
}

/// Converts many group rows, failing on the first corrupt one.
pub(super) fn groups(rows: Vec<GroupRow>) -> StoreResult<Vec<EdgeGroup>> {
    rows.into_iter().map(EdgeGroup::try_from).collect()
}

/// One `edge_tombstones` row.
#[derive(sqlx::FromRow)]
pub(super) struct TombstoneRow {
    node_id: Uuid,
    tenant_id: String,
    revoked_at: DateTime<Utc>,
    revoked_by: String,
}

impl From<TombstoneRow> for Tombstone {
    fn from(row: TombstoneRow) -> Self {
        Self {
            node_id: row.node_id,
            tenant_id: row.tenant_id,
            revoked_at: row.revoked_at,
            revoked_by: row.revoked_by,
        }
    }
}

/// Serializes a record's JSON column value.
pub(super) fn to_json<T: serde::Serialize>(
    value: &T,
    what: &str,
) -> StoreResult<serde_json::Value> {
    serde_json::to_value(value)
        .map_err(|err| StoreError::Database(format!("cannot encode {what} as JSON: {err}")))
}

//! Conversions between the store's records and SQLite's column types: UUIDs
//! as hyphenated TEXT, times as unix milliseconds, arrays and maps as JSON.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;

use crate::store::types::{
    EdgeCapabilities, EdgeGroup, EdgeRecord, EdgeStatus, NodeChallenge, Tombstone,
};
use crate::store::StoreError;

pub fn id(uuid: Uuid) -> String {
    uuid.hyphenated().to_string()
}

pub fn millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

pub fn time(column: &str, value: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_millis(value)
        .ok_or_else(|| StoreError::Corrupt(format!("{column}: {value} is not a valid time")))
}

pub fn json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|err| StoreError::Corrupt(err.to_string()))
}

fn parse_json<T: DeserializeOwned>(column: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|err| StoreError::Corrupt(format!("{column}: {err}")))
}

pub fn parse_uuid(column: &str, text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text).map_err(|err| StoreError::Corrupt(format!("{column}: {err}")))
}

pub fn edge(row: &SqliteRow) -> Result<EdgeRecord, StoreError> {
    let node_id = parse_uuid("edge_daemons.node_id", row.try_get("node_id")?)?;
    let tags: Vec<String> = parse_json("edge_daemons.tags", row.try_get("tags")?)?;
    let mut capabilities: EdgeCapabilities = parse_json(
        "edge_daemons.capabilities_json",
        row.try_get("capabilities_json")?,
    )?;
    capabilities.tags.clone_from(&tags);
    let status_text: String = row.try_get("status")?;
    let status = EdgeStatus::parse(&status_text).ok_or_else(|| {
        StoreError::Corrupt(format!("edge {node_id} has unknown status {status_text:?}"))
    })?;
    let last_heartbeat_at: Option<i64> = row.try_get("last_heartbeat_at")?;
    // Rows from `RETURNING *` carry no seq; the caller sets it.
    let seq = match row.try_get("seq") {
        Ok(seq) => seq,
        Err(sqlx::Error::ColumnNotFound(_)) => 0,
        Err(err) => return Err(err.into()),
    };
    Ok(EdgeRecord {
        node_id,
        tenant_id: row.try_get("tenant_id")?,
        public_key: row.try_get("public_key")?,
        capabilities,
        tags,
        status,
        display_name: row.try_get("display_name")?,
        enrolled_at: time("edge_daemons.enrolled_at", row.try_get("enrolled_at")?)?,
        last_heartbeat_at: last_heartbeat_at
            .map(|value| time("edge_daemons.last_heartbeat_at", value))
            .transpose()?,
        seq,
    })
}

pub fn challenge(row: &SqliteRow) -> Result<NodeChallenge, StoreError> {
    Ok(NodeChallenge {
        challenge_id: parse_uuid("edge_challenges.challenge_id", row.try_get("challenge_id")?)?,
        node_id: parse_uuid("edge_challenges.node_id", row.try_get("node_id")?)?,
        nonce: row.try_get("nonce")?,
        public_key: row.try_get("public_key")?,
        role: row.try_get("role")?,
        capabilities: parse_json(
            "edge_challenges.capabilities_json",
            row.try_get("capabilities_json")?,
        )?,
        grpc_address: row.try_get("grpc_address")?,
        created_at: time("edge_challenges.created_at", row.try_get("created_at")?)?,
    })
}

pub fn tombstone(row: &SqliteRow) -> Result<Tombstone, StoreError> {
    Ok(Tombstone {
        node_id: parse_uuid("edge_tombstones.node_id", row.try_get("node_id")?)?,
        tenant_id: row.try_get("tenant_id")?,
        revoked_at: time("edge_tombstones.revoked_at", row.try_get("revoked_at")?)?,
        revoked_by: row.try_get("revoked_by")?,
    })
}

pub fn group(row: &SqliteRow) -> Result<EdgeGroup, StoreError> {
    let pinned: Vec<String> =
        parse_json("edge_groups.pinned_members", row.try_get("pinned_members")?)?;
    Ok(EdgeGroup {
        id: parse_uuid("edge_groups.id", row.try_get("id")?)?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        selector: parse_json("edge_groups.selector_json", row.try_get("selector_json")?)?,
        pinned_members: pinned
            .iter()
            .map(|member| parse_uuid("edge_groups.pinned_members", member))
            .collect::<Result<_, _>>()?,
        created_by: row.try_get("created_by")?,
        created_at: time("edge_groups.created_at", row.try_get("created_at")?)?,
    })
}

pub fn uuid_list(members: &[Uuid]) -> Result<String, StoreError> {
    json(&members.iter().map(|member| id(*member)).collect::<Vec<_>>())
}

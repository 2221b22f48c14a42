//! SQLite: the change feed. Writers hold the database's write lock for the
//! whole transaction, so any order of statements is commit order; the
//! counter is still bumped last, as on PostgreSQL.

use chrono::{DateTime, Utc};
use sqlx::{SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::codec::{self, id, millis};
use crate::store::{ChangeKind, EdgeChange, EdgeKey, FeedPage, StoreError, StoreResult};

/// `seq` of a node's latest change, for `SELECT e.*, {NODE_SEQ}` over
/// `edge_daemons AS e`.
pub(super) const NODE_SEQ: &str =
    "COALESCE((SELECT max(c.seq) FROM edge_changes c WHERE c.node_id = e.node_id), 0) AS seq";

/// Writes one change inside the caller's write transaction, as its last
/// statements; returns its `seq`.
pub(super) async fn record(
    conn: &mut SqliteConnection,
    node_id: Uuid,
    tenant_id: &str,
    kind: ChangeKind,
    at: DateTime<Utc>,
) -> StoreResult<i64> {
    sqlx::query(
        "INSERT INTO edge_changes (seq, node_id, tenant_id, kind, at) \
         SELECT seq + 1, ?, ?, ?, ? FROM edge_feed_head WHERE id = 1",
    )
    .bind(id(node_id))
    .bind(tenant_id)
    .bind(kind.as_str())
    .bind(millis(at))
    .execute(&mut *conn)
    .await?;
    let seq: i64 =
        sqlx::query_scalar("UPDATE edge_feed_head SET seq = seq + 1 WHERE id = 1 RETURNING seq")
            .fetch_one(&mut *conn)
            .await?;
    Ok(seq)
}

type PageRow = (
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
);

pub(super) async fn changes_since(
    pool: &SqlitePool,
    after: i64,
    limit: u32,
) -> StoreResult<FeedPage> {
    // One statement, so head, oldest and the changes come from one snapshot.
    let rows: Vec<PageRow> = sqlx::query_as(
        "SELECT h.seq, COALESCE((SELECT min(seq) FROM edge_changes), h.seq + 1), \
                c.seq, c.node_id, c.tenant_id, c.kind, c.at \
         FROM edge_feed_head h LEFT JOIN \
              (SELECT * FROM edge_changes WHERE seq > ? ORDER BY seq LIMIT ?) c ON 1 = 1 \
         WHERE h.id = 1 ORDER BY c.seq",
    )
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    let mut page = FeedPage::default();
    for (head, oldest, seq, node, tenant, kind, at) in rows {
        page.head = head;
        page.oldest = oldest;
        let (Some(seq), Some(node), Some(tenant_id), Some(kind), Some(at)) =
            (seq, node, tenant, kind, at)
        else {
            continue;
        };
        page.changes.push(EdgeChange {
            seq,
            node_id: codec::parse_uuid("edge_changes.node_id", &node)?,
            tenant_id,
            kind: ChangeKind::parse(&kind).ok_or_else(|| {
                StoreError::Corrupt(format!("edge_changes {seq}: unknown kind {kind:?}"))
            })?,
            at: codec::time("edge_changes.at", at)?,
        });
    }
    Ok(page)
}

pub(super) async fn purge_changes(pool: &SqlitePool, before: DateTime<Utc>) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM edge_changes WHERE at < ?")
        .bind(millis(before))
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

pub(super) async fn edge_keys(pool: &SqlitePool, node_ids: &[Uuid]) -> StoreResult<Vec<EdgeKey>> {
    if node_ids.is_empty() {
        return Ok(Vec::new());
    }
    let ids = codec::uuid_list(node_ids)?;
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT node_id, public_key FROM edge_daemons \
         WHERE node_id IN (SELECT value FROM json_each(?)) ORDER BY node_id",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(node, public_key)| {
            Ok(EdgeKey {
                node_id: codec::parse_uuid("edge_daemons.node_id", &node)?,
                public_key,
            })
        })
        .collect()
}

//! The change feed in PostgreSQL (relay schema). A change's `seq` comes
//! from the one-row counter `edge_feed_head`, bumped by the writing
//! transaction's last statement: the row lock it takes is held until
//! commit, so the next writer gets the next `seq` only after this one is
//! visible, and a reader never sees `seq` n+1 without n.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::store::{ChangeKind, EdgeChange, EdgeKey, FeedPage, StoreError, StoreResult};

/// Writes one change as the last statement of the caller's transaction;
/// returns its `seq`.
pub(super) async fn record(
    conn: &mut PgConnection,
    node_id: Uuid,
    tenant_id: &str,
    kind: ChangeKind,
    at: DateTime<Utc>,
) -> StoreResult<i64> {
    let seq: i64 = sqlx::query_scalar(
        "WITH head AS (UPDATE edge_feed_head SET seq = seq + 1 WHERE id = 1 RETURNING seq) \
         INSERT INTO edge_changes (seq, node_id, tenant_id, kind, at) \
         SELECT seq, $1, $2, $3, $4 FROM head RETURNING seq",
    )
    .bind(node_id)
    .bind(tenant_id)
    .bind(kind.as_str())
    .bind(at)
    .fetch_one(&mut *conn)
    .await?;
    Ok(seq)
}

type PageRow = (
    i64,
    i64,
    Option<i64>,
    Option<Uuid>,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
);

pub(super) async fn changes_since(pool: &PgPool, after: i64, limit: u32) -> StoreResult<FeedPage> {
    // One statement: head, oldest and the changes share one snapshot.
    let rows: Vec<PageRow> = sqlx::query_as(
        "SELECT h.seq, COALESCE((SELECT min(seq) FROM edge_changes), h.seq + 1), \
                c.seq, c.node_id, c.tenant_id, c.kind, c.at \
         FROM edge_feed_head h LEFT JOIN \
              (SELECT * FROM edge_changes WHERE seq > $1 ORDER BY seq LIMIT $2) c ON true \
         WHERE h.id = 1 ORDER BY c.seq",
    )
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    let mut page = FeedPage::default();
    for (head, oldest, seq, node_id, tenant, kind, at) in rows {
        page.head = head;
        page.oldest = oldest;
        let (Some(seq), Some(node_id), Some(tenant_id), Some(kind), Some(at)) =
            (seq, node_id, tenant, kind, at)
        else {
            continue;
        };
        page.changes.push(EdgeChange {
            seq,
            node_id,
            tenant_id,
            kind: ChangeKind::parse(&kind).ok_or_else(|| {
                StoreError::Corrupt(format!("edge_changes {seq}: unknown kind {kind:?}"))
            })?,
            at,
        });
    }
    Ok(page)
}

pub(super) async fn purge_changes(pool: &PgPool, before: DateTime<Utc>) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM edge_changes WHERE at < $1")
        .bind(before)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

pub(super) async fn edge_keys(pool: &PgPool, node_ids: &[Uuid]) -> StoreResult<Vec<EdgeKey>> {
    if node_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
        "SELECT node_id, public_key FROM edge_daemons WHERE node_id = ANY($1) ORDER BY node_id",
    )
    .bind(node_ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(node_id, public_key)| EdgeKey {
            node_id,
            public_key,
        })
        .collect())
}

//! Key lifecycle in PostgreSQL: atomic key rotation with single-use nonces
//! and an overlap window for the replaced key, and revocation (hard delete
//! plus tombstone) in one transaction.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::feed::record;
use super::rows::{TombstoneRow, TOMBSTONE_COLUMNS};
use super::tenant_clause;
use crate::store::{ChangeKind, KeyRotation, PreviousKey, RotationOutcome, StoreResult, Tombstone};

/// Checks in this order: the edge exists, the nonce is new for it, the key
/// is still the one the request was verified with. Any refusal rolls back,
/// so a refused request burns no nonce.
pub(super) async fn rotate_edge_key(
    pool: &PgPool,
    rotation: &KeyRotation,
) -> StoreResult<RotationOutcome> {
    let mut tx = pool.begin().await?;
    // Locking the row serializes rotation against rotation and revocation.
    let tenant: Option<String> =
        sqlx::query_scalar("SELECT tenant_id FROM edge_daemons WHERE node_id = $1 FOR UPDATE")
            .bind(rotation.node_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(tenant_id) = tenant else {
        tx.rollback().await?;
        return Ok(RotationOutcome::UnknownEdge);
    };
    let recorded: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO edge_key_history (node_id, public_key, replaced_at, valid_until, \
         rotation_nonce) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (node_id, rotation_nonce) DO NOTHING RETURNING node_id",
    )
    .bind(rotation.node_id)
    .bind(&rotation.current_key)
    .bind(rotation.now)
    .bind(rotation.previous_valid_until)
    .bind(&rotation.nonce)
    .fetch_optional(&mut *tx)
    .await?;
    if recorded.is_none() {
        tx.rollback().await?;
        return Ok(RotationOutcome::NonceReused);
    }
    let swapped: Option<Uuid> = sqlx::query_scalar(
        "UPDATE edge_daemons SET public_key = $3 \
         WHERE node_id = $1 AND public_key = $2 RETURNING node_id",
    )
    .bind(rotation.node_id)
    .bind(&rotation.current_key)
    .bind(&rotation.new_key)
    .fetch_optional(&mut *tx)
    .await?;
    if swapped.is_none() {
        tx.rollback().await?;
        return Ok(RotationOutcome::KeyChanged);
    }
    record(
        &mut tx,
        rotation.node_id,
        &tenant_id,
        ChangeKind::KeyRotated,
        rotation.now,
    )
    .await?;
    tx.commit().await?;
    Ok(RotationOutcome::Rotated)
}

/// Every history entry still inside its window, newest first. Expired rows
/// are kept: they remember used nonces.
pub(super) async fn previous_keys(
    pool: &PgPool,
    node_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<Vec<PreviousKey>> {
    let rows: Vec<(Vec<u8>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT public_key, valid_until FROM edge_key_history \
         WHERE node_id = $1 AND valid_until > $2 \
         ORDER BY replaced_at DESC, valid_until DESC",
    )
    .bind(node_id)
    .bind(now)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(public_key, valid_until)| PreviousKey {
            public_key,
            valid_until,
        })
        .collect())
}

/// Deletes the edge, records (or refreshes) its tombstone and forgets its
/// key history, atomically.
pub(super) async fn revoke_edge(
    pool: &PgPool,
    tenant: Option<&str>,
    node_id: Uuid,
    revoked_by: &str,
    now: DateTime<Utc>,
) -> StoreResult<Option<Tombstone>> {
    let mut tx = pool.begin().await?;
    let sql = format!(
        "DELETE FROM edge_daemons WHERE node_id = $1{} RETURNING tenant_id",
        tenant_clause(tenant, 2)
    );
    let mut delete = sqlx::query_scalar::<_, String>(&sql).bind(node_id);
    if let Some(tenant) = tenant {
        delete = delete.bind(tenant);
    }
    let Some(tenant_id) = delete.fetch_optional(&mut *tx).await? else {
        tx.rollback().await?;
        return Ok(None);
    };
    let row: TombstoneRow = sqlx::query_as(&format!(
        "INSERT INTO edge_tombstones (node_id, tenant_id, revoked_at, revoked_by) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (node_id) DO UPDATE SET \
         tenant_id = EXCLUDED.tenant_id, revoked_at = EXCLUDED.revoked_at, \
         revoked_by = EXCLUDED.revoked_by RETURNING {TOMBSTONE_COLUMNS}"
    ))
    .bind(node_id)
    .bind(&tenant_id)
    .bind(now)
    .bind(revoked_by)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM edge_key_history WHERE node_id = $1")
        .bind(node_id)
        .execute(&mut *tx)
        .await?;
    record(&mut tx, node_id, &tenant_id, ChangeKind::Revoked, now).await?;
    tx.commit().await?;
    Ok(Some(row.into()))
}

pub(super) async fn tombstone(pool: &PgPool, node_id: Uuid) -> StoreResult<Option<Tombstone>> {
    let row: Option<TombstoneRow> = sqlx::query_as(&format!(
        "SELECT {TOMBSTONE_COLUMNS} FROM edge_tombstones WHERE node_id = $1"
    ))
    .bind(node_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Tombstone::from))
}

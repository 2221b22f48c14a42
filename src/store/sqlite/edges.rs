//! SQLite: enrollment, edges, keys and revocation.

use chrono::{DateTime, Utc};
use sqlx::{Connection, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::codec::{self, id, json, millis};
use super::feed::{record, NODE_SEQ};
use crate::store::batch::coalesce_updates;
use crate::store::types::{
    enrollment_decision, BindOutcome, EdgeCapabilities, EdgeRecord, EdgeUpdate, Enrollment,
    EnrollmentOutcome, KeyRotation, NodeChallenge, PreviousKey, RotationOutcome, TagChange,
    TokenBinding, Tombstone, CHALLENGE_TTL,
};
use crate::store::ChangeKind;
use crate::store::{StoreError, StoreResult};

/// Write transactions take the write lock up front: a deferred transaction
/// that reads first can fail to upgrade under contention, whatever the busy
/// timeout.
pub(super) const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

fn ttl_millis() -> i64 {
    i64::try_from(CHALLENGE_TTL.as_millis()).unwrap_or(i64::MAX)
}

pub async fn put_challenge(pool: &SqlitePool, challenge: &NodeChallenge) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO edge_challenges (challenge_id, node_id, nonce, public_key, role, \
         capabilities_json, grpc_address, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id(challenge.challenge_id))
    .bind(id(challenge.node_id))
    .bind(&challenge.nonce)
    .bind(&challenge.public_key)
    .bind(&challenge.role)
    .bind(json(&challenge.capabilities)?)
    .bind(&challenge.grpc_address)
    .bind(millis(challenge.created_at))
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn sweep_challenges(pool: &SqlitePool, now: DateTime<Utc>) -> StoreResult<u64> {
    let cutoff = millis(now) - ttl_millis();
    let done = sqlx::query("DELETE FROM edge_challenges WHERE created_at <= ?")
        .bind(cutoff)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

pub async fn get_challenge(
    pool: &SqlitePool,
    challenge_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<Option<NodeChallenge>> {
    let cutoff = millis(now) - ttl_millis();
    let row = sqlx::query("SELECT * FROM edge_challenges WHERE challenge_id = ?")
        .bind(id(challenge_id))
        .fetch_optional(pool)
        .await?;
    let Some(challenge) = row.as_ref().map(codec::challenge).transpose()? else {
        return Ok(None);
    };
    if millis(challenge.created_at) <= cutoff {
        sqlx::query("DELETE FROM edge_challenges WHERE challenge_id = ?")
            .bind(id(challenge_id))
            .execute(pool)
            .await?;
        return Ok(None);
    }
    Ok(Some(challenge))
}

pub async fn complete_enrollment(
    conn: &mut SqliteConnection,
    enrollment: &Enrollment,
) -> StoreResult<EnrollmentOutcome> {
    let node = id(enrollment.node_id);
    let jti = id(enrollment.jti);
    // The write lock is held from here, so the checks below stay true.
    let mut tx = conn.begin_with(BEGIN_WRITE).await?;
    let redeemed = sqlx::query(
        "INSERT INTO enrollment_tokens (jti, tenant_id, issued_to, exp, redeemed_at) \
         VALUES (?, ?, ?, ?, ?) ON CONFLICT (jti) DO NOTHING RETURNING jti",
    )
    .bind(&jti)
    .bind(&enrollment.tenant_id)
    .bind(&enrollment.issued_to)
    .bind(millis(enrollment.token_expires_at))
    .bind(millis(enrollment.now))
    .fetch_optional(&mut *tx)
    .await?;
    if redeemed.is_none() {
        tx.rollback().await?;
        return Ok(EnrollmentOutcome::TokenAlreadyRedeemed);
    }
    let revoked = sqlx::query("SELECT 1 FROM edge_tombstones WHERE node_id = ?")
        .bind(&node)
        .fetch_optional(&mut *tx)
        .await?;
    if revoked.is_some() {
        tx.rollback().await?;
        return Ok(EnrollmentOutcome::NodeRevoked);
    }
    let bound: Option<String> = if enrollment.own_token {
        sqlx::query_scalar(
            "SELECT node_id FROM enrollment_token_bindings WHERE jti = ? AND tenant_id = ?",
        )
        .bind(&jti)
        .bind(&enrollment.tenant_id)
        .fetch_optional(&mut *tx)
        .await?
    } else {
        None
    };
    let bound = bound
        .map(|text| codec::parse_uuid("enrollment_token_bindings.node_id", &text))
        .transpose()?;
    let existing: Option<String> =
        sqlx::query_scalar("SELECT tenant_id FROM edge_daemons WHERE node_id = ?")
            .bind(&node)
            .fetch_optional(&mut *tx)
            .await?;
    let outcome = enrollment_decision(enrollment, bound, existing.as_deref());
    let written = match outcome {
        EnrollmentOutcome::Enrolled => sqlx::query(
            "INSERT INTO edge_daemons (node_id, tenant_id, public_key, capabilities_json, tags, \
             status, enrolled_at, last_heartbeat_at, display_name) \
             VALUES (?, ?, ?, ?, '[]', 'active', ?, NULL, ?)",
        )
        .bind(&node)
        .bind(&enrollment.tenant_id)
        .bind(&enrollment.public_key)
        .bind(json(&EdgeCapabilities::default())?)
        .bind(millis(enrollment.now))
        .bind(&enrollment.issued_to)
        .execute(&mut *tx)
        .await?
        .rows_affected(),
        // Everything but the first enrollment time is overwritten.
        EnrollmentOutcome::Replaced => sqlx::query(
            "UPDATE edge_daemons SET public_key = ?, capabilities_json = ?, tags = '[]', \
             status = 'active', last_heartbeat_at = NULL, display_name = ? \
             WHERE node_id = ? AND tenant_id = ?",
        )
        .bind(&enrollment.public_key)
        .bind(json(&EdgeCapabilities::default())?)
        .bind(&enrollment.issued_to)
        .bind(&node)
        .bind(&enrollment.tenant_id)
        .execute(&mut *tx)
        .await?
        .rows_affected(),
        refused => {
            tx.rollback().await?;
            return Ok(refused);
        }
    };
    if written != 1 {
        tx.rollback().await?;
        return Err(StoreError::Database(format!(
            "enrolling {} wrote {written} rows",
            enrollment.node_id
        )));
    }
    sqlx::query("DELETE FROM edge_key_history WHERE node_id = ?")
        .bind(&node)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM edge_challenges WHERE challenge_id = ?")
        .bind(id(enrollment.challenge_id))
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM enrollment_token_bindings WHERE jti = ?")
        .bind(&jti)
        .execute(&mut *tx)
        .await?;
    record(
        &mut tx,
        enrollment.node_id,
        &enrollment.tenant_id,
        ChangeKind::Enrolled,
        enrollment.now,
    )
    .await?;
    tx.commit().await?;
    Ok(outcome)
}

pub async fn bind_enrollment_token(
    pool: &SqlitePool,
    binding: &TokenBinding,
) -> StoreResult<BindOutcome> {
    let node = id(binding.node_id);
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    sqlx::query("DELETE FROM enrollment_token_bindings WHERE exp <= ?")
        .bind(millis(binding.now))
        .execute(&mut *tx)
        .await?;
    let revoked = sqlx::query("SELECT 1 FROM edge_tombstones WHERE node_id = ? AND tenant_id = ?")
        .bind(&node)
        .bind(&binding.tenant_id)
        .fetch_optional(&mut *tx)
        .await?;
    let enrolled = sqlx::query("SELECT 1 FROM edge_daemons WHERE node_id = ? AND tenant_id = ?")
        .bind(&node)
        .bind(&binding.tenant_id)
        .fetch_optional(&mut *tx)
        .await?;
    let outcome = match (revoked, enrolled) {
        (Some(_), _) => BindOutcome::NodeRevoked,
        (None, None) => BindOutcome::NodeNotFound,
        (None, Some(_)) => BindOutcome::Bound,
    };
    if outcome != BindOutcome::Bound {
        tx.rollback().await?;
        return Ok(outcome);
    }
    sqlx::query(
        "INSERT INTO enrollment_token_bindings (jti, node_id, tenant_id, exp) VALUES (?, ?, ?, ?)",
    )
    .bind(id(binding.jti))
    .bind(&node)
    .bind(&binding.tenant_id)
    .bind(millis(binding.expires_at))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(outcome)
}

pub async fn get_edge(pool: &SqlitePool, node_id: Uuid) -> StoreResult<Option<EdgeRecord>> {
    let row = sqlx::query(&format!(
        "SELECT e.*, {NODE_SEQ} FROM edge_daemons e WHERE node_id = ?"
    ))
    .bind(id(node_id))
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(codec::edge).transpose()
}

pub async fn list_edges(pool: &SqlitePool, tenant: Option<&str>) -> StoreResult<Vec<EdgeRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT e.*, {NODE_SEQ} FROM edge_daemons e \
         WHERE (?1 IS NULL OR tenant_id = ?1) ORDER BY node_id"
    ))
    .bind(tenant)
    .fetch_all(pool)
    .await?;
    rows.iter().map(codec::edge).collect()
}

pub async fn apply_edge_updates(pool: &SqlitePool, updates: &[EdgeUpdate]) -> StoreResult<u64> {
    let updates = coalesce_updates(updates);
    if updates.is_empty() {
        return Ok(0);
    }
    let batch = updates
        .iter()
        .map(|update| {
            Ok(serde_json::json!({
                "node_id": id(update.node_id),
                "hb": update.last_heartbeat_at.map(millis),
                "caps": update.capabilities.as_ref().map(serde_json::to_value).transpose()
                    .map_err(|err| StoreError::Corrupt(err.to_string()))?,
                "status": update.status.map(|status| status.as_str()),
            }))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    let result = sqlx::query(
        "UPDATE edge_daemons AS e SET \
         last_heartbeat_at = COALESCE(u.hb, e.last_heartbeat_at), \
         capabilities_json = COALESCE(json_set(u.caps, '$.tags', json(e.tags)), e.capabilities_json), \
         status = COALESCE(u.status, e.status) \
         FROM (SELECT json_extract(value, '$.node_id') AS node_id, \
                      json_extract(value, '$.hb') AS hb, \
                      json_extract(value, '$.caps') AS caps, \
                      json_extract(value, '$.status') AS status \
               FROM json_each(?)) AS u \
         WHERE e.node_id = u.node_id",
    )
    .bind(json(&batch)?)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// Read, change and write in one write transaction: the write lock is
/// taken before the read, so concurrent changes (from this pool or another
/// process on the file) run one after another and none is lost.
pub async fn change_edge_tags(
    pool: &SqlitePool,
    tenant: Option<&str>,
    node_id: Uuid,
    change: &TagChange,
    now: DateTime<Utc>,
) -> StoreResult<Option<EdgeRecord>> {
    let node = id(node_id);
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    let row = sqlx::query(
        "SELECT * FROM edge_daemons WHERE node_id = ?1 AND (?2 IS NULL OR tenant_id = ?2)",
    )
    .bind(&node)
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(current) = row.as_ref().map(codec::edge).transpose()? else {
        tx.rollback().await?;
        return Ok(None);
    };
    let tags = change.apply(&current.tags);
    let row = sqlx::query("UPDATE edge_daemons SET tags = ? WHERE node_id = ? RETURNING *")
        .bind(json(&tags)?)
        .bind(&node)
        .fetch_one(&mut *tx)
        .await?;
    let mut updated = codec::edge(&row)?;
    updated.seq = record(&mut tx, node_id, &updated.tenant_id, ChangeKind::Tags, now).await?;
    tx.commit().await?;
    Ok(Some(updated))
}

pub async fn set_edge_name(
    pool: &SqlitePool,
    tenant: Option<&str>,
    node_id: Uuid,
    name: &str,
    now: DateTime<Utc>,
) -> StoreResult<Option<EdgeRecord>> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    let row = sqlx::query(
        "UPDATE edge_daemons SET display_name = ?1 WHERE node_id = ?2 \
         AND (?3 IS NULL OR tenant_id = ?3) RETURNING *",
    )
    .bind(name)
    .bind(id(node_id))
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(mut updated) = row.as_ref().map(codec::edge).transpose()? else {
        tx.rollback().await?;
        return Ok(None);
    };
    updated.seq = record(
        &mut tx,
        node_id,
        &updated.tenant_id,
        ChangeKind::Renamed,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Some(updated))
}

pub async fn rotate_edge_key(
    pool: &SqlitePool,
    rotation: &KeyRotation,
) -> StoreResult<RotationOutcome> {
    let node = id(rotation.node_id);
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    let recorded = sqlx::query(
        "INSERT INTO edge_key_history (node_id, public_key, replaced_at, valid_until, rotation_nonce) \
         VALUES (?, ?, ?, ?, ?) ON CONFLICT (node_id, rotation_nonce) DO NOTHING RETURNING node_id",
    )
    .bind(&node)
    .bind(&rotation.current_key)
    .bind(millis(rotation.now))
    .bind(millis(rotation.previous_valid_until))
    .bind(&rotation.nonce)
    .fetch_optional(&mut *tx)
    .await?;
    let outcome = if recorded.is_none() {
        RotationOutcome::NonceReused
    } else {
        let swapped: Option<String> = sqlx::query_scalar(
            "UPDATE edge_daemons SET public_key = ? WHERE node_id = ? AND public_key = ? RETURNING tenant_id",
        )
        .bind(&rotation.new_key)
        .bind(&node)
        .bind(&rotation.current_key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(tenant_id) = swapped {
            record(
                &mut tx,
                rotation.node_id,
                &tenant_id,
                ChangeKind::KeyRotated,
                rotation.now,
            )
            .await?;
            tx.commit().await?;
            return Ok(RotationOutcome::Rotated);
        }
        RotationOutcome::KeyChanged
    };
    let exists = sqlx::query("SELECT 1 FROM edge_daemons WHERE node_id = ?")
        .bind(&node)
        .fetch_optional(&mut *tx)
        .await?;
    tx.rollback().await?;
    Ok(if exists.is_none() {
        RotationOutcome::UnknownEdge
    } else {
        outcome
    })
}

pub async fn previous_keys(
    pool: &SqlitePool,
    node_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<Vec<PreviousKey>> {
    let rows: Vec<(Vec<u8>, i64)> = sqlx::query_as(
        "SELECT public_key, valid_until FROM edge_key_history \
         WHERE node_id = ? AND valid_until > ? ORDER BY replaced_at DESC",
    )
    .bind(id(node_id))
    .bind(millis(now))
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(public_key, valid_until)| {
            Ok(PreviousKey {
                public_key,
                valid_until: codec::time("edge_key_history.valid_until", valid_until)?,
            })
        })
        .collect()
}

pub async fn revoke_edge(
    conn: &mut SqliteConnection,
    tenant: Option<&str>,
    node_id: Uuid,
    revoked_by: &str,
    now: DateTime<Utc>,
) -> StoreResult<Option<Tombstone>> {
    let node = id(node_id);
    let mut tx = conn.begin_with(BEGIN_WRITE).await?;
    let deleted: Option<(String,)> = sqlx::query_as(
        "DELETE FROM edge_daemons WHERE node_id = ?1 AND (?2 IS NULL OR tenant_id = ?2) \
         RETURNING tenant_id",
    )
    .bind(&node)
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((tenant_id,)) = deleted else {
        tx.rollback().await?;
        return Ok(None);
    };
    sqlx::query(
        "INSERT INTO edge_tombstones (node_id, tenant_id, revoked_at, revoked_by) VALUES (?, ?, ?, ?) \
         ON CONFLICT (node_id) DO UPDATE SET tenant_id = excluded.tenant_id, \
         revoked_at = excluded.revoked_at, revoked_by = excluded.revoked_by",
    )
    .bind(&node)
    .bind(&tenant_id)
    .bind(millis(now))
    .bind(revoked_by)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM edge_key_history WHERE node_id = ?")
        .bind(&node)
        .execute(&mut *tx)
        .await?;
    record(&mut tx, node_id, &tenant_id, ChangeKind::Revoked, now).await?;
    tx.commit().await?;
    Ok(Some(Tombstone {
        node_id,
        tenant_id,
        revoked_at: codec::time("revoked_at", millis(now))?,
        revoked_by: revoked_by.to_owned(),
    }))
}

pub async fn tombstone(pool: &SqlitePool, node_id: Uuid) -> StoreResult<Option<Tombstone>> {
    let row = sqlx::query("SELECT * FROM edge_tombstones WHERE node_id = ?")
        .bind(id(node_id))
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(codec::tombstone).transpose()
}

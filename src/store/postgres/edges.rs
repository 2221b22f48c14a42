//! Enrollment and session state in PostgreSQL: AttestNode challenges, the
//! single-use token redemption with the edge insert or replacement, the
//! tokens bound to a node they may replace, edge reads, server-side
//! tags and the one-statement batch of heartbeats and capabilities.

use crate::store::coalesce_updates;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use uuid::Uuid;

use super::feed::record;
use super::rows::{self, ChallengeRow, EdgeRow, CHALLENGE_COLUMNS, EDGE_COLUMNS, EDGE_RETURNING};
use super::tenant_clause;
use crate::store::types::enrollment_decision;
use crate::store::{
    BindOutcome, ChangeKind, EdgeCapabilities, EdgeRecord, EdgeUpdate, Enrollment,
    EnrollmentOutcome, NodeChallenge, StoreError, StoreResult, TagChange, TokenBinding,
    CHALLENGE_TTL,
};

pub(super) async fn put_challenge(pool: &PgPool, challenge: &NodeChallenge) -> StoreResult<()> {
    let capabilities = rows::to_json(&challenge.capabilities, "attested capabilities")?;
    sqlx::query(
        "INSERT INTO edge_challenges (challenge_id, node_id, nonce, public_key, role, \
         capabilities_json, grpc_address, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(challenge.challenge_id)
    .bind(challenge.node_id)
    .bind(&challenge.nonce)
    .bind(&challenge.public_key)
    .bind(&challenge.role)
    .bind(capabilities)
    .bind(&challenge.grpc_address)
    .bind(challenge.created_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Purges challenges past their TTL at `now`, then reads a live one. The
/// caller's `now` is used throughout (never the server clock).
fn challenge_cutoff(now: DateTime<Utc>) -> StoreResult<DateTime<Utc>> {
    let ttl = TimeDelta::from_std(CHALLENGE_TTL)
        .map_err(|err| StoreError::Database(format!("challenge TTL out of range: {err}")))?;
    Ok(now - ttl)
}

pub(super) async fn sweep_challenges(pool: &PgPool, now: DateTime<Utc>) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM edge_challenges WHERE created_at <= $1")
        .bind(challenge_cutoff(now)?)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

pub(super) async fn get_challenge(
    pool: &PgPool,
    challenge_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<Option<NodeChallenge>> {
    let cutoff = challenge_cutoff(now)?;
    let row: Option<ChallengeRow> = sqlx::query_as(&format!(
        "SELECT {CHALLENGE_COLUMNS} FROM edge_challenges WHERE challenge_id = $1"
    ))
    .bind(challenge_id)
    .fetch_optional(pool)
    .await?;
    let Some(challenge) = row.map(NodeChallenge::try_from).transpose()? else {
        return Ok(None);
    };
    if challenge.created_at <= cutoff {
        sqlx::query("DELETE FROM edge_challenges WHERE challenge_id = $1")
            .bind(challenge_id)
            .execute(pool)
            .await?;
        return Ok(None);
    }
    Ok(Some(challenge))
}

/// Redeems the `jti` and, only when this call won and [`enrollment_decision`]
/// allows it, inserts or replaces the edge and deletes the challenge, all in
/// one transaction. The node's row, if any, is locked while deciding.
pub(super) async fn complete_enrollment(
    pool: &PgPool,
    enrollment: &Enrollment,
) -> StoreResult<EnrollmentOutcome> {
    let empty_capabilities = rows::to_json(&EdgeCapabilities::default(), "capabilities")?;
    let mut tx = pool.begin().await?;
    // Concurrent redemptions of one jti queue on the primary key: exactly one
    // inserts, the others see the conflict once it commits.
    let redeemed: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO enrollment_tokens (jti, tenant_id, issued_to, exp, redeemed_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (jti) DO NOTHING RETURNING jti",
    )
    .bind(enrollment.jti)
    .bind(&enrollment.tenant_id)
    .bind(&enrollment.issued_to)
    .bind(enrollment.token_expires_at)
    .bind(enrollment.now)
    .fetch_optional(&mut *tx)
    .await?;
    if redeemed.is_none() {
        tx.rollback().await?;
        return Ok(EnrollmentOutcome::TokenAlreadyRedeemed);
    }
    let revoked: Option<String> =
        sqlx::query_scalar("SELECT tenant_id FROM edge_tombstones WHERE node_id = $1")
            .bind(enrollment.node_id)
            .fetch_optional(&mut *tx)
            .await?;
    if revoked.is_some() {
        tx.rollback().await?;
        return Ok(EnrollmentOutcome::NodeRevoked);
    }
    let bound: Option<Uuid> = if enrollment.own_token {
        sqlx::query_scalar(
            "SELECT node_id FROM enrollment_token_bindings WHERE jti = $1 AND tenant_id = $2",
        )
        .bind(enrollment.jti)
        .bind(&enrollment.tenant_id)
        .fetch_optional(&mut *tx)
        .await?
    } else {
        None
    };
    let existing: Option<String> =
        sqlx::query_scalar("SELECT tenant_id FROM edge_daemons WHERE node_id = $1 FOR UPDATE")
            .bind(enrollment.node_id)
            .fetch_optional(&mut *tx)
            .await?;
    let outcome = enrollment_decision(enrollment, bound, existing.as_deref());
    let written: Option<Uuid> =
        match outcome {
            // A concurrent first enrollment of the same id wins the insert; this
            // one then finds the id taken (DO NOTHING, no row).
            EnrollmentOutcome::Enrolled => {
                sqlx::query_scalar(
                    "INSERT INTO edge_daemons (node_id, tenant_id, public_key, capabilities_json, \
                 tags, status, enrolled_at, last_heartbeat_at, display_name) \
                 VALUES ($1, $2, $3, $4, '{}', 'active', $5, NULL, $6) \
                 ON CONFLICT (node_id) DO NOTHING RETURNING node_id",
                )
                .bind(enrollment.node_id)
                .bind(&enrollment.tenant_id)
                .bind(&enrollment.public_key)
                .bind(&empty_capabilities)
                .bind(enrollment.now)
                .bind(&enrollment.issued_to)
                .fetch_optional(&mut *tx)
                .await?
            }
            // Everything but the first enrollment time is overwritten.
            EnrollmentOutcome::Replaced => sqlx::query_scalar(
                "UPDATE edge_daemons SET public_key = $3, capabilities_json = $4, tags = '{}', \
                 status = 'active', display_name = $5, last_heartbeat_at = NULL \
                 WHERE node_id = $1 AND tenant_id = $2 RETURNING node_id",
            )
            .bind(enrollment.node_id)
            .bind(&enrollment.tenant_id)
            .bind(&enrollment.public_key)
            .bind(&empty_capabilities)
            .bind(&enrollment.issued_to)
            .fetch_optional(&mut *tx)
            .await?,
            refused => {
                tx.rollback().await?;
                return Ok(refused);
            }
        };
    if written.is_none() {
        tx.rollback().await?;
        let tenant = get_edge(pool, enrollment.node_id)
            .await?
            .map(|edge| edge.tenant_id);
        return Ok(
            match enrollment_decision(enrollment, None, tenant.as_deref()) {
                EnrollmentOutcome::NodeInAnotherTenant => EnrollmentOutcome::NodeInAnotherTenant,
                _ => EnrollmentOutcome::NodeAlreadyEnrolled,
            },
        );
    }
    sqlx::query("DELETE FROM edge_challenges WHERE challenge_id = $1")
        .bind(enrollment.challenge_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM edge_key_history WHERE node_id = $1")
        .bind(enrollment.node_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM enrollment_token_bindings WHERE jti = $1")
        .bind(enrollment.jti)
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

/// Prunes expired bindings, then records `binding` if its node is enrolled
/// (and not revoked) in its tenant. A revocation racing this call is caught
/// at redemption by the tombstone.
pub(super) async fn bind_enrollment_token(
    pool: &PgPool,
    binding: &TokenBinding,
) -> StoreResult<BindOutcome> {
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM enrollment_token_bindings WHERE exp <= $1")
        .bind(binding.now)
        .execute(&mut *tx)
        .await?;
    let revoked: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM edge_tombstones WHERE node_id = $1 AND tenant_id = $2")
            .bind(binding.node_id)
            .bind(&binding.tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
    let enrolled: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM edge_daemons WHERE node_id = $1 AND tenant_id = $2")
            .bind(binding.node_id)
            .bind(&binding.tenant_id)
            .fetch_optional(&mut *tx)
            .await?;
    let outcome = match (revoked, enrolled) {
        (Some(_), _) => BindOutcome::NodeRevoked,
        (None, None) => BindOutcome::NodeNotFound,
        (None, Some(_)) => BindOutcome::Bound,
    };
    if outcome == BindOutcome::Bound {
        sqlx::query(
            "INSERT INTO enrollment_token_bindings (jti, node_id, tenant_id, exp) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(binding.jti)
        .bind(binding.node_id)
        .bind(&binding.tenant_id)
        .bind(binding.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(outcome)
}

pub(super) async fn get_edge(pool: &PgPool, node_id: Uuid) -> StoreResult<Option<EdgeRecord>> {
    let row: Option<EdgeRow> = sqlx::query_as(&format!(
        "SELECT {EDGE_COLUMNS} FROM edge_daemons WHERE node_id = $1"
    ))
    .bind(node_id)
    .fetch_optional(pool)
    .await?;
    row.map(EdgeRecord::try_from).transpose()
}

pub(super) async fn list_edges(
    pool: &PgPool,
    tenant: Option<&str>,
) -> StoreResult<Vec<EdgeRecord>> {
    let filter = match tenant {
        Some(_) => " WHERE tenant_id = $1",
        None => "",
    };
    let sql = format!("SELECT {EDGE_COLUMNS} FROM edge_daemons{filter} ORDER BY node_id");
    let mut query = sqlx::query_as::<_, EdgeRow>(&sql);
    if let Some(tenant) = tenant {
        query = query.bind(tenant);
    }
    rows::edges(query.fetch_all(pool).await?)
}

/// One UPDATE for the whole batch. A node listed more than once is merged
/// first ([`coalesce_updates`]), so the statement never sees a node twice.
pub(super) async fn apply_edge_updates(pool: &PgPool, updates: &[EdgeUpdate]) -> StoreResult<u64> {
    if updates.is_empty() {
        return Ok(0);
    }
    let merged = coalesce_updates(updates);
    let mut ids = Vec::with_capacity(merged.len());
    let mut heartbeats = Vec::with_capacity(merged.len());
    let mut capabilities = Vec::with_capacity(merged.len());
    let mut statuses = Vec::with_capacity(merged.len());
    for update in merged {
        ids.push(update.node_id);
        heartbeats.push(update.last_heartbeat_at);
        capabilities.push(
            update
                .capabilities
                .as_ref()
                .map(|caps| rows::to_json(caps, "capabilities"))
                .transpose()?,
        );
        statuses.push(update.status.map(|status| status.as_str().to_owned()));
    }
    // The JSON copy of the tags is always rewritten from the tags column.
    let result = sqlx::query(
        "UPDATE edge_daemons e SET \
         last_heartbeat_at = COALESCE(u.hb, e.last_heartbeat_at), \
         capabilities_json = COALESCE(jsonb_set(u.caps, '{tags}', to_jsonb(e.tags)), \
         e.capabilities_json), \
         status = COALESCE(u.status, e.status) \
         FROM UNNEST($1::uuid[], $2::timestamptz[], $3::jsonb[], $4::text[]) \
         AS u(node_id, hb, caps, status) \
         WHERE e.node_id = u.node_id",
    )
    .bind(ids)
    .bind(heartbeats)
    .bind(capabilities)
    .bind(statuses)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// Applies `change` in one UPDATE and keeps the JSON copy in step. The new
/// list is computed from the row's own `tags`, and the UPDATE holds the row
/// lock, so concurrent changes queue and each sees the previous one's result
/// (READ COMMITTED re-evaluates the SET against the newest row version).
/// Same result as [`TagChange::apply`]: replace (or current) then add, first
/// occurrence kept, removed tags dropped.
pub(super) async fn change_edge_tags(
    pool: &PgPool,
    tenant: Option<&str>,
    node_id: Uuid,
    change: &TagChange,
    now: DateTime<Utc>,
) -> StoreResult<Option<EdgeRecord>> {
    let sql = format!(
        "UPDATE edge_daemons e SET (tags, capabilities_json) = (\
         SELECT next.tags, CASE WHEN jsonb_typeof(e.capabilities_json) = 'object' \
         THEN jsonb_set(e.capabilities_json, '{{tags}}', to_jsonb(next.tags)) \
         ELSE e.capabilities_json END \
         FROM (SELECT ARRAY(\
           SELECT t.tag FROM unnest(COALESCE($2::text[], e.tags) || $3::text[]) \
           WITH ORDINALITY AS t(tag, n) \
           WHERE t.tag <> ALL($4::text[]) \
           GROUP BY t.tag ORDER BY min(t.n)) AS tags) AS next) \
         WHERE e.node_id = $1{} RETURNING {EDGE_RETURNING}",
        tenant_clause(tenant, 5)
    );
    let query = sqlx::query_as::<_, EdgeRow>(&sql)
        .bind(node_id)
        .bind(change.replace.as_deref())
        .bind(&change.add)
        .bind(&change.remove);
    change_in_scope(query, tenant, pool, ChangeKind::Tags, now).await
}

pub(super) async fn set_edge_name(
    pool: &PgPool,
    tenant: Option<&str>,
    node_id: Uuid,
    name: &str,
    now: DateTime<Utc>,
) -> StoreResult<Option<EdgeRecord>> {
    let sql = format!(
        "UPDATE edge_daemons SET display_name = $2 WHERE node_id = $1{} \
         RETURNING {EDGE_RETURNING}",
        tenant_clause(tenant, 3)
    );
    let query = sqlx::query_as::<_, EdgeRow>(&sql).bind(node_id).bind(name);
    change_in_scope(query, tenant, pool, ChangeKind::Renamed, now).await
}

/// Runs an UPDATE returning at most one edge, whose last parameter is the
/// tenant of [`tenant_clause`] (bound only when there is one), and records
/// `kind` in the same transaction.
async fn change_in_scope<'q>(
    query: QueryAs<'q, Postgres, EdgeRow, PgArguments>,
    tenant: Option<&'q str>,
    pool: &PgPool,
    kind: ChangeKind,
    now: DateTime<Utc>,
) -> StoreResult<Option<EdgeRecord>> {
    let query = match tenant {
        Some(tenant) => query.bind(tenant),
        None => query,
    };
    let mut conn = pool.acquire().await?;
    let mut tx = Connection::begin(&mut *conn).await?;
    let updated = write_change(&mut tx, query, kind, now).await?;
    if updated.is_some() {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(updated)
}

async fn write_change<'q>(
    conn: &mut PgConnection,
    query: QueryAs<'q, Postgres, EdgeRow, PgArguments>,
    kind: ChangeKind,
    now: DateTime<Utc>,
) -> StoreResult<Option<EdgeRecord>> {
    let Some(row) = query.fetch_optional(&mut *conn).await? else {
        return Ok(None);
    };
    let mut edge = EdgeRecord::try_from(row)?;
    edge.seq = record(conn, edge.node_id, &edge.tenant_id, kind, now).await?;
    Ok(Some(edge))
}

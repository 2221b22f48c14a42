//! Fleet run records in PostgreSQL (`aegis_relay.fleet_runs`,
//! `fleet_run_targets`). A flush is one transaction of two statements
//! whatever its size: the target rows as one upsert over arrays, the ends
//! and cancel reasons as one UPDATE over others.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::fleet_runs::{coalesce_flushes, generation_from_db, generation_to_db};
use crate::store::{
    FleetRunCounts, FleetRunDetail, FleetRunFlush, FleetRunRecord, FleetRunStart, FleetRunState,
    FleetRunsPurge, FleetTargetOutcome, RunningFleetRun, StoreError, StoreResult,
};

/// Columns selected for a [`RunRow`].
const RUN_COLUMNS: &str = "id, tenant_id, created_by, tool_name, target_json, policy_json, \
     resolved, replica, generation, state, started_at, finished_at, summary_ok, summary_err, \
     summary_timed_out, summary_skipped, cancel_reason";

/// One `fleet_runs` row.
#[derive(sqlx::FromRow)]
struct RunRow {
    id: Uuid,
    tenant_id: String,
    created_by: String,
    tool_name: String,
    target_json: serde_json::Value,
    policy_json: serde_json::Value,
    resolved: Vec<Uuid>,
    replica: String,
    generation: i64,
    state: String,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    summary_ok: Option<i64>,
    summary_err: Option<i64>,
    summary_timed_out: Option<i64>,
    summary_skipped: Option<i64>,
    cancel_reason: Option<String>,
}

impl TryFrom<RunRow> for FleetRunRecord {
    type Error = StoreError;

    fn try_from(row: RunRow) -> StoreResult<Self> {
        let run = row.id;
        let corrupt = |what: String| StoreError::Corrupt(format!("fleet run {run}: {what}"));
        let state = FleetRunState::parse(&row.state)
            .ok_or_else(|| corrupt(format!("unknown state {:?}", row.state)))?;
        let unsigned =
            |value: i64| u64::try_from(value).map_err(|_| corrupt(format!("count {value}")));
        let counts = match (
            row.summary_ok,
            row.summary_err,
            row.summary_timed_out,
            row.summary_skipped,
        ) {
            (Some(ok), Some(err), Some(timed_out), Some(skipped)) => Some(FleetRunCounts {
                ok: unsigned(ok)?,
                err: unsigned(err)?,
                timed_out: unsigned(timed_out)?,
                skipped: unsigned(skipped)?,
            }),
            _ => None,
        };
        Ok(Self {
            start: FleetRunStart {
                id: run,
                tenant_id: row.tenant_id,
                created_by: row.created_by,
                tool_name: row.tool_name,
                target: row.target_json,
                policy: row.policy_json,
                resolved: row.resolved,
                replica: row.replica,
                generation: generation_from_db(run, row.generation)?,
                started_at: row.started_at,
            },
            state,
            finished_at: row.finished_at,
            counts,
            cancel_reason: row.cancel_reason,
        })
    }
}

/// One `fleet_run_targets` row.
#[derive(sqlx::FromRow)]
struct TargetRow {
    node_id: Uuid,
    completed: bool,
    ok: Option<bool>,
    exit_code: Option<i32>,
    error_kind: Option<String>,
    error_message: Option<String>,
}

impl From<TargetRow> for FleetTargetOutcome {
    fn from(row: TargetRow) -> Self {
        Self {
            node_id: row.node_id,
            completed: row.completed,
            ok: row.ok,
            exit_code: row.exit_code,
            error_kind: row.error_kind,
            error_message: row.error_message,
        }
    }
}

fn count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) async fn start_fleet_run(pool: &PgPool, run: &FleetRunStart) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO fleet_runs (id, tenant_id, created_by, tool_name, target_json, policy_json, \
         resolved, replica, generation, state, started_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'running', $10)",
    )
    .bind(run.id)
    .bind(&run.tenant_id)
    .bind(&run.created_by)
    .bind(&run.tool_name)
    .bind(&run.target)
    .bind(&run.policy)
    .bind(&run.resolved)
    .bind(&run.replica)
    .bind(generation_to_db(run.generation))
    .bind(run.started_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// Column arrays of the target upsert.
#[derive(Default)]
struct TargetColumns {
    runs: Vec<Uuid>,
    nodes: Vec<Uuid>,
    completed: Vec<bool>,
    ok: Vec<Option<bool>>,
    exit_codes: Vec<Option<i32>>,
    kinds: Vec<Option<String>>,
    messages: Vec<Option<String>>,
}

/// Column arrays of the end UPDATE.
#[derive(Default)]
struct EndColumns {
    runs: Vec<Uuid>,
    reasons: Vec<Option<String>>,
    states: Vec<Option<String>>,
    finished: Vec<Option<DateTime<Utc>>>,
    counts: [Vec<Option<i64>>; 4],
}

pub(super) async fn record_fleet_runs(pool: &PgPool, flushes: &[FleetRunFlush]) -> StoreResult<()> {
    let mut targets = TargetColumns::default();
    let mut ends = EndColumns::default();
    for flush in coalesce_flushes(flushes) {
        for target in flush.targets {
            targets.runs.push(flush.run_id);
            targets.nodes.push(target.node_id);
            targets.completed.push(target.completed);
            targets.ok.push(target.ok);
            targets.exit_codes.push(target.exit_code);
            targets.kinds.push(target.error_kind);
            targets.messages.push(target.error_message);
        }
        if flush.end.is_none() && flush.cancel_reason.is_none() {
            continue;
        }
        ends.runs.push(flush.run_id);
        ends.reasons.push(flush.cancel_reason);
        let end = flush.end.as_ref();
        ends.states
            .push(end.map(|end| end.state.as_str().to_owned()));
        ends.finished.push(end.map(|end| end.finished_at));
        let counts = end.map(|end| end.counts);
        ends.counts[0].push(counts.map(|c| count(c.ok)));
        ends.counts[1].push(counts.map(|c| count(c.err)));
        ends.counts[2].push(counts.map(|c| count(c.timed_out)));
        ends.counts[3].push(counts.map(|c| count(c.skipped)));
    }
    if targets.runs.is_empty() && ends.runs.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    if !targets.runs.is_empty() {
        // Runs already purged are skipped.
        sqlx::query(
            "INSERT INTO fleet_run_targets (run_id, node_id, completed, ok, exit_code, \
             error_kind, error_message) \
             SELECT u.run_id, u.node_id, u.completed, u.ok, u.exit_code, u.error_kind, \
                    u.error_message \
             FROM UNNEST($1::uuid[], $2::uuid[], $3::bool[], $4::bool[], $5::int4[], \
                         $6::text[], $7::text[]) \
                  AS u(run_id, node_id, completed, ok, exit_code, error_kind, error_message) \
             WHERE EXISTS (SELECT 1 FROM fleet_runs r WHERE r.id = u.run_id) \
             ON CONFLICT (run_id, node_id) DO UPDATE SET completed = EXCLUDED.completed, \
             ok = EXCLUDED.ok, exit_code = EXCLUDED.exit_code, \
             error_kind = EXCLUDED.error_kind, error_message = EXCLUDED.error_message \
             WHERE NOT fleet_run_targets.completed",
        )
        .bind(&targets.runs)
        .bind(&targets.nodes)
        .bind(&targets.completed)
        .bind(&targets.ok)
        .bind(&targets.exit_codes)
        .bind(&targets.kinds)
        .bind(&targets.messages)
        .execute(&mut *tx)
        .await?;
    }
    if !ends.runs.is_empty() {
        let [ok, err, timed_out, skipped] = &ends.counts;
        sqlx::query(
            "UPDATE fleet_runs r SET \
             cancel_reason = COALESCE(u.reason, r.cancel_reason), \
             state = CASE WHEN u.state IS NOT NULL AND r.state IN ('running', 'lost') \
                     THEN u.state ELSE r.state END, \
             finished_at = CASE WHEN u.state IS NOT NULL AND r.state IN ('running', 'lost') \
                           THEN u.finished ELSE r.finished_at END, \
             summary_ok = COALESCE(u.ok, r.summary_ok), \
             summary_err = COALESCE(u.err, r.summary_err), \
             summary_timed_out = COALESCE(u.timed_out, r.summary_timed_out), \
             summary_skipped = COALESCE(u.skipped, r.summary_skipped) \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::int8[], \
                         $6::int8[], $7::int8[], $8::int8[]) \
                  AS u(run, reason, state, finished, ok, err, timed_out, skipped) \
             WHERE r.id = u.run",
        )
        .bind(&ends.runs)
        .bind(&ends.reasons)
        .bind(&ends.states)
        .bind(&ends.finished)
        .bind(ok)
        .bind(err)
        .bind(timed_out)
        .bind(skipped)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn list_fleet_runs(
    pool: &PgPool,
    tenant: Option<&str>,
    limit: usize,
) -> StoreResult<Vec<FleetRunRecord>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM fleet_runs WHERE ($1::text IS NULL OR tenant_id = $1) \
         ORDER BY started_at DESC, id LIMIT $2"
    );
    let rows: Vec<RunRow> = sqlx::query_as(&sql)
        .bind(tenant)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?;
    rows.into_iter().map(FleetRunRecord::try_from).collect()
}

pub(super) async fn get_fleet_run(
    pool: &PgPool,
    tenant: Option<&str>,
    id: Uuid,
) -> StoreResult<Option<FleetRunDetail>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM fleet_runs WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)"
    );
    let row: Option<RunRow> = sqlx::query_as(&sql)
        .bind(id)
        .bind(tenant)
        .fetch_optional(pool)
        .await?;
    let Some(run) = row.map(FleetRunRecord::try_from).transpose()? else {
        return Ok(None);
    };
    let targets: Vec<TargetRow> = sqlx::query_as(
        "SELECT node_id, completed, ok, exit_code, error_kind, error_message \
         FROM fleet_run_targets WHERE run_id = $1 ORDER BY node_id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(Some(FleetRunDetail {
        run,
        targets: targets.into_iter().map(FleetTargetOutcome::from).collect(),
    }))
}

pub(super) async fn running_fleet_runs(pool: &PgPool) -> StoreResult<Vec<RunningFleetRun>> {
    let rows: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "SELECT id, replica, generation FROM fleet_runs WHERE state = 'running' ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(id, replica, generation)| {
            Ok(RunningFleetRun {
                id,
                replica,
                generation: generation_from_db(id, generation)?,
            })
        })
        .collect()
}

pub(super) async fn mark_fleet_runs_lost(
    pool: &PgPool,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "UPDATE fleet_runs SET state = 'lost', finished_at = $1 \
         WHERE state = 'running' AND id = ANY($2)",
    )
    .bind(now)
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

pub(super) async fn purge_fleet_runs(
    pool: &PgPool,
    purge: &FleetRunsPurge,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    let max_age = chrono::TimeDelta::from_std(purge.max_age).unwrap_or(chrono::TimeDelta::MAX);
    let cutoff = now
        .checked_sub_signed(max_age)
        .unwrap_or(DateTime::UNIX_EPOCH);
    let mut tx = pool.begin().await?;
    let old = sqlx::query("DELETE FROM fleet_runs WHERE state <> 'running' AND finished_at <= $1")
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
    let excess = sqlx::query(
        "DELETE FROM fleet_runs WHERE id IN (SELECT id FROM (SELECT id, state, ROW_NUMBER() \
         OVER (PARTITION BY tenant_id ORDER BY started_at DESC, id) AS place FROM fleet_runs) \
         AS ranked WHERE place > $1 AND state <> 'running')",
    )
    .bind(i64::try_from(purge.per_tenant).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(old.rows_affected() + excess.rows_affected())
}

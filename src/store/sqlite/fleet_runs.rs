//! SQLite: fleet run records. A flush is one write transaction of two
//! statements whatever its size: the target rows as one upsert over a JSON
//! array, the ends and cancel reasons as one UPDATE over another.

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use super::codec::{id, json, millis, parse_uuid, time, uuid_list};
use super::edges::BEGIN_WRITE;
use crate::store::fleet_runs::{coalesce_flushes, generation_from_db, generation_to_db};
use crate::store::{
    FleetRunCounts, FleetRunDetail, FleetRunFlush, FleetRunRecord, FleetRunStart, FleetRunState,
    FleetRunsPurge, FleetTargetOutcome, RunningFleetRun, StoreError, StoreResult,
};

pub async fn start_fleet_run(pool: &SqlitePool, run: &FleetRunStart) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO fleet_runs (id, tenant_id, created_by, tool_name, target_json, policy_json, \
         resolved, replica, generation, state, started_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?)",
    )
    .bind(id(run.id))
    .bind(&run.tenant_id)
    .bind(&run.created_by)
    .bind(&run.tool_name)
    .bind(json(&run.target)?)
    .bind(json(&run.policy)?)
    .bind(uuid_list(&run.resolved)?)
    .bind(&run.replica)
    .bind(generation_to_db(run.generation))
    .bind(millis(run.started_at))
    .execute(pool)
    .await?;
    Ok(())
}

fn count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub async fn record_fleet_runs(pool: &SqlitePool, flushes: &[FleetRunFlush]) -> StoreResult<()> {
    let mut targets = Vec::new();
    let mut ends = Vec::new();
    for flush in &coalesce_flushes(flushes) {
        let run = id(flush.run_id);
        for target in &flush.targets {
            targets.push(serde_json::json!({
                "run": run,
                "node": id(target.node_id),
                "completed": target.completed,
                "ok": target.ok,
                "exit": target.exit_code,
                "kind": target.error_kind,
                "message": target.error_message,
            }));
        }
        if flush.end.is_some() || flush.cancel_reason.is_some() {
            let end = flush.end.as_ref();
            ends.push(serde_json::json!({
                "run": run,
                "reason": flush.cancel_reason,
                "state": end.map(|end| end.state.as_str()),
                "finished": end.map(|end| millis(end.finished_at)),
                "ok": end.map(|end| count(end.counts.ok)),
                "err": end.map(|end| count(end.counts.err)),
                "timed_out": end.map(|end| count(end.counts.timed_out)),
                "skipped": end.map(|end| count(end.counts.skipped)),
            }));
        }
    }
    if targets.is_empty() && ends.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    if !targets.is_empty() {
        // `WHERE true` lets SQLite parse the upsert after a SELECT; runs
        // already purged are skipped.
        sqlx::query(
            "INSERT INTO fleet_run_targets (run_id, node_id, completed, ok, exit_code, \
             error_kind, error_message) \
             SELECT json_extract(value, '$.run'), json_extract(value, '$.node'), \
                    json_extract(value, '$.completed'), json_extract(value, '$.ok'), \
                    json_extract(value, '$.exit'), json_extract(value, '$.kind'), \
                    json_extract(value, '$.message') \
             FROM json_each(?) \
             WHERE EXISTS (SELECT 1 FROM fleet_runs WHERE id = json_extract(value, '$.run')) \
             ON CONFLICT (run_id, node_id) DO UPDATE SET completed = excluded.completed, \
             ok = excluded.ok, exit_code = excluded.exit_code, error_kind = excluded.error_kind, \
             error_message = excluded.error_message \
             WHERE fleet_run_targets.completed = 0",
        )
        .bind(json(&targets)?)
        .execute(&mut *tx)
        .await?;
    }
    if !ends.is_empty() {
        sqlx::query(
            "UPDATE fleet_runs AS r SET \
             cancel_reason = COALESCE(u.reason, r.cancel_reason), \
             state = CASE WHEN u.state IS NOT NULL AND r.state IN ('running', 'lost') \
                     THEN u.state ELSE r.state END, \
             finished_at = CASE WHEN u.state IS NOT NULL AND r.state IN ('running', 'lost') \
                           THEN u.finished ELSE r.finished_at END, \
             summary_ok = COALESCE(u.ok, r.summary_ok), \
             summary_err = COALESCE(u.err, r.summary_err), \
             summary_timed_out = COALESCE(u.timed_out, r.summary_timed_out), \
             summary_skipped = COALESCE(u.skipped, r.summary_skipped) \
             FROM (SELECT json_extract(value, '$.run') AS run, \
                          json_extract(value, '$.reason') AS reason, \
                          json_extract(value, '$.state') AS state, \
                          json_extract(value, '$.finished') AS finished, \
                          json_extract(value, '$.ok') AS ok, \
                          json_extract(value, '$.err') AS err, \
                          json_extract(value, '$.timed_out') AS timed_out, \
                          json_extract(value, '$.skipped') AS skipped \
                   FROM json_each(?)) AS u \
             WHERE r.id = u.run",
        )
        .bind(json(&ends)?)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn list_fleet_runs(
    pool: &SqlitePool,
    tenant: Option<&str>,
    limit: usize,
) -> StoreResult<Vec<FleetRunRecord>> {
    let rows = sqlx::query(
        "SELECT * FROM fleet_runs WHERE (?1 IS NULL OR tenant_id = ?1) \
         ORDER BY started_at DESC, id LIMIT ?2",
    )
    .bind(tenant)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    rows.iter().map(run).collect()
}

pub async fn get_fleet_run(
    pool: &SqlitePool,
    tenant: Option<&str>,
    run_id: Uuid,
) -> StoreResult<Option<FleetRunDetail>> {
    let row =
        sqlx::query("SELECT * FROM fleet_runs WHERE id = ?1 AND (?2 IS NULL OR tenant_id = ?2)")
            .bind(id(run_id))
            .bind(tenant)
            .fetch_optional(pool)
            .await?;
    let Some(record) = row.as_ref().map(run).transpose()? else {
        return Ok(None);
    };
    let rows = sqlx::query("SELECT * FROM fleet_run_targets WHERE run_id = ? ORDER BY node_id")
        .bind(id(run_id))
        .fetch_all(pool)
        .await?;
    let targets = rows.iter().map(target).collect::<StoreResult<_>>()?;
    Ok(Some(FleetRunDetail {
        run: record,
        targets,
    }))
}

pub async fn running_fleet_runs(pool: &SqlitePool) -> StoreResult<Vec<RunningFleetRun>> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT id, replica, generation FROM fleet_runs WHERE state = 'running' ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(run, replica, generation)| {
            let id = parse_uuid("fleet_runs.id", &run)?;
            Ok(RunningFleetRun {
                id,
                replica,
                generation: generation_from_db(id, generation)?,
            })
        })
        .collect()
}

pub async fn mark_fleet_runs_lost(
    pool: &SqlitePool,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query(
        "UPDATE fleet_runs SET state = 'lost', finished_at = ? \
         WHERE state = 'running' AND id IN (SELECT value FROM json_each(?))",
    )
    .bind(millis(now))
    .bind(uuid_list(ids)?)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

pub async fn purge_fleet_runs(
    pool: &SqlitePool,
    purge: &FleetRunsPurge,
    now: DateTime<Utc>,
) -> StoreResult<u64> {
    let max_age = i64::try_from(purge.max_age.as_millis()).unwrap_or(i64::MAX);
    let cutoff = millis(now).saturating_sub(max_age);
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    let old = sqlx::query("DELETE FROM fleet_runs WHERE state <> 'running' AND finished_at <= ?")
        .bind(cutoff)
        .execute(&mut *tx)
        .await?;
    let excess = sqlx::query(
        "DELETE FROM fleet_runs WHERE id IN (SELECT id FROM (SELECT id, state, ROW_NUMBER() \
         OVER (PARTITION BY tenant_id ORDER BY started_at DESC, id) AS place FROM fleet_runs) \
         WHERE place > ? AND state <> 'running')",
    )
    .bind(i64::try_from(purge.per_tenant).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(old.rows_affected() + excess.rows_affected())
}

fn run(row: &SqliteRow) -> StoreResult<FleetRunRecord> {
    let run_id = parse_uuid("fleet_runs.id", row.try_get("id")?)?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("fleet run {run_id}: {what}"));
    let parse_json = |column: &str| -> StoreResult<serde_json::Value> {
        let text: String = row.try_get(column)?;
        serde_json::from_str(&text).map_err(|err| corrupt(&format!("{column}: {err}")))
    };
    let resolved: Vec<String> = serde_json::from_value(parse_json("resolved")?)
        .map_err(|err| corrupt(&format!("resolved: {err}")))?;
    let state_text: String = row.try_get("state")?;
    let state = FleetRunState::parse(&state_text)
        .ok_or_else(|| corrupt(&format!("unknown state {state_text:?}")))?;
    let finished_at: Option<i64> = row.try_get("finished_at")?;
    let counts = [
        row.try_get::<Option<i64>, _>("summary_ok")?,
        row.try_get::<Option<i64>, _>("summary_err")?,
        row.try_get::<Option<i64>, _>("summary_timed_out")?,
        row.try_get::<Option<i64>, _>("summary_skipped")?,
    ];
    let counts = match counts {
        [Some(ok), Some(err), Some(timed_out), Some(skipped)] => {
            let unsigned = |value: i64| u64::try_from(value).map_err(|_| corrupt("negative count"));
            Some(FleetRunCounts {
                ok: unsigned(ok)?,
                err: unsigned(err)?,
                timed_out: unsigned(timed_out)?,
                skipped: unsigned(skipped)?,
            })
        }
        _ => None,
    };
    Ok(FleetRunRecord {
        start: FleetRunStart {
            id: run_id,
            tenant_id: row.try_get("tenant_id")?,
            created_by: row.try_get("created_by")?,
            tool_name: row.try_get("tool_name")?,
            target: parse_json("target_json")?,
            policy: parse_json("policy_json")?,
            resolved: resolved
                .iter()
                .map(|node| parse_uuid("fleet_runs.resolved", node))
                .collect::<StoreResult<_>>()?,
            replica: row.try_get("replica")?,
            generation: generation_from_db(run_id, row.try_get("generation")?)?,
            started_at: time("fleet_runs.started_at", row.try_get("started_at")?)?,
        },
        state,
        finished_at: finished_at
            .map(|value| time("fleet_runs.finished_at", value))
            .transpose()?,
        counts,
        cancel_reason: row.try_get("cancel_reason")?,
    })
}

fn target(row: &SqliteRow) -> StoreResult<FleetTargetOutcome> {
    Ok(FleetTargetOutcome {
        node_id: parse_uuid("fleet_run_targets.node_id", row.try_get("node_id")?)?,
        completed: row.try_get("completed")?,
        ok: row.try_get("ok")?,
        exit_code: row.try_get("exit_code")?,
        error_kind: row.try_get("error_kind")?,
        error_message: row.try_get("error_message")?,
    })
}

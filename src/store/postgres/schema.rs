//! Migrations and schema checks of the PostgreSQL store. Two embedded sets:
//! the AEGIS-shaped tables (standalone mode only) and the relay's own
//! tables. Both record themselves in `aegis_relay._sqlx_migrations`, never in
//! AEGIS's `public._sqlx_migrations`; in shared mode the relay only checks
//! the AEGIS columns it reads and writes.

use std::collections::HashSet;

use sqlx::migrate::Migrator;
use sqlx::PgPool;

use super::{PostgresMode, RELAY_SCHEMA};
use crate::store::{StoreError, StoreResult};

/// Advisory lock key serializing `CREATE SCHEMA` across replicas (concurrent
/// `IF NOT EXISTS` can still collide on the catalog). Arbitrary but fixed.
const SCHEMA_LOCK_KEY: i64 = 0x6165_6769_735f_7273;

/// Every column of an AEGIS table the relay uses, in table order.
const AEGIS_COLUMNS: &[(&str, &[&str])] = &[
    (
        "edge_daemons",
        &[
            "node_id",
            "tenant_id",
            "public_key",
            "capabilities_json",
            "tags",
            "status",
            "enrolled_at",
            "last_heartbeat_at",
            "display_name",
        ],
    ),
    (
        "enrollment_tokens",
        &["jti", "tenant_id", "issued_to", "exp", "redeemed_at"],
    ),
    (
        "edge_groups",
        &[
            "id",
            "tenant_id",
            "name",
            "selector_json",
            "pinned_members",
            "created_by",
            "created_at",
        ],
    ),
];

/// What to do about a missing relay migration or standalone table.
const RUN_MIGRATE: &str = "run `aegis-relay migrate --config <file>`";

/// The AEGIS-shaped tables (in `public`), versions 1..1000.
fn aegis_migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations/postgres/aegis");
    migrator.set_ignore_missing(true);
    migrator
}

/// The relay's own tables (in `aegis_relay`), versions from 1001.
fn relay_migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations/postgres/relay");
    migrator.set_ignore_missing(true);
    migrator
}

pub(super) async fn migrate(pool: &PgPool, mode: PostgresMode) -> StoreResult<()> {
    create_relay_schema(pool).await?;
    match mode {
        PostgresMode::Standalone => run(pool, &aegis_migrator()).await?,
        PostgresMode::SharedWithAegis => verify_aegis_columns(pool, mode).await?,
    }
    run(pool, &relay_migrator()).await
}

pub(super) async fn verify(pool: &PgPool, mode: PostgresMode) -> StoreResult<()> {
    verify_aegis_columns(pool, mode).await?;
    verify_relay_migrations(pool).await
}

async fn create_relay_schema(pool: &PgPool) -> StoreResult<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SCHEMA_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {RELAY_SCHEMA}"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Runs one migrator on a pooled connection. sqlx leaves its session-level
/// advisory lock held when a migration fails, so a failed connection is
/// closed rather than returned to the pool.
async fn run(pool: &PgPool, migrator: &Migrator) -> StoreResult<()> {
    let mut conn = pool.acquire().await?;
    let result = migrator.run(&mut *conn).await;
    if result.is_err() {
        conn.close_on_drop();
    }
    Ok(result?)
}

/// Fails on the first AEGIS column the relay uses that is not visible
/// through the search path.
async fn verify_aegis_columns(pool: &PgPool, mode: PostgresMode) -> StoreResult<()> {
    let tables: Vec<&str> = AEGIS_COLUMNS.iter().map(|(table, _)| *table).collect();
    let found: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = ANY(current_schemas(false)) AND table_name = ANY($1)",
    )
    .bind(&tables)
    .fetch_all(pool)
    .await?;
    let found: HashSet<(&str, &str)> = found
        .iter()
        .map(|(table, column)| (table.as_str(), column.as_str()))
        .collect();
    for (table, columns) in AEGIS_COLUMNS {
        let table_exists = found.iter().any(|(t, _)| t == table);
        for column in *columns {
            if !found.contains(&(*table, *column)) {
                return Err(missing_column(table, column, table_exists, mode));
            }
        }
    }
    Ok(())
}

fn missing_column(table: &str, column: &str, table_exists: bool, mode: PostgresMode) -> StoreError {
    let context = if table_exists {
        String::new()
    } else {
        format!(" (no table {table} in schemas {RELAY_SCHEMA}, public)")
    };
    let remedy = match mode {
        PostgresMode::SharedWithAegis => {
            "in shared mode the AEGIS controller's migrations create it: start or upgrade the \
             AEGIS controller on this database first (or use standalone mode)"
                .to_owned()
        }
        PostgresMode::Standalone => format!("{RUN_MIGRATE} to create it"),
    };
    StoreError::Schema(format!(
        "missing column {table}.{column}{context}: {remedy}"
    ))
}

/// Fails unless every relay migration this build embeds has been applied.
async fn verify_relay_migrations(pool: &PgPool) -> StoreResult<()> {
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
        .bind(format!("{RELAY_SCHEMA}._sqlx_migrations"))
        .fetch_one(pool)
        .await?;
    if table.is_none() {
        return Err(StoreError::Schema(format!(
            "the relay's tables are not migrated (no {RELAY_SCHEMA}._sqlx_migrations): \
             {RUN_MIGRATE}"
        )));
    }
    let applied: Vec<i64> = sqlx::query_scalar(&format!(
        "SELECT version FROM {RELAY_SCHEMA}._sqlx_migrations WHERE success"
    ))
    .fetch_all(pool)
    .await?;
    let applied: HashSet<i64> = applied.into_iter().collect();
    let missing: Vec<String> = relay_migrator()
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
        .map(|m| m.version.to_string())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Schema(format!(
            "relay migration(s) {} not applied: {RUN_MIGRATE}",
            missing.join(", ")
        )))
    }
}

//! The PostgreSQL store's two modes against a real server: standalone owns
//! every table, shared mode leaves AEGIS's tables and migration history
//! alone, and schema checks fail with a message saying what to do.

mod common;

use aegis_relay::store::{
    Enrollment, EnrollmentOutcome, PostgresMode, PostgresStore, Store, StoreError, TagChange,
};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use common::TestResult;

const AEGIS_TABLES: [&str; 3] = ["edge_daemons", "enrollment_tokens", "edge_groups"];
const RELAY_TABLES: [&str; 8] = [
    "edge_challenges",
    "edge_changes",
    "edge_feed_head",
    "edge_key_history",
    "edge_tombstones",
    "enrollment_token_bindings",
    "fleet_run_targets",
    "fleet_runs",
];

/// The AEGIS controller's own DDL, as described in protocol §10 (written
/// here by hand: looser nullability than the relay's standalone copy).
const AEGIS_DDL: &str = "
CREATE TABLE public._sqlx_migrations (
    version BIGINT PRIMARY KEY, description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL);
INSERT INTO public._sqlx_migrations (version, description, success, checksum, execution_time)
    VALUES (29, 'edge mode', true, '\\x00', 1);
CREATE TABLE public.enrollment_tokens (
    jti UUID PRIMARY KEY, tenant_id TEXT, issued_to TEXT, exp TIMESTAMPTZ,
    redeemed_at TIMESTAMPTZ);
CREATE TABLE public.edge_groups (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(), tenant_id TEXT NOT NULL,
    name TEXT NOT NULL, selector_json JSONB NOT NULL, pinned_members UUID[] DEFAULT '{}',
    created_by TEXT, created_at TIMESTAMPTZ DEFAULT NOW(), UNIQUE (tenant_id, name));
";

const AEGIS_EDGE_DAEMONS: &str = "
CREATE TABLE public.edge_daemons (
    node_id UUID PRIMARY KEY, tenant_id TEXT NOT NULL, public_key BYTEA NOT NULL,
    capabilities_json JSONB NOT NULL, tags TEXT[] NOT NULL DEFAULT '{}',
    status TEXT NOT NULL, enrolled_at TIMESTAMPTZ DEFAULT NOW(),
    last_heartbeat_at TIMESTAMPTZ NULL)";

const AEGIS_DISPLAY_NAME: &str =
    "ALTER TABLE public.edge_daemons ADD COLUMN display_name TEXT NOT NULL DEFAULT ''";

/// Tables of `schema` among `names`, sorted.
async fn tables_in(
    pool: &PgPool,
    schema: &str,
    names: &[&str],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = $1 AND table_name = ANY($2) ORDER BY table_name",
    )
    .bind(schema)
    .bind(names)
    .fetch_all(pool)
    .await
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    names.sort();
    names
}

async fn applied_versions(pool: &PgPool, table: &str) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar(&format!("SELECT version FROM {table} ORDER BY version"))
        .fetch_all(pool)
        .await
}

/// Runs hand-written DDL, one statement at a time, on a plain pool.
async fn run_ddl(url: &str, ddl: &[&str]) -> TestResult {
    let pool = PgPool::connect(url).await?;
    for script in ddl {
        sqlx::raw_sql(script).execute(&pool).await?;
    }
    pool.close().await;
    Ok(())
}

fn at(seconds: i64) -> Result<DateTime<Utc>, String> {
    DateTime::from_timestamp(1_800_000_000 + seconds, 0).ok_or_else(|| "bad time".to_owned())
}

fn schema_message(result: Result<(), StoreError>) -> Result<String, String> {
    match result {
        Err(StoreError::Schema(message)) => Ok(message),
        other => Err(format!("expected a schema error, got {other:?}")),
    }
}

#[tokio::test]
async fn standalone_migrates_idempotently_and_keeps_its_history_in_its_schema() -> TestResult {
    let Some(url) = common::postgres::fresh_database("standalone").await? else {
        return Ok(());
    };
    for _ in 0..2 {
        let store = PostgresStore::connect(&url, PostgresMode::Standalone).await?;
        store.migrate().await?;
        store.verify_schema().await?;
        store.close().await;
    }
    let store = PostgresStore::connect(&url, PostgresMode::Standalone).await?;
    store.migrate().await?;
    let pool = store.pool();
    assert_eq!(
        tables_in(pool, "public", &AEGIS_TABLES).await?,
        sorted(&AEGIS_TABLES)
    );
    assert_eq!(
        tables_in(pool, "aegis_relay", &RELAY_TABLES).await?,
        sorted(&RELAY_TABLES)
    );
    assert_eq!(
        tables_in(pool, "aegis_relay", &AEGIS_TABLES).await?,
        Vec::<String>::new()
    );
    let history = ["_sqlx_migrations"];
    assert_eq!(
        tables_in(pool, "aegis_relay", &history).await?,
        sorted(&history)
    );
    assert_eq!(
        tables_in(pool, "public", &history).await?,
        Vec::<String>::new()
    );
    assert_eq!(
        applied_versions(pool, "aegis_relay._sqlx_migrations").await?,
        vec![1, 1001, 1002, 1003, 1004]
    );
    store.ping().await?;
    store.close().await;
    common::postgres::drop_database(&url).await
}

#[tokio::test]
async fn replicas_migrating_at_once_all_succeed() -> TestResult {
    let Some(url) = common::postgres::fresh_database("concurrent").await? else {
        return Ok(());
    };
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(PostgresStore::connect(&url, PostgresMode::Standalone).await?);
    }
    let results = futures::future::join_all(stores.iter().map(|store| store.migrate())).await;
    for result in results {
        result?;
    }
    for store in &stores {
        store.verify_schema().await?;
        store.close().await;
    }
    common::postgres::drop_database(&url).await
}

#[tokio::test]
async fn shared_mode_adds_only_relay_tables_and_leaves_aegis_history_alone() -> TestResult {
    let Some(url) = common::postgres::fresh_database("shared").await? else {
        return Ok(());
    };
    run_ddl(&url, &[AEGIS_DDL, AEGIS_EDGE_DAEMONS, AEGIS_DISPLAY_NAME]).await?;
    let store = PostgresStore::connect(&url, PostgresMode::SharedWithAegis).await?;
    store.migrate().await?;
    store.migrate().await?;
    store.verify_schema().await?;
    let pool = store.pool();
    assert_eq!(
        tables_in(pool, "aegis_relay", &RELAY_TABLES).await?,
        sorted(&RELAY_TABLES)
    );
    assert_eq!(
        tables_in(pool, "public", &RELAY_TABLES).await?,
        Vec::<String>::new()
    );
    assert_eq!(
        tables_in(pool, "aegis_relay", &AEGIS_TABLES).await?,
        Vec::<String>::new()
    );
    assert_eq!(
        applied_versions(pool, "public._sqlx_migrations").await?,
        vec![29]
    );
    assert_eq!(
        applied_versions(pool, "aegis_relay._sqlx_migrations").await?,
        vec![1001, 1002, 1003, 1004]
    );

    let node_id = aegis_relay::runtime::OsEntropy.uuid();
    let enrollment = Enrollment {
        jti: aegis_relay::runtime::OsEntropy.uuid(),
        tenant_id: "acme".to_owned(),
        issued_to: "laptop".to_owned(),
        token_expires_at: at(600)?,
        node_id,
        public_key: vec![7; 32],
        challenge_id: aegis_relay::runtime::OsEntropy.uuid(),
        now: at(0)?,
        own_token: true,
    };
    assert_eq!(
        store.complete_enrollment(&enrollment).await?,
        EnrollmentOutcome::Enrolled
    );
    assert_eq!(
        store.complete_enrollment(&enrollment).await?,
        EnrollmentOutcome::TokenAlreadyRedeemed
    );
    let edge = store
        .get_edge(node_id)
        .await?
        .ok_or("enrolled edge not found")?;
    assert_eq!(edge.tenant_id, "acme");
    assert_eq!(edge.display_name, "laptop");
    assert_eq!(edge.public_key, vec![7; 32]);
    assert_eq!(edge.enrolled_at, at(0)?);
    // The row is in AEGIS's table, where the controller reads it.
    let in_public: i64 =
        sqlx::query_scalar("SELECT count(*) FROM public.edge_daemons WHERE node_id = $1")
            .bind(node_id)
            .fetch_one(pool)
            .await?;
    assert_eq!(in_public, 1);
    // Tag changes keep the controller's JSON copy in step with the column.
    let change = TagChange {
        replace: Some(vec!["gpu".to_owned(), "eu".to_owned()]),
        remove: vec!["eu".to_owned()],
        ..TagChange::default()
    };
    let changed = store
        .change_edge_tags(
            Some("acme"),
            node_id,
            &change,
            aegis_relay::runtime::SystemClock.utc_now(),
        )
        .await?;
    assert_eq!(changed.map(|edge| edge.tags), Some(vec!["gpu".to_owned()]));
    let (column, json): (Vec<String>, serde_json::Value) = sqlx::query_as(
        "SELECT tags, capabilities_json->'tags' FROM public.edge_daemons WHERE node_id = $1",
    )
    .bind(node_id)
    .fetch_one(pool)
    .await?;
    assert_eq!(column, vec!["gpu".to_owned()]);
    assert_eq!(json, serde_json::json!(["gpu"]));
    store.close().await;
    common::postgres::drop_database(&url).await
}

#[tokio::test]
async fn shared_mode_names_a_missing_aegis_column() -> TestResult {
    let Some(url) = common::postgres::fresh_database("shared_old").await? else {
        return Ok(());
    };
    run_ddl(&url, &[AEGIS_DDL, AEGIS_EDGE_DAEMONS]).await?;
    let store = PostgresStore::connect(&url, PostgresMode::SharedWithAegis).await?;
    for message in [
        schema_message(store.migrate().await)?,
        schema_message(store.verify_schema().await)?,
    ] {
        assert!(message.contains("edge_daemons.display_name"), "{message}");
        assert!(message.contains("AEGIS controller"), "{message}");
    }
    // Nothing was created: the check runs before any relay DDL.
    let pool = store.pool();
    assert_eq!(
        tables_in(pool, "aegis_relay", &RELAY_TABLES).await?,
        Vec::<String>::new()
    );
    let columns: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns \
         WHERE table_name = 'edge_daemons' AND column_name = 'display_name'",
    )
    .fetch_one(pool)
    .await?;
    assert_eq!(columns, 0);
    store.close().await;
    common::postgres::drop_database(&url).await
}

#[tokio::test]
async fn an_unmigrated_standalone_database_says_to_run_migrate() -> TestResult {
    let Some(url) = common::postgres::fresh_database("unmigrated").await? else {
        return Ok(());
    };
    let store = PostgresStore::connect(&url, PostgresMode::Standalone).await?;
    let message = schema_message(store.verify_schema().await)?;
    assert!(message.contains("aegis-relay migrate"), "{message}");
    assert!(message.contains("edge_daemons.node_id"), "{message}");
    store.close().await;
    common::postgres::drop_database(&url).await
}

#[tokio::test]
async fn standalone_tables_without_relay_migrations_say_to_run_migrate() -> TestResult {
    let Some(url) = common::postgres::fresh_database("relay_unmigrated").await? else {
        return Ok(());
    };
    run_ddl(&url, &[AEGIS_DDL, AEGIS_EDGE_DAEMONS, AEGIS_DISPLAY_NAME]).await?;
    let store = PostgresStore::connect(&url, PostgresMode::Standalone).await?;
    let message = schema_message(store.verify_schema().await)?;
    assert!(message.contains("aegis-relay migrate"), "{message}");
    assert!(
        message.contains("aegis_relay._sqlx_migrations"),
        "{message}"
    );
    store.close().await;
    common::postgres::drop_database(&url).await
}

#[tokio::test]
async fn a_bad_dsn_is_not_echoed() -> TestResult {
    let result = PostgresStore::connect(
        "postgres://relay:hunter2@db:notaport/x",
        PostgresMode::Standalone,
    )
    .await;
    match result {
        Err(StoreError::Database(message)) => {
            assert!(!message.contains("hunter2"), "{message}");
            assert!(
                message.contains("invalid PostgreSQL connection URL"),
                "{message}"
            );
            Ok(())
        }
        other => Err(format!("expected a DSN error, got {other:?}").into()),
    }
}

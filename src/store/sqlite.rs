//! The embedded store: one SQLite file (WAL, busy timeout), the zero-set-up
//! default of `dev` and of single-host deployments. Several local processes
//! (replicas of `dev --replicas N`) can share the file: SQLite serialises
//! writers, WAL lets readers run alongside, and every write transaction takes
//! the write lock up front.

mod codec;
mod edges;
mod feed;
mod fleet_runs;
mod groups;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use uuid::Uuid;

use super::feed::{EdgeKey, FeedPage};
use super::{
    FleetRunDetail, FleetRunFlush, FleetRunRecord, FleetRunStart, FleetRunsPurge, RunningFleetRun,
};

use super::types::{
    BindOutcome, EdgeGroup, EdgeRecord, EdgeUpdate, Enrollment, EnrollmentOutcome, GroupUpdate,
    KeyRotation, NodeChallenge, PreviousKey, RotationOutcome, TagChange, TokenBinding, Tombstone,
};
use super::{Store, StoreError, StoreResult};

/// How long a writer waits for another process's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The SQLite backend.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // A local file cannot go stale: skip the ping sqlx runs per acquire.
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(15))
            .connect_with(options)
            .await
            .map_err(|err| {
                StoreError::Unavailable(format!("cannot open {}: {err}", path.display()))
            })?;
        Ok(Self { pool })
    }

    /// A pooled connection whose commits are synced to disk before they
    /// return (`synchronous=FULL`). The pool runs `NORMAL`, which in WAL mode
    /// stays consistent but may lose the last commits on power loss;
    /// enrollments (with their token redemption) and revocations are
    /// acknowledged to someone, so they must not.
    async fn durable(&self) -> StoreResult<sqlx::pool::PoolConnection<sqlx::Sqlite>> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut *conn)
            .await?;
        Ok(conn)
    }

    /// Returns a [`Self::durable`] connection to `NORMAL`; one that fails
    /// to is closed rather than pooled.
    async fn release_durable(&self, mut conn: sqlx::pool::PoolConnection<sqlx::Sqlite>) {
        if sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *conn)
            .await
            .is_err()
        {
            drop(conn.detach());
        }
    }

    /// Applies the SQLite migrations (idempotent). Replicas sharing the file
    /// migrate one after another: each holds the write lock from before it
    /// reads which migrations are applied until it has applied the rest, so
    /// a later one finds nothing left to do.
    pub async fn migrate(&self) -> StoreResult<()> {
        let mut tx = self.pool.begin_with(edges::BEGIN_WRITE).await?;
        // `run_direct`: `run` on a borrowed connection is not `Send` (sqlx's
        // own workaround for its `Acquire` bound).
        MIGRATOR.run_direct(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Checks every migration has been applied (for `--no-migrate`).
    pub async fn verify_schema(&self) -> StoreResult<()> {
        let applied: Vec<(i64,)> =
            sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&self.pool)
                .await
                .map_err(|_| {
                    StoreError::Schema(
                        "the database has no migrations applied; run `aegis-relay migrate`"
                            .to_owned(),
                    )
                })?;
        for migration in MIGRATOR.iter() {
            if !applied
                .iter()
                .any(|(version,)| *version == migration.version)
            {
                return Err(StoreError::Schema(format!(
                    "migration {} ({}) is not applied; run `aegis-relay migrate`",
                    migration.version, migration.description
                )));
            }
        }
        Ok(())
    }

    /// The connection pool (tests and benchmarks).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn put_challenge(&self, challenge: &NodeChallenge) -> StoreResult<()> {
        edges::put_challenge(&self.pool, challenge).await
    }

    async fn sweep_challenges(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        edges::sweep_challenges(&self.pool, now).await
    }

    async fn get_challenge(
        &self,
        challenge_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<NodeChallenge>> {
        edges::get_challenge(&self.pool, challenge_id, now).await
    }

    async fn complete_enrollment(&self, enrollment: &Enrollment) -> StoreResult<EnrollmentOutcome> {
        let mut conn = self.durable().await?;
        let outcome = edges::complete_enrollment(&mut conn, enrollment).await;
        self.release_durable(conn).await;
        outcome
    }

    async fn bind_enrollment_token(&self, binding: &TokenBinding) -> StoreResult<BindOutcome> {
        edges::bind_enrollment_token(&self.pool, binding).await
    }

    async fn get_edge(&self, node_id: Uuid) -> StoreResult<Option<EdgeRecord>> {
        edges::get_edge(&self.pool, node_id).await
    }

    async fn list_edges(&self, tenant: Option<&str>) -> StoreResult<Vec<EdgeRecord>> {
        edges::list_edges(&self.pool, tenant).await
    }

    async fn apply_edge_updates(&self, updates: &[EdgeUpdate]) -> StoreResult<u64> {
        edges::apply_edge_updates(&self.pool, updates).await
    }

    async fn change_edge_tags(
        &self,
        tenant: Option<&str>,
        node_id: Uuid,
        change: &TagChange,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<EdgeRecord>> {
        edges::change_edge_tags(&self.pool, tenant, node_id, change, now).await
    }

    async fn set_edge_name(
        &self,
        tenant: Option<&str>,
        node_id: Uuid,
        name: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<EdgeRecord>> {
        edges::set_edge_name(&self.pool, tenant, node_id, name, now).await
    }

    async fn rotate_edge_key(&self, rotation: &KeyRotation) -> StoreResult<RotationOutcome> {
        edges::rotate_edge_key(&self.pool, rotation).await
    }

    async fn previous_keys(
        &self,
        node_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PreviousKey>> {
        edges::previous_keys(&self.pool, node_id, now).await
    }

    async fn revoke_edge(
        &self,
        tenant: Option<&str>,
        node_id: Uuid,
        revoked_by: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Tombstone>> {
        let mut conn = self.durable().await?;
        let outcome = edges::revoke_edge(&mut conn, tenant, node_id, revoked_by, now).await;
        self.release_durable(conn).await;
        outcome
    }

    async fn tombstone(&self, node_id: Uuid) -> StoreResult<Option<Tombstone>> {
        edges::tombstone(&self.pool, node_id).await
    }

    async fn create_group(&self, group: &EdgeGroup) -> StoreResult<EdgeGroup> {
        groups::create_group(&self.pool, group).await
    }

    async fn get_group(&self, tenant: Option<&str>, id: Uuid) -> StoreResult<Option<EdgeGroup>> {
        groups::get_group(&self.pool, tenant, id).await
    }

    async fn list_groups(&self, tenant: Option<&str>) -> StoreResult<Vec<EdgeGroup>> {
        groups::list_groups(&self.pool, tenant).await
    }

    async fn update_group(
        &self,
        tenant: Option<&str>,
        id: Uuid,
        update: &GroupUpdate,
    ) -> StoreResult<Option<EdgeGroup>> {
        groups::update_group(&self.pool, tenant, id, update).await
    }

    async fn delete_group(&self, tenant: Option<&str>, id: Uuid) -> StoreResult<bool> {
        groups::delete_group(&self.pool, tenant, id).await
    }

    async fn changes_since(&self, after: i64, limit: u32) -> StoreResult<FeedPage> {
        feed::changes_since(&self.pool, after, limit).await
    }

    async fn purge_changes(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        feed::purge_changes(&self.pool, before).await
    }

    async fn edge_keys(&self, node_ids: &[Uuid]) -> StoreResult<Vec<EdgeKey>> {
        feed::edge_keys(&self.pool, node_ids).await
    }

    async fn start_fleet_run(&self, run: &FleetRunStart) -> StoreResult<()> {
        fleet_runs::start_fleet_run(&self.pool, run).await
    }

    async fn record_fleet_runs(&self, flushes: &[FleetRunFlush]) -> StoreResult<()> {
        fleet_runs::record_fleet_runs(&self.pool, flushes).await
    }

    async fn list_fleet_runs(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<FleetRunRecord>> {
        fleet_runs::list_fleet_runs(&self.pool, tenant, limit).await
    }

    async fn get_fleet_run(
        &self,
        tenant: Option<&str>,
        id: Uuid,
    ) -> StoreResult<Option<FleetRunDetail>> {
        fleet_runs::get_fleet_run(&self.pool, tenant, id).await
    }

    async fn running_fleet_runs(&self) -> StoreResult<Vec<RunningFleetRun>> {
        fleet_runs::running_fleet_runs(&self.pool).await
    }

    async fn mark_fleet_runs_lost(&self, ids: &[Uuid], now: DateTime<Utc>) -> StoreResult<u64> {
        fleet_runs::mark_fleet_runs_lost(&self.pool, ids, now).await
    }

    async fn purge_fleet_runs(
        &self,
        purge: &FleetRunsPurge,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        fleet_runs::purge_fleet_runs(&self.pool, purge, now).await
    }
}

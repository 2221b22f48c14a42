//! The PostgreSQL store: production backend for every multi-host cluster,
//! able to share one database with the AEGIS controller. This file holds the
//! connection, the mode and the [`Store`] wiring; the SQL lives in the
//! submodules (schema, edges, keys, groups, row decoding).

mod edges;
mod feed;
mod fleet_runs;
mod groups;
mod keys;
mod rows;
mod schema;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::Connection;
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    FleetRunDetail, FleetRunFlush, FleetRunRecord, FleetRunStart, FleetRunsPurge, RunningFleetRun,
};

use super::{
    BindOutcome, EdgeGroup, EdgeKey, EdgeRecord, EdgeUpdate, Enrollment, EnrollmentOutcome,
    FeedPage, GroupUpdate, KeyRotation, NodeChallenge, PreviousKey, RotationOutcome, Store,
    StoreError, StoreResult, TagChange, TokenBinding, Tombstone,
};

/// Schema holding the relay's own tables (and its `_sqlx_migrations`).
pub(crate) const RELAY_SCHEMA: &str = "aegis_relay";

/// Default pool size (`postgres.max_connections`): enough for a replica's
/// sessions, batches and admin calls.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 16;

/// How long a caller waits for a pooled connection before `Unavailable`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Who owns the AEGIS tables (`edge_daemons`, `enrollment_tokens`,
/// `edge_groups`) in this database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostgresMode {
    /// The relay owns the whole database: `migrate` creates the AEGIS-shaped
    /// tables in `public` as well as its own.
    Standalone,
    /// The AEGIS controller owns `public` and migrates the AEGIS tables; the
    /// relay never runs DDL there and only checks the columns it uses.
    SharedWithAegis,
}

/// The PostgreSQL backend of [`Store`].
///
/// Every connection starts with `search_path = aegis_relay, public`. The
/// relay's own tables (challenges, key history, tombstones, token bindings) and its sqlx
/// bookkeeping table `_sqlx_migrations` are created unqualified, so they land
/// in schema `aegis_relay`; the AEGIS tables resolve to `public`. That keeps
/// the relay's migration history apart from AEGIS's `public._sqlx_migrations`
/// when both share a database ([`PostgresMode::SharedWithAegis`]), where the
/// relay runs no DDL on AEGIS tables. In [`PostgresMode::Standalone`] it
/// creates those tables itself, with the same shape.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The readiness ping's own connection, outside the pool, so a pool
    /// drained by a flood of store-reading calls does not read as a database
    /// outage. Opened on the first ping and again after a failed one.
    ping: std::sync::Arc<tokio::sync::Mutex<Option<PgConnection>>>,
    options: PgConnectOptions,
    mode: PostgresMode,
}

impl PostgresStore {
    /// Connects a pool ([`DEFAULT_MAX_CONNECTIONS`], 3 s acquire timeout) to `dsn`.
    pub async fn connect(dsn: &str, mode: PostgresMode) -> Result<Self, StoreError> {
        Self::connect_with_pool(dsn, mode, DEFAULT_MAX_CONNECTIONS).await
    }

    /// Connects a pool of `max_connections` (3 s acquire timeout) to `dsn`. An
    /// unparsable DSN is reported without echoing it (it may hold a password).
    pub async fn connect_with_pool(
        dsn: &str,
        mode: PostgresMode,
        max_connections: u32,
    ) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(dsn)
            .map_err(|err| {
                StoreError::Database(format!(
                    "invalid PostgreSQL connection URL (not shown, it may contain a password): {err}"
                ))
            })?
            .options([("search_path", format!("{RELAY_SCHEMA},public"))]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        Ok(Self {
            pool,
            ping: std::sync::Arc::default(),
            options,
            mode,
        })
    }

    /// The underlying pool (tests, benchmarks).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The mode this store was opened in.
    pub fn mode(&self) -> PostgresMode {
        self.mode
    }

    /// Creates schema `aegis_relay` and applies migrations: in standalone
    /// mode the AEGIS-shaped tables then the relay's; in shared mode it first
    /// checks the AEGIS tables (never changing them), then applies only the
    /// relay's. Idempotent; concurrent replicas serialize on advisory locks.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        schema::migrate(&self.pool, self.mode).await
    }

    /// Checks, without changing anything, that every AEGIS column the relay
    /// uses exists and that all relay migrations are applied. Run at start in
    /// shared mode or with `--no-migrate`; the error says what to do.
    pub async fn verify_schema(&self) -> Result<(), StoreError> {
        schema::verify(&self.pool, self.mode).await
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn shared_with_aegis(&self) -> bool {
        self.mode == PostgresMode::SharedWithAegis
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut slot = self.ping.lock().await;
        let mut connection = match slot.take() {
            Some(connection) => connection,
            None => PgConnection::connect_with(&self.options).await?,
        };
        // A failed ping drops its connection; the next one dials afresh.
        sqlx::query("SELECT 1").execute(&mut connection).await?;
        *slot = Some(connection);
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
        edges::complete_enrollment(&self.pool, enrollment).await
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
        keys::rotate_edge_key(&self.pool, rotation).await
    }

    async fn previous_keys(
        &self,
        node_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PreviousKey>> {
        keys::previous_keys(&self.pool, node_id, now).await
    }

    async fn revoke_edge(
        &self,
        tenant: Option<&str>,
        node_id: Uuid,
        revoked_by: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Tombstone>> {
        keys::revoke_edge(&self.pool, tenant, node_id, revoked_by, now).await
    }

    async fn tombstone(&self, node_id: Uuid) -> StoreResult<Option<Tombstone>> {
        keys::tombstone(&self.pool, node_id).await
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

/// ` AND tenant_id = $n` when the operation is scoped to one tenant.
fn tenant_clause(tenant: Option<&str>, param: usize) -> String {
    match tenant {
        Some(_) => format!(" AND tenant_id = ${param}"),
        None => String::new(),
    }
}

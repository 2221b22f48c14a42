//! The in-memory store: plain maps behind one mutex, for the simulator
//! (several simulated replicas share one `Arc<MemoryStore>` that outlives
//! their hosts, as a database outlives a crashed replica) and as a fast
//! backend for tests. Not selectable by configuration.
//!
//! Every method runs under the lock from start to end, so each is one
//! transaction: it checks, then writes, and a refusal writes nothing. The
//! contract suite (`tests/store_contract.rs`) holds it to the SQLite and
//! PostgreSQL semantics. Times are kept as the caller passes them.

mod edges;
mod enrollment;
mod feed;
mod fleet_runs;
mod groups;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::feed::{EdgeChange, EdgeKey, FeedPage};
use super::{
    FleetRunDetail, FleetRunFlush, FleetRunRecord, FleetRunStart, FleetRunsPurge, RunningFleetRun,
};

use super::types::{
    BindOutcome, EdgeGroup, EdgeRecord, EdgeUpdate, Enrollment, EnrollmentOutcome, GroupUpdate,
    KeyRotation, NodeChallenge, PreviousKey, RotationOutcome, TagChange, TokenBinding, Tombstone,
};
use super::{Store, StoreError, StoreResult};

/// The in-memory backend.
#[derive(Debug, Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
    unavailable: AtomicBool,
}

/// The "rows", one map per table of the SQL backends.
#[derive(Debug, Default)]
struct Tables {
    /// `edge_daemons`, ordered by node id. `capabilities.tags` is always a
    /// copy of `tags`.
    edges: BTreeMap<Uuid, EdgeRecord>,
    /// `enrollment_tokens`: redeemed `jti`s.
    redeemed: HashSet<Uuid>,
    /// `enrollment_token_bindings` by `jti`.
    bindings: HashMap<Uuid, Binding>,
    /// `edge_challenges` by challenge id.
    challenges: HashMap<Uuid, NodeChallenge>,
    /// `edge_key_history` by node id.
    key_history: HashMap<Uuid, Vec<ReplacedKey>>,
    /// `edge_tombstones` by node id.
    tombstones: HashMap<Uuid, Tombstone>,
    /// `edge_groups` by id.
    groups: HashMap<Uuid, EdgeGroup>,
    /// The unique (tenant, name) index of `edge_groups`, in listing order.
    group_names: BTreeMap<(String, String), Uuid>,
    /// `edge_changes` by seq.
    changes: BTreeMap<i64, EdgeChange>,
    /// `edge_feed_head`: the latest seq given out.
    head: i64,
    /// `fleet_runs` and `fleet_run_targets`.
    fleet_runs: fleet_runs::FleetRunTables,
}

/// An `enrollment_token_bindings` row.
#[derive(Debug, Clone)]
struct Binding {
    node_id: Uuid,
    tenant_id: String,
    expires_at: DateTime<Utc>,
}

/// An `edge_key_history` row.
#[derive(Debug, Clone)]
struct ReplacedKey {
    public_key: Vec<u8>,
    replaced_at: DateTime<Utc>,
    valid_until: DateTime<Utc>,
    nonce: Vec<u8>,
}

/// Whether a row of `tenant` is visible to a caller scoped to `scope`.
fn in_scope(scope: Option<&str>, tenant: &str) -> bool {
    scope.is_none_or(|scope| scope == tenant)
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every operation (and the readiness ping) fail with
    /// [`StoreError::Unavailable`] until called again with `true`: a
    /// database outage, for the simulator and tests.
    pub fn set_available(&self, available: bool) {
        self.unavailable.store(!available, Ordering::SeqCst);
    }

    /// The tables, locked for one operation (never held across an await).
    fn tables(&self) -> StoreResult<MutexGuard<'_, Tables>> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "the memory store is switched off".to_owned(),
            ));
        }
        // A panic mid-operation may have left a half-written change.
        self.tables
            .lock()
            .map_err(|_| StoreError::Database("memory store poisoned by a panic".to_owned()))
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> StoreResult<()> {
        self.tables().map(drop)
    }

    async fn put_challenge(&self, challenge: &NodeChallenge) -> StoreResult<()> {
        self.tables()?.put_challenge(challenge)
    }

    async fn sweep_challenges(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        Ok(self.tables()?.sweep_challenges(now))
    }

    async fn get_challenge(
        &self,
        challenge_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<NodeChallenge>> {
        Ok(self.tables()?.get_challenge(challenge_id, now))
    }

    async fn complete_enrollment(&self, enrollment: &Enrollment) -> StoreResult<EnrollmentOutcome> {
        self.tables()?.complete_enrollment(enrollment)
    }

    async fn bind_enrollment_token(&self, binding: &TokenBinding) -> StoreResult<BindOutcome> {
        self.tables()?.bind_enrollment_token(binding)
    }

    async fn get_edge(&self, node_id: Uuid) -> StoreResult<Option<EdgeRecord>> {
        let tables = self.tables()?;
        Ok(tables
            .edges
            .get(&node_id)
            .cloned()
            .map(|edge| tables.with_seq(edge)))
    }

    async fn list_edges(&self, tenant: Option<&str>) -> StoreResult<Vec<EdgeRecord>> {
        Ok(self.tables()?.list_edges(tenant))
    }

    async fn apply_edge_updates(&self, updates: &[EdgeUpdate]) -> StoreResult<u64> {
        Ok(self.tables()?.apply_edge_updates(updates))
    }

    async fn change_edge_tags(
        &self,
        tenant: Option<&str>,
        node_id: Uuid,
        change: &TagChange,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<EdgeRecord>> {
        Ok(self
            .tables()?
            .change_edge_tags(tenant, node_id, change, now))
    }

    async fn set_edge_name(
        &self,
        tenant: Option<&str>,
        node_id: Uuid,
        name: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<EdgeRecord>> {
        Ok(self.tables()?.set_edge_name(tenant, node_id, name, now))
    }

    async fn rotate_edge_key(&self, rotation: &KeyRotation) -> StoreResult<RotationOutcome> {
        Ok(self.tables()?.rotate_edge_key(rotation))
    }

    async fn previous_keys(
        &self,
        node_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PreviousKey>> {
        Ok(self.tables()?.previous_keys(node_id, now))
    }

    async fn revoke_edge(
        &self,
        tenant: Option<&str>,
        node_id: Uuid,
        revoked_by: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Tombstone>> {
        Ok(self.tables()?.revoke_edge(tenant, node_id, revoked_by, now))
    }

    async fn tombstone(&self, node_id: Uuid) -> StoreResult<Option<Tombstone>> {
        Ok(self.tables()?.tombstones.get(&node_id).cloned())
    }

    async fn create_group(&self, group: &EdgeGroup) -> StoreResult<EdgeGroup> {
        self.tables()?.create_group(group)
    }

    async fn get_group(&self, tenant: Option<&str>, id: Uuid) -> StoreResult<Option<EdgeGroup>> {
        Ok(self.tables()?.get_group(tenant, id))
    }

    async fn list_groups(&self, tenant: Option<&str>) -> StoreResult<Vec<EdgeGroup>> {
        Ok(self.tables()?.list_groups(tenant))
    }

    async fn update_group(
        &self,
        tenant: Option<&str>,
        id: Uuid,
        update: &GroupUpdate,
    ) -> StoreResult<Option<EdgeGroup>> {
        self.tables()?.update_group(tenant, id, update)
    }

    async fn delete_group(&self, tenant: Option<&str>, id: Uuid) -> StoreResult<bool> {
        Ok(self.tables()?.delete_group(tenant, id))
    }

    async fn changes_since(&self, after: i64, limit: u32) -> StoreResult<FeedPage> {
        Ok(self.tables()?.changes_since(after, limit))
    }

    async fn purge_changes(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        Ok(self.tables()?.purge_changes(before))
    }

    async fn edge_keys(&self, node_ids: &[Uuid]) -> StoreResult<Vec<EdgeKey>> {
        Ok(self.tables()?.edge_keys(node_ids))
    }

    async fn start_fleet_run(&self, run: &FleetRunStart) -> StoreResult<()> {
        self.tables()?.start_fleet_run(run)
    }

    async fn record_fleet_runs(&self, flushes: &[FleetRunFlush]) -> StoreResult<()> {
        self.tables()?.record_fleet_runs(flushes);
        Ok(())
    }

    async fn list_fleet_runs(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<FleetRunRecord>> {
        Ok(self.tables()?.list_fleet_runs(tenant, limit))
    }

    async fn get_fleet_run(
        &self,
        tenant: Option<&str>,
        id: Uuid,
    ) -> StoreResult<Option<FleetRunDetail>> {
        Ok(self.tables()?.get_fleet_run(tenant, id))
    }

    async fn running_fleet_runs(&self) -> StoreResult<Vec<RunningFleetRun>> {
        Ok(self.tables()?.running_fleet_runs())
    }

    async fn mark_fleet_runs_lost(&self, ids: &[Uuid], now: DateTime<Utc>) -> StoreResult<u64> {
        Ok(self.tables()?.mark_fleet_runs_lost(ids, now))
    }

    async fn purge_fleet_runs(
        &self,
        purge: &FleetRunsPurge,
        now: DateTime<Utc>,
    ) -> StoreResult<u64> {
        Ok(self.tables()?.purge_fleet_runs(purge, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_outage_fails_every_operation_until_it_ends() -> Result<(), StoreError> {
        let store = MemoryStore::new();
        assert_eq!(store.backend(), "memory");
        store.ping().await?;
        store.set_available(false);
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
        let listed = store.list_edges(None).await;
        assert!(
            matches!(&listed, Err(err) if err.is_transient()),
            "{listed:?}"
        );
        store.set_available(true);
        store.ping().await?;
        assert!(store.list_edges(None).await?.is_empty());
        Ok(())
    }
}

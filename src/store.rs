//! Persistent state shared by all replicas (and, in shared mode, with the
//! AEGIS controller): enrolled edges, enrollment-token redemptions, groups,
//! challenges, key history and revocation tombstones, and the change feed
//! every replica follows.
//!
//! One [`Store`] trait, two sqlx backends: PostgreSQL (production, every
//! multi-host cluster; AEGIS-compatible tables) and SQLite (the embedded
//! default of `dev`), plus [`MemoryStore`] for the simulator and tests (not
//! selectable by configuration). One contract suite
//! (`tests/store_contract.rs`) runs against all three. Every method takes the current time from its caller (the
//! runtime clock), so expiry is testable and simulable.
//!
//! Architecture invariant: session traffic never causes one statement per
//! message; heartbeats and capabilities arrive through
//! [`Store::apply_edge_updates`], one statement per batch.

mod batch;
mod error;
mod feed;
mod fleet_runs;
mod memory;
mod open;
mod postgres;
mod sqlite;
mod types;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use batch::coalesce_updates;
pub use error::StoreError;
pub use feed::{ChangeKind, EdgeChange, EdgeKey, FeedPage};
#[cfg(test)]
pub(crate) use fleet_runs::test_outcome;
pub use fleet_runs::{
    coalesce_flushes, FleetRunCounts, FleetRunDetail, FleetRunEnd, FleetRunFlush, FleetRunRecord,
    FleetRunStart, FleetRunState, FleetRunsPurge, FleetTargetOutcome, RunningFleetRun,
    FLEET_RUNS_LIST_LIMIT,
};
pub use memory::MemoryStore;
pub use open::{open, Migrations, StoreSettings};
pub use postgres::{PostgresMode, PostgresStore};
pub use sqlite::SqliteStore;
pub use types::*;

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// The relay's persistent state. `tenant: Option<&str>` scopes an operation
/// to one tenant; `None` means every tenant (operators).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// "postgres", "sqlite" or "memory".
    fn backend(&self) -> &'static str;

    /// Whether the AEGIS controller writes `edge_daemons` too (bypassing
    /// the change feed), so replicas must also check the rows they hold.
    fn shared_with_aegis(&self) -> bool {
        false
    }

    /// Checks the database answers (readiness).
    async fn ping(&self) -> StoreResult<()>;

    /// Stores an AttestNode challenge.
    async fn put_challenge(&self, challenge: &NodeChallenge) -> StoreResult<()>;

    /// Deletes every challenge expired at `now` (the replica's sweep timer
    /// calls this); returns how many.
    async fn sweep_challenges(&self, now: DateTime<Utc>) -> StoreResult<u64>;

    /// A challenge younger than [`CHALLENGE_TTL`] at `now`. An expired one
    /// is deleted when read; the rest are swept on a timer.
    async fn get_challenge(
        &self,
        challenge_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<NodeChallenge>>;

    /// Redeems the token's `jti` (one atomic statement: exactly one of any
    /// number of concurrent redemptions wins) and, only then, stores the edge
    /// and deletes the challenge, all in one transaction. An enrolled node is
    /// replaced (new key) only by an own token bound to it
    /// ([`Store::bind_enrollment_token`]); a token bound to a node enrolls no
    /// other. A refusal (revoked node id, another tenant's node, an enrolled
    /// node without a binding) rolls everything back.
    async fn complete_enrollment(&self, enrollment: &Enrollment) -> StoreResult<EnrollmentOutcome>;

    /// Records that the enrollment token `binding.jti` may re-enroll
    /// `binding.node_id`, if that node is enrolled in the binding's tenant
    /// (checked in the same transaction). Prunes expired bindings.
    async fn bind_enrollment_token(&self, binding: &TokenBinding) -> StoreResult<BindOutcome>;

    /// One edge, with the `seq` of its latest change.
    async fn get_edge(&self, node_id: Uuid) -> StoreResult<Option<EdgeRecord>>;

    /// Edges of one tenant (or all), ordered by node id.
    async fn list_edges(&self, tenant: Option<&str>) -> StoreResult<Vec<EdgeRecord>>;

    /// Applies heartbeats, capabilities and statuses of many edges in one
    /// statement. Unknown edges are skipped. Returns the rows updated.
    async fn apply_edge_updates(&self, updates: &[EdgeUpdate]) -> StoreResult<u64>;

    /// Applies a [`TagChange`] to an edge's server-side tags atomically: the
    /// change is computed from the tags current when it is written, so
    /// concurrent changes all land. `None` when the edge is not found in
    /// scope. Writes a `tags` change; the record carries its `seq`.
    async fn change_edge_tags(
        &self,
        tenant: Option<&str>,
        node_id: Uuid,
        change: &TagChange,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<EdgeRecord>>;

    /// Renames an edge (its display name); `None` when the edge is not found
    /// in scope. Writes a `renamed` change; the record carries its `seq`.
    async fn set_edge_name(
        &self,
        tenant: Option<&str>,
        node_id: Uuid,
        name: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<EdgeRecord>>;

    /// Installs a new key if the current one is still `current_key`, keeping
    /// the old one until `previous_valid_until`; refuses a reused nonce.
    async fn rotate_edge_key(&self, rotation: &KeyRotation) -> StoreResult<RotationOutcome>;

    /// Replaced keys still inside their overlap window at `now`.
    async fn previous_keys(
        &self,
        node_id: Uuid,
        now: DateTime<Utc>,
    ) -> StoreResult<Vec<PreviousKey>>;

    /// Hard-deletes the edge (as AEGIS does) and records a tombstone, in one
    /// transaction. `None` when the edge is not found in scope.
    async fn revoke_edge(
        &self,
        tenant: Option<&str>,
        node_id: Uuid,
        revoked_by: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Tombstone>>;

    /// The tombstone of a revoked node, if any.
    async fn tombstone(&self, node_id: Uuid) -> StoreResult<Option<Tombstone>>;

    /// Creates a group; [`StoreError::Conflict`] if the tenant already has
    /// one of that name.
    async fn create_group(&self, group: &EdgeGroup) -> StoreResult<EdgeGroup>;

    /// One group, if in scope.
    async fn get_group(&self, tenant: Option<&str>, id: Uuid) -> StoreResult<Option<EdgeGroup>>;

    /// Groups of one tenant (or all), ordered by tenant and name.
    async fn list_groups(&self, tenant: Option<&str>) -> StoreResult<Vec<EdgeGroup>>;

    /// Changes a group; `None` when not found in scope.
    async fn update_group(
        &self,
        tenant: Option<&str>,
        id: Uuid,
        update: &GroupUpdate,
    ) -> StoreResult<Option<EdgeGroup>>;

    /// Deletes a group; false when not found in scope.
    async fn delete_group(&self, tenant: Option<&str>, id: Uuid) -> StoreResult<bool>;

    /// Up to `limit` changes with `seq > after`, in `seq` order, with the
    /// feed's head and oldest kept `seq`, in one read (`limit` 0 reads only
    /// those two). Enrollments (`enrolled`, also on re-enrollment), key
    /// rotations, revocations, tag changes and renames each write one change
    /// in their own transaction; refusals write none.
    async fn changes_since(&self, after: i64, limit: u32) -> StoreResult<FeedPage>;

    /// Deletes changes written before `before` (retention); returns how many.
    async fn purge_changes(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    /// The current keys of those of `node_ids` that exist, in one read.
    async fn edge_keys(&self, node_ids: &[Uuid]) -> StoreResult<Vec<EdgeKey>>;

    /// Records a fleet run's start as `running` (one statement);
    /// [`StoreError::Conflict`] if its id exists.
    async fn start_fleet_run(&self, run: &FleetRunStart) -> StoreResult<()>;

    /// Writes one flush of many runs' target outcomes, cancel reasons and
    /// ends in one transaction (a fixed number of statements, whatever its
    /// size; see [`FleetRunFlush`] for the rules). Unknown runs are skipped.
    async fn record_fleet_runs(&self, flushes: &[FleetRunFlush]) -> StoreResult<()>;

    /// Fleet runs of one tenant (or all), newest first (ties by id), at
    /// most `limit`, without targets.
    async fn list_fleet_runs(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<FleetRunRecord>>;

    /// One fleet run in scope, with its targets ordered by node id.
    async fn get_fleet_run(
        &self,
        tenant: Option<&str>,
        id: Uuid,
    ) -> StoreResult<Option<FleetRunDetail>>;

    /// Every `running` fleet run with the replica start running it, by id.
    async fn running_fleet_runs(&self) -> StoreResult<Vec<RunningFleetRun>>;

    /// Marks those of `ids` still `running` as `lost`, finished at `now`;
    /// returns how many.
    async fn mark_fleet_runs_lost(&self, ids: &[Uuid], now: DateTime<Utc>) -> StoreResult<u64>;

    /// Deletes ended runs (with their targets) finished `max_age` before
    /// `now` or beyond the newest `per_tenant` of their tenant; running
    /// runs stay. Returns how many runs went.
    async fn purge_fleet_runs(
        &self,
        purge: &FleetRunsPurge,
        now: DateTime<Utc>,
    ) -> StoreResult<u64>;
}

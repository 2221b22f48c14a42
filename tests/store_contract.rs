//! One contract for every store backend: the same tests run against SQLite,
//! PostgreSQL (that third needs AEGIS_RELAY_TEST_POSTGRES_URL; cluster/test
//! starts a server and sets it) and the in-memory store.

mod common;
#[path = "store_contract/expiry.rs"]
mod expiry;
#[path = "store_contract/feed.rs"]
mod feed;
#[path = "store_contract/fleet_runs.rs"]
mod fleet_runs;
#[path = "store_contract/groups.rs"]
mod groups;
#[path = "store_contract/shared_file.rs"]
mod shared_file;
#[path = "store_contract/tags.rs"]
mod tags;
#[path = "store_contract/takeover.rs"]
mod takeover;

use std::sync::Arc;

use aegis_relay::store::{
    AttestedCapabilities, EdgeCapabilities, EdgeStatus, EdgeUpdate, Enrollment, EnrollmentOutcome,
    KeyRotation, MemoryStore, NodeChallenge, PostgresMode, PostgresStore, RotationOutcome,
    SqliteStore, Store, StoreError, CHALLENGE_TTL,
};
use chrono::{DateTime, TimeZone, Utc};
use common::TestResult;
use expiry::{
    challenges_are_swept_at_their_ttl,
    previous_keys_are_newest_first_and_forgotten_on_re_enrollment,
};
use feed::{
    a_reader_following_concurrent_writers_never_sees_a_gap,
    edge_keys_reads_the_asked_nodes_that_exist,
    every_change_is_in_the_feed_once_and_refusals_in_none,
    retention_purges_old_changes_and_readers_learn_what_they_missed,
};
use fleet_runs::{
    fleet_runs_are_purged_by_count_and_age, fleet_runs_of_a_gone_replica_are_marked_lost,
    fleet_runs_record_batches_and_read_back_in_scope,
};
use groups::{
    group_ids_are_unique_and_a_rename_to_the_same_name_is_no_clash,
    groups_are_unique_per_tenant_and_name,
};
use tags::{concurrent_tag_changes_all_land, replace, tag_changes_replace_then_add_then_remove};
use takeover::{
    bindings_refuse_revoked_nodes_and_are_pruned_after_expiry,
    concurrent_first_enrollments_of_one_node_id_have_one_winner,
    re_enrollment_needs_a_token_bound_to_the_node,
};
use uuid::Uuid;

/// A store and whatever must outlive it.
struct TestStore {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite(_label: &str) -> Result<Option<TestStore>, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("relay.db")).await?;
    store.migrate().await?;
    Ok(Some(TestStore {
        store: Arc::new(store),
        _dir: Some(dir),
    }))
}

async fn memory(_label: &str) -> Result<Option<TestStore>, Box<dyn std::error::Error>> {
    Ok(Some(TestStore {
        store: Arc::new(MemoryStore::new()),
        _dir: None,
    }))
}

async fn postgres(label: &str) -> Result<Option<TestStore>, Box<dyn std::error::Error>> {
    let Some(url) = common::postgres::fresh_database(label).await? else {
        return Ok(None);
    };
    let store = PostgresStore::connect(&url, PostgresMode::Standalone).await?;
    store.migrate().await?;
    Ok(Some(TestStore {
        store: Arc::new(store),
        _dir: None,
    }))
}

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_767_225_600 + seconds, 0)
        .single()
        .unwrap_or_default()
}

fn challenge(node_id: Uuid, created_at: DateTime<Utc>) -> NodeChallenge {
    NodeChallenge {
        challenge_id: aegis_relay::runtime::OsEntropy.uuid(),
        node_id,
        nonce: vec![9; 32],
        public_key: vec![1; 32],
        role: "edge".into(),
        capabilities: AttestedCapabilities::default(),
        grpc_address: String::new(),
        created_at,
    }
}

fn enrollment(jti: Uuid, node_id: Uuid, tenant: &str, key: u8, now: DateTime<Utc>) -> Enrollment {
    Enrollment {
        jti,
        tenant_id: tenant.into(),
        issued_to: format!("host-{key}"),
        token_expires_at: now + chrono::Duration::minutes(15),
        node_id,
        public_key: vec![key; 32],
        challenge_id: aegis_relay::runtime::OsEntropy.uuid(),
        now,
        own_token: true,
    }
}

async fn enroll(
    store: &dyn Store,
    tenant: &str,
    key: u8,
    now: DateTime<Utc>,
) -> Result<Uuid, StoreError> {
    let node_id = aegis_relay::runtime::OsEntropy.uuid();
    let outcome = store
        .complete_enrollment(&enrollment(
            aegis_relay::runtime::OsEntropy.uuid(),
            node_id,
            tenant,
            key,
            now,
        ))
        .await?;
    assert_eq!(outcome, EnrollmentOutcome::Enrolled);
    Ok(node_id)
}

async fn challenge_round_trip_and_expiry(store: &dyn Store) -> TestResult {
    let created = at(0);
    let stored = challenge(aegis_relay::runtime::OsEntropy.uuid(), created);
    store.put_challenge(&stored).await?;
    assert_eq!(
        store.get_challenge(stored.challenge_id, at(10)).await?,
        Some(stored.clone())
    );
    assert_eq!(
        store
            .get_challenge(aegis_relay::runtime::OsEntropy.uuid(), at(10))
            .await?,
        None
    );
    let ttl = chrono::Duration::from_std(CHALLENGE_TTL)?;
    let just_before = created + ttl - chrono::Duration::milliseconds(1);
    assert!(store
        .get_challenge(stored.challenge_id, just_before)
        .await?
        .is_some());
    assert_eq!(
        store
            .get_challenge(stored.challenge_id, created + ttl)
            .await?,
        None
    );
    // Expired challenges are purged: going back in time does not revive it.
    assert_eq!(store.get_challenge(stored.challenge_id, at(1)).await?, None);
    Ok(())
}

async fn enrollment_redeems_once_and_stores_the_edge(store: &dyn Store) -> TestResult {
    let node_id = aegis_relay::runtime::OsEntropy.uuid();
    let attested = NodeChallenge {
        node_id,
        ..challenge(node_id, at(0))
    };
    store.put_challenge(&attested).await?;
    let jti = aegis_relay::runtime::OsEntropy.uuid();
    let mut first = enrollment(jti, node_id, "t-acme", 3, at(5));
    first.challenge_id = attested.challenge_id;
    assert_eq!(
        store.complete_enrollment(&first).await?,
        EnrollmentOutcome::Enrolled
    );
    let edge = store.get_edge(node_id).await?.ok_or("edge not stored")?;
    assert_eq!(edge.tenant_id, "t-acme");
    assert_eq!(edge.public_key, vec![3; 32]);
    assert_eq!(edge.display_name, "host-3");
    assert_eq!(edge.status, EdgeStatus::Active);
    assert_eq!(edge.capabilities, EdgeCapabilities::default());
    assert!(edge.tags.is_empty());
    assert_eq!(edge.enrolled_at, at(5));
    assert_eq!(edge.last_heartbeat_at, None);
    assert_eq!(
        store.get_challenge(attested.challenge_id, at(6)).await?,
        None,
        "challenge consumed"
    );

    let other_node = aegis_relay::runtime::OsEntropy.uuid();
    let replay = enrollment(jti, other_node, "t-acme", 4, at(6));
    assert_eq!(
        store.complete_enrollment(&replay).await?,
        EnrollmentOutcome::TokenAlreadyRedeemed
    );
    assert_eq!(
        store.get_edge(other_node).await?,
        None,
        "nothing written on replay"
    );
    Ok(())
}

async fn concurrent_redemptions_of_one_jti_have_one_winner(store: Arc<dyn Store>) -> TestResult {
    let jti = aegis_relay::runtime::OsEntropy.uuid();
    let mut attempts = tokio::task::JoinSet::new();
    for key in 0..50u8 {
        let store = Arc::clone(&store);
        attempts.spawn(async move {
            let node_id = aegis_relay::runtime::OsEntropy.uuid();
            let outcome = store
                .complete_enrollment(&enrollment(jti, node_id, "t-race", key, at(0)))
                .await;
            (node_id, outcome)
        });
    }
    let mut winners = Vec::new();
    let mut losers = 0;
    while let Some(joined) = attempts.join_next().await {
        let (node_id, outcome) = joined?;
        match outcome? {
            EnrollmentOutcome::Enrolled => winners.push(node_id),
            EnrollmentOutcome::TokenAlreadyRedeemed => losers += 1,
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one redemption wins");
    assert_eq!(losers, 49);
    let edges = store.list_edges(Some("t-race")).await?;
    assert_eq!(edges.iter().map(|e| e.node_id).collect::<Vec<_>>(), winners);
    Ok(())
}

async fn batched_updates_of_a_thousand_edges(store: &dyn Store) -> TestResult {
    let mut nodes = Vec::new();
    for i in 0..1000u32 {
        let node_id = Uuid::from_u128(0xA000_0000 + u128::from(i));
        store
            .complete_enrollment(&enrollment(
                aegis_relay::runtime::OsEntropy.uuid(),
                node_id,
                "t-fleet",
                1,
                at(0),
            ))
            .await?;
        nodes.push(node_id);
    }
    store
        .change_edge_tags(Some("t-fleet"), nodes[0], &replace(&["gpu"]), at(0))
        .await?;
    let capabilities = EdgeCapabilities {
        os: "linux".into(),
        arch: "x86_64".into(),
        local_tools: vec!["shell".into()],
        custom_labels: [("zone".to_owned(), "a".to_owned())].into(),
        tags: vec!["ignored-from-edge".into()],
        ..Default::default()
    };
    let mut updates: Vec<EdgeUpdate> = nodes
        .iter()
        .map(|node_id| EdgeUpdate {
            node_id: *node_id,
            last_heartbeat_at: Some(at(60)),
            capabilities: None,
            status: None,
        })
        .collect();
    updates[0].capabilities = Some(capabilities.clone());
    updates[1].status = Some(EdgeStatus::Unhealthy);
    updates.push(EdgeUpdate {
        node_id: aegis_relay::runtime::OsEntropy.uuid(),
        last_heartbeat_at: Some(at(60)),
        capabilities: None,
        status: None,
    });
    assert_eq!(
        store.apply_edge_updates(&updates).await?,
        1000,
        "unknown edges are skipped"
    );
    let edges = store.list_edges(Some("t-fleet")).await?;
    assert_eq!(edges.len(), 1000);
    assert!(edges
        .iter()
        .all(|edge| edge.last_heartbeat_at == Some(at(60))));
    let first = store.get_edge(nodes[0]).await?.ok_or("missing")?;
    assert_eq!(first.capabilities.os, "linux");
    assert_eq!(
        first
            .capabilities
            .custom_labels
            .get("zone")
            .map(String::as_str),
        Some("a")
    );
    assert_eq!(first.tags, vec!["gpu".to_owned()], "server-side tags kept");
    assert_eq!(first.capabilities.tags, vec!["gpu".to_owned()]);
    let second = store.get_edge(nodes[1]).await?.ok_or("missing")?;
    assert_eq!(second.status, EdgeStatus::Unhealthy);
    assert_eq!(store.apply_edge_updates(&[]).await?, 0);
    Ok(())
}

async fn tags_are_tenant_scoped(store: &dyn Store) -> TestResult {
    let node_id = enroll(store, "t-left", 1, at(0)).await?;
    assert_eq!(
        store
            .change_edge_tags(Some("t-right"), node_id, &replace(&["x"]), at(0))
            .await?,
        None
    );
    let updated = store
        .change_edge_tags(Some("t-left"), node_id, &replace(&["a", "b"]), at(0))
        .await?
        .ok_or("not updated")?;
    assert_eq!(updated.tags, vec!["a".to_owned(), "b".to_owned()]);
    assert!(store.list_edges(Some("t-right")).await?.is_empty());
    assert_eq!(
        store
            .set_edge_name(Some("t-right"), node_id, "x", at(0))
            .await?,
        None
    );
    let renamed = store
        .set_edge_name(Some("t-left"), node_id, "db-1", at(0))
        .await?
        .ok_or("not renamed")?;
    assert_eq!(renamed.display_name, "db-1");
    assert_eq!(renamed.tags, vec!["a".to_owned(), "b".to_owned()]);
    Ok(())
}

async fn key_rotation_keeps_the_old_key_until_its_deadline(store: &dyn Store) -> TestResult {
    let node_id = enroll(store, "t-keys", 1, at(0)).await?;
    let rotation = KeyRotation {
        node_id,
        current_key: vec![1; 32],
        new_key: vec![2; 32],
        nonce: vec![7; 32],
        previous_valid_until: at(160),
        now: at(100),
    };
    assert_eq!(
        store.rotate_edge_key(&rotation).await?,
        RotationOutcome::Rotated
    );
    assert_eq!(
        store.get_edge(node_id).await?.map(|e| e.public_key),
        Some(vec![2; 32])
    );
    let previous = store.previous_keys(node_id, at(159)).await?;
    assert_eq!(
        previous
            .iter()
            .map(|k| k.public_key.clone())
            .collect::<Vec<_>>(),
        vec![vec![1; 32]]
    );
    assert!(
        store.previous_keys(node_id, at(160)).await?.is_empty(),
        "gone at the deadline"
    );

    let replay = KeyRotation {
        current_key: vec![2; 32],
        new_key: vec![3; 32],
        ..rotation.clone()
    };
    assert_eq!(
        store.rotate_edge_key(&replay).await?,
        RotationOutcome::NonceReused
    );
    let stale = KeyRotation {
        nonce: vec![8; 32],
        ..rotation.clone()
    };
    assert_eq!(
        store.rotate_edge_key(&stale).await?,
        RotationOutcome::KeyChanged
    );
    let refresh = KeyRotation {
        current_key: vec![2; 32],
        new_key: vec![2; 32],
        nonce: vec![9; 32],
        ..rotation.clone()
    };
    assert_eq!(
        store.rotate_edge_key(&refresh).await?,
        RotationOutcome::Rotated,
        "same-key refresh"
    );
    let unknown = KeyRotation {
        node_id: aegis_relay::runtime::OsEntropy.uuid(),
        nonce: vec![10; 32],
        ..rotation
    };
    assert_eq!(
        store.rotate_edge_key(&unknown).await?,
        RotationOutcome::UnknownEdge
    );
    Ok(())
}

async fn revoke_deletes_and_leaves_a_tombstone(store: &dyn Store) -> TestResult {
    let node_id = enroll(store, "t-rev", 1, at(0)).await?;
    assert_eq!(
        store
            .revoke_edge(Some("t-other"), node_id, "mallory", at(5))
            .await?,
        None
    );
    assert!(
        store.get_edge(node_id).await?.is_some(),
        "other tenants cannot revoke"
    );
    let tombstone = store
        .revoke_edge(Some("t-rev"), node_id, "alice", at(10))
        .await?
        .ok_or("not revoked")?;
    assert_eq!(
        (tombstone.tenant_id.as_str(), tombstone.revoked_by.as_str()),
        ("t-rev", "alice")
    );
    assert_eq!(store.get_edge(node_id).await?, None, "row hard-deleted");
    assert_eq!(store.tombstone(node_id).await?, Some(tombstone));
    let rotation = KeyRotation {
        node_id,
        current_key: vec![1; 32],
        new_key: vec![2; 32],
        nonce: vec![1; 32],
        previous_valid_until: at(70),
        now: at(11),
    };
    assert_eq!(
        store.rotate_edge_key(&rotation).await?,
        RotationOutcome::UnknownEdge
    );
    assert_eq!(
        store.revoke_edge(None, node_id, "alice", at(12)).await?,
        None,
        "already gone"
    );
    let jti = aegis_relay::runtime::OsEntropy.uuid();
    assert_eq!(
        store
            .complete_enrollment(&enrollment(jti, node_id, "t-rev", 5, at(20)))
            .await?,
        EnrollmentOutcome::NodeRevoked,
        "revocation is final for the node id"
    );
    assert_eq!(store.get_edge(node_id).await?, None);
    assert!(store.tombstone(node_id).await?.is_some());
    assert_eq!(
        store
            .complete_enrollment(&enrollment(
                jti,
                aegis_relay::runtime::OsEntropy.uuid(),
                "t-rev",
                5,
                at(21)
            ))
            .await?,
        EnrollmentOutcome::Enrolled,
        "the refused token is still redeemable"
    );
    Ok(())
}

async fn list_edges_is_ordered_and_scoped(store: &dyn Store) -> TestResult {
    let a = enroll(store, "t-list", 1, at(0)).await?;
    let b = enroll(store, "t-list", 2, at(0)).await?;
    enroll(store, "t-else", 3, at(0)).await?;
    let mut expected = vec![a, b];
    expected.sort();
    let listed: Vec<Uuid> = store
        .list_edges(Some("t-list"))
        .await?
        .iter()
        .map(|e| e.node_id)
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(store.list_edges(None).await?.len(), 3);
    store.ping().await?;
    Ok(())
}

macro_rules! contract {
    ($backend:ident) => {
        mod $backend {
            use super::*;

            macro_rules! case {
                ($name:ident, arc) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $name() -> TestResult {
                        let Some(test) = super::$backend(stringify!($name)).await? else {
                            return Ok(());
                        };
                        super::$name(Arc::clone(&test.store)).await
                    }
                };
                ($name:ident) => {
                    #[tokio::test]
                    async fn $name() -> TestResult {
                        let Some(test) = super::$backend(stringify!($name)).await? else {
                            return Ok(());
                        };
                        super::$name(test.store.as_ref()).await
                    }
                };
            }

            case!(challenge_round_trip_and_expiry);
            case!(enrollment_redeems_once_and_stores_the_edge);
            case!(concurrent_redemptions_of_one_jti_have_one_winner, arc);
            case!(re_enrollment_needs_a_token_bound_to_the_node);
            case!(bindings_refuse_revoked_nodes_and_are_pruned_after_expiry);
            case!(
                concurrent_first_enrollments_of_one_node_id_have_one_winner,
                arc
            );
            case!(batched_updates_of_a_thousand_edges);
            case!(tags_are_tenant_scoped);
            case!(tag_changes_replace_then_add_then_remove);
            case!(concurrent_tag_changes_all_land, arc);
            case!(key_rotation_keeps_the_old_key_until_its_deadline);
            case!(revoke_deletes_and_leaves_a_tombstone);
            case!(groups_are_unique_per_tenant_and_name);
            case!(group_ids_are_unique_and_a_rename_to_the_same_name_is_no_clash);
            case!(challenges_are_swept_at_their_ttl);
            case!(previous_keys_are_newest_first_and_forgotten_on_re_enrollment);
            case!(list_edges_is_ordered_and_scoped);
            case!(every_change_is_in_the_feed_once_and_refusals_in_none);
            case!(retention_purges_old_changes_and_readers_learn_what_they_missed);
            case!(a_reader_following_concurrent_writers_never_sees_a_gap, arc);
            case!(edge_keys_reads_the_asked_nodes_that_exist);
            case!(fleet_runs_record_batches_and_read_back_in_scope);
            case!(fleet_runs_of_a_gone_replica_are_marked_lost);
            case!(fleet_runs_are_purged_by_count_and_age);
        }
    };
}

contract!(sqlite);
contract!(postgres);
contract!(memory);

#[tokio::test]
async fn unreachable_stores_report_unavailable() -> TestResult {
    let sqlite = SqliteStore::open(std::path::Path::new("/proc/nonexistent/relay.db")).await;
    assert!(
        matches!(sqlite, Err(StoreError::Unavailable(_))),
        "{sqlite:?}"
    );
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let postgres = PostgresStore::connect(
        &format!("postgres://relay:secret-pw@127.0.0.1:{closed_port}/relay"),
        PostgresMode::Standalone,
    )
    .await;
    match postgres {
        Err(err @ StoreError::Unavailable(_)) => {
            assert!(
                !err.to_string().contains("secret-pw"),
                "password leaked: {err}"
            );
        }
        other => return Err(format!("expected Unavailable, got {other:?}").into()),
    }
    Ok(())
}

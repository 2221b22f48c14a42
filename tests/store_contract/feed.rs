//! The change feed part of the store contract: every enrollment, key
//! rotation, revocation, tag change and rename writes one change in its own
//! transaction (refusals none), `seq`s are dense and in commit order (a
//! reader polling while writers commit never sees a gap), retention purges
//! old changes and says so, and the shared-mode key read.

use std::sync::Arc;

use aegis_relay::store::{
    ChangeKind, EdgeKey, EnrollmentOutcome, KeyRotation, RotationOutcome, Store,
};
use uuid::Uuid;

use super::tags::replace;
use super::{at, enroll, enrollment, TestResult};

async fn kinds_after(
    store: &dyn Store,
    after: i64,
) -> Result<Vec<(i64, Uuid, ChangeKind)>, Box<dyn std::error::Error>> {
    let page = store.changes_since(after, 100).await?;
    Ok(page
        .changes
        .iter()
        .map(|change| (change.seq, change.node_id, change.kind))
        .collect())
}

pub async fn every_change_is_in_the_feed_once_and_refusals_in_none(
    store: &dyn Store,
) -> TestResult {
    let empty = store.changes_since(0, 10).await?;
    assert_eq!((empty.head, empty.oldest, empty.changes.len()), (0, 1, 0));
    let node = enroll(store, "t-feed", 1, at(1)).await?;
    let tagged = store
        .change_edge_tags(Some("t-feed"), node, &replace(&["db"]), at(2))
        .await?
        .ok_or("not tagged")?;
    assert_eq!(tagged.seq, 2, "the record carries its change's seq");
    let renamed = store
        .set_edge_name(Some("t-feed"), node, "db-1", at(3))
        .await?
        .ok_or("not renamed")?;
    assert_eq!(renamed.seq, 3);
    assert_eq!(store.get_edge(node).await?.map(|edge| edge.seq), Some(3));
    let rotation = KeyRotation {
        node_id: node,
        current_key: vec![1; 32],
        new_key: vec![2; 32],
        nonce: vec![3; 32],
        previous_valid_until: at(100),
        now: at(4),
    };
    assert_eq!(
        store.rotate_edge_key(&rotation).await?,
        RotationOutcome::Rotated
    );
    let listed = store.list_edges(Some("t-feed")).await?;
    assert_eq!(listed.iter().map(|edge| edge.seq).collect::<Vec<_>>(), [4]);

    // Refusals write no change.
    let stranger = aegis_relay::runtime::OsEntropy.uuid();
    assert!(store
        .change_edge_tags(Some("t-other"), node, &replace(&["x"]), at(5))
        .await?
        .is_none());
    assert!(store
        .set_edge_name(None, stranger, "x", at(5))
        .await?
        .is_none());
    assert_eq!(
        store.rotate_edge_key(&rotation).await?,
        RotationOutcome::NonceReused
    );
    assert!(store
        .revoke_edge(Some("t-other"), node, "admin", at(5))
        .await?
        .is_none());
    let mut again = enrollment(
        aegis_relay::runtime::OsEntropy.uuid(),
        node,
        "t-feed",
        9,
        at(5),
    );
    again.own_token = false;
    assert_eq!(
        store.complete_enrollment(&again).await?,
        EnrollmentOutcome::NodeAlreadyEnrolled
    );
    assert_eq!(store.changes_since(0, 0).await?.head, 4);

    store
        .revoke_edge(None, node, "admin", at(6))
        .await?
        .ok_or("not revoked")?;
    assert_eq!(
        kinds_after(store, 0).await?,
        vec![
            (1, node, ChangeKind::Enrolled),
            (2, node, ChangeKind::Tags),
            (3, node, ChangeKind::Renamed),
            (4, node, ChangeKind::KeyRotated),
            (5, node, ChangeKind::Revoked),
        ]
    );
    let page = store.changes_since(2, 2).await?;
    assert_eq!((page.head, page.oldest), (5, 1));
    assert_eq!(
        page.changes
            .iter()
            .map(|change| (change.seq, change.at, change.tenant_id.as_str()))
            .collect::<Vec<_>>(),
        vec![(3, at(3), "t-feed"), (4, at(4), "t-feed")]
    );
    let head_only = store.changes_since(0, 0).await?;
    assert!(head_only.changes.is_empty());
    assert_eq!(head_only.head, 5);
    assert!(store.changes_since(5, 10).await?.changes.is_empty());
    Ok(())
}

pub async fn retention_purges_old_changes_and_readers_learn_what_they_missed(
    store: &dyn Store,
) -> TestResult {
    let first = enroll(store, "t-purge", 1, at(0)).await?;
    enroll(store, "t-purge", 2, at(10)).await?;
    enroll(store, "t-purge", 3, at(20)).await?;
    assert_eq!(store.purge_changes(at(15)).await?, 2);
    let page = store.changes_since(0, 10).await?;
    assert_eq!((page.head, page.oldest), (3, 3));
    assert_eq!(page.changes.iter().map(|c| c.seq).collect::<Vec<_>>(), [3]);
    assert!(page.missed(0) && page.missed(1), "seqs 1 and 2 are gone");
    assert!(!page.missed(2) && !page.missed(3));
    assert_eq!(
        store.get_edge(first).await?.map(|edge| edge.seq),
        Some(0),
        "no change of it is kept"
    );
    assert_eq!(store.purge_changes(at(100)).await?, 1);
    let page = store.changes_since(3, 10).await?;
    assert_eq!((page.head, page.oldest), (3, 4));
    assert!(!page.missed(3), "caught up: nothing missed");
    assert!(page.missed(2));
    // Numbering goes on after a purge.
    enroll(store, "t-purge", 4, at(101)).await?;
    assert_eq!(kinds_after(store, 3).await?.first().map(|c| c.0), Some(4));
    Ok(())
}

/// Writers commit tag changes of their own nodes while a reader follows
/// the feed: every page continues exactly where the last one ended. A
/// `seq` assigned at insert (a sequence) could become visible after a
/// higher one, and a reader that moved past it would never see it.
pub async fn a_reader_following_concurrent_writers_never_sees_a_gap(
    store: Arc<dyn Store>,
) -> TestResult {
    const WRITERS: u8 = 8;
    const CHANGES: usize = 25;
    let mut nodes = Vec::new();
    for key in 0..WRITERS {
        nodes.push(enroll(store.as_ref(), "t-race", key, at(0)).await?);
    }
    let start = store.changes_since(0, 0).await?.head;
    let mut writers = tokio::task::JoinSet::new();
    for node in nodes {
        let store = Arc::clone(&store);
        writers.spawn(async move {
            for round in 0..CHANGES {
                let tag = format!("r{round}");
                store
                    .change_edge_tags(None, node, &replace(&[tag.as_str()]), at(1))
                    .await?
                    .ok_or_else(|| aegis_relay::store::StoreError::Database("gone".into()))?;
            }
            Ok::<(), aegis_relay::store::StoreError>(())
        });
    }
    let total = start + i64::from(WRITERS) * CHANGES as i64;
    let mut cursor = start;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while cursor < total {
        let page = store.changes_since(cursor, 7).await?;
        for change in &page.changes {
            assert_eq!(change.seq, cursor + 1, "a gap after {cursor}");
            cursor = change.seq;
        }
        assert!(tokio::time::Instant::now() < deadline, "stuck at {cursor}");
        tokio::task::yield_now().await;
    }
    while let Some(joined) = writers.join_next().await {
        joined??;
    }
    assert_eq!(store.changes_since(0, 0).await?.head, total);
    Ok(())
}

pub async fn edge_keys_reads_the_asked_nodes_that_exist(store: &dyn Store) -> TestResult {
    let a = enroll(store, "t-keys", 1, at(0)).await?;
    let b = enroll(store, "t-keys", 2, at(0)).await?;
    enroll(store, "t-keys", 3, at(0)).await?;
    assert!(store.edge_keys(&[]).await?.is_empty());
    let mut keys = store
        .edge_keys(&[b, a, aegis_relay::runtime::OsEntropy.uuid()])
        .await?;
    keys.sort_by_key(|key| key.node_id);
    let mut expected = vec![
        EdgeKey {
            node_id: a,
            public_key: vec![1; 32],
        },
        EdgeKey {
            node_id: b,
            public_key: vec![2; 32],
        },
    ];
    expected.sort_by_key(|key| key.node_id);
    assert_eq!(keys, expected);
    Ok(())
}

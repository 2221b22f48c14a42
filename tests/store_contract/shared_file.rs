//! SQLite files shared by several processes (replicas on one data dir):
//! separate pools on one file still redeem a token once, and migrate it
//! together without failing.

use std::sync::Arc;

use aegis_relay::store::{EnrollmentOutcome, SqliteStore, Store};

use super::{at, enrollment, TestResult};

/// `dev --replicas N` runs several processes on one SQLite file: separate
/// pools on the same file still give exactly one winner per token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_shared_by_two_pools_keeps_single_redemption() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("relay.db");
    let first = SqliteStore::open(&path).await?;
    first.migrate().await?;
    let second = SqliteStore::open(&path).await?;
    second.migrate().await?;
    let stores: [Arc<dyn Store>; 2] = [Arc::new(first), Arc::new(second)];
    let jti = aegis_relay::runtime::OsEntropy.uuid();
    let mut attempts = tokio::task::JoinSet::new();
    for key in 0..40u8 {
        let store = Arc::clone(&stores[usize::from(key % 2)]);
        attempts.spawn(async move {
            store
                .complete_enrollment(&enrollment(
                    jti,
                    aegis_relay::runtime::OsEntropy.uuid(),
                    "t-shared",
                    key,
                    at(0),
                ))
                .await
        });
    }
    let mut wins = 0;
    while let Some(joined) = attempts.join_next().await {
        if joined?? == EnrollmentOutcome::Enrolled {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(stores[1].list_edges(Some("t-shared")).await?.len(), 1);
    Ok(())
}

/// Replicas started together on one data dir migrate its SQLite file at the
/// same time: every one succeeds, and the schema is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_migrated_by_several_pools_at_once() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("relay.db");
    let mut stores = Vec::new();
    for _ in 0..6 {
        stores.push(SqliteStore::open(&path).await?);
    }
    let mut migrations = tokio::task::JoinSet::new();
    for store in stores.clone() {
        migrations.spawn(async move { store.migrate().await });
    }
    while let Some(migrated) = migrations.join_next().await {
        migrated??;
    }
    for store in &stores {
        store.verify_schema().await?;
    }
    Ok(())
}

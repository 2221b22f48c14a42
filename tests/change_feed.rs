//! The change feed between replicas (issue 13, items 1-3): two replicas on
//! one store, in process. A revoke through A ends the stream B holds within
//! one poll interval (SQLite file shared by two pools, and PostgreSQL); a
//! key rotated through A is accepted on B's live stream and the old key is
//! refused after the overlap (on both stores too); tags written through A reach A's selectors at
//! once and B's within a poll; in shared mode, the AEGIS controller's
//! writes to `edge_daemons` (which bypass the feed) reach the sessions too;
//! a replica whose next poll finds its changes purged resyncs its sessions.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aegis_relay::edge_client::EventSigner;
use aegis_relay::proto::cluster::node_cluster_service_client::NodeClusterServiceClient;
use aegis_relay::store::{PostgresMode, PostgresStore, SqliteStore, Store};
use common::edges::{
    capabilities, enroll_edge, now_ms, open_with, rotate_request, signer, tenant_bearer,
};
use common::enroll::admin_bearer;
use common::replicas::start_replicas;
use common::rest::{live_edge, resolved, sorted_ids, Rest};
use common::{counter_value, eventually, TestRelay, TestResult};
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

/// The replicas' poll interval: short, so the tests are quick, and long
/// enough that "within one poll" is a real bound.
const POLL: Duration = Duration::from_millis(500);
/// What a change takes beyond the poll interval to end a stream (a query,
/// a close message, the stream's status reaching the client).
const SLACK: Duration = Duration::from_millis(700);

fn fast_feed(settings: &mut aegis_relay::app::RelaySettings) {
    settings.change_feed.poll_interval = POLL;
    settings.change_feed.shared_check_interval = Duration::from_millis(300);
    settings.rotation_overlap = Duration::from_secs(2);
    settings.drain_timeout = Duration::from_secs(5);
}

/// Two pools on one SQLite file, as two processes on one data dir.
async fn sqlite_pair(
    dir: &tempfile::TempDir,
) -> Result<Vec<Arc<dyn Store>>, Box<dyn std::error::Error>> {
    let path = dir.path().join("relay.db");
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..2 {
        let store = SqliteStore::open(&path).await?;
        store.migrate().await?;
        stores.push(Arc::new(store));
    }
    Ok(stores)
}

/// Two pools on one fresh PostgreSQL database, or `None` (skip).
async fn postgres_pair(
    label: &str,
    mode: PostgresMode,
) -> Result<Option<(String, Vec<Arc<dyn Store>>)>, Box<dyn std::error::Error>> {
    let Some(url) = common::postgres::fresh_database(label).await? else {
        return Ok(None);
    };
    // Standalone creates the AEGIS tables too; shared mode then only checks them.
    PostgresStore::connect(&url, PostgresMode::Standalone)
        .await?
        .migrate()
        .await?;
    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..2 {
        let store = PostgresStore::connect(&url, mode).await?;
        store.verify_schema().await?;
        stores.push(Arc::new(store));
    }
    Ok(Some((url, stores)))
}

/// A raw stream of `state`'s node on `relay` with a stream id of our
/// choosing, so events can be signed with another key for the same stream.
async fn raw_stream(
    relay: &TestRelay,
    state: &aegis_relay::edge_client::EdgeState,
) -> Result<(common::edges::RawStream, String), Box<dyn std::error::Error>> {
    let stream_id = aegis_relay::runtime::OsEntropy.uuid().to_string();
    let hello_signer = signer(state, &stream_id);
    let hello = hello_signer.hello(now_ms(), capabilities());
    Ok((open_with(relay, hello_signer, hello).await?, stream_id))
}

async fn revoke_through_a_ends_bs_stream(stores: Vec<Arc<dyn Store>>) -> TestResult {
    let replicas = start_replicas(stores, fast_feed).await?;
    let (a, b) = (&replicas[0], &replicas[1]);
    let edge = enroll_edge(a, "t-a").await?;
    let (mut stream, _) = raw_stream(b, &edge.state).await?;
    assert!(b.owner().is_connected(edge.state.node_id));
    let admin = Rest::new(a, Some(&admin_bearer(a).await?));
    let revoked_at = tokio::time::Instant::now();
    let answer = admin
        .delete(&format!("/v1/edge/hosts/{}", edge.state.node_id))
        .await?;
    assert_eq!(answer.status, 204, "{}", answer.text);
    let status = stream.ended().await?;
    let took = revoked_at.elapsed();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("revoked"), "{status:?}");
    assert!(
        took <= POLL + SLACK,
        "B ended the stream {took:?} after the revoke (poll {POLL:?})"
    );
    assert!(!b.owner().is_connected(edge.state.node_id));
    for relay in replicas {
        common::assert_graceful(relay.shutdown().await);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_through_a_ends_the_stream_b_holds_within_one_poll_on_sqlite() -> TestResult {
    let dir = tempfile::tempdir()?;
    revoke_through_a_ends_bs_stream(sqlite_pair(&dir).await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_through_a_ends_the_stream_b_holds_within_one_poll_on_postgres() -> TestResult {
    let Some((url, stores)) = postgres_pair("feed_revoke", PostgresMode::Standalone).await? else {
        return Ok(());
    };
    revoke_through_a_ends_bs_stream(stores).await?;
    common::postgres::drop_database(&url).await
}

fn heartbeats(relay: &TestRelay) -> f64 {
    counter_value(
        &relay.metrics().render(),
        "aegis_relay_edge_events_total{kind=\"heartbeat\"}",
    )
}

async fn heartbeats_reach(relay: &TestRelay, count: f64) -> Result<(), String> {
    eventually(
        Duration::from_secs(5),
        "the heartbeat to be accepted",
        || async move { (heartbeats(relay) >= count).then_some(()) },
    )
    .await
}

async fn rotation_through_a_reaches_bs_live_stream(stores: Vec<Arc<dyn Store>>) -> TestResult {
    let replicas = start_replicas(stores, fast_feed).await?;
    let (a, b) = (&replicas[0], &replicas[1]);
    let edge = enroll_edge(a, "t-a").await?;
    let node = edge.state.node_id;
    let (mut stream, stream_id) = raw_stream(b, &edge.state).await?;
    let new_key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let mut grpc = NodeClusterServiceClient::new(common::grpc_channel(a).await?);
    let rotated = grpc
        .rotate_edge_key(rotate_request(
            node,
            &edge.state.key,
            &new_key,
            rand::random(),
        ))
        .await?
        .into_inner();
    let overlap_until = rotated.overlap_until.ok_or("no overlap_until")?.seconds;
    let new_public = new_key.verifying_key().to_bytes().to_vec();
    // B learns the rotation from the feed and its session reloads the keys.
    eventually(
        POLL + SLACK,
        "B's session to reload the rotated key",
        || {
            let session = b.owner().registry().get(node);
            let new_public = new_public.clone();
            async move { session.filter(|s| *s.public_key == *new_public).map(|_| ()) }
        },
    )
    .await?;
    let new_signer = EventSigner::new(
        new_key,
        rotated.node_security_token,
        node.hyphenated().to_string(),
        stream_id,
    );
    stream.send(new_signer.heartbeat(now_ms())).await?;
    heartbeats_reach(b, 1.0).await?;
    // Inside the overlap the old key still counts.
    stream.send(stream.signer.heartbeat(now_ms())).await?;
    heartbeats_reach(b, 2.0).await?;
    assert!(b.owner().is_connected(node));
    // After it, an event signed with the old key ends the stream. (Time
    // itself must pass here: nothing to wait for but the clock.)
    // `overlap_until` is in whole seconds; the stored deadline has milliseconds.
    let overlap_end = u64::try_from((overlap_until + 1) * 1000 - now_ms()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(overlap_end + 200)).await;
    stream.send(stream.signer.heartbeat(now_ms())).await?;
    let status = stream.ended().await?;
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    for relay in replicas {
        common::assert_graceful(relay.shutdown().await);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_through_a_is_accepted_on_bs_live_stream_and_the_old_one_expires(
) -> TestResult {
    let dir = tempfile::tempdir()?;
    rotation_through_a_reaches_bs_live_stream(sqlite_pair(&dir).await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_through_a_reaches_bs_live_stream_on_postgres() -> TestResult {
    let Some((url, stores)) = postgres_pair("feed_rotate", PostgresMode::Standalone).await? else {
        return Ok(());
    };
    rotation_through_a_reaches_bs_live_stream(stores).await?;
    common::postgres::drop_database(&url).await
}

fn has_tag(tag: &str) -> Value {
    json!({"Selector": {"tools": [], "labels": [], "tags": [{"Has": tag}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_written_through_a_reach_as_selectors_at_once_and_bs_within_a_poll() -> TestResult {
    let dir = tempfile::tempdir()?;
    let replicas = start_replicas(sqlite_pair(&dir).await?, fast_feed).await?;
    let (a, b) = (&replicas[0], &replicas[1]);
    let (_on_a, edge_a) = live_edge(a, "t-a").await?;
    let (_on_b, edge_b) = live_edge(b, "t-a").await?;
    let bearer = tenant_bearer(a, "t-a").await?;
    let (rest_a, rest_b) = (Rest::new(a, Some(&bearer)), Rest::new(b, Some(&bearer)));
    // Read-your-writes: the PATCH's own replica matches the new tag at once.
    let patched = rest_a
        .patch(
            &format!("/v1/edge/hosts/{}", edge_a.node_id),
            &json!({"add_tags": ["x"]}),
        )
        .await?;
    assert_eq!(patched.status, 200, "{}", patched.text);
    let preview = rest_a.preview(&has_tag("x")).await?;
    assert_eq!(
        resolved(&preview),
        sorted_ids(&[edge_a.node_id]),
        "{}",
        preview.text
    );
    // A tag written through A for the edge B holds reaches B's selectors.
    let patched = rest_a
        .patch(
            &format!("/v1/edge/hosts/{}", edge_b.node_id),
            &json!({"tags": ["y"]}),
        )
        .await?;
    assert_eq!(patched.status, 200, "{}", patched.text);
    eventually(POLL + SLACK, "B's selectors to match the new tag", || {
        let rest_b = rest_b.clone();
        async move {
            let preview = rest_b.preview(&has_tag("y")).await.ok()?;
            (resolved(&preview) == sorted_ids(&[edge_b.node_id])).then_some(())
        }
    })
    .await?;
    drop((edge_a, edge_b));
    for relay in replicas {
        common::assert_graceful(relay.shutdown().await);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_shared_mode_aegis_deleting_or_rekeying_the_row_reaches_the_stream() -> TestResult {
    let Some((url, mut stores)) =
        postgres_pair("feed_shared", PostgresMode::SharedWithAegis).await?
    else {
        return Ok(());
    };
    stores.truncate(1);
    let replicas = start_replicas(stores, fast_feed).await?;
    let relay = &replicas[0];
    let (rekeyed, deleted) = (
        enroll_edge(relay, "t-a").await?,
        enroll_edge(relay, "t-a").await?,
    );
    let (_rekeyed_stream, _) = raw_stream(relay, &rekeyed.state).await?;
    let (mut deleted_stream, _) = raw_stream(relay, &deleted.state).await?;
    // The AEGIS controller writes its table directly: no change in the feed.
    let aegis = sqlx::PgPool::connect(&url).await?;
    let new_key = vec![7u8; 32];
    sqlx::query("UPDATE public.edge_daemons SET public_key = $1 WHERE node_id = $2")
        .bind(&new_key)
        .bind(rekeyed.state.node_id)
        .execute(&aegis)
        .await?;
    let deleted_at = tokio::time::Instant::now();
    sqlx::query("DELETE FROM public.edge_daemons WHERE node_id = $1")
        .bind(deleted.state.node_id)
        .execute(&aegis)
        .await?;
    let status = deleted_stream.ended().await?;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        deleted_at.elapsed() <= Duration::from_millis(300) + SLACK,
        "ended {:?} after the delete",
        deleted_at.elapsed()
    );
    eventually(
        Duration::from_secs(2),
        "the changed key to be reloaded",
        || {
            let session = relay.owner().registry().get(rekeyed.state.node_id);
            let new_key = new_key.clone();
            async move { session.filter(|s| *s.public_key == *new_key).map(|_| ()) }
        },
    )
    .await?;
    aegis.close().await;
    for relay in replicas {
        common::assert_graceful(relay.shutdown().await);
    }
    common::postgres::drop_database(&url).await
}

/// B's poll interval in the retention test: long enough that the test's
/// writes and purge all fall between two of B's polls.
const PAUSED_POLL: Duration = Duration::from_secs(4);

async fn paused_past_the_retention(stores: Vec<Arc<dyn Store>>) -> TestResult {
    let store = Arc::clone(&stores[0]);
    let replicas = start_replicas(stores, |settings| {
        fast_feed(settings);
        if settings.name == "relay-1" {
            settings.change_feed.poll_interval = PAUSED_POLL;
        }
    })
    .await?;
    // B polled as it started; its next poll is PAUSED_POLL later.
    let b_polled = tokio::time::Instant::now();
    let (a, b) = (&replicas[0], &replicas[1]);
    let (revoked, tagged) = (enroll_edge(a, "t-a").await?, enroll_edge(a, "t-a").await?);
    let (mut revoked_stream, _) = raw_stream(b, &revoked.state).await?;
    let (tagged_stream, _) = raw_stream(b, &tagged.state).await?;
    let admin = Rest::new(a, Some(&admin_bearer(a).await?));
    let answer = admin
        .delete(&format!("/v1/edge/hosts/{}", revoked.state.node_id))
        .await?;
    assert_eq!(answer.status, 204, "{}", answer.text);
    let answer = admin
        .patch(
            &format!("/v1/edge/hosts/{}", tagged.state.node_id),
            &json!({"tags": ["z"]}),
        )
        .await?;
    assert_eq!(answer.status, 200, "{}", answer.text);
    // Another replica's purge removes the changes before B reads them.
    let purged = store
        .purge_changes(aegis_relay::runtime::SystemClock.utc_now() + chrono::TimeDelta::hours(1))
        .await?;
    assert!(purged >= 4, "purged {purged} changes");
    assert!(
        b_polled.elapsed() < PAUSED_POLL - SLACK,
        "too slow: B may have polled before the purge ({:?})",
        b_polled.elapsed()
    );
    assert!(b.owner().is_connected(revoked.state.node_id));

    // B's next poll finds its cursor purged and reloads every held session.
    let status = revoked_stream.ended().await?;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        b_polled.elapsed() <= PAUSED_POLL + SLACK,
        "ended {:?} after B's first poll",
        b_polled.elapsed()
    );
    let bearer = tenant_bearer(a, "t-a").await?;
    let preview = Rest::new(b, Some(&bearer)).preview(&has_tag("z")).await?;
    assert_eq!(
        resolved(&preview),
        sorted_ids(&[tagged.state.node_id]),
        "{}",
        preview.text
    );
    let (_, metrics) = common::http_get(b, "/metrics").await?;
    assert_eq!(
        counter_value(&metrics, "aegis_relay_change_feed_resyncs_total"),
        1.0,
        "{metrics}"
    );
    drop((revoked_stream, tagged_stream));
    for relay in replicas {
        common::assert_graceful(relay.shutdown().await);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_paused_past_the_retention_resyncs_the_sessions_it_holds() -> TestResult {
    let dir = tempfile::tempdir()?;
    paused_past_the_retention(sqlite_pair(&dir).await?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_paused_past_the_retention_resyncs_on_postgres() -> TestResult {
    let Some((url, stores)) = postgres_pair("feed_resync", PostgresMode::Standalone).await? else {
        return Ok(());
    };
    paused_past_the_retention(stores).await?;
    common::postgres::drop_database(&url).await
}

//! The change feed between `run` processes: two replicas on one data dir
//! (one SQLite file, or one PostgreSQL database) and one signing key; a
//! revoke through A ends the stream B holds within one poll interval.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aegis_relay::auth::{LocalSigner, TokenIssuer};
use aegis_relay::edge_client::{self, EnrollOptions};
use aegis_relay::proto::cluster::node_cluster_service_client::NodeClusterServiceClient;
use aegis_relay::runtime::{OsEntropy, Runtime, SystemClock};
use common::edges::{capabilities, now_ms, signer};
use common::replica_processes::{write_configs, Layout};
use common::{http_request, TestResult};
use tokio_stream::wrappers::ReceiverStream;

const POLL: Duration = Duration::from_millis(500);
const SLACK: Duration = Duration::from_millis(700);

async fn revoke_through_a_ends_bs_stream(postgres: Option<&str>) -> TestResult {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("state");
    let poll = format!(
        "  change_feed:\n    poll_interval: {}ms\n",
        POLL.as_millis()
    );
    let replicas = write_configs(
        dir.path(),
        &Layout {
            names: &["relay-a", "relay-b"],
            postgres,
            gossip: false,
            relay_extra: &poll,
        },
    )?;
    let [a, b] = &replicas[..] else {
        return Err("two replicas".into());
    };
    let _a_process = a.start().await?;
    let _b_process = b.start().await?;
    // Tokens signed with the key both replicas loaded from the data dir.
    let key = LocalSigner::load_or_create(&data_dir.join("signing-key.pem"))?;
    let tokens = TokenIssuer::new(
        Arc::new(key),
        aegis_relay::config::DEFAULT_ISSUER.to_owned(),
        Vec::new(),
        a.grpc(),
    );
    let now = SystemClock.utc_now();
    let enrollment = tokens
        .mint_enrollment("t-a", "edge", OsEntropy.uuid(), now)
        .await?;
    let enrolled = edge_client::enroll(
        &Runtime::real(),
        &enrollment.token,
        &dir.path().join("edge"),
        &EnrollOptions::default(),
    )
    .await?;
    let state = enrolled.state;

    // The edge's stream on B.
    let stream_id = OsEntropy.uuid().to_string();
    let edge_signer = signer(&state, &stream_id);
    let (events, rx) = tokio::sync::mpsc::channel(8);
    events
        .send(edge_signer.hello(now_ms(), capabilities()))
        .await?;
    let mut client = NodeClusterServiceClient::connect(b.grpc()).await?;
    let mut commands = client
        .connect_edge(ReceiverStream::new(rx))
        .await?
        .into_inner();

    let admin = tokens
        .mint_admin_token("ops", now, Duration::from_secs(600))
        .await?;
    let url = format!("{}/v1/edge/hosts/{}", a.http(), state.node_id);
    let bearer = format!("Bearer {}", admin.token);
    let revoked_at = tokio::time::Instant::now();
    let (status, text) = http_request("DELETE", &url, &[("authorization", &bearer)], "").await?;
    assert_eq!(status, 204, "{text}");
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match commands.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return tonic::Status::ok("ended"),
                Err(status) => return status,
            }
        }
    })
    .await?;
    let took = revoked_at.elapsed();
    assert_eq!(ended.code(), tonic::Code::PermissionDenied, "{ended:?}");
    assert!(
        took <= POLL + SLACK,
        "B ended the stream {took:?} after the revoke"
    );
    drop(events);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_processes_on_one_sqlite_file_end_a_revoked_stream_within_one_poll() -> TestResult {
    revoke_through_a_ends_bs_stream(None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_processes_on_one_postgres_database_end_a_revoked_stream_within_one_poll() -> TestResult
{
    let Some(url) = common::postgres::fresh_database("feed_processes").await? else {
        return Ok(());
    };
    revoke_through_a_ends_bs_stream(Some(&url)).await?;
    common::postgres::drop_database(&url).await
}

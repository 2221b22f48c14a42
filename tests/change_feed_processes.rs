//! The change feed between `run` processes: two replicas on one data dir
//! (one SQLite file, or one PostgreSQL database) and one signing key; a
//! revoke through A ends the stream B holds within one poll interval.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aegis_relay::auth::{LocalSigner, TokenIssuer};
use aegis_relay::edge_client::{self, EnrollOptions};
use aegis_relay::proto::cluster::node_cluster_service_client::NodeClusterServiceClient;
use aegis_relay::runtime::{OsEntropy, Runtime, SystemClock};
use common::binary::{free_port, Process, BIN};
use common::edges::{capabilities, now_ms, signer};
use common::{eventually, http_request, TestResult};
use tokio_stream::wrappers::ReceiverStream;

const POLL: Duration = Duration::from_millis(500);
const SLACK: Duration = Duration::from_millis(700);

struct Replica {
    _process: Process,
    grpc_port: u16,
    http_port: u16,
}

/// Starts replica `name` on `data_dir` (and `postgres`, a DSN, if given).
async fn replica(
    dir: &Path,
    name: &str,
    data_dir: &Path,
    postgres: Option<&str>,
) -> Result<Replica, Box<dyn std::error::Error>> {
    let (grpc_port, http_port) = (free_port()?, free_port()?);
    let store = postgres.map_or(String::new(), |dsn| format!("postgres:\n  dsn: {dsn}\n"));
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "cluster:\n  role: relay-coordinator\n  cluster_grpc_port: {grpc_port}\n  \
             ingress:\n    public_endpoint: http://127.0.0.1:{grpc_port}\n{store}\
             relay:\n  name: {name}\n  bind_address: 127.0.0.1\n  http_port: {http_port}\n  \
             drain_timeout: 5s\n  accept_local_admin_tokens: true\n  data_dir: {}\n  \
             change_feed:\n    poll_interval: {}ms\n",
            data_dir.display(),
            POLL.as_millis()
        ),
    )?;
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let process = Process(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("POSTGRES_DSN")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?,
    );
    let readyz = format!("http://127.0.0.1:{http_port}/readyz");
    let ready = eventually(Duration::from_secs(30), name, || async {
        let (status, _) = common::http_get_url(&readyz).await.ok()?;
        (status == 200).then_some(())
    })
    .await;
    if let Err(err) = ready {
        let log = std::fs::read_to_string(dir.join(format!("{name}.log")))?;
        return Err(format!("{err}; its log:\n{log}").into());
    }
    Ok(Replica {
        _process: process,
        grpc_port,
        http_port,
    })
}

async fn revoke_through_a_ends_bs_stream(postgres: Option<&str>) -> TestResult {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("state");
    let a = replica(dir.path(), "relay-a", &data_dir, postgres).await?;
    let b = replica(dir.path(), "relay-b", &data_dir, postgres).await?;
    // Tokens signed with the key both replicas loaded from the data dir.
    let key = LocalSigner::load_or_create(&data_dir.join("signing-key.pem"))?;
    let tokens = TokenIssuer::new(
        Arc::new(key),
        aegis_relay::config::DEFAULT_ISSUER.to_owned(),
        Vec::new(),
        format!("http://127.0.0.1:{}", a.grpc_port),
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
    let mut client =
        NodeClusterServiceClient::connect(format!("http://127.0.0.1:{}", b.grpc_port)).await?;
    let mut commands = client
        .connect_edge(ReceiverStream::new(rx))
        .await?
        .into_inner();

    let admin = tokens
        .mint_admin_token("ops", now, Duration::from_secs(600))
        .await?;
    let url = format!(
        "http://127.0.0.1:{}/v1/edge/hosts/{}",
        a.http_port, state.node_id
    );
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

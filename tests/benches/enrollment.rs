//! Enrollment benchmark: full edge handshakes (AttestNode + ChallengeNode)
//! per second on one in-process replica, tokens minted before the measured
//! window. Runs on PostgreSQL when AEGIS_RELAY_TEST_POSTGRES_URL names a
//! server (else SQLite), with the local signer or (`--signer openbao`, with
//! AEGIS_RELAY_TEST_OPENBAO_URL and _ROOT_TOKEN set by cluster/openbao.sh)
//! OpenBao Transit via AppRole (the role_id and secret_id files the
//! deployment's bootstrap wrote into AEGIS_RELAY_TEST_OPENBAO_APPROLE_DIR).
//! Gates (gate.rs): every handshake succeeds and stores its edge, and with
//! the local signer at least 1,000 handshakes/s; the OpenBao figure is
//! printed against its reference (the AEGIS relay, about 570/s) ungated.
//!
//!   cargo bench --bench enrollment -- [--edges N] [--concurrency C] [--signer local|openbao]
//!     [--target handshakes_per_s=N]

#[path = "gate.rs"]
mod gate;
#[path = "../common/postgres.rs"]
mod postgres_db;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use aegis_relay::app::{self, Dependencies, RelaySettings};
use aegis_relay::auth::LocalSigner;
use aegis_relay::proto::cluster::node_cluster_service_client::NodeClusterServiceClient;
use aegis_relay::proto::cluster::{
    challenge_node_request, AttestNodeRequest, ChallengeNodeRequest, NodeCapabilities, NodeRole,
};
use aegis_relay::runtime::Runtime;
use aegis_relay::store::{PostgresMode, PostgresStore, SqliteStore, Store};
use ed25519_dalek::{Signer, SigningKey};
use tokio::time::Instant;
use tonic::transport::Channel;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|pair| pair[0] == name)
        .and_then(|pair| pair[1].parse().ok())
        .unwrap_or(default)
}

async fn handshake(
    mut client: NodeClusterServiceClient<Channel>,
    token: String,
    seed: [u8; 32],
) -> Result<(), BoxError> {
    let key = SigningKey::from_bytes(&seed);
    let node_id = aegis_relay::runtime::OsEntropy.uuid().to_string();
    let challenge = client
        .attest_node(AttestNodeRequest {
            node_id: node_id.clone(),
            role: NodeRole::Edge.into(),
            public_key: key.verifying_key().to_bytes().to_vec(),
            capabilities: Some(NodeCapabilities::default()),
            ..Default::default()
        })
        .await?
        .into_inner();
    client
        .challenge_node(ChallengeNodeRequest {
            challenge_id: challenge.challenge_id,
            node_id,
            challenge_signature: key.sign(&challenge.challenge_nonce).to_bytes().to_vec(),
            bootstrap_proof: Some(challenge_node_request::BootstrapProof::EnrollmentToken(
                token,
            )),
        })
        .await?;
    Ok(())
}

async fn store() -> Result<
    (
        Arc<dyn Store>,
        &'static str,
        Option<String>,
        tempfile::TempDir,
    ),
    BoxError,
> {
    let dir = tempfile::tempdir()?;
    if let Some(url) = postgres_db::fresh_database("bench_enroll")
        .await
        .map_err(|e| e.to_string())?
    {
        let store = PostgresStore::connect(&url, PostgresMode::Standalone).await?;
        store.migrate().await?;
        return Ok((Arc::new(store), "postgres", Some(url), dir));
    }
    let store = SqliteStore::open(&dir.path().join("relay.db")).await?;
    store.migrate().await?;
    Ok((Arc::new(store), "sqlite", None, dir))
}

/// An OpenBao signer logged in with the AppRole credentials that the
/// deployment's bootstrap wrote for cluster/openbao.sh.
async fn openbao_signer() -> Result<aegis_relay::auth::OpenBaoSigner, BoxError> {
    let var = |name: &str| {
        std::env::var(name).map_err(|_| {
            format!("{name} is not set: run cluster/bench, or source cluster/openbao.sh and start_openbao")
        })
    };
    let url = var("AEGIS_RELAY_TEST_OPENBAO_URL")?;
    let dir = std::path::PathBuf::from(var("AEGIS_RELAY_TEST_OPENBAO_APPROLE_DIR")?);
    let read = |name: &str| -> Result<String, BoxError> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(text.trim().to_owned())
    };
    let config = aegis_relay::config::OpenBaoConfig {
        endpoint: url,
        role_id_file: None,
        secret_id_file: None,
        approle_mount: "approle".into(),
        transit_mount: "transit".into(),
        transit_key: "edge-enrollment-token".into(),
    };
    Ok(aegis_relay::auth::OpenBaoSigner::connect(
        &config,
        aegis_relay::config::SigningScheme::Rs256,
        read("role_id")?,
        read("secret_id")?,
    )
    .await?)
}

/// Target for the local signer, handshakes per second.
const TARGET_PER_SECOND: f64 = 1_000.0;
/// The AEGIS relay with OpenBao on the development machine, for reference.
const AEGIS_OPENBAO_PER_SECOND: f64 = 570.0;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let mut gates = gate::Gates::from_args("enrollment")?;
    let edges = arg("--edges", 3_000);
    let concurrency = arg("--concurrency", 64).max(1);
    let (store, backend, url, dir) = store().await?;
    let use_openbao = std::env::args().any(|a| a == "openbao");
    let signer: Arc<dyn aegis_relay::auth::Signer> = if use_openbao {
        Arc::new(openbao_signer().await?)
    } else {
        Arc::new(LocalSigner::load_or_create(&dir.path().join("key.pem"))?)
    };
    let signer_name = if use_openbao {
        "openbao transit rs256"
    } else {
        "local signer"
    };
    let mut settings = RelaySettings::local("bench", IpAddr::V4(Ipv4Addr::LOCALHOST), 0, 0);
    settings.attest_rate_limit.per_second = 1e9;
    settings.attest_rate_limit.burst = u32::MAX;
    let deps = Dependencies {
        store,
        signer,
        callers: None,
    };
    let relay = app::start(settings, Runtime::real(), deps).await?;

    let now = aegis_relay::runtime::SystemClock.utc_now();
    let mut tokens = Vec::with_capacity(edges);
    for _ in 0..edges {
        tokens.push(
            relay
                .tokens()
                .mint_enrollment(
                    "t-bench",
                    "bench",
                    aegis_relay::runtime::OsEntropy.uuid(),
                    now,
                )
                .await?
                .token,
        );
    }
    let channels = (concurrency / 8).clamp(1, 16);
    let mut clients = Vec::new();
    for _ in 0..channels {
        let channel = Channel::from_shared(format!("http://{}", relay.grpc_addr()))?
            .connect()
            .await?;
        clients.push(NodeClusterServiceClient::new(channel));
    }

    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for (index, token) in tokens.into_iter().enumerate() {
        let permit = Arc::clone(&limit).acquire_owned().await?;
        let client = clients[index % clients.len()].clone();
        let seed = rand::random::<[u8; 32]>();
        tasks.spawn(async move {
            let result = handshake(client, token, seed).await;
            drop(permit);
            result
        });
    }
    let mut failures = 0usize;
    while let Some(joined) = tasks.join_next().await {
        if joined.map_err(|e| e.to_string())?.is_err() {
            failures += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let enrolled = relay.store().list_edges(Some("t-bench")).await?.len();
    let per_second = edges as f64 / elapsed;
    println!(
        "\nenrollment benchmark ({backend}, {signer_name}): {edges} handshakes, {concurrency} in flight"
    );
    println!(
        "  {per_second:.0} handshakes/s ({elapsed:.2} s), {enrolled} edges stored, {failures} failures"
    );
    relay.shutdown().await;
    if let Some(url) = url {
        postgres_db::drop_database(&url)
            .await
            .map_err(|e| e.to_string())?;
    }
    let signer_key = if use_openbao { "openbao" } else { "local" };
    gates.check(
        &format!("{signer_key} handshakes ({backend})"),
        failures == 0 && enrolled == edges,
        format!("{failures} failed, {enrolled} of {edges} stored"),
        "0 failed, all stored",
    );
    if use_openbao {
        gates.info(
            &format!("openbao handshakes/s ({backend})"),
            format!("{per_second:.0}/s (AEGIS relay about {AEGIS_OPENBAO_PER_SECOND}/s)"),
        );
    } else {
        gates.at_least(
            "handshakes_per_s",
            &format!("local signer, {backend}"),
            per_second,
            TARGET_PER_SECOND,
            "/s",
        );
    }
    gates.finish()
}

//! The real relay (gRPC server, health, readiness) boots on turmoil through
//! the runtime seam and answers a health check over simulated TCP.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use aegis_relay::app::{self, RelaySettings};
use aegis_relay::auth::LocalSigner;
use aegis_relay::proto::cluster::node_cluster_service_client::NodeClusterServiceClient;
use aegis_relay::proto::cluster::IssueEnrollmentTokenRequest;
use aegis_relay::runtime::Clock;
use aegis_relay::store::MemoryStore;
use aegis_relay_simulation::{grpc_channel, sim_runtime, SimClock, SIM_EPOCH};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const SEED: u64 = 7;

thread_local! {
    /// The relay host hands the probe a bearer (turmoil runs both hosts on
    /// the test's thread).
    static ADMIN_TOKEN: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}
const GRPC_PORT: u16 = 50056;

/// The relay host: the production `app::start` on simulated sockets.
async fn relay_host() -> turmoil::Result {
    let settings = RelaySettings::local(
        "relay-0",
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        GRPC_PORT,
        8080,
    );
    let dir = tempfile::tempdir()?;
    let signer = LocalSigner::load_or_create(&dir.path().join("key.pem"))?;
    let deps = app::Dependencies {
        store: Arc::new(MemoryStore::new()),
        signer: Arc::new(signer),
        callers: None,
    };
    let mut relay = app::start(settings, sim_runtime(SEED), deps).await?;
    // An operator token for the probe, minted at simulated time.
    let admin = relay
        .tokens()
        .mint_admin_token(
            "probe",
            chrono::DateTime::from(SimClock.now()),
            Duration::from_secs(3600),
        )
        .await?;
    ADMIN_TOKEN.with(|token| *token.borrow_mut() = Some(admin.token));
    // Servers only end on failure; the simulation ends when the probe is done.
    Err(relay.failed().await.into())
}

async fn check(service: &str) -> Result<ServingStatus, Box<dyn std::error::Error>> {
    let mut client = HealthClient::new(grpc_channel("relay", GRPC_PORT)?);
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(response.into_inner().status())
}

#[test]
fn relay_on_turmoil_answers_health_checks() -> turmoil::Result {
    let mut sim = turmoil::Builder::new()
        .rng_seed(SEED)
        .simulation_duration(Duration::from_secs(600))
        .build();
    sim.host("relay", relay_host);
    sim.client("probe", async {
        // The relay host starts before binding: poll (in simulated time)
        // until the readiness service answers SERVING.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(ServingStatus::Serving) = check("aegis.cluster.v1.NodeClusterService").await {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err("readiness never turned SERVING".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(check("").await?, ServingStatus::Serving);
        assert_eq!(
            check("grpc.health.v1.Health").await?,
            ServingStatus::Serving
        );
        // Time the relay itself produced: an enrollment token's expiry is
        // the relay's clock plus 15 minutes. It must fall inside the
        // simulated instants around the call, which no host clock would.
        let token = ADMIN_TOKEN
            .with(|token| token.borrow().clone())
            .ok_or("the relay host minted no bearer")?;
        let mut request = tonic::Request::new(IssueEnrollmentTokenRequest {
            issued_to: "sim-edge".to_owned(),
        });
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let before = chrono::DateTime::<chrono::Utc>::from(SimClock.now());
        let answer = NodeClusterServiceClient::new(grpc_channel("relay", GRPC_PORT)?)
            .issue_enrollment_token(request)
            .await?
            .into_inner();
        let after = chrono::DateTime::<chrono::Utc>::from(SimClock.now());
        let issued_at = chrono::DateTime::parse_from_rfc3339(&answer.expires_at)?
            .with_timezone(&chrono::Utc)
            - chrono::Duration::minutes(15);
        // RFC 3339 here carries whole seconds.
        assert!(
            issued_at >= before - chrono::Duration::seconds(1) && issued_at <= after,
            "the relay's clock read {issued_at}, the simulation was at {before}..{after}"
        );
        let since_epoch = after.timestamp() as u64;
        assert!(
            since_epoch >= SIM_EPOCH.as_secs() && since_epoch < SIM_EPOCH.as_secs() + 600,
            "{after}"
        );
        Ok(())
    });
    sim.run()
}

//! The real relay (gRPC server, health, readiness) boots on turmoil through
//! the runtime seam and answers a health check over simulated TCP.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use aegis_relay::app::{self, RelaySettings};
use aegis_relay::auth::LocalSigner;
use aegis_relay::runtime::Clock;
use aegis_relay::store::SqliteStore;
use aegis_relay_simulation::{grpc_channel, sim_runtime, SimClock, SIM_EPOCH};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const SEED: u64 = 7;
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
    let store = SqliteStore::open(&dir.path().join("relay.db")).await?;
    store.migrate().await?;
    let signer = LocalSigner::load_or_create(&dir.path().join("key.pem"))?;
    let deps = app::Dependencies {
        store: Arc::new(store),
        signer: Arc::new(signer),
        callers: None,
    };
    let mut relay = app::start(settings, sim_runtime(SEED), deps).await?;
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
        // The relay host opens its store before binding: poll (in simulated
        // time) until the readiness service answers SERVING.
        // Generous: SQLite works on real threads while simulated time runs fast.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(500);
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
        // The wall clock the relay sees is simulated, not the host's.
        let now = SimClock.now().duration_since(std::time::UNIX_EPOCH)?;
        assert!(
            now >= SIM_EPOCH && now < SIM_EPOCH + Duration::from_secs(600),
            "{now:?}"
        );
        Ok(())
    });
    sim.run()
}

//! Readiness follows the store: while PostgreSQL is down the readiness
//! service answers NOT_SERVING and /readyz 503 with the reason; once it is
//! back, both return to SERVING / 200 without restarting the relay.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aegis_relay::store::{PostgresMode, PostgresStore};
use aegis_relay::store_health::StoreCheck;
use common::pg_server::PgServer;
use common::{eventually, grpc_channel, http_get, start_relay_with, TestResult};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const READINESS: &str = "aegis.cluster.v1.NodeClusterService";

async fn readiness(health: &HealthClient<tonic::transport::Channel>) -> Option<ServingStatus> {
    let mut health = health.clone();
    let response = health
        .check(HealthCheckRequest {
            service: READINESS.to_owned(),
        })
        .await
        .ok()?;
    Some(response.into_inner().status())
}

#[tokio::test]
async fn readiness_follows_a_postgres_outage() -> TestResult {
    let Some(pg) = PgServer::start_new()? else {
        return Ok(());
    };
    let store = PostgresStore::connect(&pg.url(), PostgresMode::Standalone).await?;
    store.migrate().await?;
    let relay = start_relay_with(Arc::new(store), |settings| {
        settings.store_check = StoreCheck {
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(1),
        };
    })
    .await?;
    let health = HealthClient::new(grpc_channel(&relay).await?);
    let deadline = Duration::from_secs(20);
    eventually(deadline, "SERVING with the store up", || async {
        (readiness(&health).await == Some(ServingStatus::Serving)).then_some(())
    })
    .await?;

    pg.stop()?;
    eventually(deadline, "NOT_SERVING while PostgreSQL is down", || async {
        (readiness(&health).await == Some(ServingStatus::NotServing)).then_some(())
    })
    .await?;
    let (status, body) = http_get(&relay, "/readyz").await?;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("postgres store unreachable"), "{body}");
    // Liveness stays up: the process is fine, its dependency is not.
    let (status, _) = http_get(&relay, "/healthz").await?;
    assert_eq!(status, 200);

    pg.start()?;
    eventually(
        deadline,
        "SERVING again once PostgreSQL is back",
        || async { (readiness(&health).await == Some(ServingStatus::Serving)).then_some(()) },
    )
    .await?;
    let (status, body) = http_get(&relay, "/readyz").await?;
    assert_eq!(status, 200, "{body}");
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

//! `grpc.health.v1.Health`: liveness under `""` and `grpc.health.v1.Health`
//! (what the deployment guide's pod probes ask), readiness under
//! `aegis.cluster.v1.NodeClusterService`, kept in step with [`Readiness`].

use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

use crate::proto::NODE_CLUSTER_SERVICE;
use crate::readiness::Readiness;

/// Service names that answer SERVING while the process runs.
pub const LIVENESS_SERVICES: [&str; 2] = ["", "grpc.health.v1.Health"];
/// Service name that follows readiness.
pub const READINESS_SERVICE: &str = NODE_CLUSTER_SERVICE;

/// Owns the health reporter and mirrors readiness into it.
pub struct HealthPublisher {
    reporter: HealthReporter,
}

impl HealthPublisher {
    /// A health service with liveness SERVING and readiness NOT_SERVING.
    pub async fn new() -> (Self, HealthServer<HealthService>) {
        let (publisher, service) = Self::unwrapped().await;
        (publisher, HealthServer::new(service))
    }

    /// [`Self::new`] with the service not yet wrapped for a server (tests
    /// call it directly).
    async fn unwrapped() -> (Self, HealthService) {
        let reporter = HealthReporter::new();
        let service = HealthService::from_health_reporter(reporter.clone());
        for name in LIVENESS_SERVICES {
            reporter
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        reporter
            .set_service_status(READINESS_SERVICE, ServingStatus::NotServing)
            .await;
        (Self { reporter }, service)
    }

    /// Mirrors `readiness` until `stop` fires or readiness is dropped. The
    /// state current at `stop` is published too: a drain sets NOT_SERVING just
    /// before stopping, and watchers must see it.
    pub async fn follow(self, readiness: Readiness, stop: CancellationToken) {
        let mut changes = readiness.subscribe();
        loop {
            let ready = changes.borrow_and_update().is_ready();
            self.publish(ready).await;
            tokio::select! {
                () = stop.cancelled() => {
                    let ready = changes.borrow_and_update().is_ready();
                    self.publish(ready).await;
                    return;
                }
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    async fn publish(&self, ready: bool) {
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter
            .set_service_status(READINESS_SERVICE, status)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use tonic::Request;
    use tonic_health::pb::health_check_response::ServingStatus as Wire;
    use tonic_health::pb::health_server::Health;
    use tonic_health::pb::HealthCheckRequest;

    use super::*;
    use crate::readiness::{DRAINING, STARTING};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn ask(service: &str) -> Request<HealthCheckRequest> {
        Request::new(HealthCheckRequest {
            service: service.to_owned(),
        })
    }

    async fn status(health: &HealthService, service: &str) -> Result<Wire, tonic::Status> {
        Ok(health.check(ask(service)).await?.into_inner().status())
    }

    #[tokio::test]
    async fn readiness_is_not_serving_while_starting_and_serving_once_started() -> TestResult {
        let (publisher, health) = HealthPublisher::unwrapped().await;
        let readiness = Readiness::new();
        let stop = CancellationToken::new();
        let mut readiness_changes = health.watch(ask(READINESS_SERVICE)).await?.into_inner();
        let follow = tokio::spawn(publisher.follow(readiness.clone(), stop.clone()));

        // Starting: the process is alive but takes no work yet.
        for name in LIVENESS_SERVICES {
            assert_eq!(status(&health, name).await?, Wire::Serving);
        }
        let first = readiness_changes.next().await.ok_or("watch ended")??;
        assert_eq!(first.status(), Wire::NotServing);
        assert_eq!(status(&health, READINESS_SERVICE).await?, Wire::NotServing);

        // Started: the publisher follows readiness to SERVING.
        readiness.set_ok(STARTING);
        let next =
            tokio::time::timeout(std::time::Duration::from_secs(10), readiness_changes.next())
                .await?
                .ok_or("watch ended")??;
        assert_eq!(next.status(), Wire::Serving);
        assert_eq!(status(&health, READINESS_SERVICE).await?, Wire::Serving);

        // Draining at the stop: published before the publisher ends.
        readiness.set_failing(DRAINING, "shutting down");
        stop.cancel();
        follow.await?;
        assert_eq!(status(&health, READINESS_SERVICE).await?, Wire::NotServing);
        Ok(())
    }
}

//! `grpc.health.v1.Health`: liveness under `""` and `grpc.health.v1.Health`
//! (what the deployment guide's pod probes ask), readiness under
//! `aegis.cluster.v1.NodeClusterService`, kept in step with [`Readiness`].

use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;
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
    pub async fn new() -> (Self, HealthServer<impl Health>) {
        let (reporter, service) = tonic_health::server::health_reporter();
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

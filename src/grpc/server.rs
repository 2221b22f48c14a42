//! Assembles and runs the cluster gRPC server on a listener from the seam.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::health::HealthPublisher;
use super::metrics_layer::GrpcMetricsLayer;
use super::node_cluster::{NodeClusterRoutes, RelayNodeCluster};
use super::reflection::{self, ReflectionError};
use crate::app::Api;
use crate::net::{incoming, Listener};
use crate::readiness::Readiness;
use crate::telemetry::Metrics;

/// Transport settings of the cluster gRPC server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcServerSettings {
    /// Interval of HTTP/2 PING keepalives (tonic's default is none, which
    /// lets half-open edge connections linger).
    pub keepalive_interval: Duration,
    /// How long a keepalive PING may go unanswered before the connection closes.
    pub keepalive_timeout: Duration,
    /// Largest message decoded or encoded (edge results carry whole outputs).
    pub max_message_bytes: usize,
    /// Streams one connection may hold (load generators multiplex many
    /// edges over one connection; the real daemon opens one per edge).
    pub max_streams_per_connection: u32,
    /// Longest a unary RPC may take (`relay.limits.unary_timeout`).
    pub unary_timeout: Duration,
}

impl Default for GrpcServerSettings {
    fn default() -> Self {
        Self {
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            max_message_bytes: 16 * 1024 * 1024,
            max_streams_per_connection: 10_000,
            unary_timeout: Duration::from_secs(30),
        }
    }
}

/// Errors of the gRPC server.
#[derive(Debug, thiserror::Error)]
pub enum GrpcServeError {
    /// The reflection services could not be built.
    #[error(transparent)]
    Reflection(#[from] ReflectionError),
    /// The server stopped with a transport error.
    #[error("cluster gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves NodeClusterService, health and reflection on `listener` until
/// `stop` fires, then finishes in-flight calls (the caller bounds that wait).
pub async fn serve(
    listener: Box<dyn Listener>,
    settings: GrpcServerSettings,
    api: Api,
    readiness: Readiness,
    metrics: Metrics,
    stop: CancellationToken,
) -> Result<(), GrpcServeError> {
    let (health, health_service) = HealthPublisher::new().await;
    let routes = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(settings.keepalive_interval))
        .http2_keepalive_timeout(Some(settings.keepalive_timeout))
        .max_concurrent_streams(Some(settings.max_streams_per_connection))
        .layer(GrpcMetricsLayer::new(metrics))
        .add_service(health_service)
        .add_service(reflection::v1()?)
        .add_service(reflection::v1alpha()?)
        .add_service(NodeClusterRoutes::new(
            RelayNodeCluster::new(api),
            settings.max_message_bytes,
            settings.unary_timeout,
        ));
    // Both end once `stop` fires; joined rather than spawned so nothing outlives the server.
    let (served, ()) = tokio::join!(
        routes.serve_with_incoming_shutdown(incoming(listener), stop.clone().cancelled_owned()),
        health.follow(readiness, stop),
    );
    Ok(served?)
}

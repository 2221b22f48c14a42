//! The cluster gRPC server (port 50056): NodeClusterService for edge daemons
//! and the controller, `grpc.health.v1.Health`, and server reflection (v1 and
//! v1alpha, so grpcurl 1.8.6 works without a proto file).

pub mod codec;
mod health;
pub mod message_limit;
mod metrics_layer;
mod node_cluster;
mod reflection;
pub mod retry_info;
mod server;

pub use health::{HealthPublisher, LIVENESS_SERVICES, READINESS_SERVICE};
pub use metrics_layer::{method_labels, GrpcMetricsLayer};
pub use node_cluster::{NodeClusterRoutes, NOT_SERVED_RPCS, SERVED_RPCS};
pub use server::{serve, GrpcServeError, GrpcServerSettings};

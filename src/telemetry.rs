//! Logs and metrics: the tracing subscriber of the binary and the per-replica
//! Prometheus registry behind `/metrics`.

mod edges;
mod logging;
mod metrics;

pub use self::edges::*;
pub use self::logging::init_logging;
pub use self::metrics::{grpc_code_name, Metrics};

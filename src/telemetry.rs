//! Logs and metrics: the tracing subscriber of the binary and the per-replica
//! Prometheus registry behind `/metrics`.

mod edges;
mod limits;
mod logging;
mod metrics;

pub use self::edges::*;
pub use self::limits::{CONNECTIONS_OPEN, CONNECTIONS_REFUSED, RATE_LIMITED};
pub use self::logging::init_logging;
pub use self::metrics::{grpc_code_name, Metrics};

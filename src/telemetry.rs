//! Logs and metrics: the tracing subscriber of the binary and the per-replica
//! Prometheus registry behind `/metrics`.

mod edges;
mod feed;
mod fleet;
mod limits;
mod logging;
mod membership;
mod metrics;

pub use self::edges::*;
pub use self::feed::{
    FEED_APPLIED, FEED_FAILURES, FEED_LAG_SECONDS, FEED_LAG_SEQS, FEED_RESYNCS, FEED_SHARED_CHECKS,
};
pub use self::fleet::{
    SseMeters, FLEET_SSE_BUFFERED, FLEET_SSE_GIVEN_UP, FLEET_SSE_PROGRESS_DROPPED,
};
pub use self::limits::{CONNECTIONS_OPEN, CONNECTIONS_REFUSED, RATE_LIMITED};
pub use self::logging::init_logging;
pub use self::membership::{
    GOSSIP_BYTES_IN, GOSSIP_BYTES_OUT, GOSSIP_DROPPED, MEMBERS, MEMBERSHIP_CHANGES,
    RING_EPOCH_CHANGES,
};
pub use self::metrics::{grpc_code_name, Metrics};

//! Load generation with our edge client: enroll many simulated edges once
//! (one state directory each, reused by later runs) and hold their
//! ConnectEdge streams, several edges multiplexed over one HTTP/2
//! connection.
//!
//! Everything is bounded so that tens of thousands of edges fit in one
//! process: enrollments and connection ramps run with fixed concurrency, one
//! task drives every edge of a connection, and an edge costs its identity,
//! its stream and a share of its connection's counters.

mod enroll;
mod hold;
mod mint;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use enroll::{prepare, LoadError, PrepareProgress, Prepared};
pub use hold::{hold, HoldStatus, Holding};
pub use mint::{MintError, Minter};

/// Prefix of the tenants named by a tenant count.
pub const LOAD_TENANT_PREFIX: &str = "t-load-";

/// What to enroll and how to hold it.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Number of edges.
    pub count: usize,
    /// Tenants, assigned round-robin: edge `i` belongs to `tenants[i % len]`.
    pub tenants: Vec<String>,
    /// Parent of the edges' state directories (`edge-<i>`).
    pub state_dir: PathBuf,
    /// gRPC URLs the edges dial, assigned round-robin per connection (the
    /// `cep` recorded in each edge's state is not used).
    pub grpc_endpoints: Vec<String>,
    /// Edges sharing one connection (1 = one connection per edge, as real
    /// daemons do).
    pub edges_per_connection: usize,
    /// Heartbeat period of every edge.
    pub heartbeat_interval: Duration,
    /// Enrollments in flight at once.
    pub enroll_concurrency: usize,
    /// Connections dialing or ramping their edges at once.
    pub connect_concurrency: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            count: 1,
            tenants: load_tenants(1),
            state_dir: PathBuf::from("edge-sim"),
            grpc_endpoints: Vec::new(),
            edges_per_connection: 100,
            heartbeat_interval: Duration::from_secs(30),
            enroll_concurrency: 32,
            connect_concurrency: 32,
        }
    }
}

/// `t-load-0` .. `t-load-<count-1>`.
pub fn load_tenants(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| format!("{LOAD_TENANT_PREFIX}{i}"))
        .collect()
}

/// The state directory of edge `index`.
pub fn edge_dir(state_dir: &Path, index: usize) -> PathBuf {
    state_dir.join(format!("edge-{index}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_tenants_and_dirs() {
        assert_eq!(load_tenants(2), ["t-load-0", "t-load-1"]);
        assert_eq!(
            edge_dir(Path::new("/tmp/d"), 7),
            PathBuf::from("/tmp/d/edge-7")
        );
    }
}

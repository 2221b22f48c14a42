//! Configuration: the deployment guide's `aegis-config.yaml` shape plus one
//! documented `relay:` block for what the guide leaves open.
//!
//! Loading either yields a complete [`Config`] or a [`ConfigError`] naming the
//! key path and the reason; nothing is checked later at run time. The binary
//! exits with code 2 on any config error.

mod change_feed;
mod cluster;
mod edges;
mod error;
mod expand;
mod file;
mod identity;
mod limits;
mod load;
mod model;
mod validate;
mod values;

pub use cluster::{GossipConfig, MembershipConfig, DEFAULT_GOSSIP_INTERVAL};
pub use error::ConfigError;
pub use expand::{expand_str, Env, ProcessEnv};
pub use identity::{ROLE_ID_ENV, SECRET_ID_ENV};
pub use load::{load_file, parse_str, ENV_OVERRIDES};
pub use model::{
    ClusterConfig, Config, KeycloakConfig, LimitsConfig, OpenBaoConfig, PostgresConfig,
    RateLimitConfig, RelayConfig, SignerKind, SigningScheme, DEFAULT_AUDIENCE, DEFAULT_CLUSTER_ID,
    DEFAULT_DATA_DIR, DEFAULT_DRAIN_TIMEOUT, DEFAULT_GOSSIP_PORT, DEFAULT_GRPC_PORT,
    DEFAULT_HEARTBEAT_TIMEOUT, DEFAULT_HTTP_PORT, DEFAULT_ISSUER, DEFAULT_PEER_PORT, DEFAULT_REALM,
    DEFAULT_TRANSIT_KEY, RELAY_ROLE,
};
pub use validate::check_replica_name;
pub use values::{parse_duration, LogFormat, Port, Secret};

#[cfg(test)]
mod tests;

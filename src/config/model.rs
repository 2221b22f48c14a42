//! The validated configuration the relay runs with: defaults applied, every
//! value checked, nothing left to fail later.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::values::{LogFormat, Secret};

/// Default cluster gRPC port (edge daemons and the controller).
pub const DEFAULT_GRPC_PORT: u16 = 50056;
/// Default HTTP port (REST, metrics, health).
pub const DEFAULT_HTTP_PORT: u16 = 8080;
/// Default replica-to-replica gRPC port.
pub const DEFAULT_PEER_PORT: u16 = 50057;
/// Default gossip port (UDP).
pub const DEFAULT_GOSSIP_PORT: u16 = 7946;
/// Default bound on a graceful shutdown.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// Default edge heartbeat timeout: three of the daemon's 30 s intervals.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(90);
/// Default gossip cluster id.
pub const DEFAULT_CLUSTER_ID: &str = "aegis-relay";
/// Default local state directory (the guide's pod mounts /var/lib/aegis).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/aegis/relay";
/// Default `iss` of relay tokens (as AEGIS's relay).
pub const DEFAULT_ISSUER: &str = "aegis-relay-coordinator";
/// The only role this binary plays.
pub const RELAY_ROLE: &str = "relay-coordinator";

/// A complete, valid relay configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `cluster:`.
    pub cluster: ClusterConfig,
    /// `keycloak.endpoint`, when set.
    pub keycloak_endpoint: Option<String>,
    /// `openbao.endpoint`, when set.
    pub openbao_endpoint: Option<String>,
    /// `postgres:`, when a DSN is set (otherwise the embedded SQLite store).
    pub postgres: Option<PostgresConfig>,
    /// `relay:`.
    pub relay: RelayConfig,
    /// Things an operator should know that do not stop the relay.
    pub warnings: Vec<String>,
}

/// `cluster:` after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// Port of the cluster gRPC server.
    pub grpc_port: u16,
    /// What enrollment tokens tell edges to dial (`cep`).
    pub public_endpoint: String,
}

/// `postgres:` after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// Connection URL.
    pub dsn: Secret,
    /// Share the database with an AEGIS controller: no DDL on its tables,
    /// relay tables in schema `aegis_relay`.
    pub shared_with_aegis: bool,
}

/// `relay:` after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// This replica's name (metrics, logs, endpoints.json).
    pub name: String,
    /// Local state: the SQLite store when no PostgreSQL is configured (and,
    /// later, the local signing key).
    pub data_dir: PathBuf,
    /// Address every listener binds.
    pub bind_address: IpAddr,
    /// HTTP port (REST, `/metrics`, `/healthz`, `/readyz`).
    pub http_port: u16,
    /// Replica-to-replica gRPC port.
    pub peer_port: u16,
    /// Gossip port (UDP).
    pub gossip_port: u16,
    /// `host:port` of replicas to gossip with first.
    pub gossip_seeds: Vec<String>,
    /// Address other replicas reach this one's gossip at, when not the bind address.
    pub gossip_advertise_address: Option<String>,
    /// Replicas only gossip with replicas of the same cluster id.
    pub cluster_id: String,
    /// File holding the secret that authenticates replica-to-replica traffic.
    pub cluster_secret_file: Option<PathBuf>,
    /// Hard bound on a graceful shutdown.
    pub drain_timeout: Duration,
    /// An edge silent for this long is evicted.
    pub heartbeat_timeout: Duration,
    /// Log line format.
    pub log_format: LogFormat,
    /// `iss` of the tokens this relay mints.
    pub issuer: String,
    /// Other issuers whose enrollment tokens are redeemed (same signing key),
    /// e.g. `aegis-controller`.
    pub accepted_issuers: Vec<String>,
}

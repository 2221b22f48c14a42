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
/// Default Keycloak realm.
pub const DEFAULT_REALM: &str = "aegis-system";
/// Default `keycloak.audience`: the client the deployment guide's bootstrap
/// creates for the relay.
pub const DEFAULT_AUDIENCE: &str = "relay-coordinator";
/// Default Transit key (shared with the AEGIS controller).
pub const DEFAULT_TRANSIT_KEY: &str = "edge-enrollment-token";
/// The only role this binary plays.
pub const RELAY_ROLE: &str = "relay-coordinator";

/// A complete, valid relay configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `cluster:`.
    pub cluster: ClusterConfig,
    /// `keycloak:`, when an endpoint is set (callers are then OIDC-authenticated).
    pub keycloak: Option<KeycloakConfig>,
    /// `openbao:`, when an endpoint is set.
    pub openbao: Option<OpenBaoConfig>,
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
    /// Size of the connection pool (the readiness ping has its own connection).
    pub max_connections: u32,
}

/// Default `postgres.max_connections`.
pub const DEFAULT_PG_CONNECTIONS: u32 = 16;

/// `relay:` after validation.
#[derive(Debug, Clone, PartialEq)]
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
    /// Gossip, advertised addresses and the failure detector.
    pub membership: super::cluster::MembershipConfig,
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
    /// Whether callers may present the relay's own operator tokens
    /// (`dev`'s `admin.token`, `aegis-relay admin-token`).
    pub accept_local_admin_tokens: bool,
    /// Which signer mints tokens.
    pub signer: SignerKind,
    /// Signature scheme of tokens minted through OpenBao.
    pub signing_scheme: SigningScheme,
    /// AttestNode rate limit per source.
    pub attest_rate_limit: RateLimitConfig,
    /// How long a rotated-out key stays acceptable.
    pub rotation_overlap: Duration,
    /// Edge session timing and limits (`relay.edges`, `relay.heartbeat_timeout`).
    pub sessions: crate::session::SessionSettings,
    /// Largest gRPC message (`relay.edges.max_message_bytes`).
    pub max_message_bytes: usize,
    /// Fleet history kept (`relay.fleet_runs`).
    pub fleet_runs: crate::fleet::RunRetention,
    /// Following the store's change feed (`relay.change_feed`).
    pub change_feed: crate::change_feed::FeedSettings,
    /// Connection caps and timeouts (`relay.limits`).
    pub limits: LimitsConfig,
    /// The bearer `/metrics` requires, read from `relay.metrics_token_file`.
    pub metrics_token: Option<Secret>,
}

/// `relay.limits`: what a peer may hold, mostly before it authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Longest a unary RPC may take, reading its request included.
    pub unary_timeout: Duration,
    /// Longest a new connection may take to send its first request's
    /// headers (HTTP/1) or its preface and SETTINGS (HTTP/2), and, on the
    /// HTTP port, every later request's headers.
    pub header_read_timeout: Duration,
    /// Longest a connection's write may wait for the peer to read (a peer
    /// that stopped reading, e.g. a stalled SSE reader, is closed).
    pub write_stall_timeout: Duration,
    /// Longest a REST request body may take to arrive.
    pub request_body_timeout: Duration,
    /// Connections held across both ports.
    pub max_connections: usize,
    /// Connections held per source (an IPv4 address or an IPv6 /64); 0 = no cap.
    pub max_connections_per_source: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            unary_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            request_body_timeout: Duration::from_secs(30),
            write_stall_timeout: Duration::from_secs(60),
            max_connections: 25_000,
            max_connections_per_source: 0,
        }
    }
}

/// `relay.signer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignerKind {
    /// A key file in `relay.data_dir`.
    Local,
    /// OpenBao Transit (`openbao:` block).
    OpenBao,
}

/// `relay.signing_scheme`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningScheme {
    /// True RS256: RSA PKCS#1 v1.5 with SHA-256.
    Rs256,
    /// What AEGIS's relay verifies: a default Transit signature (RSA-PSS for
    /// an RSA key) under an `RS256` header.
    AegisTransit,
}

/// `relay.attest_rate_limit`.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// Sustained attempts per second per source.
    pub per_second: f64,
    /// Attempts allowed in a burst.
    pub burst: u32,
    /// Peers whose forwarded header names the real source.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Header carrying the source behind a trusted proxy.
    pub forwarded_header: String,
}

/// `keycloak:` after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeycloakConfig {
    /// Base URL of the OIDC server.
    pub endpoint: String,
    /// Realm name.
    pub realm: String,
    /// Required `aud` (default [`DEFAULT_AUDIENCE`]); `None` (`"*"` in the
    /// file): any audience.
    pub audience: Option<String>,
    /// Claim path of realm roles (dots separate levels).
    pub roles_claim: String,
    /// Claim path of the tenant.
    pub tenant_claim: String,
    /// Claim path of the operator level.
    pub operator_claim: String,
    /// Longest time a JWKS is used without refreshing.
    pub jwks_refresh_interval: Duration,
}

impl KeycloakConfig {
    /// The realm's issuer URL (`<endpoint>/realms/<realm>`).
    pub fn issuer_url(&self) -> String {
        format!(
            "{}/realms/{}",
            self.endpoint.trim_end_matches('/'),
            self.realm
        )
    }
}

/// `openbao:` after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenBaoConfig {
    /// Base URL.
    pub endpoint: String,
    /// AppRole role id file (else env OPENBAO_ROLE_ID).
    pub role_id_file: Option<PathBuf>,
    /// AppRole secret id file (else env OPENBAO_SECRET_ID).
    pub secret_id_file: Option<PathBuf>,
    /// AppRole auth mount.
    pub approle_mount: String,
    /// Transit mount.
    pub transit_mount: String,
    /// Transit key name.
    pub transit_key: String,
}

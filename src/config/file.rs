//! The config file exactly as written: every key optional, unknown keys
//! refused. Defaults and cross-key rules live in `validate.rs`, so that a
//! missing key gets a message that says what to set.

use std::path::PathBuf;

use serde::Deserialize;
use serde_norway::Value;

use super::values::{ConfigDuration, LogFormat, Port};

/// Top level of `aegis-config.yaml` (the deployment guide's shape).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub cluster: Option<FileCluster>,
    pub keycloak: Option<FileKeycloak>,
    pub openbao: Option<FileOpenBao>,
    pub postgres: Option<FilePostgres>,
    pub relay: Option<FileRelay>,
    /// Controller-only blocks the guide says a relay does not need.
    pub mcp_servers: Option<Value>,
    pub builtin_dispatchers: Option<Value>,
    pub security_contexts: Option<Value>,
}

/// `cluster:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCluster {
    pub enabled: Option<bool>,
    pub role: Option<String>,
    pub cluster_grpc_port: Option<Port>,
    pub ingress: Option<FileIngress>,
}

/// `cluster.ingress:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileIngress {
    pub public_endpoint: Option<String>,
}

/// `keycloak:`: the OIDC realm that authenticates callers.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileKeycloak {
    pub endpoint: Option<String>,
    pub realm: Option<String>,
    pub audience: Option<String>,
    pub claims: Option<FileClaims>,
    pub jwks_refresh_interval: Option<ConfigDuration>,
}

/// `keycloak.claims:`: where the caller's facts sit in a token.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileClaims {
    pub roles: Option<String>,
    pub tenant: Option<String>,
    pub operator: Option<String>,
}

/// `openbao:`: Transit signing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOpenBao {
    pub endpoint: Option<String>,
    pub approle: Option<FileAppRole>,
    pub transit_mount: Option<String>,
    pub transit_key: Option<String>,
}

/// `openbao.approle:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAppRole {
    pub role_id_file: Option<PathBuf>,
    pub secret_id_file: Option<PathBuf>,
    pub mount: Option<String>,
}

/// `relay.attest_rate_limit:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRateLimit {
    pub per_second: Option<f64>,
    pub burst: Option<u32>,
    pub trusted_proxies: Option<Vec<String>>,
    pub forwarded_header: Option<String>,
}

/// `postgres:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePostgres {
    pub dsn: Option<String>,
    pub shared_with_aegis: Option<bool>,
    pub max_connections: Option<u32>,
}

/// `relay:`: everything the deployment guide leaves open.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRelay {
    pub name: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub bind_address: Option<String>,
    pub http_port: Option<Port>,
    pub peer_port: Option<Port>,
    pub gossip_port: Option<Port>,
    pub gossip_seeds: Option<Vec<String>>,
    pub gossip_advertise_address: Option<String>,
    pub peer_advertise_address: Option<String>,
    pub gossip_interval: Option<ConfigDuration>,
    pub failure_detector: Option<super::cluster::FileFailureDetector>,
    pub cluster_id: Option<String>,
    pub cluster_secret_file: Option<PathBuf>,
    pub drain_timeout: Option<ConfigDuration>,
    pub heartbeat_timeout: Option<ConfigDuration>,
    pub log_format: Option<LogFormat>,
    pub issuer: Option<String>,
    pub accepted_issuers: Option<Vec<String>>,
    pub accept_local_admin_tokens: Option<bool>,
    pub signer: Option<String>,
    pub signing_scheme: Option<String>,
    pub attest_rate_limit: Option<FileRateLimit>,
    pub rotation_overlap: Option<ConfigDuration>,
    pub edges: Option<super::edges::FileEdges>,
    pub fleet_runs: Option<super::edges::FileFleetRuns>,
    pub change_feed: Option<super::change_feed::FileChangeFeed>,
    pub limits: Option<super::limits::FileLimits>,
    pub metrics_token_file: Option<PathBuf>,
}

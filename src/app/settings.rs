//! What one replica is started with: [`RelaySettings`], derived from the
//! config file or built by `dev`, tests and the simulator, and the
//! [`Dependencies`] built outside it (store, signer, runtime).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{CallerAuth, Signer};
use crate::change_feed::FeedSettings;
use crate::config::{Config, LimitsConfig, RateLimitConfig};
use crate::fleet::RunRetention;
use crate::grpc::GrpcServerSettings;
use crate::membership::GossipSettings;
use crate::session::SessionSettings;
use crate::store::Store;
use crate::store_health::StoreCheck;

/// What one replica needs to start (derived from [`Config`] or built by
/// `dev`, tests and the simulator).
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Replica name.
    pub name: String,
    /// Cluster gRPC listener address (port 0 = ephemeral).
    pub grpc_addr: SocketAddr,
    /// HTTP listener address (port 0 = ephemeral).
    pub http_addr: SocketAddr,
    /// gRPC transport settings.
    pub grpc: GrpcServerSettings,
    /// Hard bound on a graceful shutdown.
    pub drain_timeout: Duration,
    /// Store readiness checks.
    pub store_check: StoreCheck,
    /// `iss` of minted tokens.
    pub issuer: String,
    /// Other issuers whose enrollment tokens are accepted.
    pub accepted_issuers: Vec<String>,
    /// How long a rotated-out edge key stays acceptable.
    pub rotation_overlap: Duration,
    /// AttestNode rate limit per source.
    pub attest_rate_limit: RateLimitConfig,
    /// `cep`: what enrollment tokens tell edges to dial; `None` means this
    /// replica's bound gRPC address over plaintext (`dev`).
    pub public_endpoint: Option<String>,
    /// Edge session timing and limits.
    pub sessions: SessionSettings,
    /// Fleet run history kept.
    pub fleet_runs: RunRetention,
    /// Connection caps and timeouts (`relay.limits`).
    pub limits: LimitsConfig,
    /// The bearer `/metrics` requires, if any (`relay.metrics_token_file`).
    pub metrics_token: Option<crate::config::Secret>,
    /// Gossip, for a clustered replica; `None` for one alone.
    pub gossip: Option<GossipSettings>,
    /// URL other replicas reach this one's peer service at (gossiped).
    pub peer_url: String,
    /// Following the store's change feed (`relay.change_feed`).
    pub change_feed: FeedSettings,
}

/// The parts a replica is built from that are chosen outside it.
#[derive(Clone)]
pub struct Dependencies {
    /// Persistent state.
    pub store: Arc<dyn Store>,
    /// Token signing.
    pub signer: Arc<dyn Signer>,
    /// Caller authentication; `None` accepts only this relay's own admin tokens.
    pub callers: Option<Arc<dyn CallerAuth>>,
}

impl RelaySettings {
    /// Settings for a `run` from a validated config.
    pub fn from_config(config: &Config) -> Self {
        let bind = config.relay.bind_address;
        Self {
            name: config.relay.name.clone(),
            grpc_addr: SocketAddr::new(bind, config.cluster.grpc_port),
            http_addr: SocketAddr::new(bind, config.relay.http_port),
            grpc: GrpcServerSettings {
                max_message_bytes: config.relay.max_message_bytes,
                unary_timeout: config.relay.limits.unary_timeout,
                ..GrpcServerSettings::default()
            },
            drain_timeout: config.relay.drain_timeout,
            store_check: StoreCheck::default(),
            issuer: config.relay.issuer.clone(),
            accepted_issuers: config.relay.accepted_issuers.clone(),
            rotation_overlap: config.relay.rotation_overlap,
            attest_rate_limit: config.relay.attest_rate_limit.clone(),
            public_endpoint: Some(config.cluster.public_endpoint.clone()),
            sessions: config.relay.sessions,
            fleet_runs: config.relay.fleet_runs,
            limits: config.relay.limits,
            metrics_token: config.relay.metrics_token.clone(),
            // Set by `run` once the secret file is read (`cli::run`).
            gossip: None,
            peer_url: config.relay.membership.peer_url.clone(),
            change_feed: config.relay.change_feed,
        }
    }

    /// Settings binding `ip` with the given ports and defaults elsewhere.
    pub fn local(name: &str, ip: IpAddr, grpc_port: u16, http_port: u16) -> Self {
        Self {
            name: name.to_owned(),
            grpc_addr: SocketAddr::new(ip, grpc_port),
            http_addr: SocketAddr::new(ip, http_port),
            grpc: GrpcServerSettings::default(),
            drain_timeout: crate::config::DEFAULT_DRAIN_TIMEOUT,
            store_check: StoreCheck::default(),
            issuer: crate::config::DEFAULT_ISSUER.to_owned(),
            accepted_issuers: Vec::new(),
            rotation_overlap: Duration::from_secs(60),
            attest_rate_limit: RateLimitConfig {
                per_second: 10.0,
                burst: 50,
                trusted_proxies: Vec::new(),
                forwarded_header: "x-forwarded-for".to_owned(),
            },
            public_endpoint: None,
            sessions: SessionSettings::default(),
            fleet_runs: RunRetention::default(),
            limits: LimitsConfig::default(),
            metrics_token: None,
            gossip: None,
            peer_url: format!(
                "http://{}",
                SocketAddr::new(ip, crate::config::DEFAULT_PEER_PORT)
            ),
            change_feed: FeedSettings::default(),
        }
    }
}

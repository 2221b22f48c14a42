//! Turns the file as written into a [`Config`]: defaults, per-key checks and
//! cross-key rules, each failure naming its key path.

use std::net::IpAddr;
use std::time::Duration;

use super::error::ConfigError;
use super::expand::Env;
use super::file::{FileConfig, FilePostgres, FileRelay};
use super::identity;
use super::model::DEFAULT_ISSUER;
use super::model::{
    ClusterConfig, Config, OpenBaoConfig, PostgresConfig, RelayConfig, DEFAULT_DATA_DIR,
    DEFAULT_DRAIN_TIMEOUT, DEFAULT_GOSSIP_PORT, DEFAULT_GRPC_PORT, DEFAULT_HEARTBEAT_TIMEOUT,
    DEFAULT_HTTP_PORT, DEFAULT_PEER_PORT, RELAY_ROLE,
};
use super::values::Secret;

/// Where listeners bind when `relay.bind_address` is not set (`run` in a pod).
pub const DEFAULT_RUN_BIND: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// Validates a parsed file.
pub fn validate(file: FileConfig, env: &dyn Env) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();
    for (block, present) in [
        ("mcp_servers", file.mcp_servers.is_some()),
        ("builtin_dispatchers", file.builtin_dispatchers.is_some()),
        ("security_contexts", file.security_contexts.is_some()),
    ] {
        if present {
            warnings.push(format!(
                "{block}: ignored; a relay-coordinator relays tool calls and does not execute them"
            ));
        }
    }

    let Some(cluster) = file.cluster else {
        return Err(ConfigError::invalid(
            "cluster",
            "missing; a relay needs `cluster: {enabled: true, role: relay-coordinator, \
             cluster_grpc_port: 50056, ingress: {public_endpoint: ...}}`",
        ));
    };
    if cluster.enabled == Some(false) {
        return Err(ConfigError::invalid(
            "cluster.enabled",
            "must be true for a relay-coordinator (it serves the cluster gRPC port)",
        ));
    }
    match cluster.role.as_deref() {
        Some(RELAY_ROLE) => {}
        Some(other) => {
            return Err(ConfigError::invalid(
                "cluster.role",
                format!(
                    "must be \"{RELAY_ROLE}\", got {other:?}; aegis-relay only plays the relay \
                     role (controllers and workers run the AEGIS orchestrator)"
                ),
            ))
        }
        None => {
            return Err(ConfigError::invalid(
                "cluster.role",
                format!("missing; set it to {RELAY_ROLE} (or set AEGIS_ROLE)"),
            ))
        }
    }
    let grpc_port = cluster
        .cluster_grpc_port
        .map_or(DEFAULT_GRPC_PORT, |port| port.0);
    let public_endpoint = cluster
        .ingress
        .and_then(|ingress| ingress.public_endpoint)
        .ok_or_else(|| {
            ConfigError::invalid(
                "cluster.ingress.public_endpoint",
                "missing; set it to the address edge daemons dial, e.g. relay.example.com \
                 (TLS on 443) or http://127.0.0.1:50056 (plaintext)",
            )
        })?;
    check_public_endpoint(&public_endpoint)?;

    let keycloak = identity::keycloak(file.keycloak)?;
    if keycloak
        .as_ref()
        .is_some_and(|keycloak| keycloak.audience.is_none())
    {
        warnings.push(
            "keycloak.audience: \"*\" accepts OIDC tokens minted for any client of the realm; \
             set it to the relay's client (default relay-coordinator)"
                .to_owned(),
        );
    }
    let openbao = identity::openbao(file.openbao)?;
    let postgres = validate_postgres(file.postgres.unwrap_or_default())?;

    let relay = validate_relay(
        file.relay.unwrap_or_default(),
        grpc_port,
        openbao.as_ref(),
        env,
    )?;
    Ok(Config {
        cluster: ClusterConfig {
            grpc_port,
            public_endpoint,
        },
        keycloak,
        openbao,
        postgres,
        relay,
        warnings,
    })
}

fn validate_postgres(postgres: FilePostgres) -> Result<Option<PostgresConfig>, ConfigError> {
    let shared_with_aegis = postgres.shared_with_aegis.unwrap_or(false);
    let Some(dsn) = postgres.dsn else {
        if shared_with_aegis {
            return Err(ConfigError::invalid(
                "postgres.shared_with_aegis",
                "needs postgres.dsn: sharing is with the AEGIS controller's PostgreSQL database",
            ));
        }
        return Ok(None);
    };
    check_postgres_dsn(&dsn)?;
    let max_connections = postgres
        .max_connections
        .unwrap_or(super::model::DEFAULT_PG_CONNECTIONS);
    if !(2..=1000).contains(&max_connections) {
        return Err(ConfigError::invalid(
            "postgres.max_connections",
            format!("must be between 2 and 1000, got {max_connections}"),
        ));
    }
    Ok(Some(PostgresConfig {
        dsn: Secret::new(dsn),
        shared_with_aegis,
        max_connections,
    }))
}

fn validate_relay(
    relay: FileRelay,
    grpc_port: u16,
    openbao: Option<&OpenBaoConfig>,
    env: &dyn Env,
) -> Result<RelayConfig, ConfigError> {
    let name = match relay.name {
        Some(name) => {
            check_replica_name(&name)
                .map_err(|reason| ConfigError::invalid("relay.name", reason))?;
            name
        }
        None => default_replica_name(env),
    };
    let data_dir = relay
        .data_dir
        .unwrap_or_else(|| std::path::PathBuf::from(DEFAULT_DATA_DIR));
    if data_dir.as_os_str().is_empty() {
        return Err(ConfigError::invalid("relay.data_dir", "must not be empty"));
    }
    let bind_address = match relay.bind_address {
        Some(text) => text.parse::<IpAddr>().map_err(|_| {
            ConfigError::invalid(
                "relay.bind_address",
                format!("{text:?} is not an IP address; use e.g. 0.0.0.0 or 127.0.0.1"),
            )
        })?,
        None => DEFAULT_RUN_BIND,
    };
    let http_port = relay.http_port.map_or(DEFAULT_HTTP_PORT, |port| port.0);
    let peer_port = relay.peer_port.map_or(DEFAULT_PEER_PORT, |port| port.0);
    let gossip_port = relay.gossip_port.map_or(DEFAULT_GOSSIP_PORT, |port| port.0);
    if http_port == grpc_port {
        return Err(ConfigError::invalid(
            "relay.http_port",
            format!("{http_port} is already cluster.cluster_grpc_port; pick another port"),
        ));
    }
    if peer_port == grpc_port || peer_port == http_port {
        return Err(ConfigError::invalid(
            "relay.peer_port",
            format!("{peer_port} is already used by the gRPC or HTTP listener; pick another port"),
        ));
    }
    let gossip_seeds = relay.gossip_seeds.unwrap_or_default();
    let membership = super::cluster::cluster(super::cluster::ClusterKeys {
        bind_address,
        gossip_port,
        peer_port,
        seeds: gossip_seeds.clone(),
        gossip_advertise_address: relay.gossip_advertise_address.clone(),
        peer_advertise_address: relay.peer_advertise_address,
        cluster_id: relay.cluster_id,
        cluster_secret_file: relay.cluster_secret_file.clone(),
        gossip_interval: relay.gossip_interval,
        failure_detector: relay.failure_detector,
    })?;
    let cluster_id = membership.cluster_id.clone();
    let drain_timeout = relay.drain_timeout.map_or(DEFAULT_DRAIN_TIMEOUT, |d| d.0);
    if drain_timeout.is_zero() {
        return Err(ConfigError::invalid(
            "relay.drain_timeout",
            "must be greater than zero (in-flight calls need time to finish)",
        ));
    }
    let heartbeat_timeout = relay
        .heartbeat_timeout
        .map_or(DEFAULT_HEARTBEAT_TIMEOUT, |d| d.0);
    if heartbeat_timeout < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "relay.heartbeat_timeout",
            "must be at least 1s (edges send at most one heartbeat per second)",
        ));
    }
    let issuer = relay.issuer.unwrap_or_else(|| DEFAULT_ISSUER.to_owned());
    if issuer.trim().is_empty() || issuer.len() > 256 {
        return Err(ConfigError::invalid(
            "relay.issuer",
            "must be 1-256 characters",
        ));
    }
    let accepted_issuers = relay.accepted_issuers.unwrap_or_default();
    for (index, accepted) in accepted_issuers.iter().enumerate() {
        if accepted.trim().is_empty() {
            return Err(ConfigError::invalid(
                format!("relay.accepted_issuers[{index}]"),
                "must not be empty",
            ));
        }
    }
    let signer = identity::signer(relay.signer, openbao, env)?;
    let signing_scheme = identity::signing_scheme(relay.signing_scheme)?;
    let attest_rate_limit = identity::rate_limit(relay.attest_rate_limit)?;
    let rotation_overlap = relay
        .rotation_overlap
        .map_or(Duration::from_secs(60), |d| d.0);
    let (sessions, max_message_bytes) = super::edges::sessions(relay.edges, heartbeat_timeout)?;
    let fleet_runs = super::edges::fleet_runs(relay.fleet_runs)?;
    let change_feed = super::change_feed::change_feed(relay.change_feed)?;
    let limits = super::limits::limits(relay.limits)?;
    let metrics_token = super::limits::metrics_token(relay.metrics_token_file.as_deref())?;
    Ok(RelayConfig {
        limits,
        metrics_token,
        sessions,
        max_message_bytes,
        fleet_runs,
        change_feed,
        name,
        data_dir,
        issuer,
        accepted_issuers,
        accept_local_admin_tokens: relay.accept_local_admin_tokens.unwrap_or(false),
        signer,
        signing_scheme,
        attest_rate_limit,
        rotation_overlap,
        bind_address,
        http_port,
        peer_port,
        gossip_port,
        gossip_seeds,
        gossip_advertise_address: relay.gossip_advertise_address,
        cluster_id,
        cluster_secret_file: relay.cluster_secret_file,
        membership,
        drain_timeout,
        heartbeat_timeout,
        log_format: relay.log_format.unwrap_or_default(),
    })
}

/// Replica names go into URLs, metric labels and gossip keys.
pub fn check_replica_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.']);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid replica name: 1-63 characters of a-z, 0-9, '-' and '.', \
             starting and ending with a letter or digit"
        ))
    }
}

/// The pod's hostname when it is a valid name, else `relay`.
fn default_replica_name(env: &dyn Env) -> String {
    env.var("HOSTNAME")
        .map(|host| host.to_ascii_lowercase())
        .filter(|host| check_replica_name(host).is_ok())
        .unwrap_or_else(|| "relay".to_owned())
}

fn check_public_endpoint(endpoint: &str) -> Result<(), ConfigError> {
    let key = "cluster.ingress.public_endpoint";
    if endpoint.trim().is_empty() {
        return Err(ConfigError::invalid(key, "must not be empty"));
    }
    if endpoint.chars().any(char::is_whitespace) {
        return Err(ConfigError::invalid(
            key,
            format!("{endpoint:?} contains whitespace"),
        ));
    }
    if let Some((scheme, _)) = endpoint.split_once("://") {
        if scheme != "http" && scheme != "https" {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "scheme {scheme:?} is not understood by edge daemons; use https://host, \
                     http://host:port or a bare host[:port]"
                ),
            ));
        }
    }
    Ok(())
}

fn check_postgres_dsn(dsn: &str) -> Result<(), ConfigError> {
    if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
        Ok(())
    } else if dsn.is_empty() {
        Err(ConfigError::invalid(
            "postgres.dsn",
            "is empty; set POSTGRES_DSN to a postgres://user:password@host:5432/db URL",
        ))
    } else {
        // The value may hold a password: describe it, never echo it.
        Err(ConfigError::invalid(
            "postgres.dsn",
            "is not a postgres:// or postgresql:// URL",
        ))
    }
}

//! Validation of the cluster keys of `relay:`: gossip (port, seeds,
//! advertise address, interval, failure detector), cluster id and secret
//! file, and the peer service's advertised address.
//!
//! A replica is clustered when `relay.gossip_seeds` is non-empty or
//! `relay.cluster_secret_file` is set; the secret file itself is read when
//! the replica starts (`run`), so that `check-config` works where the
//! secret is not mounted.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::values::ConfigDuration;
use crate::membership::{FailureDetectorSettings, MAX_CLUSTER_ID_BYTES};

/// Default `relay.gossip_interval`.
pub const DEFAULT_GOSSIP_INTERVAL: Duration = Duration::from_millis(300);

/// `relay.failure_detector:` (chitchat's `FailureDetectorConfig` names).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFailureDetector {
    pub phi_threshold: Option<f64>,
    pub sampling_window_size: Option<usize>,
    pub max_interval: Option<ConfigDuration>,
    pub initial_interval: Option<ConfigDuration>,
    pub dead_node_grace_period: Option<ConfigDuration>,
}

/// The cluster keys as written.
pub struct ClusterKeys {
    pub bind_address: IpAddr,
    pub gossip_port: u16,
    pub peer_port: u16,
    pub seeds: Vec<String>,
    pub gossip_advertise_address: Option<String>,
    pub peer_advertise_address: Option<String>,
    pub cluster_id: Option<String>,
    pub cluster_secret_file: Option<PathBuf>,
    pub gossip_interval: Option<ConfigDuration>,
    pub failure_detector: Option<FileFailureDetector>,
}

/// `relay:`'s cluster part after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct MembershipConfig {
    /// Gossip; `None` when the replica runs alone.
    pub gossip: Option<GossipConfig>,
    /// URL of this replica's peer service as gossiped (`http://host:port`).
    pub peer_url: String,
    /// Replicas only gossip with replicas of the same cluster id.
    pub cluster_id: String,
    /// Time between gossip rounds.
    pub gossip_interval: Duration,
    /// chitchat's failure detector.
    pub failure_detector: FailureDetectorSettings,
}

/// Gossip of a clustered replica, before the secret file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipConfig {
    /// UDP address to bind.
    pub listen: SocketAddr,
    /// `host:port` other replicas reach this one's gossip at (a host name
    /// is resolved when the replica starts).
    pub advertise: String,
    /// `host:port` of replicas to contact first.
    pub seeds: Vec<String>,
    /// The secret file (read at start).
    pub secret_file: PathBuf,
}

/// Validates the cluster keys.
pub fn cluster(keys: ClusterKeys) -> Result<MembershipConfig, ConfigError> {
    for (index, seed) in keys.seeds.iter().enumerate() {
        check_host_port(seed).map_err(|reason| {
            ConfigError::invalid(format!("relay.gossip_seeds[{index}]"), reason)
        })?;
    }
    for (key, value) in [
        (
            "relay.gossip_advertise_address",
            &keys.gossip_advertise_address,
        ),
        ("relay.peer_advertise_address", &keys.peer_advertise_address),
    ] {
        if let Some(value) = value {
            check_host_port(value).map_err(|reason| ConfigError::invalid(key, reason))?;
        }
    }
    let cluster_id = keys
        .cluster_id
        .unwrap_or_else(|| super::model::DEFAULT_CLUSTER_ID.to_owned());
    if cluster_id.trim().is_empty() || cluster_id.len() > MAX_CLUSTER_ID_BYTES {
        return Err(ConfigError::invalid(
            "relay.cluster_id",
            format!("must be 1-{MAX_CLUSTER_ID_BYTES} bytes"),
        ));
    }
    let gossip_interval = keys
        .gossip_interval
        .map_or(DEFAULT_GOSSIP_INTERVAL, |d| d.0);
    if !(Duration::from_millis(10)..=Duration::from_secs(60)).contains(&gossip_interval) {
        return Err(ConfigError::invalid(
            "relay.gossip_interval",
            "must be between 10ms and 60s (default 300ms)",
        ));
    }
    let failure_detector = failure_detector(keys.failure_detector.unwrap_or_default())?;

    let unspecified = keys.bind_address.is_unspecified();
    let clustered = !keys.seeds.is_empty() || keys.cluster_secret_file.is_some();
    let gossip_advertise = match (&keys.gossip_advertise_address, unspecified) {
        (Some(address), _) => Some(address.clone()),
        (None, false) => Some(SocketAddr::new(keys.bind_address, keys.gossip_port).to_string()),
        (None, true) if clustered => {
            return Err(ConfigError::invalid(
                "relay.gossip_advertise_address",
                format!(
                    "missing; relay.bind_address is {} (every interface), so other replicas \
                     cannot be told where this one gossips: set it to host:port, e.g. \
                     $POD_IP:{} or ${{HOSTNAME}}.<headless service>:{}",
                    keys.bind_address, keys.gossip_port, keys.gossip_port
                ),
            ))
        }
        (None, true) => None,
    };
    let peer_advertise = match (&keys.peer_advertise_address, &gossip_advertise, unspecified) {
        (Some(address), _, _) => address.clone(),
        (None, _, false) => SocketAddr::new(keys.bind_address, keys.peer_port).to_string(),
        (None, Some(gossip), true) => {
            let host = gossip
                .rsplit_once(':')
                .map_or(gossip.as_str(), |(host, _)| host);
            format!("{host}:{}", keys.peer_port)
        }
        (None, None, true) => SocketAddr::new(keys.bind_address, keys.peer_port).to_string(),
    };
    let gossip =
        match (clustered, keys.cluster_secret_file, gossip_advertise) {
            (false, _, _) => None,
            (true, None, _) => return Err(ConfigError::invalid(
                "relay.cluster_secret_file",
                "missing; a clustered replica (relay.gossip_seeds is set) authenticates gossip \
                 with a secret file: one secret of at least 32 bytes per line, the same file on \
                 every replica",
            )),
            (true, Some(secret_file), advertise) => Some(GossipConfig {
                listen: SocketAddr::new(keys.bind_address, keys.gossip_port),
                advertise: advertise.unwrap_or_default(),
                seeds: keys.seeds,
                secret_file,
            }),
        };
    Ok(MembershipConfig {
        gossip,
        peer_url: format!("http://{peer_advertise}"),
        cluster_id,
        gossip_interval,
        failure_detector,
    })
}

fn failure_detector(file: FileFailureDetector) -> Result<FailureDetectorSettings, ConfigError> {
    let defaults = FailureDetectorSettings::default();
    let settings = FailureDetectorSettings {
        phi_threshold: file.phi_threshold.unwrap_or(defaults.phi_threshold),
        sampling_window_size: file
            .sampling_window_size
            .unwrap_or(defaults.sampling_window_size),
        max_interval: file.max_interval.map_or(defaults.max_interval, |d| d.0),
        initial_interval: file
            .initial_interval
            .map_or(defaults.initial_interval, |d| d.0),
        dead_node_grace_period: file
            .dead_node_grace_period
            .map_or(defaults.dead_node_grace_period, |d| d.0),
    };
    let key = |name: &str| format!("relay.failure_detector.{name}");
    if !(settings.phi_threshold.is_finite() && settings.phi_threshold > 0.0) {
        return Err(ConfigError::invalid(
            key("phi_threshold"),
            "must be a positive number (default 8; below 8 members flap)",
        ));
    }
    if !(1..=100_000).contains(&settings.sampling_window_size) {
        return Err(ConfigError::invalid(
            key("sampling_window_size"),
            "must be between 1 and 100000 (default 1000)",
        ));
    }
    for (name, value) in [
        ("max_interval", settings.max_interval),
        ("initial_interval", settings.initial_interval),
    ] {
        if value.is_zero() {
            return Err(ConfigError::invalid(key(name), "must be greater than zero"));
        }
    }
    if settings.dead_node_grace_period < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            key("dead_node_grace_period"),
            "must be at least 1s (dead members are forgotten after it)",
        ));
    }
    Ok(settings)
}

pub fn check_host_port(text: &str) -> Result<(), String> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("{text:?} needs a port: write host:port"));
    };
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(format!("{text:?} has no host: write host:port"));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => Err(format!("{text:?} has an invalid port (1-65535)")),
    }
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;

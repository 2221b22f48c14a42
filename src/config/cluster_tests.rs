//! The cluster keys: defaults, when a replica is clustered, advertised
//! addresses, and the errors that name each bad key.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{parse_str, Config, ConfigError};

const MINIMAL: &str =
    "cluster:\n  role: relay-coordinator\n  ingress:\n    public_endpoint: relay.example.com\n";

fn load(relay: &str) -> Result<Config, ConfigError> {
    parse_str(&format!("{MINIMAL}relay:\n{relay}"), &BTreeMap::new())
}

fn error(relay: &str) -> String {
    load(relay)
        .err()
        .map(|err| err.to_string())
        .unwrap_or_default()
}

#[test]
fn a_replica_without_seeds_or_secret_runs_alone_with_defaults() -> Result<(), ConfigError> {
    let config = load("  name: relay-0\n")?;
    let membership = &config.relay.membership;
    assert!(membership.gossip.is_none());
    assert_eq!(membership.gossip_interval, Duration::from_millis(300));
    assert_eq!(membership.cluster_id, "aegis-relay");
    let detector = membership.failure_detector;
    assert_eq!(detector.phi_threshold, 8.0);
    assert_eq!(detector.initial_interval, Duration::from_millis(300));
    assert_eq!(detector.max_interval, Duration::from_secs(2));
    assert_eq!(detector.sampling_window_size, 1000);
    assert_eq!(detector.dead_node_grace_period, Duration::from_secs(600));
    Ok(())
}

#[test]
fn seeds_or_a_secret_file_make_a_replica_clustered() -> Result<(), ConfigError> {
    let config = load(
        "  bind_address: 127.0.0.1\n  gossip_port: 7001\n  peer_port: 7101\n  \
         gossip_seeds: [\"127.0.0.1:7001\", \"127.0.0.1:7002\"]\n  \
         cluster_secret_file: /run/secret\n  gossip_interval: 200ms\n  \
         failure_detector:\n    phi_threshold: 10\n    initial_interval: 250ms\n",
    )?;
    let membership = &config.relay.membership;
    let gossip = membership.gossip.as_ref().ok_or("not clustered")?;
    assert_eq!(gossip.listen.to_string(), "127.0.0.1:7001");
    assert_eq!(gossip.advertise, "127.0.0.1:7001");
    // Its own address in the seed list is fine.
    assert_eq!(gossip.seeds.len(), 2);
    assert_eq!(membership.peer_url, "http://127.0.0.1:7101");
    assert_eq!(membership.gossip_interval, Duration::from_millis(200));
    assert_eq!(membership.failure_detector.phi_threshold, 10.0);
    assert_eq!(
        membership.failure_detector.initial_interval,
        Duration::from_millis(250)
    );

    let secret_only = load("  bind_address: 10.0.0.5\n  cluster_secret_file: /run/secret\n")?;
    assert!(secret_only.relay.membership.gossip.is_some());
    Ok(())
}

#[test]
fn every_interface_needs_an_advertised_address_when_clustered() -> Result<(), ConfigError> {
    let text = error("  gossip_seeds: [\"relay-1:7946\"]\n  cluster_secret_file: /run/secret\n");
    assert!(
        text.starts_with("relay.gossip_advertise_address: missing"),
        "{text}"
    );
    let config = load(
        "  gossip_seeds: [\"relay-1:7946\"]\n  cluster_secret_file: /run/secret\n  \
         gossip_advertise_address: relay-0.peers:7946\n",
    )?;
    let membership = &config.relay.membership;
    assert_eq!(
        membership.gossip.as_ref().map(|g| g.advertise.as_str()),
        Some("relay-0.peers:7946")
    );
    // The peer URL follows the advertised host on the peer port.
    assert_eq!(membership.peer_url, "http://relay-0.peers:50057");
    let explicit = load(
        "  cluster_secret_file: /run/secret\n  gossip_advertise_address: 10.1.2.3:7946\n  \
         peer_advertise_address: peers.example:9000\n",
    )?;
    assert_eq!(
        explicit.relay.membership.peer_url,
        "http://peers.example:9000"
    );
    Ok(())
}

#[test]
fn bad_cluster_values_name_their_keys() {
    for (relay, key) in [
        (
            "  bind_address: 127.0.0.1\n  gossip_seeds: [\"127.0.0.1:7946\"]\n",
            "relay.cluster_secret_file: missing",
        ),
        (
            "  gossip_seeds: [\"10.0.0.1:7946\", \"10.0.0.2\"]\n",
            "relay.gossip_seeds[1]:",
        ),
        ("  gossip_seeds: [\":7946\"]\n", "relay.gossip_seeds[0]:"),
        ("  gossip_seeds: [\"host:0\"]\n", "relay.gossip_seeds[0]:"),
        (
            "  gossip_advertise_address: nohost\n",
            "relay.gossip_advertise_address:",
        ),
        (
            "  peer_advertise_address: host:http\n",
            "relay.peer_advertise_address:",
        ),
        ("  gossip_interval: 0s\n", "relay.gossip_interval:"),
        ("  cluster_id: \"\"\n", "relay.cluster_id:"),
        (
            "  failure_detector:\n    phi_threshold: 0\n",
            "relay.failure_detector.phi_threshold:",
        ),
        (
            "  failure_detector:\n    sampling_window_size: 0\n",
            "relay.failure_detector.sampling_window_size:",
        ),
        (
            "  failure_detector:\n    initial_interval: 0s\n",
            "relay.failure_detector.initial_interval:",
        ),
        (
            "  failure_detector:\n    dead_node_grace_period: 10ms\n",
            "relay.failure_detector.dead_node_grace_period:",
        ),
        (
            "  failure_detector:\n    phi: 8\n",
            "relay.failure_detector",
        ),
    ] {
        let text = error(relay);
        assert!(text.starts_with(key), "{relay}: {text}");
    }
    let long = format!("  cluster_id: {}\n", "x".repeat(256));
    assert!(error(&long).starts_with("relay.cluster_id:"));
}

impl From<&str> for ConfigError {
    fn from(reason: &str) -> Self {
        ConfigError::Invalid {
            key: "test".into(),
            reason: reason.into(),
        }
    }
}

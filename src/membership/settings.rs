//! How a replica takes part in membership: gossip addresses, seeds, the
//! cluster id and secret, the failure detector (chitchat's settings, named
//! as chitchat names them), and resolving an advertised host name.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::secret::ClusterSecrets;

/// chitchat's failure detector settings (`relay.failure_detector.*`, named
/// as chitchat names them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailureDetectorSettings {
    /// A member is dead once `silence / mean heartbeat interval` exceeds this.
    pub phi_threshold: f64,
    /// Heartbeat intervals remembered per member.
    pub sampling_window_size: usize,
    /// Longer intervals are not counted (a pause is not the new normal).
    pub max_interval: Duration,
    /// The prior mean interval before samples arrive (weighs as 5 samples).
    pub initial_interval: Duration,
    /// How long a dead member's state is kept (gossiped for half of it).
    pub dead_node_grace_period: Duration,
}

impl Default for FailureDetectorSettings {
    /// Tuned for the 300 ms gossip interval: see README, "Membership".
    fn default() -> Self {
        Self {
            phi_threshold: 8.0,
            sampling_window_size: 1000,
            max_interval: Duration::from_secs(2),
            initial_interval: Duration::from_millis(300),
            dead_node_grace_period: Duration::from_secs(600),
        }
    }
}

/// How a clustered replica gossips.
#[derive(Debug, Clone)]
pub struct GossipSettings {
    /// UDP address to bind.
    pub listen: SocketAddr,
    /// UDP address other replicas reach this one at.
    pub advertise: SocketAddr,
    /// `host:port` of replicas to contact first (this one's own allowed).
    pub seeds: Vec<String>,
    /// Only replicas of this cluster id are heard.
    pub cluster_id: String,
    /// Authenticate every datagram.
    pub secrets: ClusterSecrets,
    /// Time between gossip rounds.
    pub interval: Duration,
    /// The failure detector.
    pub failure_detector: FailureDetectorSettings,
}

/// Membership settings of one replica.
#[derive(Debug, Clone)]
pub struct MembershipSettings {
    /// Stable name (`relay.name`).
    pub name: String,
    /// URL of this replica's peer service, as gossiped.
    pub peer_url: String,
    /// Gossip, for a clustered replica; `None` alone.
    pub gossip: Option<GossipSettings>,
}

/// Why membership could not start.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// chitchat did not start (usually: the UDP port is taken).
    #[error("cannot start gossip on {listen}/udp: {reason}")]
    Start {
        /// The address asked for.
        listen: SocketAddr,
        /// What went wrong.
        reason: String,
    },
}

/// How long start-up retries resolving a host name it advertises (a pod's
/// own DNS name can take a moment to appear).
const RESOLVE_WAIT: Duration = Duration::from_secs(30);

/// Resolves an advertised `host:port` (an IP literal needs no lookup).
pub async fn resolve_advertise(host_port: &str) -> std::io::Result<SocketAddr> {
    if let Ok(addr) = host_port.parse() {
        return Ok(addr);
    }
    let deadline = Instant::now() + RESOLVE_WAIT;
    loop {
        let error = match tokio::net::lookup_host(host_port).await {
            Ok(mut addrs) => match addrs.next() {
                Some(addr) => return Ok(addr),
                None => std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            },
            Err(err) => err,
        };
        if Instant::now() >= deadline {
            return Err(error);
        }
        tracing::info!(address = host_port, error = %error, "advertised gossip address does not resolve yet; retrying");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

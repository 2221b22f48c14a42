//! One relay replica as a turmoil host: the production `app::start` on the
//! simulated seams, clustered over gossip with the run's secret, sharing
//! the run's store and signing key. A restart runs this again with a fresh
//! entropy stream.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use aegis_relay::app::{self, Dependencies, RelaySettings};
use aegis_relay::auth::Signer;
use aegis_relay::membership::{ClusterSecrets, FailureDetectorSettings, GossipSettings};
use aegis_relay::store::MemoryStore;

use crate::scenario::mix;
use crate::sim_runtime;
use crate::world::{Live, World};

/// Cluster gRPC port of every replica.
pub const GRPC_PORT: u16 = 50051;
/// HTTP API port of every replica.
pub const HTTP_PORT: u16 = 8080;
/// Gossip port of every replica.
pub const GOSSIP_PORT: u16 = 7946;
/// The run's cluster secret (what `relay.cluster_secret_file` would hold).
const CLUSTER_SECRET: &str = "simulated-cluster-secret-0123456789abcdef0123";
const ENTROPY_STREAM: u64 = 0x7265_706c;

/// Host name of replica `index`.
pub fn name(index: usize) -> String {
    format!("r{index}")
}

/// What a replica host is built from.
#[derive(Clone)]
pub struct ReplicaParts {
    /// Scenario seed.
    pub seed: u64,
    /// Replicas in the run (the first two are gossip seeds).
    pub replicas: usize,
    /// The shared store.
    pub store: Arc<MemoryStore>,
    /// The shared signing key.
    pub signer: Arc<dyn Signer>,
    /// Where it publishes itself.
    pub world: World,
}

fn settings(index: usize, replicas: usize) -> Result<RelaySettings, Box<dyn std::error::Error>> {
    let name = name(index);
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let mut settings = RelaySettings::local(&name, any, GRPC_PORT, HTTP_PORT);
    settings.public_endpoint = Some(format!("http://{name}:{GRPC_PORT}"));
    settings.peer_url = format!("http://{name}:50057");
    let seeds = (0..replicas.min(2))
        .map(|seed| SocketAddr::new(turmoil::lookup(self::name(seed)), GOSSIP_PORT).to_string())
        .collect();
    settings.gossip = Some(GossipSettings {
        listen: SocketAddr::new(any, GOSSIP_PORT),
        advertise: SocketAddr::new(turmoil::lookup(name.as_str()), GOSSIP_PORT),
        seeds,
        cluster_id: "sim".to_owned(),
        secrets: ClusterSecrets::parse(CLUSTER_SECRET)?,
        interval: Duration::from_millis(300),
        failure_detector: FailureDetectorSettings::default(),
    });
    Ok(settings)
}

/// Adds replica `index` to `sim`.
pub fn add(sim: &mut turmoil::Sim<'_>, index: usize, parts: &ReplicaParts) {
    let parts = parts.clone();
    sim.host(name(index), move || {
        let parts = parts.clone();
        async move {
            let start = parts.world.starting(index);
            let runtime = sim_runtime(mix(
                parts.seed,
                ENTROPY_STREAM,
                (index as u64) << 16 | start,
            ));
            let deps = Dependencies {
                store: parts.store.clone(),
                signer: Arc::clone(&parts.signer),
                callers: None,
            };
            let mut relay = app::start(settings(index, parts.replicas)?, runtime, deps).await?;
            parts.world.replica_up(
                index,
                Live {
                    owner: Arc::clone(relay.owner()),
                    membership: relay.membership().clone(),
                },
            );
            parts
                .world
                .note(format!("{} serving (start {start})", name(index)));
            // Servers only end on failure; a crash drops this future.
            Err(relay.failed().await.into())
        }
    });
}

//! Several in-process replicas on one store: each its own name, ports,
//! metrics and registry, all sharing one signing key (as replicas on one
//! data dir or one OpenBao key do), so a token any of them minted is
//! accepted by every one.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use aegis_relay::app::{self, RelaySettings};
use aegis_relay::runtime::Runtime;
use aegis_relay::store::Store;

use super::enroll::BoxError;
use super::TestRelay;

/// Starts `stores.len()` replicas (`relay-0`, `relay-1`, ...), the i-th on
/// `stores[i]` (one store shared, or several pools on one database), after
/// `configure` adjusts each one's settings.
pub async fn start_replicas(
    stores: Vec<Arc<dyn Store>>,
    configure: impl Fn(&mut RelaySettings),
) -> Result<Vec<TestRelay>, BoxError> {
    let key_dir = tempfile::tempdir()?;
    let key_path = key_dir.path().join("signing-key.pem");
    let mut replicas = Vec::new();
    for (index, store) in stores.into_iter().enumerate() {
        let name = format!("relay-{index}");
        let mut settings = RelaySettings::local(&name, IpAddr::V4(Ipv4Addr::LOCALHOST), 0, 0);
        settings.attest_rate_limit.per_second = 10_000.0;
        settings.attest_rate_limit.burst = 10_000;
        configure(&mut settings);
        let signer = aegis_relay::auth::LocalSigner::load_or_create(&key_path)?;
        let deps = app::Dependencies {
            store,
            signer: Arc::new(signer),
            callers: None,
        };
        replicas.push(TestRelay {
            relay: app::start(settings, Runtime::real(), deps).await?,
            _dir: None,
            _store_dir: None,
        });
    }
    if let Some(first) = replicas.first_mut() {
        first._dir = Some(key_dir);
    }
    Ok(replicas)
}

/// Gossip for an in-process replica on an ephemeral loopback UDP port,
/// joining `seeds`, in cluster `cluster_id` signed with `secret`.
pub fn loopback_gossip(
    cluster_id: &str,
    secret: &str,
    seeds: Vec<String>,
) -> Result<aegis_relay::membership::GossipSettings, BoxError> {
    use aegis_relay::membership::{ClusterSecrets, FailureDetectorSettings, GossipSettings};
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    Ok(GossipSettings {
        listen: loopback,
        advertise: loopback,
        seeds,
        cluster_id: cluster_id.to_owned(),
        secrets: ClusterSecrets::parse(secret)?,
        interval: std::time::Duration::from_millis(300),
        failure_detector: FailureDetectorSettings::default(),
    })
}

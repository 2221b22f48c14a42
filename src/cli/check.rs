//! `aegis-relay check-config`: validate a file and say what it configures.

use std::path::Path;

use super::{ConfigArgs, Failure};
use crate::config::{load_file, ProcessEnv};

pub(super) fn check(args: &ConfigArgs) -> Result<(), Failure> {
    let config = load_file(&args.config, &ProcessEnv).map_err(Failure::Config)?;
    let path: &Path = &args.config;
    println!("{}: valid aegis-relay config", path.display());
    println!(
        "  replica {} binds {}: gRPC {}, HTTP {}",
        config.relay.name,
        config.relay.bind_address,
        config.cluster.grpc_port,
        config.relay.http_port
    );
    println!(
        "  enrollment tokens advertise {}",
        config.cluster.public_endpoint
    );
    println!("  store: {}", super::store_settings(&config).describe());
    println!("  callers: {}", callers(&config));
    let membership = &config.relay.membership;
    match &membership.gossip {
        Some(gossip) => println!(
            "  clustered: gossip {} advertised as {}, seeds {:?}, cluster id {}, secret file {}, \
             peer {}",
            gossip.listen,
            gossip.advertise,
            gossip.seeds,
            membership.cluster_id,
            gossip.secret_file.display(),
            membership.peer_url
        ),
        None => {
            println!("  alone: no gossip (no relay.gossip_seeds, no relay.cluster_secret_file)")
        }
    }
    for warning in &config.warnings {
        println!("  warning: {warning}");
    }
    Ok(())
}

/// Which bearer tokens the caller routes accept.
fn callers(config: &crate::config::Config) -> String {
    let oidc = config.keycloak.as_ref().map(|keycloak| {
        format!(
            "OIDC tokens of {} (audience {})",
            keycloak.issuer_url(),
            keycloak.audience.as_deref().unwrap_or("any")
        )
    });
    let local = config.relay.accept_local_admin_tokens.then(|| {
        format!(
            "the relay's own operator tokens (issuer {})",
            config.relay.issuer
        )
    });
    match (oidc, local) {
        (Some(oidc), Some(local)) => format!("{oidc}, and {local}"),
        (Some(only), None) | (None, Some(only)) => only,
        (None, None) => "none (every REST call is refused with 401; set keycloak.endpoint or \
                         relay.accept_local_admin_tokens: true)"
            .to_owned(),
    }
}

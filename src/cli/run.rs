//! `aegis-relay run --config F`: one production replica.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use super::{local_signer, serve_until_signal, store_settings, tokio_runtime, Failure, STORE_WAIT};
use crate::app::{self, RelaySettings};
use crate::auth::{
    CallerAuth, ChainCallerAuth, LocalCallerAuth, OidcCallerAuth, OpenBaoSigner, Signer,
    TokenIssuer,
};
use crate::config::{load_file, Config, ConfigError, ProcessEnv, SignerKind};
use crate::membership::{resolve_advertise, ClusterSecrets, GossipSettings};
use crate::runtime::Runtime;
use crate::shutdown::Signals;
use crate::store::{self, Migrations};
use crate::telemetry::init_logging;

pub(super) fn run(config_path: &Path, no_migrate: bool) -> Result<(), Failure> {
    let config = load_file(config_path, &ProcessEnv).map_err(Failure::Config)?;
    init_logging(config.relay.log_format);
    for warning in &config.warnings {
        tracing::warn!(config = %config_path.display(), "{warning}");
    }
    let mut settings = RelaySettings::from_config(&config);
    let secrets = cluster_secrets(&config).map_err(Failure::Config)?;
    let store_settings = store_settings(&config);
    // A database shared with AEGIS gets DDL only from an explicit `migrate`.
    let shared = config
        .postgres
        .as_ref()
        .is_some_and(|pg| pg.shared_with_aegis);
    let migrations = if no_migrate || shared {
        Migrations::Verify
    } else {
        Migrations::Apply
    };
    tokio_runtime()?.block_on(async move {
        let mut signals = Signals::install().context("cannot install signal handlers")?;
        let store = store::open(&store_settings, migrations, STORE_WAIT)
            .await
            .with_context(|| format!("cannot open the store ({})", store_settings.describe()))?;
        tracing::info!(store = %store_settings.describe(), "store ready");
        settings.gossip = gossip(&config, secrets).await.map_err(Failure::Config)?;
        let signer = signer(&config).await?;
        let callers = callers(&config, &signer)?;
        let deps = app::Dependencies {
            store,
            signer,
            callers,
        };
        let relay = app::start(settings, Runtime::real(), deps).await?;
        tracing::info!(
            public_endpoint = %config.cluster.public_endpoint,
            "ready: edge daemons dial the public endpoint"
        );
        serve_until_signal(relay, &mut signals).await?;
        Ok(())
    })
}

/// The cluster secret file of a clustered replica, read now: a missing or
/// bad file stops the start with the key named (exit 2).
fn cluster_secrets(config: &Config) -> Result<Option<ClusterSecrets>, ConfigError> {
    let Some(gossip) = &config.relay.membership.gossip else {
        return Ok(None);
    };
    ClusterSecrets::read(&gossip.secret_file)
        .map(Some)
        .map_err(|err| ConfigError::invalid("relay.cluster_secret_file", err.to_string()))
}

/// Gossip settings of a clustered replica, its advertised address resolved.
async fn gossip(
    config: &Config,
    secrets: Option<ClusterSecrets>,
) -> Result<Option<GossipSettings>, ConfigError> {
    let (Some(gossip), Some(secrets)) = (&config.relay.membership.gossip, secrets) else {
        return Ok(None);
    };
    let advertise = resolve_advertise(&gossip.advertise).await.map_err(|err| {
        ConfigError::invalid(
            "relay.gossip_advertise_address",
            format!("{:?} does not resolve: {err}", gossip.advertise),
        )
    })?;
    let membership = &config.relay.membership;
    Ok(Some(GossipSettings {
        listen: gossip.listen,
        advertise,
        seeds: gossip.seeds.clone(),
        cluster_id: membership.cluster_id.clone(),
        secrets,
        interval: membership.gossip_interval,
        failure_detector: membership.failure_detector,
    }))
}

/// The signer `relay.signer` names: the local key file, or OpenBao Transit
/// through an AppRole login.
pub(super) async fn signer(config: &Config) -> anyhow::Result<Arc<dyn Signer>> {
    match (config.relay.signer, &config.openbao) {
        (SignerKind::OpenBao, Some(openbao)) => {
            let (role_id, secret_id) = OpenBaoSigner::approle_credentials(openbao)?;
            let signer =
                OpenBaoSigner::connect(openbao, config.relay.signing_scheme, role_id, secret_id)
                    .await
                    .context("cannot sign with OpenBao")?;
            tracing::info!(signer = %signer.describe(), "signing with OpenBao Transit");
            Ok(Arc::new(signer))
        }
        _ => local_signer(&config.relay.data_dir),
    }
}

/// Callers: OIDC bearer tokens from the Keycloak realm when `keycloak:` is
/// set, the relay's own operator tokens when
/// `relay.accept_local_admin_tokens` is true; with neither, every bearer is
/// refused (edges still enroll and connect with tokens minted elsewhere).
fn callers(
    config: &Config,
    signer: &Arc<dyn Signer>,
) -> anyhow::Result<Option<Arc<dyn CallerAuth>>> {
    let local = config.relay.accept_local_admin_tokens.then(|| {
        LocalCallerAuth::new(Arc::new(TokenIssuer::new(
            Arc::clone(signer),
            config.relay.issuer.clone(),
            Vec::new(),
            config.cluster.public_endpoint.clone(),
        )))
    });
    let oidc = match &config.keycloak {
        Some(keycloak) => {
            let oidc = OidcCallerAuth::new(keycloak.clone())
                .map_err(|err| anyhow::anyhow!("keycloak: {err}"))?;
            tracing::info!(issuer = %keycloak.issuer_url(), audience = keycloak.audience.as_deref().unwrap_or("*"), "callers authenticate with the OIDC realm");
            Some(oidc)
        }
        None => None,
    };
    if local.is_some() {
        tracing::info!(
            "the relay's own operator tokens are accepted (relay.accept_local_admin_tokens)"
        );
    }
    if local.is_none() && oidc.is_none() {
        tracing::warn!(
            "no caller authentication configured: every REST and IssueEnrollmentToken call is \
             refused (set keycloak.endpoint, or relay.accept_local_admin_tokens: true)"
        );
    }
    Ok(Some(Arc::new(ChainCallerAuth::new(
        config.relay.issuer.clone(),
        local,
        oidc,
    ))))
}

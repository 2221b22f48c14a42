//! `aegis-relay run --config F`: one production replica.

use std::path::Path;

use anyhow::Context;

use super::{local_signer, serve_until_signal, store_settings, tokio_runtime, Failure, STORE_WAIT};
use crate::app::{self, RelaySettings};
use crate::config::{load_file, ConfigError, ProcessEnv, SignerKind};
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
    let settings = RelaySettings::from_config(&config);
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
        let signer = match config.relay.signer {
            SignerKind::Local => local_signer(&config.relay.data_dir)?,
            SignerKind::OpenBao => {
                return Err(Failure::Config(ConfigError::Invalid {
                    key: "relay.signer".to_owned(),
                    reason: "openbao signing is not available in this build yet; use local"
                        .to_owned(),
                }))
            }
        };
        let deps = app::Dependencies {
            store,
            signer,
            callers: None,
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

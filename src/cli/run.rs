//! `aegis-relay run --config F`: one production replica.

use std::path::Path;

use anyhow::Context;

use super::{serve_until_signal, tokio_runtime, Failure};
use crate::app::{self, RelaySettings};
use crate::config::{load_file, ProcessEnv};
use crate::runtime::Runtime;
use crate::shutdown::Signals;
use crate::telemetry::init_logging;

pub(super) fn run(config_path: &Path) -> Result<(), Failure> {
    let config = load_file(config_path, &ProcessEnv).map_err(Failure::Config)?;
    init_logging(config.relay.log_format);
    for warning in &config.warnings {
        tracing::warn!(config = %config_path.display(), "{warning}");
    }
    let settings = RelaySettings::from_config(&config);
    tokio_runtime()?.block_on(async move {
        let mut signals = Signals::install().context("cannot install signal handlers")?;
        let relay = app::start(settings, Runtime::real()).await?;
        tracing::info!(
            public_endpoint = %config.cluster.public_endpoint,
            "ready: edge daemons dial the public endpoint"
        );
        serve_until_signal(relay, &mut signals).await?;
        Ok(())
    })
}

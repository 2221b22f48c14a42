//! `aegis-relay migrate --config F`: apply the store's migrations and exit.

use std::path::Path;

use super::{store_settings, tokio_runtime, Failure, STORE_WAIT};
use crate::config::{load_file, ProcessEnv};
use crate::store::{self, Migrations};
use crate::telemetry::init_logging;

pub(super) fn migrate(config_path: &Path) -> Result<(), Failure> {
    let config = load_file(config_path, &ProcessEnv).map_err(Failure::Config)?;
    init_logging(config.relay.log_format);
    let settings = store_settings(&config);
    tokio_runtime()?.block_on(async move {
        let store = store::open(&settings, Migrations::Apply, STORE_WAIT)
            .await
            .map_err(|err| Failure::Runtime(err.into()))?;
        println!(
            "{}: migrations applied ({})",
            settings.describe(),
            store.backend()
        );
        Ok(())
    })
}

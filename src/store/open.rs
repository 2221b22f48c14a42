//! Choosing and opening the store from configuration: SQLite when no
//! PostgreSQL DSN is configured, PostgreSQL otherwise; migrations applied or
//! only verified; a bounded wait, with progress, for a database that is still
//! starting.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::postgres::{PostgresMode, PostgresStore};
use super::sqlite::SqliteStore;
use super::{Store, StoreError, StoreResult};
use crate::config::Secret;

/// Which store to open.
#[derive(Debug, Clone)]
pub enum StoreSettings {
    /// The embedded SQLite file.
    Sqlite {
        /// Database file.
        path: PathBuf,
    },
    /// PostgreSQL.
    Postgres {
        /// Connection URL (may hold a password; never logged).
        dsn: Secret,
        /// Standalone or shared with an AEGIS controller.
        mode: PostgresMode,
        /// Pool size (`postgres.max_connections`).
        max_connections: u32,
    },
}

impl StoreSettings {
    /// A description safe to log (no credentials).
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite { path } => format!("sqlite {}", path.display()),
            Self::Postgres { mode, .. } => format!("postgres ({mode:?})"),
        }
    }
}

/// What to do about the schema when opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrations {
    /// Apply pending migrations (shared mode: only the relay's own).
    Apply,
    /// Only check that the schema is complete (`--no-migrate`, shared mode at start).
    Verify,
}

/// Opens the store, retrying an unreachable database every second until
/// `wait` has passed, logging each attempt.
pub async fn open(
    settings: &StoreSettings,
    migrations: Migrations,
    wait: Duration,
) -> StoreResult<Arc<dyn Store>> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut attempt = 1u32;
    loop {
        match open_once(settings, migrations).await {
            Ok(store) => return Ok(store),
            Err(err) if err.is_transient() && tokio::time::Instant::now() < deadline => {
                tracing::warn!(
                    store = %settings.describe(),
                    attempt,
                    error = %err,
                    "store not reachable yet; retrying"
                );
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

async fn open_once(
    settings: &StoreSettings,
    migrations: Migrations,
) -> StoreResult<Arc<dyn Store>> {
    match settings {
        StoreSettings::Sqlite { path } => {
            if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|err| {
                    StoreError::Unavailable(format!("cannot create {}: {err}", dir.display()))
                })?;
            }
            let store = SqliteStore::open(path).await?;
            match migrations {
                Migrations::Apply => store.migrate().await?,
                Migrations::Verify => store.verify_schema().await?,
            }
            Ok(Arc::new(store))
        }
        StoreSettings::Postgres {
            dsn,
            mode,
            max_connections,
        } => {
            let store =
                PostgresStore::connect_with_pool(dsn.expose(), *mode, *max_connections).await?;
            match migrations {
                Migrations::Apply => store.migrate().await?,
                Migrations::Verify => store.verify_schema().await?,
            }
            Ok(Arc::new(store))
        }
    }
}

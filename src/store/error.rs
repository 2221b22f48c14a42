//! Store errors: what a caller can act on, never a raw driver error.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached (connection refused, pool timeout).
    /// Retry later; readiness reports it.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule was broken (e.g. a group name already used).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Stored data could not be read back (written by something else?).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// A schema the relay needs is missing or different.
    #[error("store schema: {0}")]
    Schema(String),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Any other database error.
    #[error("store error: {0}")]
    Database(String),
}

impl StoreError {
    /// Whether the operation may succeed if retried later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => Self::Unavailable(err.to_string()),
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Self::Conflict(db.message().to_owned())
            }
            sqlx::Error::Database(db) if is_connection_state(db.code().as_deref()) => {
                Self::Unavailable(db.message().to_owned())
            }
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                Self::Corrupt(err.to_string())
            }
            other => Self::Database(other.to_string()),
        }
    }
}

/// PostgreSQL SQLSTATEs of a server that is shutting down or not accepting
/// connections, and SQLite's busy/locked codes.
fn is_connection_state(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("57P01" | "57P02" | "57P03" | "08000" | "08003" | "08006" | "53300" | "5" | "6")
    )
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        Self::Migration(err.to_string())
    }
}

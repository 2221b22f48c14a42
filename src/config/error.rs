//! Config errors: every one names the file and, where there is one, the key
//! path, so an operator can fix the file without reading code.

use std::path::PathBuf;

/// Why a config could not be loaded. All of them exit the process with code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not valid YAML.
    #[error("config file is not valid YAML: {message}")]
    Syntax {
        /// serde_yaml's description, with line and column.
        message: String,
    },
    /// The file is AEGIS's own NodeConfig rather than the relay's shape.
    #[error(
        "this is an AEGIS NodeConfig (apiVersion/kind/spec); aegis-relay reads the deployment \
         guide's shape instead: top-level `cluster` (enabled, role: relay-coordinator, \
         cluster_grpc_port, ingress.public_endpoint), `keycloak`, `openbao`, `postgres` and an \
         optional `relay` block (see deploy/aegis-config.yaml)"
    )]
    NodeConfigShape,
    /// A key holds a value the relay cannot use.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted path of the key, e.g. `cluster.cluster_grpc_port`.
        key: String,
        /// What is wrong and what would be right.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

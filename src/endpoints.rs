//! `<data-dir>/endpoints.json`: where a local (`dev`) relay's replicas listen,
//! for scripts, tests and the edge simulator to find them.
//!
//! Written atomically (temp file, fsync, rename) once every listener serves,
//! so a reader never sees a half-written file or a port that is not yet open.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name inside the data dir.
pub const ENDPOINTS_FILE: &str = "endpoints.json";

/// The whole file: one entry per replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    /// Replicas, in order.
    pub replicas: Vec<ReplicaEndpoints>,
}

/// Where one replica listens, as full URLs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaEndpoints {
    /// Replica name.
    pub name: String,
    /// Cluster gRPC, e.g. `http://127.0.0.1:50056`.
    pub grpc: String,
    /// HTTP, e.g. `http://127.0.0.1:8080`.
    pub http: String,
    /// Replica-to-replica gRPC; null until clustering exists.
    pub peer: Option<String>,
    /// Gossip, e.g. `udp://127.0.0.1:7946`; null until clustering exists.
    pub gossip: Option<String>,
    /// Process id serving it.
    pub pid: u32,
}

/// Errors reading or writing the file.
#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    /// Filesystem error.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Encoding error.
    #[error("cannot encode endpoints: {0}")]
    Encode(#[from] serde_json::Error),
}

impl Endpoints {
    /// Writes `self` to `path` atomically.
    pub fn write_atomically(&self, path: &Path) -> Result<(), EndpointsError> {
        let body = serde_json::to_vec_pretty(self)?;
        let tmp = path.with_extension(format!("json.tmp.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&body)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            EndpointsError::Write {
                path: path.to_owned(),
                source,
            }
        })
    }

    /// Reads the file, if it exists and parses.
    pub fn read(path: &Path) -> Option<Self> {
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_nulls_for_cluster_ports() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(ENDPOINTS_FILE);
        let endpoints = Endpoints {
            replicas: vec![ReplicaEndpoints {
                name: "relay-0".into(),
                grpc: "http://127.0.0.1:50056".into(),
                http: "http://127.0.0.1:8080".into(),
                peer: None,
                gossip: None,
                pid: 42,
            }],
        };
        endpoints.write_atomically(&path)?;
        let text = std::fs::read_to_string(&path)?;
        assert!(text.contains("\"peer\": null"), "{text}");
        assert_eq!(Endpoints::read(&path), Some(endpoints));
        assert_eq!(
            std::fs::read_dir(dir.path())?.count(),
            1,
            "no temp file left"
        );
        Ok(())
    }
}

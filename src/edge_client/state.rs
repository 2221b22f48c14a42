//! The edge's state directory, laid out as the real daemon's (protocol.md
//! §11.1): `node.key` (32-byte Ed25519 seed, 0600), `node.pub` (32 raw
//! bytes), `node.token` (0600), `enrollment.jwt` (0600) and a NodeConfig
//! `aegis-config.yaml`. The directory is 0700.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::write_private;

/// Ed25519 seed file.
pub const NODE_KEY: &str = "node.key";
/// Public key file.
pub const NODE_PUB: &str = "node.pub";
/// NodeSecurityToken file.
pub const NODE_TOKEN: &str = "node.token";
/// Enrollment token file.
pub const ENROLLMENT_JWT: &str = "enrollment.jwt";
/// NodeConfig file.
pub const CONFIG_FILE: &str = "aegis-config.yaml";

/// An edge's persistent identity.
#[derive(Debug, Clone)]
pub struct EdgeState {
    /// Directory holding the files.
    pub dir: PathBuf,
    /// Node id.
    pub node_id: Uuid,
    /// Tenant.
    pub tenant_id: String,
    /// Endpoint it dials.
    pub endpoint: String,
    /// Its key.
    pub key: SigningKey,
    /// Its NodeSecurityToken.
    pub token: String,
}

/// The subset of AEGIS's NodeConfig an edge needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NodeConfig {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Metadata {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Spec {
    pub node: NodeSection,
    pub cluster: ClusterSection,
    #[serde(default)]
    pub security_contexts: Vec<serde_norway::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NodeSection {
    pub id: String,
    #[serde(rename = "type", default)]
    pub node_type: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClusterSection {
    pub enabled: bool,
    pub role: String,
    pub controller: ControllerSection,
    pub heartbeat_interval_secs: u64,
    pub edge: EdgeSection,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ControllerSection {
    pub endpoint: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EdgeSection {
    #[serde(default)]
    pub tenant_id: String,
    pub stream_reconnect_backoff_secs: Vec<u64>,
    pub capabilities: CapabilitiesSection,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CapabilitiesSection {
    pub os: String,
    pub arch: String,
    pub local_tools: Vec<String>,
    pub mount_points: Vec<String>,
    pub custom_labels: BTreeMap<String, String>,
}

impl NodeConfig {
    /// A fresh config for `node_id` dialing `endpoint`.
    pub fn new(node_id: Uuid, endpoint: &str) -> Self {
        Self {
            api_version: "100monkeys.ai/v1".to_owned(),
            kind: "NodeConfig".to_owned(),
            metadata: Metadata {
                name: format!("edge-{}", &node_id.simple().to_string()[..8]),
            },
            spec: Spec {
                node: NodeSection {
                    id: node_id.hyphenated().to_string(),
                    node_type: "edge".to_owned(),
                },
                cluster: ClusterSection {
                    enabled: true,
                    role: "edge".to_owned(),
                    controller: ControllerSection {
                        endpoint: endpoint.to_owned(),
                    },
                    heartbeat_interval_secs: 30,
                    edge: EdgeSection {
                        tenant_id: String::new(),
                        stream_reconnect_backoff_secs: vec![1, 2, 5, 15, 60],
                        capabilities: CapabilitiesSection {
                            os: std::env::consts::OS.to_owned(),
                            arch: std::env::consts::ARCH.to_owned(),
                            local_tools: vec!["shell".to_owned()],
                            ..CapabilitiesSection::default()
                        },
                    },
                },
                security_contexts: vec![default_security_context()],
            },
        }
    }

    /// Reads `<dir>/aegis-config.yaml`, if present and parseable.
    pub fn read(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join(CONFIG_FILE)).ok()?;
        serde_norway::from_str(&text).ok()
    }

    /// Writes `<dir>/aegis-config.yaml` (0600).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let text = serde_norway::to_string(self).map_err(std::io::Error::other)?;
        write_private(&dir.join(CONFIG_FILE), text.as_bytes())
    }
}

/// The daemon's minimal template context: `zaru-free`, every tool allowed.
fn default_security_context() -> serde_norway::Value {
    use serde_norway::{Mapping, Value};
    let mut capability = Mapping::new();
    capability.insert("tool_pattern".into(), "*".into());
    let mut context = Mapping::new();
    context.insert("name".into(), "zaru-free".into());
    context.insert(
        "capabilities".into(),
        Value::Sequence(vec![Value::Mapping(capability)]),
    );
    Value::Mapping(context)
}

/// Creates the state directory with mode 0700.
pub(crate) fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

impl EdgeState {
    /// Loads an enrolled edge's state (key, token, config).
    pub fn load(dir: &Path) -> Result<Self, String> {
        let config = NodeConfig::read(dir)
            .ok_or_else(|| format!("{}: no readable {CONFIG_FILE}", dir.display()))?;
        let seed = std::fs::read(dir.join(NODE_KEY))
            .map_err(|err| format!("{}: {err}", dir.join(NODE_KEY).display()))?;
        let seed: [u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| format!("{NODE_KEY} must hold exactly 32 bytes"))?;
        let token = std::fs::read_to_string(dir.join(NODE_TOKEN))
            .map_err(|err| format!("{}: {err}", dir.join(NODE_TOKEN).display()))?;
        Ok(Self {
            dir: dir.to_owned(),
            node_id: Uuid::parse_str(&config.spec.node.id)
                .map_err(|_| "spec.node.id is not a UUID".to_owned())?,
            tenant_id: config.spec.cluster.edge.tenant_id.clone(),
            endpoint: config.spec.cluster.controller.endpoint.clone(),
            key: SigningKey::from_bytes(&seed),
            token: token.trim().to_owned(),
        })
    }
}

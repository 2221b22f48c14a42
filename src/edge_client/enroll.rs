//! `edge enroll` as the real daemon does it (protocol.md §5.1): read `tid`
//! and `cep` from the token without verifying it, reuse or create the node
//! id, generate a key, AttestNode, sign the raw nonce, ChallengeNode with the
//! token, and write the key and `node.token` only after success.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{Signer as _, SigningKey};
use serde::Deserialize;
use tonic::transport::{Channel, Endpoint, Uri};
use uuid::Uuid;

use super::endpoint::promote_endpoint;
use super::state::{
    create_dir, EdgeState, NodeConfig, ENROLLMENT_JWT, NODE_KEY, NODE_PUB, NODE_TOKEN,
};
use crate::auth::{b64url_decode, write_private};
use crate::net::Network;
use crate::proto::cluster::node_cluster_service_client::NodeClusterServiceClient;
use crate::proto::cluster::{
    challenge_node_request, AttestNodeRequest, ChallengeNodeRequest, NodeCapabilities, NodeRole,
};
use crate::runtime::Runtime;

/// Time allowed for each handshake call.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// How to treat an existing state directory.
#[derive(Debug, Clone, Default)]
pub struct EnrollOptions {
    /// Overwrite an existing key and token (the node id is kept); the relay
    /// accepts it only with a token issued for the node (`replace_node`).
    pub force: bool,
    /// Dial this instead of the token's `cep` (the state still records `cep`).
    pub endpoint_override: Option<String>,
}

/// A finished enrollment.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The edge's state, as written.
    pub state: EdgeState,
    /// Token expiry (unix seconds), as the relay reported it.
    pub expires_at: i64,
}

/// Why enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The token is not a JWT with string `tid` and `cep`.
    #[error("enrollment token unreadable: {0}")]
    Token(String),
    /// The state directory already holds an identity.
    #[error(
        "{0} already holds an enrolled edge; to replace its key (same node id), pass --force \
         with an enrollment token issued with replace_node=<its node id>"
    )]
    Exists(PathBuf),
    /// Filesystem error.
    #[error("state directory: {0}")]
    Io(String),
    /// Could not reach the relay.
    #[error("cannot reach {endpoint}: {reason}")]
    Connect {
        /// What was dialed.
        endpoint: String,
        /// Why it failed.
        reason: String,
    },
    /// The relay refused.
    #[error("{rpc} refused ({code:?}): {message}")]
    Refused {
        /// Which call.
        rpc: &'static str,
        /// gRPC code.
        code: tonic::Code,
        /// The relay's message.
        message: String,
        /// The wait a RESOURCE_EXHAUSTED's `google.rpc.RetryInfo` asks for.
        retry_after: Option<std::time::Duration>,
    },
}

/// The claims the daemon reads from an enrollment token (unverified).
#[derive(Debug, Clone, Deserialize)]
pub struct UnverifiedClaims {
    /// Tenant.
    pub tid: String,
    /// Endpoint.
    pub cep: String,
}

/// Reads `tid` and `cep` without verifying the signature, as the CLI does.
pub fn read_unverified_claims(token: &str) -> Result<UnverifiedClaims, EnrollError> {
    let mut segments = token.trim().split('.');
    let (Some(_), Some(claims), Some(_), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(EnrollError::Token("expected three segments".to_owned()));
    };
    let json = b64url_decode(claims)
        .ok_or_else(|| EnrollError::Token("claims are not base64url".to_owned()))?;
    serde_json::from_slice(&json).map_err(|err| EnrollError::Token(err.to_string()))
}

/// Enrolls an edge whose state lives in `dir` using `token`.
pub async fn enroll(
    runtime: &Runtime,
    token: &str,
    dir: &Path,
    options: &EnrollOptions,
) -> Result<Enrolled, EnrollError> {
    let claims = read_unverified_claims(token)?;
    let io = |err: std::io::Error| EnrollError::Io(format!("{}: {err}", dir.display()));
    let existing = NodeConfig::read(dir);
    if existing.is_some() && dir.join(NODE_TOKEN).exists() && !options.force {
        return Err(EnrollError::Exists(dir.to_owned()));
    }
    create_dir(dir).map_err(io)?;
    let node_id = existing
        .as_ref()
        .and_then(|config| Uuid::parse_str(&config.spec.node.id).ok())
        .unwrap_or_else(|| random_uuid(runtime));
    let mut seed = [0u8; 32];
    runtime.entropy.fill(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    let mut config = existing.unwrap_or_else(|| NodeConfig::new(node_id, &claims.cep));

    let dial = options
        .endpoint_override
        .clone()
        .unwrap_or_else(|| claims.cep.clone());
    let mut client = NodeClusterServiceClient::new(channel(Arc::clone(&runtime.net), &dial).await?);
    let attest = AttestNodeRequest {
        node_id: node_id.hyphenated().to_string(),
        role: NodeRole::Edge.into(),
        public_key: key.verifying_key().to_bytes().to_vec(),
        capabilities: Some(NodeCapabilities::default()),
        grpc_address: String::new(),
        enrolment_token: String::new(),
    };
    let challenge = client
        .attest_node(attest)
        .await
        .map_err(|status| refused("AttestNode", &status))?
        .into_inner();
    let signature = key.sign(&challenge.challenge_nonce);
    let issued = client
        .challenge_node(ChallengeNodeRequest {
            challenge_id: challenge.challenge_id,
            node_id: node_id.hyphenated().to_string(),
            challenge_signature: signature.to_bytes().to_vec(),
            bootstrap_proof: Some(challenge_node_request::BootstrapProof::EnrollmentToken(
                token.trim().to_owned(),
            )),
        })
        .await
        .map_err(|status| refused("ChallengeNode", &status))?
        .into_inner();
    // Written only once the relay accepted the new key: a failed attempt
    // leaves an earlier identity intact.
    write_private(&dir.join(NODE_KEY), &seed).map_err(io)?;
    write_private(&dir.join(NODE_PUB), key.verifying_key().as_bytes()).map_err(io)?;
    write_private(&dir.join(ENROLLMENT_JWT), token.trim().as_bytes()).map_err(io)?;
    write_private(&dir.join(NODE_TOKEN), issued.node_security_token.as_bytes()).map_err(io)?;
    config
        .spec
        .cluster
        .controller
        .endpoint
        .clone_from(&claims.cep);
    config.spec.cluster.edge.tenant_id.clone_from(&claims.tid);
    config.write(dir).map_err(io)?;
    Ok(Enrolled {
        expires_at: issued.expires_at.map_or(0, |time| time.seconds),
        state: EdgeState {
            dir: dir.to_owned(),
            node_id,
            tenant_id: claims.tid,
            endpoint: claims.cep,
            key,
            token: issued.node_security_token,
        },
    })
}

fn random_uuid(runtime: &Runtime) -> Uuid {
    let mut bytes = [0u8; 16];
    runtime.entropy.fill(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

fn refused(rpc: &'static str, status: &tonic::Status) -> EnrollError {
    EnrollError::Refused {
        rpc,
        code: status.code(),
        message: status.message().to_owned(),
        retry_after: crate::grpc::retry_info::retry_delay(status),
    }
}

/// A plaintext h2c channel dialed through the network seam.
pub async fn channel(net: Arc<dyn Network>, endpoint: &str) -> Result<Channel, EnrollError> {
    let uri = promote_endpoint(endpoint);
    let connect_error = |reason: String| EnrollError::Connect {
        endpoint: uri.clone(),
        reason,
    };
    if uri.starts_with("https://") {
        return Err(connect_error(
            "TLS endpoints are not supported by edge-sim yet; pass --endpoint with the relay's plaintext gRPC address"
                .to_owned(),
        ));
    }
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|err| connect_error(err.to_string()))?
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    endpoint
        .connect_with_connector(tower::service_fn(move |target: Uri| {
            let net = Arc::clone(&net);
            async move {
                let host = target
                    .host()
                    .unwrap_or("127.0.0.1")
                    .trim_matches(['[', ']']);
                let port = target.port_u16().unwrap_or(80);
                let addr = match host.parse::<std::net::IpAddr>() {
                    Ok(ip) => std::net::SocketAddr::new(ip, port),
                    Err(_) => tokio::net::lookup_host((host, port))
                        .await?
                        .next()
                        .ok_or_else(|| std::io::Error::other(format!("{host} has no address")))?,
                };
                let connection = net.connect_tcp(addr).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(connection))
            }
        }))
        .await
        .map_err(|err| {
            connect_error(format!(
                "{err}: {}",
                std::error::Error::source(&err)
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ))
        })
}

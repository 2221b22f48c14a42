//! The enrollment handshake and token issuance, independent of transport:
//! gRPC handlers and REST routes call these and map [`EnrollError`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, VerifyingKey};
use uuid::Uuid;

use super::error::EnrollError;
use super::limits::{check_list, check_text, parse_uuid, MAX_TEXT_LEN, MAX_TOKEN_LEN};
use crate::auth::{cap_hash, Caller, CallerError, TokenIssuer, ENROLLMENT_TTL};
use crate::proto::cluster::{
    challenge_node_request, AttestNodeRequest, AttestNodeResponse, ChallengeNodeRequest,
    ChallengeNodeResponse, NodeCapabilities, NodeRole,
};
use crate::runtime::{Clock, Entropy};
use crate::store::{
    AttestedCapabilities, BindOutcome, Enrollment, EnrollmentOutcome, NodeChallenge, Store,
    TokenBinding,
};

/// REST body field and gRPC metadata naming the node a token may re-enroll.
pub const REPLACE_NODE_FIELD: &str = "replace_node";
/// gRPC metadata of IssueEnrollmentToken naming the node a token may re-enroll.
pub const REPLACE_NODE_METADATA: &str = "x-aegis-replace-node";

/// A freshly issued enrollment token and what to tell the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedEnrollment {
    /// The JWT.
    pub token: String,
    /// Expiry, RFC 3339.
    pub expires_at: String,
    /// What the edge will dial.
    pub controller_endpoint: String,
    /// `aegis edge enroll <token>` (with `--force` for a token that
    /// replaces a node).
    pub command_hint: String,
    /// The node this token may re-enroll, if it was issued with `replace_node`.
    pub replace_node: Option<Uuid>,
}

/// A successful ChallengeNode.
#[derive(Debug, Clone)]
pub struct Challenged {
    /// What the edge receives.
    pub response: ChallengeNodeResponse,
    /// The node, when it was already enrolled and its key was replaced: its
    /// live sessions use the old key and must end.
    pub replaced: Option<Uuid>,
}

/// Enrollment on one replica.
pub struct EnrollmentService {
    store: Arc<dyn Store>,
    tokens: Arc<TokenIssuer>,
    clock: Arc<dyn Clock>,
    entropy: Arc<dyn Entropy>,
    rotation_overlap: Duration,
}

impl std::fmt::Debug for EnrollmentService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentService")
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl EnrollmentService {
    /// A service over these parts.
    pub fn new(
        store: Arc<dyn Store>,
        tokens: Arc<TokenIssuer>,
        clock: Arc<dyn Clock>,
        entropy: Arc<dyn Entropy>,
        rotation_overlap: Duration,
    ) -> Self {
        Self {
            store,
            tokens,
            clock,
            entropy,
            rotation_overlap,
        }
    }

    pub(super) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(super) fn tokens(&self) -> &Arc<TokenIssuer> {
        &self.tokens
    }

    pub(super) fn rotation_overlap(&self) -> Duration {
        self.rotation_overlap
    }

    pub(super) fn now(&self) -> DateTime<Utc> {
        DateTime::<Utc>::from(self.clock.now())
    }

    fn random_uuid(&self) -> Uuid {
        let mut bytes = [0u8; 16];
        self.entropy.fill(&mut bytes);
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }

    /// AttestNode: checks the request and stores a fresh challenge.
    pub async fn attest(
        &self,
        request: AttestNodeRequest,
    ) -> Result<AttestNodeResponse, EnrollError> {
        let node_id = parse_uuid("node_id", &request.node_id)?;
        match NodeRole::try_from(request.role) {
            Ok(NodeRole::Edge) => {}
            Ok(NodeRole::Unspecified) => {
                return Err(EnrollError::InvalidArgument(
                    "role is required: edges send NODE_ROLE_EDGE".to_owned(),
                ))
            }
            Ok(NodeRole::Controller) => return Err(EnrollError::NotAnEdge("controller")),
            Ok(NodeRole::Worker) => return Err(EnrollError::NotAnEdge("worker")),
            Ok(NodeRole::Hybrid) => return Err(EnrollError::NotAnEdge("hybrid")),
            Ok(NodeRole::RelayCoordinator) => {
                return Err(EnrollError::NotAnEdge("relay-coordinator"))
            }
            Err(_) => {
                return Err(EnrollError::InvalidArgument(format!(
                    "role {} is not a NodeRole",
                    request.role
                )))
            }
        }
        let public_key: [u8; 32] = request.public_key.as_slice().try_into().map_err(|_| {
            EnrollError::InvalidArgument(format!(
                "public_key must be a raw 32-byte Ed25519 key, got {} bytes",
                request.public_key.len()
            ))
        })?;
        VerifyingKey::from_bytes(&public_key).map_err(|_| {
            EnrollError::InvalidArgument("public_key is not a valid Ed25519 key".to_owned())
        })?;
        let capabilities = request.capabilities.ok_or_else(|| {
            EnrollError::InvalidArgument(
                "missing capabilities: send NodeCapabilities (it may be empty)".to_owned(),
            )
        })?;
        check_text("grpc_address", &request.grpc_address, MAX_TEXT_LEN)?;
        check_text("enrolment_token", &request.enrolment_token, MAX_TOKEN_LEN)?;
        check_list(
            "capabilities.supported_runtimes",
            &capabilities.supported_runtimes,
        )?;
        check_list("capabilities.tags", &capabilities.tags)?;

        let mut nonce = vec![0u8; 32];
        self.entropy.fill(&mut nonce);
        let challenge = NodeChallenge {
            challenge_id: self.random_uuid(),
            node_id,
            nonce: nonce.clone(),
            public_key: public_key.to_vec(),
            role: "edge".to_owned(),
            capabilities: attested(capabilities),
            grpc_address: request.grpc_address,
            created_at: self.now(),
        };
        self.store.put_challenge(&challenge).await?;
        Ok(AttestNodeResponse {
            challenge_nonce: nonce,
            challenge_id: challenge.challenge_id.hyphenated().to_string(),
        })
    }

    /// ChallengeNode: proof of possession, then the enrollment token, then
    /// (only then) redemption and the edge row, in one store transaction.
    pub async fn challenge(
        &self,
        request: ChallengeNodeRequest,
    ) -> Result<Challenged, EnrollError> {
        let challenge_id = parse_uuid("challenge_id", &request.challenge_id)?;
        let node_id = parse_uuid("node_id", &request.node_id)?;
        let now = self.now();
        // Every check that needs no store read runs first (the signature's
        // shape, the enrollment token's signature and claims): a malformed
        // or forged request costs the store nothing.
        let signature = Signature::from_slice(&request.challenge_signature).map_err(|_| {
            EnrollError::Unauthenticated(format!(
                "challenge signature must be 64 bytes, got {}",
                request.challenge_signature.len()
            ))
        })?;
        let Some(challenge_node_request::BootstrapProof::EnrollmentToken(token)) =
            request.bootstrap_proof
        else {
            return Err(EnrollError::Unauthenticated(
                "edge role requires bootstrap_proof.enrollment_token".to_owned(),
            ));
        };
        let token = token.trim();
        check_text("enrollment_token", token, MAX_TOKEN_LEN)?;
        let claims = self.tokens.verify_enrollment(token, now).await?;
        let challenge = self
            .store
            .get_challenge(challenge_id, now)
            .await?
            .ok_or_else(|| {
                EnrollError::Unauthenticated(
                "challenge not found or expired: call AttestNode again (challenges last 5 minutes)"
                    .to_owned(),
            )
            })?;
        if challenge.node_id != node_id {
            return Err(EnrollError::Unauthenticated(
                "node id mismatch: this challenge was issued to another node".to_owned(),
            ));
        }
        let key_bytes: [u8; 32] = challenge.public_key.as_slice().try_into().map_err(|_| {
            EnrollError::Unauthenticated("invalid public key length on the challenge".to_owned())
        })?;
        let key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| {
            EnrollError::Unauthenticated("invalid public key on the challenge".to_owned())
        })?;
        key.verify_strict(&challenge.nonce, &signature).map_err(|_| {
            EnrollError::Unauthenticated(
                "challenge signature invalid: sign the raw challenge nonce with the key sent to AttestNode"
                    .to_owned(),
            )
        })?;
        let jti = parse_uuid("enrollment token jti", &claims.jti)?;
        let exp = DateTime::from_timestamp(claims.exp, 0).ok_or_else(|| {
            EnrollError::Unauthenticated(format!(
                "enrollment token malformed: exp {} is not a representable time",
                claims.exp
            ))
        })?;
        // Signed before redemption: a signing failure must not burn the token.
        let node_token = self
            .tokens
            .mint_node_token(node_id, &claims.tid, cap_hash(&challenge.capabilities), now)
            .await?;
        let outcome = self
            .store
            .complete_enrollment(&Enrollment {
                jti,
                tenant_id: claims.tid.clone(),
                issued_to: claims.sub.clone(),
                token_expires_at: exp,
                node_id,
                public_key: challenge.public_key.clone(),
                challenge_id,
                now,
                own_token: claims.iss == self.tokens.issuer(),
            })
            .await?;
        // AEGIS lets any token re-enroll (take over) any node id, even a revoked one
        // or one of another tenant; the store refuses all three, atomically, without
        // burning the token, unless the token was issued to replace this node.
        match outcome {
            EnrollmentOutcome::Enrolled | EnrollmentOutcome::Replaced => {}
            EnrollmentOutcome::TokenAlreadyRedeemed => {
                return Err(EnrollError::Unauthenticated(
                    "enrollment token already redeemed: a token enrolls one edge once; ask for a new one"
                        .to_owned(),
                ))
            }
            EnrollmentOutcome::NodeRevoked => return Err(EnrollError::RevokedNode(node_id)),
            EnrollmentOutcome::NodeInAnotherTenant => {
                return Err(EnrollError::Unauthenticated(format!(
                    "node id {node_id} belongs to another tenant; enroll from a fresh state \
                     directory (a new node id) or revoke it in its own tenant first"
                )))
            }
            EnrollmentOutcome::NodeAlreadyEnrolled => {
                let foreign = (claims.iss != self.tokens.issuer()).then(|| {
                    format!(
                        " from this relay (issuer {:?}; tokens of {:?} never replace a node)",
                        self.tokens.issuer(),
                        claims.iss
                    )
                });
                return Err(EnrollError::FailedPrecondition(format!(
                    "node {node_id} is already enrolled; to re-enroll it with a new key, issue an \
                     enrollment token{} with {REPLACE_NODE_FIELD}={node_id} (REST body field \
                     `{REPLACE_NODE_FIELD}`, gRPC metadata `{REPLACE_NODE_METADATA}`)",
                    foreign.unwrap_or_default()
                )));
            }
            EnrollmentOutcome::TokenBoundToAnotherNode(bound) => {
                return Err(EnrollError::FailedPrecondition(format!(
                    "this enrollment token was issued to re-enroll node {bound} \
                     ({REPLACE_NODE_FIELD}) and enrolls no other node; use it from that node's \
                     state directory (`aegis edge enroll <token> --force`), or issue a token \
                     without {REPLACE_NODE_FIELD} for node {node_id}"
                )));
            }
        }
        let replaced = (outcome == EnrollmentOutcome::Replaced).then_some(node_id);
        if replaced.is_some() {
            tracing::info!(node_id = %node_id, tenant = %claims.tid, "edge re-enrolled with a new key");
        } else {
            tracing::info!(node_id = %node_id, tenant = %claims.tid, "edge enrolled");
        }
        Ok(Challenged {
            response: ChallengeNodeResponse {
                node_security_token: node_token.token,
                expires_at: Some(prost_types::Timestamp {
                    seconds: node_token.claims.exp,
                    nanos: 0,
                }),
            },
            replaced,
        })
    }

    /// Issues an enrollment token to `caller` for `tenant` (already resolved
    /// from the tenant headers). With `replace_node` (a node id as text), the
    /// token may re-enroll that node of `tenant` with a new key, and only it.
    pub async fn issue(
        &self,
        caller: &Caller,
        tenant: &str,
        issued_to: &str,
        replace_node: Option<&str>,
    ) -> Result<IssuedEnrollment, EnrollError> {
        if !caller.may_enroll() {
            return Err(CallerError::Forbidden(format!(
                "issuing enrollment tokens needs the realm role {} or an aegis:admin / \
                 aegis:operator identity",
                crate::auth::ENROLL_ROLE
            ))
            .into());
        }
        check_text("issued_to", issued_to, MAX_TEXT_LEN)?;
        let replace_node = replace_node
            .map(|node| parse_uuid(REPLACE_NODE_FIELD, node))
            .transpose()?;
        let (jti, now) = (self.random_uuid(), self.now());
        // Bound before minting: a token is never handed out unbound by mistake.
        if let Some(node_id) = replace_node {
            self.bind(jti, node_id, tenant, now).await?;
        }
        let minted = self
            .tokens
            .mint_enrollment(tenant, issued_to, jti, now)
            .await?;
        let expires_at = DateTime::from_timestamp(minted.claims.exp, 0)
            .ok_or_else(|| {
                EnrollError::Signer(crate::auth::SignError::Backend(format!(
                    "minted token expiry {} is not a representable time",
                    minted.claims.exp
                )))
            })?
            .to_rfc3339();
        let force = if replace_node.is_some() {
            " --force"
        } else {
            ""
        };
        tracing::info!(tenant, caller = %caller.subject, replace_node = ?replace_node, "enrollment token issued");
        Ok(IssuedEnrollment {
            command_hint: format!("aegis edge enroll {}{force}", minted.token),
            token: minted.token,
            expires_at,
            controller_endpoint: minted.claims.cep,
            replace_node,
        })
    }

    /// Records that `jti` may re-enroll `node_id` of `tenant`.
    async fn bind(
        &self,
        jti: Uuid,
        node_id: Uuid,
        tenant: &str,
        now: DateTime<Utc>,
    ) -> Result<(), EnrollError> {
        let ttl = i64::try_from(ENROLLMENT_TTL.as_secs()).unwrap_or(i64::MAX);
        let expires_at = DateTime::from_timestamp(now.timestamp().saturating_add(ttl), 0)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let binding = TokenBinding {
            jti,
            node_id,
            tenant_id: tenant.to_owned(),
            expires_at,
            now,
        };
        match self.store.bind_enrollment_token(&binding).await? {
            BindOutcome::Bound => Ok(()),
            BindOutcome::NodeNotFound => Err(EnrollError::NotFound(format!(
                "{REPLACE_NODE_FIELD}: no enrolled edge {node_id} in tenant {tenant}; list the \
                 tenant's edges with `GET /v1/edge/hosts` (a host that never enrolled needs no \
                 {REPLACE_NODE_FIELD})"
            ))),
            BindOutcome::NodeRevoked => Err(EnrollError::FailedPrecondition(format!(
                "{REPLACE_NODE_FIELD}: node {node_id} was revoked, and revocation is final: it \
                 cannot be re-enrolled; enroll the host from a fresh state directory (a new node \
                 id) with a token issued without {REPLACE_NODE_FIELD}"
            ))),
        }
    }
}

fn attested(capabilities: NodeCapabilities) -> AttestedCapabilities {
    AttestedCapabilities {
        gpu_count: capabilities.gpu_count,
        vram_gb: capabilities.vram_gb,
        cpu_cores: capabilities.cpu_cores,
        available_memory_gb: capabilities.available_memory_gb,
        supported_runtimes: capabilities.supported_runtimes,
        tags: capabilities.tags,
    }
}

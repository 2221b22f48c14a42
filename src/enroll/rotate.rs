//! RotateEdgeKey (protocol.md §9): an edge replaces its key (or refreshes its
//! token with the same key). The request is signed by the current key; the
//! new key signs `SHA-256("aegis-edge-rotate" ‖ node uuid ‖ new key ‖ nonce)`.
//! The previous key stays acceptable until the overlap deadline; a nonce is
//! accepted once per edge.

use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::error::EnrollError;
use super::limits::parse_uuid;
use super::service::EnrollmentService;
use crate::auth::cap_hash;
use crate::proto::cluster::{RotateEdgeKeyInner, RotateEdgeKeyRequest, RotateEdgeKeyResponse};
use crate::store::{AttestedCapabilities, KeyRotation, RotationOutcome};

/// Domain separation prefix of the new-key proof.
const ROTATE_CONTEXT: &[u8] = b"aegis-edge-rotate";

/// The 32-byte digest the new key signs.
pub fn rotation_challenge(node_id: Uuid, new_key: &[u8], nonce: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(ROTATE_CONTEXT);
    hasher.update(node_id.as_bytes());
    hasher.update(new_key);
    hasher.update(nonce);
    hasher.finalize().into()
}

fn key(field: &str, bytes: &[u8]) -> Result<VerifyingKey, EnrollError> {
    let array: [u8; 32] = bytes.try_into().map_err(|_| {
        EnrollError::InvalidArgument(format!("{field} must be 32 bytes, got {}", bytes.len()))
    })?;
    VerifyingKey::from_bytes(&array)
        .map_err(|_| EnrollError::InvalidArgument(format!("{field} is not an Ed25519 key")))
}

fn signature(field: &str, bytes: &[u8]) -> Result<Signature, EnrollError> {
    Signature::from_slice(bytes).map_err(|_| {
        EnrollError::Unauthenticated(format!("{field} must be 64 bytes, got {}", bytes.len()))
    })
}

impl EnrollmentService {
    /// Rotates (or refreshes) an edge's key and returns a new token.
    pub async fn rotate(
        &self,
        request: RotateEdgeKeyRequest,
    ) -> Result<RotateEdgeKeyResponse, EnrollError> {
        let envelope = request.current_envelope.ok_or_else(|| {
            EnrollError::InvalidArgument("current_envelope is required".to_owned())
        })?;
        if envelope.payload.len() > 1024 {
            return Err(EnrollError::InvalidArgument(
                "current_envelope.payload is too large for a RotateEdgeKeyInner".to_owned(),
            ));
        }
        let inner = RotateEdgeKeyInner::decode(envelope.payload.as_slice()).map_err(|_| {
            EnrollError::InvalidArgument(
                "current_envelope.payload is not an encoded RotateEdgeKeyInner".to_owned(),
            )
        })?;
        let node_id = parse_uuid("node_id", &inner.node_id)?;
        if inner.new_public_key != request.new_public_key {
            return Err(EnrollError::InvalidArgument(
                "new_public_key differs from the one inside the signed envelope".to_owned(),
            ));
        }
        let new_key = key("new_public_key", &request.new_public_key)?;
        if inner.nonce.len() != 32 {
            return Err(EnrollError::InvalidArgument(format!(
                "nonce must be 32 bytes, got {}",
                inner.nonce.len()
            )));
        }
        // Every check that needs no store read runs first: a malformed or
        // forged request costs the store nothing.
        let envelope_signature = signature("current_envelope.signature", &envelope.signature)?;
        let new_key_signature =
            signature("signature_with_new_key", &request.signature_with_new_key)?;
        let challenge = rotation_challenge(node_id, new_key.as_bytes(), &inner.nonce);
        new_key
            .verify_strict(&challenge, &new_key_signature)
            .map_err(|_| {
                EnrollError::Unauthenticated(
                    "signature_with_new_key invalid: the new key must sign SHA-256(\"aegis-edge-rotate\" || node uuid || new key || nonce)"
                        .to_owned(),
                )
            })?;
        let now = self.now();
        if self.store().tombstone(node_id).await?.is_some() {
            return Err(EnrollError::Revoked);
        }
        let edge = self.store().get_edge(node_id).await?.ok_or_else(|| {
            EnrollError::Unauthenticated(
                "unknown edge: enroll it again with a new token".to_owned(),
            )
        })?;
        let verifies = |candidate: &[u8]| {
            key("stored public key", candidate).is_ok_and(|k| {
                k.verify_strict(&envelope.payload, &envelope_signature)
                    .is_ok()
            })
        };
        // The current key first; key history is read only when it fails.
        let signed_by_known_key = verifies(&edge.public_key)
            || self
                .store()
                .previous_keys(node_id, now)
                .await?
                .iter()
                .any(|previous| verifies(&previous.public_key));
        if !signed_by_known_key {
            return Err(EnrollError::Unauthenticated(
                "current_envelope signature invalid: sign the encoded RotateEdgeKeyInner with the edge's current key (a rotated-out key only counts until its overlap ends)"
                    .to_owned(),
            ));
        }
        let overlap_until = now
            + chrono::Duration::from_std(self.rotation_overlap())
                .unwrap_or_else(|_| chrono::Duration::seconds(60));
        // Signed before the swap: a signing failure leaves the key unchanged.
        let token = self
            .tokens()
            .mint_node_token(
                node_id,
                &edge.tenant_id,
                cap_hash(&AttestedCapabilities::default()),
                now,
            )
            .await?;
        let outcome = self
            .store()
            .rotate_edge_key(&KeyRotation {
                node_id,
                current_key: edge.public_key.clone(),
                new_key: new_key.to_bytes().to_vec(),
                nonce: inner.nonce,
                previous_valid_until: overlap_until,
                now,
            })
            .await?;
        match outcome {
            RotationOutcome::Rotated => {}
            RotationOutcome::NonceReused => {
                return Err(EnrollError::Unauthenticated(
                    "nonce already used: every rotation request needs a fresh 32-byte nonce".to_owned(),
                ))
            }
            RotationOutcome::KeyChanged => {
                return Err(EnrollError::Aborted(
                    "the edge's key changed while this rotation was checked; retry with the current key"
                        .to_owned(),
                ))
            }
            RotationOutcome::UnknownEdge => {
                return Err(EnrollError::Unauthenticated(
                    "unknown edge: enroll it again with a new token".to_owned(),
                ))
            }
        }
        tracing::info!(node_id = %node_id, tenant = %edge.tenant_id, same_key = (edge.public_key == new_key.to_bytes()), "edge key rotated");
        Ok(RotateEdgeKeyResponse {
            node_security_token: token.token,
            expires_at: Some(prost_types::Timestamp {
                seconds: token.claims.exp,
                nanos: 0,
            }),
            overlap_until: Some(prost_types::Timestamp {
                seconds: overlap_until.timestamp(),
                nanos: 0,
            }),
        })
    }
}

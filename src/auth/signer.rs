//! The signing seam: everything that mints a relay JWT signs through a
//! [`Signer`], and everything that checks one verifies through it, locally.

use async_trait::async_trait;

/// Why signing or verifying failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The signing backend could not be reached (retry later).
    #[error("signer unavailable: {0}")]
    Unavailable(String),
    /// The key material is missing or unusable.
    #[error("signing key: {0}")]
    Key(String),
    /// The backend answered something unexpected.
    #[error("signer: {0}")]
    Backend(String),
}

/// Signs JWS signing inputs with RS256 and verifies signatures locally.
#[async_trait]
pub trait Signer: Send + Sync + 'static {
    /// The base64url signature segment for `signing_input` (`header.claims`).
    async fn sign(&self, signing_input: &[u8]) -> Result<String, SignError>;

    /// Whether `signature` is a valid signature of `signing_input` by this
    /// signer's key (any version it knows, any scheme it accepts).
    async fn verify(&self, signing_input: &[u8], signature: &[u8]) -> Result<bool, SignError>;

    /// A description safe to log ("local key /var/lib/...", "openbao transit ...").
    fn describe(&self) -> String;

    /// Ends any task the signer runs on the ambient runtime (the replica
    /// calls it when it shuts down, so nothing outlives it); signing after
    /// it fails.
    fn stop(&self) {}
}

//! The relay's JWTs: enrollment tokens (protocol.md §4.1), NodeSecurityTokens
//! (§5.3) and dev admin tokens, minted and verified with the [`Signer`].
//!
//! Claims serialise in the contract's order (struct field order). Enrollment
//! tokens are verified step by step in the order of §4.2, each failure with
//! its own message; callers redeem the `jti` only after every check passed.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::jws::{b64url, JwsParts};
use super::signer::{SignError, Signer};
use crate::store::AttestedCapabilities;

/// `aud` of every enrollment token.
pub const ENROLLMENT_AUDIENCE: &str = "edge-enrollment";
/// Lifetime of an enrollment token.
pub const ENROLLMENT_TTL: Duration = Duration::from_secs(15 * 60);
/// Lifetime of a NodeSecurityToken (as AEGIS; never enforced on the stream,
/// because real daemons do not refresh it).
pub const NODE_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// `aud` of dev admin tokens.
pub const ADMIN_AUDIENCE: &str = "aegis-relay";
/// Clock skew tolerated on `nbf` between the issuing and the verifying replica.
const NBF_LEEWAY_SECS: i64 = 60;
/// Longest token accepted (a real one is well under 2 KiB).
const MAX_TOKEN_LEN: usize = 8 * 1024;

const HEADER: &str = r#"{"alg":"RS256","typ":"JWT"}"#;

/// Claims of an enrollment token, in the contract's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentClaims {
    /// Tenant the edge will belong to.
    pub tid: String,
    /// Display label (`issued_to`).
    pub sub: String,
    /// One-time id.
    pub jti: String,
    /// Expiry (unix seconds).
    pub exp: i64,
    /// Not before (unix seconds).
    pub nbf: i64,
    /// Always `edge-enrollment`.
    pub aud: String,
    /// Issuer.
    pub iss: String,
    /// Endpoint the daemon dials.
    pub cep: String,
}

/// Claims of a NodeSecurityToken, in the contract's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeTokenClaims {
    /// Node id.
    pub sub: String,
    /// Always `edge`.
    pub role: String,
    /// SHA-256 (hex) of the attested capabilities.
    pub cap_hash: String,
    /// Issued at.
    pub iat: i64,
    /// Expiry.
    pub exp: i64,
    /// Tenant.
    pub tid: String,
    /// Endpoint.
    pub cep: String,
}

/// Claims of a dev admin token, shaped like a Keycloak access token so the
/// same claim paths apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminClaims {
    /// Issuer (the relay's).
    pub iss: String,
    /// Subject.
    pub sub: String,
    /// Audience (`aegis-relay`).
    pub aud: String,
    /// Issued at.
    pub iat: i64,
    /// Expiry.
    pub exp: i64,
    /// Tenant claim.
    pub tenant_id: String,
    /// Operator level claim.
    pub aegis_role: String,
    /// Realm roles.
    pub realm_access: RealmAccess,
}

/// Keycloak's `realm_access` claim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealmAccess {
    /// Role names.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A minted token with its claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken<C> {
    /// The compact JWS.
    pub token: String,
    /// What it says.
    pub claims: C,
}

/// Why an enrollment token was refused, in §4.2 order.
#[derive(Debug, thiserror::Error)]
pub enum EnrollmentTokenError {
    /// Not a well-formed JWT or claims missing.
    #[error("enrollment token malformed: {0}")]
    Malformed(String),
    /// Not signed by a key this relay trusts.
    #[error("enrollment token signature invalid: it was not signed with this relay's signing key")]
    SignatureInvalid,
    /// `aud` is not `edge-enrollment`.
    #[error("enrollment token audience mismatch: got {0:?}, expected \"edge-enrollment\"")]
    Audience(String),
    /// `iss` is not an accepted issuer.
    #[error("enrollment token issuer mismatch: got {got:?}, expected one of {expected:?}")]
    Issuer {
        /// The token's issuer.
        got: String,
        /// Accepted issuers.
        expected: Vec<String>,
    },
    /// Past `exp`.
    #[error("enrollment token expired at {0}; ask for a new token")]
    Expired(String),
    /// Before `nbf`.
    #[error("enrollment token not valid before {0}; check the clocks of the issuer and the relay")]
    NotYetValid(String),
    /// `tid` is not a valid tenant id.
    #[error("enrollment token tenant invalid: {0}")]
    Tenant(String),
    /// Signing backend failed during verification.
    #[error(transparent)]
    Signer(#[from] SignError),
}

/// Mints and verifies the relay's tokens.
pub struct TokenIssuer {
    signer: Arc<dyn Signer>,
    issuer: String,
    accepted_issuers: Vec<String>,
    public_endpoint: String,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field("accepted_issuers", &self.accepted_issuers)
            .field("public_endpoint", &self.public_endpoint)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// An issuer named `issuer` that also accepts enrollment tokens from
    /// `accepted_issuers`, advertising `public_endpoint` as `cep`.
    pub fn new(
        signer: Arc<dyn Signer>,
        issuer: String,
        accepted_issuers: Vec<String>,
        public_endpoint: String,
    ) -> Self {
        let mut accepted = vec![issuer.clone()];
        for extra in accepted_issuers {
            if !accepted.contains(&extra) {
                accepted.push(extra);
            }
        }
        Self {
            signer,
            issuer,
            accepted_issuers: accepted,
            public_endpoint,
        }
    }

    /// The `cep` advertised to edges.
    pub fn public_endpoint(&self) -> &str {
        &self.public_endpoint
    }

    /// The signer (for its description).
    pub fn signer(&self) -> &Arc<dyn Signer> {
        &self.signer
    }

    async fn mint<C: Serialize>(&self, claims: C) -> Result<IssuedToken<C>, SignError> {
        let claims_json =
            serde_json::to_vec(&claims).map_err(|err| SignError::Backend(err.to_string()))?;
        let signing_input = format!("{}.{}", b64url(HEADER.as_bytes()), b64url(&claims_json));
        let signature = self.signer.sign(signing_input.as_bytes()).await?;
        Ok(IssuedToken {
            token: format!("{signing_input}.{signature}"),
            claims,
        })
    }

    /// An enrollment token for `tenant`, valid for [`ENROLLMENT_TTL`].
    pub async fn mint_enrollment(
        &self,
        tenant: &str,
        issued_to: &str,
        jti: Uuid,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken<EnrollmentClaims>, SignError> {
        let iat = now.timestamp();
        self.mint(EnrollmentClaims {
            tid: tenant.to_owned(),
            sub: issued_to.to_owned(),
            jti: jti.hyphenated().to_string(),
            exp: iat + secs(ENROLLMENT_TTL),
            nbf: iat,
            aud: ENROLLMENT_AUDIENCE.to_owned(),
            iss: self.issuer.clone(),
            cep: self.public_endpoint.clone(),
        })
        .await
    }

    /// A NodeSecurityToken for an enrolled edge.
    pub async fn mint_node_token(
        &self,
        node_id: Uuid,
        tenant: &str,
        cap_hash: String,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken<NodeTokenClaims>, SignError> {
        let iat = now.timestamp();
        self.mint(NodeTokenClaims {
            sub: node_id.hyphenated().to_string(),
            role: "edge".to_owned(),
            cap_hash,
            iat,
            exp: iat + secs(NODE_TOKEN_TTL),
            tid: tenant.to_owned(),
            cep: self.public_endpoint.clone(),
        })
        .await
    }

    /// An operator token (`aegis:admin`, tenant `aegis-system`) for `dev`.
    pub async fn mint_admin_token(
        &self,
        subject: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<IssuedToken<AdminClaims>, SignError> {
        self.mint_caller(subject, "aegis-system", "aegis:admin", &[], now, ttl)
            .await
    }

    /// A caller token of `tenant` with no operator level and the realm
    /// `roles` (tests, benchmarks and `admin-token --tenant`).
    pub async fn mint_tenant_token(
        &self,
        subject: &str,
        tenant: &str,
        roles: &[&str],
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<IssuedToken<AdminClaims>, SignError> {
        self.mint_caller(subject, tenant, "", roles, now, ttl).await
    }

    /// An operator token of `level` (`aegis:readonly`, ...), tenant
    /// `aegis-system`.
    pub async fn mint_operator_token(
        &self,
        subject: &str,
        level: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<IssuedToken<AdminClaims>, SignError> {
        self.mint_caller(subject, "aegis-system", level, &[], now, ttl)
            .await
    }

    async fn mint_caller(
        &self,
        subject: &str,
        tenant: &str,
        aegis_role: &str,
        roles: &[&str],
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<IssuedToken<AdminClaims>, SignError> {
        let iat = now.timestamp();
        self.mint(AdminClaims {
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            aud: ADMIN_AUDIENCE.to_owned(),
            iat,
            exp: iat + secs(ttl),
            tenant_id: tenant.to_owned(),
            aegis_role: aegis_role.to_owned(),
            realm_access: RealmAccess {
                roles: roles.iter().map(|role| (*role).to_owned()).collect(),
            },
        })
        .await
    }

    /// Checks an enrollment token as §4.2 orders it: shape, signature, claims,
    /// audience, issuer, validity window, tenant. The `jti` is not redeemed here.
    pub async fn verify_enrollment(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<EnrollmentClaims, EnrollmentTokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(EnrollmentTokenError::Malformed(format!(
                "{} bytes is longer than any enrollment token",
                token.len()
            )));
        }
        let parts = JwsParts::split(token.trim()).ok_or_else(|| {
            EnrollmentTokenError::Malformed("expected three base64url segments".to_owned())
        })?;
        if !self
            .signer
            .verify(parts.signing_input.as_bytes(), &parts.signature)
            .await?
        {
            return Err(EnrollmentTokenError::SignatureInvalid);
        }
        let claims: EnrollmentClaims = serde_json::from_slice(&parts.claims)
            .map_err(|err| EnrollmentTokenError::Malformed(format!("claims: {err}")))?;
        if Uuid::parse_str(&claims.jti).is_err() {
            return Err(EnrollmentTokenError::Malformed(
                "jti is not a UUID".to_owned(),
            ));
        }
        if claims.aud != ENROLLMENT_AUDIENCE {
            return Err(EnrollmentTokenError::Audience(claims.aud));
        }
        if !self.accepted_issuers.contains(&claims.iss) {
            return Err(EnrollmentTokenError::Issuer {
                got: claims.iss,
                expected: self.accepted_issuers.clone(),
            });
        }
        let now_secs = now.timestamp();
        if claims.exp <= now_secs {
            return Err(EnrollmentTokenError::Expired(rfc3339(claims.exp)));
        }
        if claims.nbf > now_secs + NBF_LEEWAY_SECS {
            return Err(EnrollmentTokenError::NotYetValid(rfc3339(claims.nbf)));
        }
        if let Err(reason) = check_tenant_id(&claims.tid) {
            return Err(EnrollmentTokenError::Tenant(reason));
        }
        Ok(claims)
    }

    /// Verifies the signature of one of this relay's own tokens and decodes
    /// its claims (expiry and audience are the caller's to check).
    pub async fn verify_own<C: DeserializeOwned>(&self, token: &str) -> Result<C, String> {
        if token.len() > MAX_TOKEN_LEN {
            return Err("token too long".to_owned());
        }
        let parts = JwsParts::split(token.trim()).ok_or("not a compact JWT")?;
        let header: serde_json::Value =
            serde_json::from_slice(&parts.header).map_err(|_| "header is not JSON")?;
        if header.get("alg").and_then(|alg| alg.as_str()) != Some("RS256") {
            return Err("algorithm must be RS256".to_owned());
        }
        let valid = self
            .signer
            .verify(parts.signing_input.as_bytes(), &parts.signature)
            .await
            .map_err(|err| err.to_string())?;
        if !valid {
            return Err("signature invalid".to_owned());
        }
        serde_json::from_slice(&parts.claims).map_err(|err| format!("claims: {err}"))
    }

    /// This relay's issuer name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

fn rfc3339(unix: i64) -> String {
    DateTime::from_timestamp(unix, 0).map_or_else(|| unix.to_string(), |time| time.to_rfc3339())
}

/// AEGIS's TenantId rule: 1-63 of `[a-z0-9-]`, not starting or ending with `-`.
pub fn check_tenant_id(tenant: &str) -> Result<(), String> {
    if is_valid_tenant_id(tenant) {
        Ok(())
    } else {
        Err(format!(
            "{tenant:?} is not a tenant id (1-63 characters of a-z, 0-9 and '-', not starting or ending with '-')"
        ))
    }
}

/// Whether `tenant` is a valid AEGIS TenantId.
pub fn is_valid_tenant_id(tenant: &str) -> bool {
    (1..=63).contains(&tenant.len())
        && tenant
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !tenant.starts_with('-')
        && !tenant.ends_with('-')
}

/// Lowercase hex SHA-256 of the serde JSON of attested capabilities.
pub fn cap_hash(capabilities: &AttestedCapabilities) -> String {
    // Serialising plain numbers and strings cannot fail; the known hash of the
    // empty capabilities is pinned by a test.
    let json = serde_json::to_vec(capabilities).unwrap_or_default();
    let digest = Sha256::digest(&json);
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests;

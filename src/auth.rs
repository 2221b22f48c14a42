//! Identity: signing and verifying the relay's JWTs (enrollment tokens,
//! NodeSecurityTokens, dev admin tokens), edge proof-of-possession, and
//! caller authentication and authorisation.
//!
//! Tokens are compact JWS with the exact claim order of the AEGIS contract
//! (protocol.md §4.1, §5.3); signing goes through one [`Signer`] trait
//! (a local RSA key file, or OpenBao Transit) and verification is always
//! local. Callers present bearer JWTs: the relay's own operator tokens or
//! OIDC access tokens from the Keycloak realm.

mod caller;
mod caller_cache;
mod command_token;
mod jws;
mod local_signer;
mod oidc;
mod openbao;
mod private_file;
mod signer;
mod tokens;

pub use caller::{
    authorize, bearer, resolve_tenant, Caller, CallerAuth, CallerError, LocalCallerAuth,
    OperatorLevel, TenantHeaders, ENROLL_ROLE, FLEET_MANAGE_ROLE,
};
pub use caller_cache::CachedCallerAuth;
pub use command_token::{
    CommandGrant, CommandTokenClaims, CommandTokenError, CommandTokens, EDGE_TOKEN_AUDIENCE,
};
pub use jws::{b64url, b64url_decode, JwsParts};
pub use local_signer::LocalSigner;
pub use oidc::{ChainCallerAuth, OidcCallerAuth};
pub use openbao::OpenBaoSigner;
pub use private_file::write_private;
pub use signer::{SignError, Signer};
pub use tokens::{
    cap_hash, is_valid_tenant_id, AdminClaims, EnrollmentClaims, EnrollmentTokenError, IssuedToken,
    NodeTokenClaims, TokenIssuer, ENROLLMENT_AUDIENCE, ENROLLMENT_TTL, NODE_TOKEN_TTL,
};

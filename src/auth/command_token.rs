//! Per-command user tokens: what an InvokeTool carries as
//! `user_security_token` when the caller supplied none.
//!
//! The daemon only checks that the field has three `.`-separated parts
//! (protocol.md §8.1), so the caller's own bearer must never go there: one
//! compromised edge could replay an operator's token everywhere. Instead each
//! command gets a compact JWS naming the caller, tenant, node and command,
//! expiring at the call's deadline, and MACed with a key that signs nothing
//! else (HMAC-SHA256, a random secret per replica). No route of the relay
//! accepts it as a bearer: its `alg` and `aud` match no caller verifier.

use aws_lc_rs::hmac;
use serde::Serialize;
use uuid::Uuid;

use super::jws::b64url;
use crate::runtime::Entropy;

/// `aud` of per-command tokens: the edge, never the relay.
pub const EDGE_TOKEN_AUDIENCE: &str = "aegis-edge";

/// Header of every per-command token.
const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Claims of a per-command token, in this order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandTokenClaims<'a> {
    /// The relay's issuer.
    pub iss: &'a str,
    /// Always [`EDGE_TOKEN_AUDIENCE`].
    pub aud: &'a str,
    /// The caller's subject.
    pub sub: &'a str,
    /// Tenant the command runs for.
    pub tid: &'a str,
    /// Node it was sent to.
    pub node: Uuid,
    /// Command id.
    pub cmd: Uuid,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// The call's deadline (unix seconds).
    pub exp: i64,
}

/// What a per-command token is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandGrant<'a> {
    /// The caller's subject.
    pub subject: &'a str,
    /// Tenant.
    pub tenant_id: &'a str,
    /// Node.
    pub node_id: Uuid,
    /// Command id.
    pub command_id: Uuid,
    /// Issued at (unix seconds).
    pub issued_at: i64,
    /// Expiry: the call's deadline (unix seconds).
    pub expires_at: i64,
}

/// Why a per-command token could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandTokenError {
    /// The claims did not serialise (never expected: strings, ids and
    /// integers); the command is not sent rather than sent without a token.
    #[error("the per-command token's claims could not be serialised: {0}")]
    Claims(String),
}

impl From<serde_json::Error> for CommandTokenError {
    fn from(err: serde_json::Error) -> Self {
        Self::Claims(err.to_string())
    }
}

/// Mints per-command tokens with this replica's own MAC key.
pub struct CommandTokens {
    key: hmac::Key,
    issuer: String,
    header_b64: String,
}

impl std::fmt::Debug for CommandTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandTokens")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl CommandTokens {
    /// A minter whose key is 32 bytes drawn from `entropy`.
    pub fn from_entropy(entropy: &dyn Entropy, issuer: impl Into<String>) -> Self {
        let mut secret = [0u8; 32];
        entropy.fill(&mut secret);
        Self::with_secret(&secret, issuer)
    }

    /// A minter with a given secret (tests, and verification in tests).
    pub fn with_secret(secret: &[u8], issuer: impl Into<String>) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            issuer: issuer.into(),
            header_b64: b64url(HEADER.as_bytes()),
        }
    }

    /// The token for `grant`.
    pub fn mint(&self, grant: &CommandGrant<'_>) -> Result<String, CommandTokenError> {
        let claims = CommandTokenClaims {
            iss: &self.issuer,
            aud: EDGE_TOKEN_AUDIENCE,
            sub: grant.subject,
            tid: grant.tenant_id,
            node: grant.node_id,
            cmd: grant.command_id,
            iat: grant.issued_at,
            exp: grant.expires_at,
        };
        let claims = serde_json::to_vec(&claims)?;
        let mut token = String::with_capacity(self.header_b64.len() + claims.len() * 4 / 3 + 48);
        token.push_str(&self.header_b64);
        token.push('.');
        token.push_str(&b64url(&claims));
        let tag = hmac::sign(&self.key, token.as_bytes());
        token.push('.');
        token.push_str(&b64url(tag.as_ref()));
        Ok(token)
    }

    /// Whether `token` carries a valid MAC of this minter (tests and
    /// diagnostics; the relay never accepts these tokens as bearers).
    pub fn verifies(&self, token: &str) -> bool {
        let Some((signing_input, tag)) = token.rsplit_once('.') else {
            return false;
        };
        let Some(tag) = super::jws::b64url_decode(tag) else {
            return false;
        };
        hmac::verify(&self.key, signing_input.as_bytes(), &tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::JwsParts;

    fn grant(command: u128) -> CommandGrant<'static> {
        CommandGrant {
            subject: "operator-1",
            tenant_id: "t-acme",
            node_id: Uuid::from_u128(7),
            command_id: Uuid::from_u128(command),
            issued_at: 1_000,
            expires_at: 1_060,
        }
    }

    #[test]
    fn tokens_are_three_part_jws_naming_the_command() -> Result<(), Box<dyn std::error::Error>> {
        let tokens = CommandTokens::with_secret(b"0123456789abcdef0123456789abcdef", "relay-x");
        let token = tokens.mint(&grant(9))?;
        let parts = JwsParts::split(&token);
        let Some(parts) = parts else {
            panic!("not three base64url segments: {token}");
        };
        let header: serde_json::Value = serde_json::from_slice(&parts.header)?;
        assert_eq!(header["alg"], "HS256");
        let claims: serde_json::Value = serde_json::from_slice(&parts.claims)?;
        assert_eq!(
            claims,
            serde_json::json!({
                "iss": "relay-x", "aud": "aegis-edge", "sub": "operator-1", "tid": "t-acme",
                "node": Uuid::from_u128(7), "cmd": Uuid::from_u128(9), "iat": 1_000, "exp": 1_060,
            })
        );
        assert_eq!(parts.signature.len(), 32);
        assert!(tokens.verifies(&token));
        Ok(())
    }

    #[test]
    fn each_command_and_each_key_gives_another_token() -> Result<(), CommandTokenError> {
        let one = CommandTokens::with_secret(b"key-one", "relay-x");
        let two = CommandTokens::with_secret(b"key-two", "relay-x");
        assert_ne!(one.mint(&grant(1))?, one.mint(&grant(2))?);
        assert_ne!(one.mint(&grant(1))?, two.mint(&grant(1))?);
        assert!(!two.verifies(&one.mint(&grant(1))?));
        let tampered = one.mint(&grant(1))?.replacen("eyJ", "eyK", 2);
        assert!(!one.verifies(&tampered));
        Ok(())
    }
}

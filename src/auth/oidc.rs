//! Caller authentication by an OIDC provider: Keycloak in production
//! (protocol.md §12.1), the `oidc-provider` stand-in of cluster/oidc in tests.
//!
//! [`OidcCallerAuth`] verifies the provider's access tokens locally against
//! its published keys (discovery, then the JWKS; see `keys`): asymmetric
//! algorithms only, the header `alg` fitting the key, `iss` equal to the
//! realm's issuer URL, `aud` when `keycloak.audience` is set, `exp` required
//! (30 s leeway). The caller's roles, tenant and operator level are read at
//! the configured claim paths; a `preferred_username` starting with
//! `service-account-` marks a Keycloak service account (which may act for
//! another tenant). [`ChainCallerAuth`] puts it beside the relay's own
//! operator tokens. Tokens are never logged.

mod claims;
mod keys;
mod verify;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use self::keys::KeyCache;
use super::{b64url_decode, Caller, CallerAuth, CallerError, LocalCallerAuth};
use crate::config::KeycloakConfig;

/// Authenticates bearer tokens issued by the Keycloak realm of a
/// [`KeycloakConfig`].
pub struct OidcCallerAuth {
    config: KeycloakConfig,
    issuer: String,
    keys: KeyCache,
}

impl std::fmt::Debug for OidcCallerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcCallerAuth")
            .field("issuer", &self.issuer)
            .field("audience", &self.config.audience)
            .finish_non_exhaustive()
    }
}

impl OidcCallerAuth {
    /// Authentication against `config`'s realm. Does no network I/O: the
    /// provider is first asked for its keys by the first token to verify.
    pub fn new(config: KeycloakConfig) -> Result<Self, CallerError> {
        let issuer = config.issuer_url();
        let keys = KeyCache::new(&issuer, config.jwks_refresh_interval)?;
        Ok(Self {
            config,
            issuer,
            keys,
        })
    }

    /// The issuer tokens must name (`<endpoint>/realms/<realm>`).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
}

#[async_trait]
impl CallerAuth for OidcCallerAuth {
    async fn authenticate(&self, bearer: &str, now: DateTime<Utc>) -> Result<Caller, CallerError> {
        let token = verify::parse(bearer)?;
        // Refuse what fails on its face before asking the provider for keys:
        // garbage costs no fetch. The claims are the same bytes the
        // signature covers, so checking them before verifying is sound.
        verify::check_claims(
            &token.claims,
            &self.issuer,
            self.config.audience.as_deref(),
            now,
        )?;
        let keys = self.keys.keys_for(token.kid.as_deref()).await?;
        let key = verify::select_key(&keys.keys, token.kid.as_deref(), token.alg)?;
        let claims = verify::verify_signature(bearer, key, token.alg)?;
        claims::caller(&claims, &self.config)
    }
}

/// Routes each token by its (unverified) `iss`: the relay's own operator
/// tokens (`dev`'s `admin.token`, `aegis-relay admin-token`) to a
/// [`LocalCallerAuth`], everything else to the OIDC provider. Routing decides
/// only who verifies; each side does its full verification, so a forged
/// `iss` gains nothing. Either side may be off (`relay.accept_local_admin_tokens`
/// false, no `keycloak:` block); its tokens are then refused with a message
/// naming the setting. The relay's issuer must differ from the realm's
/// issuer URL.
#[derive(Debug)]
pub struct ChainCallerAuth {
    relay_issuer: String,
    local: Option<LocalCallerAuth>,
    oidc: Option<OidcCallerAuth>,
}

impl ChainCallerAuth {
    /// Tokens with `iss == relay_issuer` go to `local`, others to `oidc`.
    pub fn new(
        relay_issuer: String,
        local: Option<LocalCallerAuth>,
        oidc: Option<OidcCallerAuth>,
    ) -> Self {
        Self {
            relay_issuer,
            local,
            oidc,
        }
    }
}

/// The `iss` claim of `token`, unverified; `None` when unreadable.
fn unverified_issuer(token: &str) -> Option<String> {
    let claims = b64url_decode(token.split('.').nth(1)?)?;
    match serde_json::from_slice::<Value>(&claims).ok()?.get("iss")? {
        Value::String(iss) => Some(iss.clone()),
        _ => None,
    }
}

#[async_trait]
impl CallerAuth for ChainCallerAuth {
    async fn authenticate(&self, bearer: &str, now: DateTime<Utc>) -> Result<Caller, CallerError> {
        let relay_token = bearer.len() <= verify::MAX_TOKEN_BYTES
            && unverified_issuer(bearer).as_deref() == Some(self.relay_issuer.as_str());
        match (relay_token, &self.local, &self.oidc) {
            (true, Some(local), _) => local.authenticate(bearer, now).await,
            (true, None, _) => Err(CallerError::Invalid(
                "this relay does not accept its own operator tokens; set \
                 relay.accept_local_admin_tokens: true to allow them"
                    .to_owned(),
            )),
            (false, _, Some(oidc)) => oidc.authenticate(bearer, now).await,
            (false, _, None) => Err(CallerError::Invalid(
                "this relay authenticates no OIDC callers (no keycloak.endpoint configured)"
                    .to_owned(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::b64url;

    #[test]
    fn unverified_issuer_reads_the_claims_segment_only() {
        let token = format!(
            "{}.{}.sig",
            b64url(br#"{"alg":"RS256"}"#),
            b64url(br#"{"iss":"aegis-relay-coordinator"}"#)
        );
        assert_eq!(
            unverified_issuer(&token).as_deref(),
            Some("aegis-relay-coordinator")
        );
        assert_eq!(unverified_issuer("not-a-token"), None);
        assert_eq!(
            unverified_issuer(&format!("x.{}.y", b64url(br#"{"iss":7}"#))),
            None
        );
    }

    #[tokio::test]
    async fn constructing_does_no_network_and_unreachable_idp_is_named() {
        let config = KeycloakConfig {
            // Port 9 (discard) on loopback: refused at once.
            endpoint: "http://127.0.0.1:9".into(),
            realm: "aegis-system".into(),
            audience: None,
            roles_claim: "realm_access.roles".into(),
            tenant_claim: "tenant_id".into(),
            operator_claim: "aegis_role".into(),
            jwks_refresh_interval: std::time::Duration::from_secs(300),
        };
        let auth = OidcCallerAuth::new(config);
        assert!(auth.is_ok());
        let Ok(auth) = auth else { return };
        assert_eq!(auth.issuer(), "http://127.0.0.1:9/realms/aegis-system");
        let now = crate::runtime::utc_now(&crate::runtime::SystemClock);
        let token = format!(
            "{}.{}.{}",
            b64url(br#"{"alg":"RS256","kid":"k1"}"#),
            b64url(
                format!(
                    r#"{{"iss":"http://127.0.0.1:9/realms/aegis-system","exp":{}}}"#,
                    now.timestamp() + 60
                )
                .as_bytes()
            ),
            b64url(b"sig")
        );
        let refused = auth.authenticate(&token, now).await;
        assert!(
            matches!(&refused, Err(CallerError::Invalid(why)) if why.contains("identity provider is unreachable")),
            "{refused:?}"
        );
        // Within the refetch interval the provider is not asked again; the
        // last failure is repeated.
        let again = auth.authenticate(&token, now).await;
        assert_eq!(again, refused);
    }
}

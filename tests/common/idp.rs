//! A fake OIDC realm served in-process on loopback: the discovery document
//! and a JWKS of one RSA key, and tokens signed with it carrying any claims
//! (expired ones, other issuers, any roles). The real-provider coverage is
//! tests/oidc.rs against the `oidc-provider` stand-in; this one lets a test
//! mint every kind of caller without a Node process.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use aegis_relay::config::KeycloakConfig;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::enroll::BoxError;

/// The realm of the fake provider.
pub const REALM: &str = "aegis-system";
/// The audience its tokens carry (the relay's default `keycloak.audience`).
pub const AUDIENCE: &str = "relay-coordinator";
const KID: &str = "fake-idp-key";

/// A running fake realm; stops when dropped.
pub struct FakeIdp {
    addr: SocketAddr,
    key: jsonwebtoken::EncodingKey,
    stop: CancellationToken,
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FakeIdp {
    /// Generates a key and serves the realm on 127.0.0.1.
    pub async fn start() -> Result<Self, BoxError> {
        let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| "RSA key generation failed")?;
        let public = pair.public_key();
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let jwks = json!({"keys": [{
            "kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256",
            "n": b64(public.modulus().big_endian_without_leading_zero()),
            "e": b64(public.exponent().big_endian_without_leading_zero()),
        }]});
        let der = pair.as_der().map_err(|_| "RSA key encoding failed")?;
        let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .filter_map(|chunk| std::str::from_utf8(chunk).ok())
            .collect();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        );
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes())?;

        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let issuer = format!("http://{addr}/realms/{REALM}");
        let discovery = json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/protocol/openid-connect/certs"),
        });
        let router = axum::Router::new()
            .route(
                &format!("/realms/{REALM}/.well-known/openid-configuration"),
                axum::routing::get(move || async move { axum::Json(discovery) }),
            )
            .route(
                &format!("/realms/{REALM}/protocol/openid-connect/certs"),
                axum::routing::get(move || async move { axum::Json(jwks) }),
            );
        let stop = CancellationToken::new();
        let listener = tokio::net::TcpListener::from_std(listener)?;
        tokio::spawn(
            axum::serve(listener, router)
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .into_future(),
        );
        Ok(Self { addr, key, stop })
    }

    /// Base URL (`keycloak.endpoint`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The realm's issuer URL.
    pub fn issuer(&self) -> String {
        format!("{}/realms/{REALM}", self.endpoint())
    }

    /// The relay's `keycloak:` settings for this realm (default claim paths
    /// and audience).
    pub fn keycloak_config(&self) -> KeycloakConfig {
        KeycloakConfig {
            endpoint: self.endpoint(),
            realm: REALM.to_owned(),
            audience: Some(AUDIENCE.to_owned()),
            roles_claim: "realm_access.roles".into(),
            tenant_claim: "tenant_id".into(),
            operator_claim: "aegis_role".into(),
            jwks_refresh_interval: Duration::from_secs(300),
        }
    }

    /// Claims of a valid token for 10 minutes, to adjust before `sign`.
    pub fn claims(&self, subject: &str, tenant: &str) -> Value {
        let now = aegis_relay::runtime::SystemClock.utc_now().timestamp();
        json!({
            "iss": self.issuer(), "sub": subject, "aud": AUDIENCE, "azp": "test-client",
            "iat": now, "exp": now + 600, "typ": "Bearer", "tenant_id": tenant,
            "realm_access": {"roles": []},
        })
    }

    /// Signs `claims` with the realm's key.
    pub fn sign(&self, claims: &Value) -> Result<String, BoxError> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(KID.to_owned());
        Ok(jsonwebtoken::encode(&header, claims, &self.key)?)
    }
}

/// A relay on a fresh SQLite store whose callers are this realm's tokens
/// only (`run` without `relay.accept_local_admin_tokens`).
pub async fn start_oidc_relay(idp: &FakeIdp) -> Result<super::TestRelay, BoxError> {
    let store_dir = tempfile::tempdir()?;
    let store = aegis_relay::store::SqliteStore::open(&store_dir.path().join("relay.db")).await?;
    store.migrate().await?;
    let callers = aegis_relay::auth::ChainCallerAuth::new(
        aegis_relay::config::DEFAULT_ISSUER.to_owned(),
        None,
        Some(aegis_relay::auth::OidcCallerAuth::new(
            idp.keycloak_config(),
        )?),
    );
    let mut relay = super::start_relay_authenticating(
        std::sync::Arc::new(store),
        Some(std::sync::Arc::new(callers)),
        |settings| settings.issuer = aegis_relay::config::DEFAULT_ISSUER.to_owned(),
    )
    .await?;
    relay.keep_store_dir(store_dir);
    Ok(relay)
}

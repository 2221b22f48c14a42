//! Validation of the identity blocks: `keycloak:` (caller authentication),
//! `openbao:` (Transit signing) and the relay's signing and enrollment keys
//! (`relay.signer`, `relay.signing_scheme`, `relay.attest_rate_limit`,
//! `relay.rotation_overlap`).

use std::time::Duration;

use super::error::ConfigError;
use super::expand::Env;
use super::file::{FileKeycloak, FileOpenBao, FileRateLimit};
use super::model::{
    KeycloakConfig, OpenBaoConfig, RateLimitConfig, SignerKind, SigningScheme, DEFAULT_AUDIENCE,
    DEFAULT_REALM, DEFAULT_TRANSIT_KEY,
};

/// Env var holding the AppRole role id when no file is configured.
pub const ROLE_ID_ENV: &str = "OPENBAO_ROLE_ID";
/// Env var holding the AppRole secret id when no file is configured.
pub const SECRET_ID_ENV: &str = "OPENBAO_SECRET_ID";

pub fn keycloak(block: Option<FileKeycloak>) -> Result<Option<KeycloakConfig>, ConfigError> {
    let block = block.unwrap_or_default();
    let Some(endpoint) = block.endpoint else {
        if block.realm.is_some() || block.audience.is_some() || block.claims.is_some() {
            return Err(ConfigError::invalid(
                "keycloak.endpoint",
                "missing; the other keycloak keys need the OIDC server's URL",
            ));
        }
        return Ok(None);
    };
    check_http_url("keycloak.endpoint", &endpoint)?;
    let realm = block.realm.unwrap_or_else(|| DEFAULT_REALM.to_owned());
    if realm.is_empty() || realm.contains('/') {
        return Err(ConfigError::invalid(
            "keycloak.realm",
            "must be a realm name without '/'",
        ));
    }
    let claims = block.claims.unwrap_or_default();
    let path = |key: &str, value: Option<String>, default: &str| -> Result<String, ConfigError> {
        let value = value.unwrap_or_else(|| default.to_owned());
        if value.is_empty() || value.split('.').any(str::is_empty) {
            return Err(ConfigError::invalid(
                format!("keycloak.claims.{key}"),
                format!("{value:?} is not a claim path (names joined by '.')"),
            ));
        }
        Ok(value)
    };
    Ok(Some(KeycloakConfig {
        endpoint,
        realm,
        audience: audience(block.audience)?,
        roles_claim: path("roles", claims.roles, "realm_access.roles")?,
        tenant_claim: path("tenant", claims.tenant, "tenant_id")?,
        operator_claim: path("operator", claims.operator, "aegis_role")?,
        jwks_refresh_interval: block
            .jwks_refresh_interval
            .map_or(Duration::from_secs(300), |d| d.0),
    }))
}

/// `keycloak.audience`: the relay's client by default; `"*"` for any.
fn audience(value: Option<String>) -> Result<Option<String>, ConfigError> {
    match value.as_deref().map(str::trim) {
        None => Ok(Some(DEFAULT_AUDIENCE.to_owned())),
        Some("*") => Ok(None),
        Some("") => Err(ConfigError::invalid(
            "keycloak.audience",
            format!(
                "must not be empty; leave it out for the default {DEFAULT_AUDIENCE:?}, or \
                 write \"*\" to accept any audience"
            ),
        )),
        Some(audience) => Ok(Some(audience.to_owned())),
    }
}

pub fn openbao(block: Option<FileOpenBao>) -> Result<Option<OpenBaoConfig>, ConfigError> {
    let block = block.unwrap_or_default();
    let Some(endpoint) = block.endpoint else {
        return Ok(None);
    };
    check_http_url("openbao.endpoint", &endpoint)?;
    let approle = block.approle.unwrap_or_default();
    let name = |key: &str, value: Option<String>, default: &str| -> Result<String, ConfigError> {
        let value = value.unwrap_or_else(|| default.to_owned());
        if value.is_empty() || value.contains(char::is_whitespace) {
            return Err(ConfigError::invalid(
                key.to_owned(),
                "must be a non-empty name",
            ));
        }
        Ok(value.trim_matches('/').to_owned())
    };
    Ok(Some(OpenBaoConfig {
        endpoint,
        role_id_file: approle.role_id_file,
        secret_id_file: approle.secret_id_file,
        approle_mount: name("openbao.approle.mount", approle.mount, "approle")?,
        transit_mount: name("openbao.transit_mount", block.transit_mount, "transit")?,
        transit_key: name(
            "openbao.transit_key",
            block.transit_key,
            DEFAULT_TRANSIT_KEY,
        )?,
    }))
}

/// `relay.signer`; `openbao` needs the `openbao` block and AppRole credentials.
pub fn signer(
    value: Option<String>,
    openbao: Option<&OpenBaoConfig>,
    env: &dyn Env,
) -> Result<SignerKind, ConfigError> {
    match value.as_deref() {
        None | Some("local") => Ok(SignerKind::Local),
        Some("openbao") => {
            let Some(openbao) = openbao else {
                return Err(ConfigError::invalid(
                    "relay.signer",
                    "openbao needs openbao.endpoint (the OpenBao server's URL)",
                ));
            };
            let mut missing = Vec::new();
            if openbao.role_id_file.is_none() && env.var(ROLE_ID_ENV).is_none() {
                missing.push(format!(
                    "openbao.approle.role_id_file (or env {ROLE_ID_ENV})"
                ));
            }
            if openbao.secret_id_file.is_none() && env.var(SECRET_ID_ENV).is_none() {
                missing.push(format!(
                    "openbao.approle.secret_id_file (or env {SECRET_ID_ENV})"
                ));
            }
            if missing.is_empty() {
                Ok(SignerKind::OpenBao)
            } else {
                Err(ConfigError::invalid(
                    "relay.signer",
                    format!(
                        "openbao needs AppRole credentials; set {}",
                        missing.join(" and ")
                    ),
                ))
            }
        }
        Some(other) => Err(ConfigError::invalid(
            "relay.signer",
            format!("{other:?} is not a signer; use local or openbao"),
        )),
    }
}

pub fn signing_scheme(value: Option<String>) -> Result<SigningScheme, ConfigError> {
    match value.as_deref() {
        None | Some("rs256") => Ok(SigningScheme::Rs256),
        Some("aegis-transit") => Ok(SigningScheme::AegisTransit),
        Some(other) => Err(ConfigError::invalid(
            "relay.signing_scheme",
            format!("{other:?} is not a scheme; use rs256 or aegis-transit"),
        )),
    }
}

pub fn rate_limit(block: Option<FileRateLimit>) -> Result<RateLimitConfig, ConfigError> {
    let block = block.unwrap_or_default();
    let per_second = block.per_second.unwrap_or(10.0);
    if !(per_second.is_finite() && per_second > 0.0) {
        return Err(ConfigError::invalid(
            "relay.attest_rate_limit.per_second",
            "must be a positive number",
        ));
    }
    let burst = block.burst.unwrap_or(50);
    if burst == 0 {
        return Err(ConfigError::invalid(
            "relay.attest_rate_limit.burst",
            "must be at least 1",
        ));
    }
    let mut trusted_proxies = Vec::new();
    for (index, proxy) in block.trusted_proxies.unwrap_or_default().iter().enumerate() {
        trusted_proxies.push(proxy.parse().map_err(|_| {
            ConfigError::invalid(
                format!("relay.attest_rate_limit.trusted_proxies[{index}]"),
                format!("{proxy:?} is not an IP address"),
            )
        })?);
    }
    let forwarded_header = block
        .forwarded_header
        .unwrap_or_else(|| "x-forwarded-for".to_owned())
        .to_ascii_lowercase();
    if http::HeaderName::from_bytes(forwarded_header.as_bytes()).is_err() {
        return Err(ConfigError::invalid(
            "relay.attest_rate_limit.forwarded_header",
            format!("{forwarded_header:?} is not a header name"),
        ));
    }
    Ok(RateLimitConfig {
        per_second,
        burst,
        trusted_proxies,
        forwarded_header,
    })
}

pub fn check_http_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(()),
        _ => Err(ConfigError::invalid(
            key,
            format!("{url:?} is not an http:// or https:// URL"),
        )),
    }
}

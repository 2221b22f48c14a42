//! The checks an identity provider's access token must pass, apart from
//! fetching keys: header (algorithm allow-list, `typ`, `crit`), the choice of
//! key for the header's `kid` and `alg`, the signature, and the time, issuer,
//! audience and token-type claims. Pure functions, so every refusal has a
//! unit test without a provider.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::auth::{b64url_decode, CallerError};

/// Tolerated clock skew on `exp` and `nbf`.
pub const LEEWAY_SECS: i64 = 30;

/// Longest bearer token looked at; larger ones are refused unparsed.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// The algorithms accepted: asymmetric only. `none` and the HMAC family are
/// never accepted, whatever the provider publishes (a public key used as an
/// HMAC secret is the classic confusion attack).
pub const ALLOWED: &[(&str, Algorithm)] = &[
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

fn invalid(reason: impl Into<String>) -> CallerError {
    CallerError::Invalid(reason.into())
}

/// What the relay reads from a token before it has verified anything.
#[derive(Debug, Clone, PartialEq)]
pub struct Unverified {
    /// The accepted algorithm the header names.
    pub alg: Algorithm,
    /// The header's key id.
    pub kid: Option<String>,
    /// The (not yet trusted) claims.
    pub claims: Map<String, Value>,
}

/// Splits `token` and checks its header; the claims are parsed but not
/// trusted.
pub fn parse(token: &str) -> Result<Unverified, CallerError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid(format!(
            "token is {} bytes, more than the {MAX_TOKEN_BYTES} accepted",
            token.len()
        )));
    }
    let mut segments = token.split('.');
    let (Some(header), Some(claims), Some(_signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(invalid(
            "malformed token: not a compact JWS (three base64url segments)",
        ));
    };
    let header = json_object(header, "header")?;
    let claims = json_object(claims, "claims")?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => allowed_algorithm(alg)?,
        _ => return Err(invalid("malformed token: the header has no alg")),
    };
    check_typ(header.get("typ"))?;
    if header.contains_key("crit") {
        return Err(invalid(
            "token header has critical parameters (crit), which this relay does not support",
        ));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(invalid("malformed token: kid is not a string")),
    };
    Ok(Unverified { alg, kid, claims })
}

fn json_object(segment: &str, what: &str) -> Result<Map<String, Value>, CallerError> {
    let bytes = b64url_decode(segment)
        .ok_or_else(|| invalid(format!("malformed token: the {what} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(invalid(format!(
            "malformed token: the {what} is not a JSON object"
        ))),
    }
}

/// The algorithm `alg` names, when it is on the allow-list.
pub fn allowed_algorithm(alg: &str) -> Result<Algorithm, CallerError> {
    if let Some((_, algorithm)) = ALLOWED.iter().find(|(name, _)| *name == alg) {
        return Ok(*algorithm);
    }
    let names: Vec<&str> = ALLOWED.iter().map(|(name, _)| *name).collect();
    let why = if alg.eq_ignore_ascii_case("none") {
        "unsigned tokens are never accepted"
    } else if alg.starts_with("HS") {
        "symmetric (HMAC) signatures are never accepted"
    } else {
        "not a supported asymmetric algorithm"
    };
    Err(invalid(format!(
        "algorithm {alg:?} is not allowed ({why}); allowed: {}",
        names.join(", ")
    )))
}

/// `typ`, when present, must say JWT or an access token (RFC 9068), in any
/// case and with or without `application/`.
fn check_typ(typ: Option<&Value>) -> Result<(), CallerError> {
    let Some(typ) = typ else { return Ok(()) };
    let text = typ.as_str().unwrap_or_default().to_ascii_lowercase();
    let media = text.strip_prefix("application/").unwrap_or(&text);
    if media == "jwt" || media == "at+jwt" {
        Ok(())
    } else {
        Err(invalid(format!(
            "token type (typ) {typ} is not accepted; expected JWT or at+jwt"
        )))
    }
}

/// A published key, ready to verify with.
#[derive(Debug, Clone)]
pub struct SigningKey {
    /// The JWK as published.
    pub jwk: Jwk,
    /// Its verification form.
    pub key: DecodingKey,
}

impl SigningKey {
    /// `jwk` as a verification key; `None` for keys that cannot verify
    /// signatures (encryption keys, symmetric keys, unusable parameters).
    pub fn from_jwk(jwk: Jwk) -> Option<Self> {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            return None;
        }
        if let Some(ops) = &jwk.common.key_operations {
            if !ops.iter().any(|op| matches!(op, KeyOperations::Verify)) {
                return None;
            }
        }
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
            return None;
        }
        let key = DecodingKey::from_jwk(&jwk).ok()?;
        Some(Self { jwk, key })
    }

    /// The key id.
    pub fn kid(&self) -> Option<&str> {
        self.jwk.common.key_id.as_deref()
    }

    /// Why this key cannot verify an `alg` signature, if it cannot: the key
    /// type (and curve) must fit the algorithm, and a key that names its
    /// algorithm is used for that one only.
    pub fn mismatch(&self, alg: Algorithm) -> Option<String> {
        let (kind, fits) = match &self.jwk.algorithm {
            AlgorithmParameters::RSA(_) => (
                "an RSA key".to_owned(),
                matches!(
                    alg,
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512
                ),
            ),
            AlgorithmParameters::EllipticCurve(ec) => (
                format!("an EC key on {:?}", ec.curve),
                matches!(
                    (alg, &ec.curve),
                    (Algorithm::ES256, EllipticCurve::P256)
                        | (Algorithm::ES384, EllipticCurve::P384)
                ),
            ),
            AlgorithmParameters::OctetKeyPair(okp) => (
                format!("an OKP key on {:?}", okp.curve),
                alg == Algorithm::EdDSA && okp.curve == EllipticCurve::Ed25519,
            ),
            AlgorithmParameters::OctetKey(_) => ("a symmetric key".to_owned(), false),
        };
        if !fits {
            return Some(format!("the key is {kind}"));
        }
        match self.jwk.common.key_algorithm {
            Some(key_alg) if key_alg.to_string() != format!("{alg:?}") => {
                Some(format!("the key is published for {key_alg}"))
            }
            _ => None,
        }
    }
}

/// The key that verifies a token with header `kid` and `alg`.
pub fn select_key<'a>(
    keys: &'a [SigningKey],
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<&'a SigningKey, CallerError> {
    let Some(kid) = kid else {
        let fitting: Vec<&SigningKey> = keys
            .iter()
            .filter(|key| key.mismatch(alg).is_none())
            .collect();
        return match fitting.as_slice() {
            [key] => Ok(key),
            _ => Err(invalid(format!(
                "token has no key id (kid) and the identity provider publishes {} keys for {alg:?}",
                fitting.len()
            ))),
        };
    };
    let mut reason = None;
    for key in keys.iter().filter(|key| key.kid() == Some(kid)) {
        match key.mismatch(alg) {
            None => return Ok(key),
            Some(why) => reason = Some(why),
        }
    }
    Err(match reason {
        Some(why) => invalid(format!(
            "algorithm {alg:?} does not match key {kid:?}: {why}"
        )),
        None => invalid(format!(
            "unknown key id (kid) {kid:?}: the identity provider does not publish it"
        )),
    })
}

/// Verifies `token`'s signature with `key`, returning its claims. Only
/// the signature is checked here; [`check_claims`] does the rest.
pub fn verify_signature(
    token: &str,
    key: &SigningKey,
    alg: Algorithm,
) -> Result<Map<String, Value>, CallerError> {
    let mut validation = Validation::new(alg);
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    let kid = key.kid().unwrap_or("(no kid)");
    jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
        .map(|data| data.claims)
        .map_err(|err| {
            use jsonwebtoken::errors::ErrorKind;
            match err.kind() {
                ErrorKind::InvalidSignature => invalid(format!(
                    "signature does not verify with the identity provider's key {kid:?}"
                )),
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidKeyFormat => {
                    invalid(format!("algorithm {alg:?} does not match key {kid:?}"))
                }
                other => invalid(format!("token does not verify: {other:?}")),
            }
        })
}

/// The time, issuer, audience and token-type checks.
pub fn check_claims(
    claims: &Map<String, Value>,
    issuer: &str,
    audience: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), CallerError> {
    match claims.get("iss") {
        Some(Value::String(iss)) if iss == issuer => {}
        Some(Value::String(iss)) => {
            return Err(invalid(format!(
                "wrong issuer: token issued by {iss:?}, expected {issuer:?}"
            )))
        }
        _ => {
            return Err(invalid(format!(
                "token has no issuer (iss); expected {issuer:?}"
            )))
        }
    }
    let now_secs = now.timestamp();
    let exp = time_claim(claims, "exp")?
        .ok_or_else(|| invalid("token has no expiry (exp), which is required"))?;
    if now_secs > exp.saturating_add(LEEWAY_SECS) {
        return Err(invalid(format!(
            "token expired at {} (now {}, {LEEWAY_SECS} s leeway)",
            rfc3339(exp),
            now.to_rfc3339()
        )));
    }
    if let Some(nbf) = time_claim(claims, "nbf")? {
        if now_secs.saturating_add(LEEWAY_SECS) < nbf {
            return Err(invalid(format!(
                "token not valid before {} (now {})",
                rfc3339(nbf),
                now.to_rfc3339()
            )));
        }
    }
    if let Some(wanted) = audience {
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(aud)) => vec![aud.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !audiences.contains(&wanted) {
            return Err(invalid(format!(
                "wrong audience: token is for {audiences:?}, this relay requires {wanted:?}"
            )));
        }
    }
    // Keycloak marks its tokens with a `typ` claim: `Bearer` for access
    // tokens; `ID` (ID tokens, meant for the client, not for APIs),
    // `Refresh`, and `DPoP` (bound to a key this relay cannot check) are not
    // bearer credentials.
    if let Some(typ) = claims.get("typ") {
        if !typ
            .as_str()
            .is_some_and(|typ| typ.eq_ignore_ascii_case("bearer"))
        {
            return Err(invalid(format!(
                "token type claim typ is {typ}; only Bearer access tokens are accepted (not ID, \
                 refresh or DPoP-bound tokens)"
            )));
        }
    }
    // A sender-constrained token (RFC 9449 DPoP, RFC 8705 mTLS) is only
    // good with proof of its key, which bearer authentication never sees.
    if claims.contains_key("cnf") {
        return Err(invalid(
            "token is bound to a key (cnf claim); only bearer tokens are accepted",
        ));
    }
    Ok(())
}

fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, CallerError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_i64()
            .or_else(|| value.as_f64().filter(|v| v.is_finite()).map(|v| v as i64))
            .map(Some)
            .ok_or_else(|| invalid(format!("claim {name} is not a number of seconds"))),
    }
}

fn rfc3339(secs: i64) -> String {
    DateTime::from_timestamp(secs, 0).map_or_else(|| secs.to_string(), |time| time.to_rfc3339())
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;

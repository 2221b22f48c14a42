//! Unit tests of the token checks in `verify.rs`, with keys made on the spot
//! (no identity provider needed).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::TimeZone;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use super::*;
use crate::auth::b64url;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const ISS: &str = "http://idp.test/realms/aegis-system";

fn pem(label: &str, der: &[u8]) -> String {
    let encoded = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for chunk in encoded.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// A fresh RSA key: its signing form and its published form under `kid`.
fn rsa_key(kid: &str) -> Result<(EncodingKey, SigningKey), Box<dyn std::error::Error>> {
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| "RSA keygen")?;
    let der = pair.as_der().map_err(|_| "RSA encoding")?;
    let encoding = EncodingKey::from_rsa_pem(pem("PRIVATE KEY", der.as_ref()).as_bytes())?;
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256)?;
    jwk.common.key_id = Some(kid.to_owned());
    let published = SigningKey::from_jwk(jwk).ok_or("unusable JWK")?;
    Ok((encoding, published))
}

fn ec_key(kid: &str) -> Result<(EncodingKey, SigningKey), Box<dyn std::error::Error>> {
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| "EC keygen")?;
    let der = pair.to_pkcs8v1().map_err(|_| "EC encoding")?;
    let encoding = EncodingKey::from_ec_pem(pem("PRIVATE KEY", der.as_ref()).as_bytes())?;
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256)?;
    jwk.common.key_id = Some(kid.to_owned());
    let published = SigningKey::from_jwk(jwk).ok_or("unusable JWK")?;
    Ok((encoding, published))
}

fn sign(
    alg: Algorithm,
    kid: &str,
    claims: &Value,
    key: &EncodingKey,
) -> Result<String, jsonwebtoken::errors::Error> {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key)
}

fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000, 0)
        .single()
        .unwrap_or_default()
}

fn good_claims() -> Value {
    json!({"iss": ISS, "exp": now().timestamp() + 300, "sub": "s", "typ": "Bearer"})
}

fn refused_with(result: Result<impl std::fmt::Debug, CallerError>, needle: &str) {
    match result {
        Err(CallerError::Invalid(why)) => assert!(why.contains(needle), "{why:?} lacks {needle:?}"),
        other => panic!("expected Invalid containing {needle:?}, got {other:?}"),
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[test]
fn none_hmac_and_unknown_algorithms_are_refused_before_any_key() {
    let claims = good_claims();
    refused_with(
        parse(&unsigned(&json!({"alg": "none"}), &claims)),
        "unsigned tokens",
    );
    refused_with(
        parse(&unsigned(&json!({"alg": "NONE"}), &claims)),
        "unsigned tokens",
    );
    refused_with(
        parse(&unsigned(&json!({"alg": "HS256"}), &claims)),
        "symmetric",
    );
    refused_with(
        parse(&unsigned(&json!({"alg": "ES512"}), &claims)),
        "not allowed",
    );
    refused_with(parse(&unsigned(&json!({}), &claims)), "no alg");
}

#[test]
fn header_typ_crit_and_shape() {
    let claims = good_claims();
    for typ in [
        json!("JWT"),
        json!("at+jwt"),
        json!("application/at+JWT"),
        json!("jwt"),
    ] {
        assert!(parse(&unsigned(&json!({"alg": "RS256", "typ": typ}), &claims)).is_ok());
    }
    assert!(parse(&unsigned(&json!({"alg": "RS256"}), &claims)).is_ok());
    refused_with(
        parse(&unsigned(&json!({"alg": "RS256", "typ": "JWE"}), &claims)),
        "typ",
    );
    refused_with(
        parse(&unsigned(
            &json!({"alg": "RS256", "crit": ["exp"]}),
            &claims,
        )),
        "crit",
    );
    refused_with(parse("a.b"), "malformed");
    refused_with(parse("a.b.c.d"), "malformed");
    refused_with(parse("!!.e30.x"), "base64url");
    refused_with(parse(&format!("{}.e30.", b64url(b"[1]"))), "JSON object");
    refused_with(parse(&"a".repeat(MAX_TOKEN_BYTES + 1)), "bytes");
}

#[test]
fn signature_verifies_with_the_right_key_only() -> TestResult {
    let (signing, published) = rsa_key("k1")?;
    let (other_signing, _) = rsa_key("k1")?;
    let token = sign(Algorithm::RS256, "k1", &good_claims(), &signing)?;
    let parsed = parse(&token)?;
    assert_eq!(
        (parsed.alg, parsed.kid.as_deref()),
        (Algorithm::RS256, Some("k1"))
    );
    let keys = vec![published];
    let key = select_key(&keys, parsed.kid.as_deref(), parsed.alg)?;
    let claims = verify_signature(&token, key, parsed.alg)?;
    assert_eq!(claims.get("sub"), Some(&json!("s")));

    let forged = sign(Algorithm::RS256, "k1", &good_claims(), &other_signing)?;
    refused_with(
        verify_signature(&forged, key, Algorithm::RS256),
        "signature does not verify",
    );
    // Same key, different padding scheme: the header alg decides, and PS256
    // does not verify an RS256 signature.
    let mut swapped: Vec<&str> = token.split('.').collect();
    let ps_header = b64url(br#"{"alg":"PS256","kid":"k1"}"#);
    swapped[0] = &ps_header;
    refused_with(
        verify_signature(&swapped.join("."), key, Algorithm::PS256),
        "signature does not verify",
    );
    Ok(())
}

#[test]
fn ec_keys_verify_es256() -> TestResult {
    let (signing, published) = ec_key("ec1")?;
    let token = sign(Algorithm::ES256, "ec1", &good_claims(), &signing)?;
    let keys = vec![published];
    let key = select_key(&keys, Some("ec1"), Algorithm::ES256)?;
    assert!(verify_signature(&token, key, Algorithm::ES256).is_ok());
    refused_with(select_key(&keys, Some("ec1"), Algorithm::ES384), "EC key");
    refused_with(select_key(&keys, Some("ec1"), Algorithm::RS256), "EC key");
    Ok(())
}

#[test]
fn key_choice_by_kid_type_and_published_alg() -> TestResult {
    let (_, rsa) = rsa_key("r1")?;
    let (_, ec) = ec_key("e1")?;
    let keys = vec![rsa.clone(), ec];
    refused_with(
        select_key(&keys, Some("nope"), Algorithm::RS256),
        "unknown key id",
    );
    refused_with(select_key(&keys, Some("r1"), Algorithm::ES256), "RSA key");
    // The JWK says RS256 (from_encoding_key sets alg), so PS256 is refused.
    refused_with(
        select_key(&keys, Some("r1"), Algorithm::PS256),
        "published for RS256",
    );
    // Without kid: only when exactly one key fits.
    assert!(select_key(&keys, None, Algorithm::RS256).is_ok());
    let two = vec![rsa.clone(), rsa];
    refused_with(select_key(&two, None, Algorithm::RS256), "no key id");
    Ok(())
}

#[test]
fn encryption_and_symmetric_jwks_are_not_signing_keys() -> TestResult {
    let (_, rsa) = rsa_key("r1")?;
    let mut enc = rsa.jwk.clone();
    enc.common.public_key_use = Some(PublicKeyUse::Encryption);
    assert!(SigningKey::from_jwk(enc).is_none());
    let oct: Jwk = serde_json::from_value(json!({"kty": "oct", "k": "c2VjcmV0", "kid": "h"}))?;
    assert!(SigningKey::from_jwk(oct).is_none());
    Ok(())
}

#[test]
fn issuer_is_required_and_named_both_ways() {
    let at = now();
    refused_with(
        check_claims(
            &object(json!({"iss": "http://evil/realms/x", "exp": at.timestamp() + 60})),
            ISS,
            None,
            at,
        ),
        &format!("token issued by \"http://evil/realms/x\", expected \"{ISS}\""),
    );
    refused_with(
        check_claims(&object(json!({"exp": at.timestamp() + 60})), ISS, None, at),
        "no issuer",
    );
}

#[test]
fn expiry_with_leeway_and_not_before() {
    let at = now();
    let with = |extra: Value| {
        let mut claims = object(json!({"iss": ISS}));
        claims.extend(object(extra));
        check_claims(&claims, ISS, None, at)
    };
    refused_with(with(json!({})), "no expiry");
    refused_with(with(json!({"exp": "soon"})), "not a number");
    assert!(
        with(json!({"exp": at.timestamp() - LEEWAY_SECS})).is_ok(),
        "within leeway"
    );
    refused_with(
        with(json!({"exp": at.timestamp() - LEEWAY_SECS - 1})),
        "token expired",
    );
    assert!(with(json!({"exp": (at.timestamp() + 10) as f64 + 0.5})).is_ok());
    refused_with(
        with(json!({"exp": at.timestamp() + 600, "nbf": at.timestamp() + 120})),
        "not valid before",
    );
    assert!(with(json!({"exp": at.timestamp() + 600, "nbf": at.timestamp() + 20})).is_ok());
}

#[test]
fn audience_only_when_configured() {
    let at = now();
    let claims = |aud: Value| object(json!({"iss": ISS, "exp": at.timestamp() + 60, "aud": aud}));
    assert!(check_claims(&claims(json!("anything")), ISS, None, at).is_ok());
    assert!(check_claims(&claims(json!("relay")), ISS, Some("relay"), at).is_ok());
    assert!(check_claims(&claims(json!(["account", "relay"])), ISS, Some("relay"), at).is_ok());
    refused_with(
        check_claims(&claims(json!("account")), ISS, Some("relay"), at),
        "wrong audience",
    );
    refused_with(
        check_claims(
            &object(json!({"iss": ISS, "exp": at.timestamp() + 60})),
            ISS,
            Some("relay"),
            at,
        ),
        "wrong audience",
    );
}

#[test]
fn only_unbound_bearer_access_tokens() {
    let at = now();
    let claims = |typ: &str| object(json!({"iss": ISS, "exp": at.timestamp() + 60, "typ": typ}));
    assert!(check_claims(&claims("Bearer"), ISS, None, at).is_ok());
    for typ in ["ID", "Refresh", "DPoP"] {
        refused_with(
            check_claims(&claims(typ), ISS, None, at),
            "only Bearer access tokens",
        );
    }
    let mut bound = claims("Bearer");
    bound.insert("cnf".into(), json!({"jkt": "abc"}));
    refused_with(check_claims(&bound, ISS, None, at), "bound to a key");
}

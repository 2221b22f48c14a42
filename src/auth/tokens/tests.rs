//! Token minting and the §4.2 verification order, one case per refusal.

use std::sync::Arc;

use chrono::TimeZone;

use super::*;
use crate::auth::jws::b64url_decode;
use crate::auth::local_signer::LocalSigner;

fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(1_767_225_600, 0)
        .single()
        .unwrap_or_default()
}

struct Fixture {
    issuer: TokenIssuer,
    _dir: tempfile::TempDir,
}

fn fixture() -> Result<Fixture, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let signer = LocalSigner::load_or_create(&dir.path().join("key.pem"))?;
    Ok(Fixture {
        issuer: TokenIssuer::new(
            Arc::new(signer),
            "aegis-relay-coordinator".into(),
            vec!["aegis-controller".into()],
            "http://127.0.0.1:50056".into(),
        ),
        _dir: dir,
    })
}

/// Signs arbitrary claims with the fixture's key.
async fn signed(issuer: &TokenIssuer, claims: serde_json::Value) -> Result<String, SignError> {
    Ok(issuer.mint(claims).await?.token)
}

fn claims(jti: Uuid) -> serde_json::Value {
    serde_json::json!({
        "tid": "t-acme", "sub": "host-1", "jti": jti.to_string(),
        "exp": now().timestamp() + 900, "nbf": now().timestamp(),
        "aud": "edge-enrollment", "iss": "aegis-relay-coordinator", "cep": "http://127.0.0.1:50056"
    })
}

#[tokio::test]
async fn enrollment_token_has_the_contract_shape() -> Result<(), Box<dyn std::error::Error>> {
    let f = fixture()?;
    let jti = crate::runtime::test_id();
    let minted = f
        .issuer
        .mint_enrollment("t-acme", "host-1", jti, now())
        .await?;
    let mut segments = minted.token.split('.');
    let header = b64url_decode(segments.next().ok_or("no header")?).ok_or("header b64")?;
    assert_eq!(header, br#"{"alg":"RS256","typ":"JWT"}"#);
    let body =
        String::from_utf8(b64url_decode(segments.next().ok_or("no claims")?).ok_or("claims b64")?)?;
    let expected = format!(
        r#"{{"tid":"t-acme","sub":"host-1","jti":"{jti}","exp":{},"nbf":{},"aud":"edge-enrollment","iss":"aegis-relay-coordinator","cep":"http://127.0.0.1:50056"}}"#,
        now().timestamp() + 900,
        now().timestamp()
    );
    assert_eq!(body, expected, "claims in §4.1 order");
    let verified = f.issuer.verify_enrollment(&minted.token, now()).await?;
    assert_eq!(verified, minted.claims);
    Ok(())
}

#[test]
fn cap_hash_of_empty_capabilities_matches_aegis() {
    let hash = cap_hash(&AttestedCapabilities::default());
    assert!(hash.starts_with("c3ea0799"), "{hash}");
    assert!(hash.ends_with("e5b545"), "{hash}");
}

#[tokio::test]
async fn node_token_has_the_contract_shape() -> Result<(), Box<dyn std::error::Error>> {
    let f = fixture()?;
    let node = crate::runtime::test_id();
    let minted = f
        .issuer
        .mint_node_token(node, "t-acme", "ab".into(), now())
        .await?;
    let body = b64url_decode(minted.token.split('.').nth(1).ok_or("claims")?).ok_or("b64")?;
    let text = String::from_utf8(body)?;
    assert!(
        text.starts_with(&format!(
            r#"{{"sub":"{node}","role":"edge","cap_hash":"ab","iat":"#
        )),
        "{text}"
    );
    assert!(
        text.ends_with(r#""tid":"t-acme","cep":"http://127.0.0.1:50056"}"#),
        "{text}"
    );
    Ok(())
}

async fn refusal(f: &Fixture, token: &str) -> String {
    match f.issuer.verify_enrollment(token, now()).await {
        Ok(claims) => format!("accepted: {claims:?}"),
        Err(err) => err.to_string(),
    }
}

#[tokio::test]
async fn each_check_refuses_with_its_own_message() -> Result<(), Box<dyn std::error::Error>> {
    let f = fixture()?;
    let jti = crate::runtime::test_id();
    let mut cases: Vec<(String, &str)> = vec![
        ("not-a-jwt".into(), "malformed"),
        ("a.b.c".into(), "malformed"),
        ("x".repeat(9000), "malformed"),
    ];
    let good = signed(&f.issuer, claims(jti)).await?;
    let mut tampered: Vec<&str> = good.split('.').collect();
    let other = crate::auth::jws::b64url(br#"{"tid":"t-evil"}"#);
    tampered[1] = &other;
    cases.push((tampered.join("."), "signature invalid"));
    let mut value = claims(jti);
    value["jti"] = "not-a-uuid".into();
    cases.push((signed(&f.issuer, value).await?, "jti is not a UUID"));
    let mut value = claims(jti);
    value.as_object_mut().map(|map| map.remove("cep"));
    cases.push((signed(&f.issuer, value).await?, "missing field `cep`"));
    let mut value = claims(jti);
    value["aud"] = "something-else".into();
    cases.push((signed(&f.issuer, value).await?, "audience mismatch"));
    let mut value = claims(jti);
    value["iss"] = "https://evil.example".into();
    cases.push((signed(&f.issuer, value).await?, "issuer mismatch"));
    let mut value = claims(jti);
    value["exp"] = (now().timestamp() - 1).into();
    cases.push((signed(&f.issuer, value).await?, "expired"));
    let mut value = claims(jti);
    value["nbf"] = (now().timestamp() + 600).into();
    cases.push((signed(&f.issuer, value).await?, "not valid before"));
    let mut value = claims(jti);
    value["tid"] = "Bad_Tenant".into();
    cases.push((signed(&f.issuer, value).await?, "tenant invalid"));
    for (token, expected) in cases {
        let message = refusal(&f, &token).await;
        assert!(
            message.contains(expected),
            "expected {expected:?}, got {message:?}"
        );
    }
    let mut value = claims(jti);
    value["iss"] = "aegis-controller".into();
    assert!(f
        .issuer
        .verify_enrollment(&signed(&f.issuer, value).await?, now())
        .await
        .is_ok());
    Ok(())
}

#[tokio::test]
async fn a_token_from_another_key_is_refused() -> Result<(), Box<dyn std::error::Error>> {
    let f = fixture()?;
    let other = fixture()?;
    let token = signed(&other.issuer, claims(crate::runtime::test_id())).await?;
    assert!(refusal(&f, &token).await.contains("signature invalid"));
    Ok(())
}

#[test]
fn tenant_ids_follow_the_aegis_rule() {
    for good in ["aegis-system", "t-0b8e", "u-1234abcd", "a"] {
        assert!(is_valid_tenant_id(good), "{good}");
    }
    for bad in ["", "-a", "a-", "A", "a_b", &"a".repeat(64)] {
        assert!(!is_valid_tenant_id(bad), "{bad}");
    }
}

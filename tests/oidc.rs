//! OIDC caller authentication against a real OIDC provider: the
//! `oidc-provider` stand-in for Keycloak (cluster/oidc) that cluster/test
//! starts and names in AEGIS_RELAY_TEST_OIDC_URL (realm aegis-system).
//! First `OidcCallerAuth` on its own (claims, and every refusal), then a relay
//! whose callers are a `ChainCallerAuth`, over REST and gRPC (protocol.md
//! §4.3, §12.1). Without the variable the tests skip, except under CI=true.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use aegis_relay::app::{self, RelaySettings, RunningRelay};
use aegis_relay::auth::{
    b64url, b64url_decode, CallerAuth, CallerError, ChainCallerAuth, LocalCallerAuth,
    OidcCallerAuth, OperatorLevel, Signer, TokenIssuer, ENROLL_ROLE,
};
use aegis_relay::config::KeycloakConfig;
use aegis_relay::proto::cluster::node_cluster_service_client::NodeClusterServiceClient;
use aegis_relay::proto::cluster::IssueEnrollmentTokenRequest;
use aegis_relay::runtime::Runtime;
use aegis_relay::store::SqliteStore;
use chrono::DateTime;
use serde_json::Value;

type BoxError = Box<dyn std::error::Error>;
type TestResult = Result<(), BoxError>;

const REALM: &str = "aegis-system";

/// The provider's base URL, or `None` to skip (a failure under CI=true).
fn idp() -> Result<Option<String>, BoxError> {
    Ok(common::required_tool("AEGIS_RELAY_TEST_OIDC_URL")?
        .map(|url| url.trim_end_matches('/').to_owned()))
}

fn keycloak(url: &str, realm: &str) -> KeycloakConfig {
    KeycloakConfig {
        endpoint: url.to_owned(),
        realm: realm.to_owned(),
        audience: Some("relay-coordinator".into()),
        roles_claim: "realm_access.roles".into(),
        tenant_claim: "tenant_id".into(),
        operator_claim: "aegis_role".into(),
        jwks_refresh_interval: Duration::from_secs(300),
    }
}

fn http() -> Result<reqwest::Client, BoxError> {
    Ok(reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .build()?)
}

/// An access token for `client` (secret `<client>-secret`) by the
/// client-credentials grant, as `curl -u client:secret` gets one.
async fn token(url: &str, client: &str) -> Result<String, BoxError> {
    let response = http()?
        .post(format!(
            "{url}/realms/{REALM}/protocol/openid-connect/token"
        ))
        .basic_auth(client, Some(format!("{client}-secret")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    body.get("access_token")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("no access_token for {client} ({status}): {body}").into())
}

/// A segment of a compact JWT, as JSON.
fn segment(token: &str, index: usize) -> Result<Value, BoxError> {
    let text = token.split('.').nth(index).ok_or("missing segment")?;
    let bytes = b64url_decode(text).ok_or("segment is not base64url")?;
    Ok(serde_json::from_slice(&bytes)?)
}

fn refused(result: Result<impl std::fmt::Debug, CallerError>, needles: &[&str]) {
    match result {
        Err(CallerError::Invalid(why)) => {
            for needle in needles {
                assert!(why.contains(needle), "{why:?} lacks {needle:?}");
            }
        }
        other => panic!("expected Invalid naming {needles:?}, got {other:?}"),
    }
}

async fn authenticate(
    auth: &OidcCallerAuth,
    token: &str,
) -> Result<aegis_relay::auth::Caller, CallerError> {
    auth.authenticate(token, aegis_relay::runtime::SystemClock.utc_now())
        .await
}

#[tokio::test]
async fn enroller_token_carries_tenant_and_enroll_role() -> TestResult {
    let Some(url) = idp()? else { return Ok(()) };
    let auth = OidcCallerAuth::new(keycloak(&url, REALM))?;
    let caller = authenticate(&auth, &token(&url, "enroller").await?).await?;
    assert_eq!(caller.tenant_id, "t-acme");
    assert_eq!(caller.roles, vec![ENROLL_ROLE.to_owned()]);
    assert_eq!(caller.operator, None);
    assert!(!caller.service_account);
    assert!(caller.may_enroll());
    Ok(())
}

#[tokio::test]
async fn operator_levels_come_from_the_aegis_role_claim() -> TestResult {
    let Some(url) = idp()? else { return Ok(()) };
    let auth = OidcCallerAuth::new(keycloak(&url, REALM))?;
    let admin = authenticate(&auth, &token(&url, "admin").await?).await?;
    assert_eq!(admin.operator, Some(OperatorLevel::Admin));
    assert_eq!(admin.tenant_id, "aegis-system");
    assert!(admin.roles.is_empty());
    let operator = authenticate(&auth, &token(&url, "operator").await?).await?;
    assert_eq!(operator.operator, Some(OperatorLevel::Operator));
    let reader = authenticate(&auth, &token(&url, "reader").await?).await?;
    assert_eq!((reader.operator, reader.may_enroll()), (None, false));
    Ok(())
}

#[tokio::test]
async fn service_account_by_keycloak_user_name() -> TestResult {
    let Some(url) = idp()? else { return Ok(()) };
    let auth = OidcCallerAuth::new(keycloak(&url, REALM))?;
    let svc = authenticate(&auth, &token(&url, "svc").await?).await?;
    assert!(svc.service_account);
    assert_eq!(svc.tenant_id, "t-acme");
    Ok(())
}

#[tokio::test]
async fn token_without_tenant_claim_is_refused_naming_the_claim() -> TestResult {
    let Some(url) = idp()? else { return Ok(()) };
    let auth = OidcCallerAuth::new(keycloak(&url, REALM))?;
    let mut custom = keycloak(&url, REALM);
    custom.tenant_claim = "org.tenant".into();
    let custom = OidcCallerAuth::new(custom)?;
    refused(
        authenticate(&auth, &token(&url, "notenant").await?).await,
        &["tenant claim tenant_id"],
    );
    refused(
        authenticate(&custom, &token(&url, "enroller").await?).await,
        &["tenant claim org.tenant"],
    );
    Ok(())
}

#[tokio::test]
async fn unsigned_alg_none_token_is_refused() -> TestResult {
    let Some(url) = idp()? else { return Ok(()) };
    let auth = OidcCallerAuth::new(keycloak(&url, REALM))?;
    let real = token(&url, "admin").await?;
    let claims = real.split('.').nth(1).ok_or("no claims")?;
    for header in [r#"{"alg":"none"}"#, r#"{"alg":"none","typ":"JWT"}"#] {
        let forged = format!("{}.{claims}.", b64url(header.as_bytes()));
        refused(
            authenticate(&auth, &forged).await,
            &["\"none\" is not allowed"],
        );
    }
    Ok(())
}

/// An RS256 token over `claims` signed with a key made here, under `kid`.
fn sign_with_fresh_key(kid: &str, claims: &Value) -> Result<String, BoxError> {
    use aws_lc_rs::encoding::AsDer;
    use base64::Engine;
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
        .map_err(|_| "RSA key generation failed")?;
    let der = pair.as_der().map_err(|_| "RSA key encoding failed")?;
    let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let lines: Vec<String> = body
        .as_bytes()
        .chunks(64)
        .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
        .collect();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    );
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes())?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    Ok(jsonwebtoken::encode(&header, claims, &key)?)
}

#[tokio::test]
async fn token_signed_by_another_key_is_refused() -> TestResult {
    let Some(url) = idp()? else { return Ok(()) };
    let auth = OidcCallerAuth::new(keycloak(&url, REALM))?;
    let real = token(&url, "admin").await?;
    let kid = segment(&real, 0)?
        .get("kid")
        .and_then(Value::as_str)
        .ok_or("the provider's token has no kid")?
        .to_owned();
    let forged = sign_with_fresh_key(&kid, &segment(&real, 1)?)?;
    refused(
        authenticate(&auth, &forged).await,
        &["signature does not verify"],
    );
    // The genuine token still passes: the refusal is the key's, not the claims'.
    assert!(authenticate(&auth, &real).await.is_ok());
    Ok(())
}

#[tokio::test]
async fn unknown_key_id_is_refused() -> TestResult {
    let Some(url) = idp()? else { return Ok(()) };
    let auth = OidcCallerAuth::new(keycloak(&url, REALM))?;
    let real = token(&url, "enroller").await?;
    let forged = sign_with_fresh_key("not-a-published-kid", &segment(&real, 1)?)?;
    refused(
        authenticate(&auth, &forged).await,
        &["unknown key id", "not-a-published-kid"],
    );
    // Again at once: no refetch (rate-limited), same answer.
    refused(authenticate(&auth, &forged).await, &["unknown key id"]);
    assert!(authenticate(&auth, &real).await.is_ok());
    Ok(())
}

#[tokio::test]
async fn hs256_with_the_public_key_as_secret_is_refused() -> TestResult {
    let Some(url) = idp()? else { return Ok(()) };
    let auth = OidcCallerAuth::new(keycloak(&url, REALM))?;
    let real = token(&url, "admin").await?;
    let jwks: Value = http()?
        .get(format!(
            "{url}/realms/{REALM}/protocol/openid-connect/certs"
        ))
        .send()
        .await?
        .json()
        .await?;
    let jwk = jwks.pointer("/keys/0").ok_or("the JWKS has no key")?;
    let n = jwk.get("n").and_then(Value::as_str).ok_or("no modulus")?;
    let kid = jwk.get("kid").and_then(Value::as_str).ok_or("no kid")?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    for secret in [n.as_bytes().to_vec(), jwk.to_string().into_bytes()] {
        let forged = jsonwebtoken::encode(
            &header,
            &segment(&real, 1)?,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )?;
        refused(
            authenticate(&auth, &forged).await,
            &["\"HS256\" is not allowed"],
        );
    }
    Ok(())
}

#[tokio::test]
async fn wrong_issuer_is_refused_naming_both() -> TestResult {
    let Some(url) = idp()? else { return Ok(()) };
    let other = OidcCallerAuth::new(keycloak(&url, "other-realm"))?;
    let real = token(&url, "enroller").await?;
    refused(
        authenticate(&other, &real).await,
        &[
            "wrong issuer",
            &format!("\"{url}/realms/{REALM}\""),
            &format!("\"{url}/realms/other-realm\""),
        ],
    );
    Ok(())
}

#[tokio::test]
async fn audience_is_checked_unless_any_is_configured() -> TestResult {
    let Some(url) = idp()? else { return Ok(()) };
    let real = token(&url, "enroller").await?;
    let mut config = keycloak(&url, REALM);
    config.audience = Some("other".into());
    refused(
        authenticate(&OidcCallerAuth::new(config.clone())?, &real).await,
        &["wrong audience", "\"other\""],
    );
    // `"*"` in the file: any audience.
    config.audience = None;
    assert!(authenticate(&OidcCallerAuth::new(config.clone())?, &real)
        .await
        .is_ok());
    // The stand-in's resource server audience (Keycloak: an audience mapper),
    // the relay's default.
    config.audience = Some("relay-coordinator".into());
    assert!(authenticate(&OidcCallerAuth::new(config)?, &real)
        .await
        .is_ok());
    Ok(())
}

#[tokio::test]
async fn expired_token_is_refused_after_the_leeway() -> TestResult {
    let Some(url) = idp()? else { return Ok(()) };
    let auth = OidcCallerAuth::new(keycloak(&url, REALM))?;
    let real = token(&url, "enroller").await?;
    let exp = segment(&real, 1)?
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or("no exp")?;
    let at = |secs: i64| DateTime::from_timestamp(secs, 0).ok_or("time out of range");
    // The provider's tokens live 5 minutes; judge them from later instead of
    // waiting (authenticate takes the time to judge at).
    assert!(
        auth.authenticate(&real, at(exp + 29)?).await.is_ok(),
        "within the 30 s leeway"
    );
    refused(
        auth.authenticate(&real, at(exp + 31)?).await,
        &["token expired"],
    );
    Ok(())
}

/// A relay whose callers are `ChainCallerAuth`: its own operator tokens
/// locally, everything else through the provider at `url`.
struct OidcRelay {
    relay: RunningRelay,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn start_relay(url: &str) -> Result<OidcRelay, BoxError> {
    let store_dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&store_dir.path().join("relay.db")).await?;
    store.migrate().await?;
    let key_dir = tempfile::tempdir()?;
    let signer: Arc<dyn Signer> = Arc::new(aegis_relay::auth::LocalSigner::load_or_create(
        &key_dir.path().join("key.pem"),
    )?);
    let settings = RelaySettings::local("relay-oidc", IpAddr::V4(Ipv4Addr::LOCALHOST), 0, 0);
    let local = LocalCallerAuth::new(Arc::new(TokenIssuer::new(
        Arc::clone(&signer),
        settings.issuer.clone(),
        Vec::new(),
        String::new(),
    )));
    let callers = ChainCallerAuth::new(
        settings.issuer.clone(),
        Some(local),
        Some(OidcCallerAuth::new(keycloak(url, REALM))?),
    );
    let deps = app::Dependencies {
        store: Arc::new(store),
        signer,
        callers: Some(Arc::new(callers)),
    };
    let relay = app::start(settings, Runtime::real(), deps).await?;
    Ok(OidcRelay {
        relay,
        _dirs: (store_dir, key_dir),
    })
}

/// POST /v1/edge/enrollment-tokens with `bearer` and extra headers:
/// (status, response JSON).
async fn issue_rest(
    relay: &RunningRelay,
    bearer: Option<&str>,
    extra: &[(&str, &str)],
) -> Result<(u16, Value), BoxError> {
    let authorization = bearer.map(|token| format!("Bearer {token}"));
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(value) = &authorization {
        headers.push(("authorization", value));
    }
    let (status, body) = common::http_post(
        &format!("http://{}/v1/edge/enrollment-tokens", relay.http_addr()),
        &headers,
        r#"{"issued_to":"host-1"}"#,
    )
    .await?;
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body));
    Ok((status, json))
}

/// The `tid` of the enrollment token in a 200 answer.
fn issued_tid(answer: &(u16, Value)) -> Result<String, BoxError> {
    assert_eq!(answer.0, 200, "{:?}", answer.1);
    let token = answer
        .1
        .get("token")
        .and_then(Value::as_str)
        .ok_or("no token")?;
    segment(token, 1)?
        .get("tid")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| "no tid".into())
}

#[tokio::test]
async fn rest_enroller_gets_a_token_for_its_tenant() -> TestResult {
    let Some(url) = idp()? else { return Ok(()) };
    let relay = start_relay(&url).await?;
    let enroller = token(&url, "enroller").await?;
    let answer = issue_rest(&relay.relay, Some(&enroller), &[]).await?;
    assert_eq!(issued_tid(&answer)?, "t-acme");
    common::assert_graceful(relay.relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn rest_refusals_without_token_and_without_role() -> TestResult {
    let Some(url) = idp()? else { return Ok(()) };
    let relay = start_relay(&url).await?;
    let (status, body) = issue_rest(&relay.relay, None, &[]).await?;
    assert_eq!(status, 401, "{body}");
    let reader = token(&url, "reader").await?;
    let (status, body) = issue_rest(&relay.relay, Some(&reader), &[]).await?;
    assert_eq!(status, 403, "{body}");
    assert!(body.to_string().contains(ENROLL_ROLE), "{body}");
    let notenant = token(&url, "notenant").await?;
    let (status, body) = issue_rest(&relay.relay, Some(&notenant), &[]).await?;
    assert_eq!(status, 401, "{body}");
    assert!(body.to_string().contains("tenant_id"), "{body}");
    common::assert_graceful(relay.relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn rest_tenant_headers_follow_the_identity_kind() -> TestResult {
    let Some(url) = idp()? else { return Ok(()) };
    let relay = start_relay(&url).await?;
    let relay = &relay.relay;
    let admin = token(&url, "admin").await?;
    let enroller = token(&url, "enroller").await?;
    let svc = token(&url, "svc").await?;

    let answer = issue_rest(relay, Some(&admin), &[("x-aegis-tenant", "t-other")]).await?;
    assert_eq!(
        issued_tid(&answer)?,
        "t-other",
        "admins may pick the tenant"
    );

    let answer = issue_rest(relay, Some(&enroller), &[("x-aegis-tenant", "t-other")]).await?;
    assert_eq!(
        issued_tid(&answer)?,
        "t-acme",
        "X-Aegis-Tenant is ignored for non-admins"
    );

    let (status, body) = issue_rest(relay, Some(&enroller), &[("x-tenant-id", "t-other")]).await?;
    assert_eq!(status, 403, "{body}");

    let (status, body) = issue_rest(relay, Some(&svc), &[("x-tenant-id", "t-other")]).await?;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.to_string().contains("aegis.edge.fleet.manage"),
        "a service account without the role may not delegate: {body}"
    );
    let manager = token(&url, "svc-manager").await?;
    let answer = issue_rest(relay, Some(&manager), &[("x-tenant-id", "t-other")]).await?;
    assert_eq!(
        issued_tid(&answer)?,
        "t-other",
        "service accounts with the fleet role may delegate"
    );
    Ok(())
}

#[tokio::test]
async fn relay_operator_tokens_still_work_beside_oidc() -> TestResult {
    let Some(url) = idp()? else { return Ok(()) };
    let relay = start_relay(&url).await?;
    let admin = relay
        .relay
        .tokens()
        .mint_admin_token(
            "ops",
            aegis_relay::runtime::SystemClock.utc_now(),
            Duration::from_secs(600),
        )
        .await?;
    let answer = issue_rest(&relay.relay, Some(&admin.token), &[]).await?;
    assert_eq!(issued_tid(&answer)?, "aegis-system");
    Ok(())
}

#[tokio::test]
async fn grpc_issue_enrollment_token_with_an_oidc_bearer() -> TestResult {
    let Some(url) = idp()? else { return Ok(()) };
    let relay = start_relay(&url).await?;
    let enroller = token(&url, "enroller").await?;
    let mut client = NodeClusterServiceClient::new(common::grpc_channel(&relay.relay).await?);
    let mut request = tonic::Request::new(IssueEnrollmentTokenRequest {
        issued_to: "host-1".into(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {enroller}").parse()?);
    let response = client.issue_enrollment_token(request).await?.into_inner();
    let tid = segment(&response.token, 1)?;
    assert_eq!(tid.get("tid").and_then(Value::as_str), Some("t-acme"));

    let mut anonymous = tonic::Request::new(IssueEnrollmentTokenRequest {
        issued_to: "host-1".into(),
    });
    anonymous
        .metadata_mut()
        .insert("authorization", "Bearer not.a.token".parse()?);
    let refused = client.issue_enrollment_token(anonymous).await;
    assert!(
        matches!(&refused, Err(status) if status.code() == tonic::Code::Unauthenticated),
        "{refused:?}"
    );
    common::assert_graceful(relay.relay.shutdown().await);
    Ok(())
}

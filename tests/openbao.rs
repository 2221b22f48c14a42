//! The OpenBao Transit signer against a real OpenBao (dev server started by
//! cluster/openbao.sh): both signing schemes checked by independent
//! verifiers, tokens signed the AEGIS way, concurrent signs batched, AppRole
//! token renewal and re-login, key rotation, credential errors, and
//! enrollment tokens minted and verified through the relay's `TokenIssuer`.
//!
//! The root token only sets things up (keys, policies, roles, role and
//! secret ids, rotation, revocation); the signer always logs in with
//! AppRole. Each test gets its own transit key, policy and role.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aegis_relay::auth::{b64url, b64url_decode, OpenBaoSigner, SignError, Signer, TokenIssuer};
use aegis_relay::config::{OpenBaoConfig, SigningScheme};
use aws_lc_rs::signature::{self, RsaParameters, RsaPssSaltLength, UnparsedPublicKey};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error>;

/// The shared key and role `start_openbao` creates (by the deploy bootstrap).
const SHARED_KEY: &str = "edge-enrollment-token";
const SHARED_ROLE: &str = "relay-coordinator";

/// What OpenBao's default RSA signature is: PSS with the maximum salt.
static PSS_MAX_SALT: RsaParameters =
    signature::RSA_PSS_2048_8192_SHA256.with_pss_salt_length(RsaPssSaltLength::Max);

/// The test OpenBao, driven with the root token over its HTTP API.
struct Bao(common::bao::BaoApi);

impl std::ops::Deref for Bao {
    type Target = common::bao::BaoApi;
    fn deref(&self) -> &common::bao::BaoApi {
        &self.0
    }
}

impl Bao {
    /// `None` (test skipped) when cluster/test did not start OpenBao.
    fn from_env() -> Result<Option<Self>, Error> {
        let Some(url) = common::required_tool("AEGIS_RELAY_TEST_OPENBAO_URL")? else {
            return Ok(None);
        };
        let root_token = std::env::var("AEGIS_RELAY_TEST_OPENBAO_ROOT_TOKEN")
            .map_err(|_| "AEGIS_RELAY_TEST_OPENBAO_ROOT_TOKEN must accompany the URL")?;
        Ok(Some(Self(common::bao::BaoApi::new(url, root_token)?)))
    }

    async fn role_credentials(&self, role: &str) -> Result<(String, String), Error> {
        let role_id = self
            .api("GET", &format!("auth/approle/role/{role}/role-id"), None)
            .await?["role_id"]
            .as_str()
            .ok_or("no role_id")?
            .to_owned();
        let secret_id = self
            .api("POST", &format!("auth/approle/role/{role}/secret-id"), None)
            .await?["secret_id"]
            .as_str()
            .ok_or("no secret_id")?
            .to_owned();
        Ok((role_id, secret_id))
    }

    /// The PEM public key of `version` of `key`.
    async fn public_key_der(&self, key: &str, version: u64) -> Result<Vec<u8>, Error> {
        let data = self
            .api("GET", &format!("transit/keys/{key}"), None)
            .await?;
        let pem = data["keys"][version.to_string()]["public_key"]
            .as_str()
            .ok_or("no public key")?;
        let body: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        Ok(STANDARD.decode(body)?)
    }

    /// Signs `input` with transit/sign as root, with `options` merged in.
    async fn transit_sign(&self, key: &str, input: &[u8], options: Value) -> Result<String, Error> {
        let mut body = json!({ "input": STANDARD.encode(input) });
        if let (Some(body), Some(options)) = (body.as_object_mut(), options.as_object()) {
            body.extend(options.clone());
        }
        let data = self
            .api("POST", &format!("transit/sign/{key}"), Some(body))
            .await?;
        Ok(data["signature"].as_str().ok_or("no signature")?.to_owned())
    }
}

/// A fresh transit key, a policy for it, and an AppRole role with that
/// policy (plus `role_settings`, e.g. a short `token_ttl`).
struct Fixture {
    bao: Bao,
    key: String,
    role: String,
    config: OpenBaoConfig,
}

impl Fixture {
    async fn new(role_settings: Value) -> Result<Option<Self>, Error> {
        let Some(bao) = Bao::from_env()? else {
            return Ok(None);
        };
        let id = aegis_relay::runtime::OsEntropy.uuid().simple().to_string();
        let key = format!("relay-test-{id}");
        let role = format!("relay-test-{id}");
        bao.api(
            "POST",
            &format!("transit/keys/{key}"),
            Some(json!({ "type": "rsa-2048" })),
        )
        .await?;
        let policy = format!(
            "path \"transit/sign/{key}\" {{ capabilities = [\"update\"] }}\n\
             path \"transit/verify/{key}\" {{ capabilities = [\"update\"] }}\n\
             path \"transit/keys/{key}\" {{ capabilities = [\"read\"] }}\n"
        );
        bao.api(
            "PUT",
            &format!("sys/policies/acl/{role}"),
            Some(json!({ "policy": policy })),
        )
        .await?;
        let mut settings = json!({ "token_policies": [role.clone()] });
        if let (Some(settings), Some(extra)) = (settings.as_object_mut(), role_settings.as_object())
        {
            settings.extend(extra.clone());
        }
        bao.api("POST", &format!("auth/approle/role/{role}"), Some(settings))
            .await?;
        let config = config(&bao.url, &key);
        Ok(Some(Self {
            bao,
            key,
            role,
            config,
        }))
    }

    async fn signer(&self, scheme: SigningScheme) -> Result<OpenBaoSigner, Error> {
        let (role_id, secret_id) = self.bao.role_credentials(&self.role).await?;
        Ok(OpenBaoSigner::connect(&self.config, scheme, role_id, secret_id).await?)
    }
}

fn config(url: &str, key: &str) -> OpenBaoConfig {
    OpenBaoConfig {
        endpoint: url.to_owned(),
        role_id_file: None,
        secret_id_file: None,
        approle_mount: "approle".to_owned(),
        transit_mount: "transit".to_owned(),
        transit_key: key.to_owned(),
    }
}

/// The version and raw bytes of a `vault:vN:<base64>` signature.
fn transit_signature(text: &str) -> Result<(u64, Vec<u8>), Error> {
    let mut parts = text.splitn(3, ':');
    let (prefix, version, encoded) = (parts.next(), parts.next(), parts.next());
    if prefix != Some("vault") {
        return Err(format!("not a transit signature: {text}").into());
    }
    let version = version
        .and_then(|v| v.strip_prefix('v'))
        .ok_or("no version")?
        .parse()?;
    Ok((version, STANDARD.decode(encoded.ok_or("no signature")?)?))
}

fn verifies(alg: &'static RsaParameters, der: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(alg, der)
        .verify(message, signature)
        .is_ok()
}

#[tokio::test]
async fn rs256_signs_true_pkcs1_signatures() -> Result<(), Error> {
    let Some(fixture) = Fixture::new(json!({})).await? else {
        return Ok(());
    };
    let signer = fixture.signer(SigningScheme::Rs256).await?;
    let input = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0";
    let segment = signer.sign(input).await?;
    let signature = b64url_decode(&segment).ok_or("signature segment is not base64url")?;
    assert_eq!(signature.len(), 256);
    assert!(signer.verify(input, &signature).await?);
    assert!(
        !signer
            .verify(b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ5In0", &signature)
            .await?
    );

    let der = fixture.bao.public_key_der(&fixture.key, 1).await?;
    assert!(
        verifies(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            &der,
            input,
            &signature
        ),
        "aws-lc-rs verifies it as RS256"
    );
    assert!(!verifies(&PSS_MAX_SALT, &der, input, &signature));
    assert!(signer.describe().contains(&fixture.key));
    Ok(())
}

#[tokio::test]
async fn aegis_transit_signs_default_pss_signatures() -> Result<(), Error> {
    let Some(fixture) = Fixture::new(json!({})).await? else {
        return Ok(());
    };
    let signer = fixture.signer(SigningScheme::AegisTransit).await?;
    let input = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZWdpcyJ9";
    let signature = b64url_decode(&signer.sign(input).await?).ok_or("not base64url")?;
    assert!(signer.verify(input, &signature).await?);
    assert!(!signer.verify(b"tampered.input", &signature).await?);

    let der = fixture.bao.public_key_der(&fixture.key, 1).await?;
    assert!(
        verifies(&PSS_MAX_SALT, &der, input, &signature),
        "a default transit signature is RSA-PSS with the maximum salt"
    );
    assert!(!verifies(
        &signature::RSA_PKCS1_2048_8192_SHA256,
        &der,
        input,
        &signature
    ));
    // What the AEGIS relay does to check it: a default transit/verify.
    let verdict = fixture
        .bao
        .api(
            "POST",
            &format!("transit/verify/{}", fixture.key),
            Some(json!({
                "input": STANDARD.encode(input),
                "signature": format!("vault:v1:{}", STANDARD.encode(&signature)),
            })),
        )
        .await?;
    assert_eq!(verdict["valid"], json!(true));
    Ok(())
}

#[tokio::test]
async fn signatures_made_directly_by_transit_verify_locally() -> Result<(), Error> {
    let Some(fixture) = Fixture::new(json!({})).await? else {
        return Ok(());
    };
    let signer = fixture.signer(SigningScheme::Rs256).await?;
    let input = b"eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0aWQiOiJ0In0";
    for options in [
        json!({}),
        json!({ "signature_algorithm": "pkcs1v15", "hash_algorithm": "sha2-256" }),
        json!({ "signature_algorithm": "pss", "salt_length": "hash" }),
        json!({ "signature_algorithm": "pss", "salt_length": "100" }),
    ] {
        let text = fixture
            .bao
            .transit_sign(&fixture.key, input, options.clone())
            .await?;
        let (version, signature) = transit_signature(&text)?;
        assert_eq!(version, 1);
        assert!(signer.verify(input, &signature).await?, "{options}");
        assert!(
            !signer.verify(b"other.input", &signature).await?,
            "{options}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn approle_tokens_are_renewed_and_replaced_before_they_expire() -> Result<(), Error> {
    // Each secret id allows two logins: the first, and the one needed when
    // the max TTL ends renewals. Getting by on 403-driven logins instead of
    // renewals would need a third.
    let settings = json!({ "token_ttl": "3s", "token_max_ttl": "6s", "secret_id_num_uses": 2 });
    let Some(fixture) = Fixture::new(settings).await? else {
        return Ok(());
    };
    let (role_id, secret_id) = fixture.bao.role_credentials(&fixture.role).await?;
    let signer = OpenBaoSigner::connect(
        &fixture.config,
        SigningScheme::Rs256,
        role_id.clone(),
        secret_id.clone(),
    )
    .await?;
    // Real time (OpenBao's clock): past the max TTL and 15 signatures.
    let start = tokio::time::Instant::now();
    let mut signed = 0;
    while start.elapsed() < Duration::from_secs(8) || signed < 15 {
        let input = format!("header.{signed}");
        let segment = signer
            .sign(input.as_bytes())
            .await
            .map_err(|err| format!("sign #{signed} at {:?}: {err}", start.elapsed()))?;
        let signature = b64url_decode(&segment).ok_or("not base64url")?;
        assert!(signer.verify(input.as_bytes(), &signature).await?);
        signed += 1;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    // Past a second max TTL a third login would be needed, and refused.
    assert!(start.elapsed() < Duration::from_secs(12), "{signed} signs");
    let third_login = fixture
        .bao
        .http
        .post(format!("{}/v1/auth/approle/login", fixture.bao.url))
        .json(&json!({ "role_id": role_id, "secret_id": secret_id }))
        .send()
        .await?;
    assert_eq!(
        third_login.status().as_u16(),
        400,
        "the signer logged in exactly twice (once at the max TTL)"
    );
    Ok(())
}

#[tokio::test]
async fn a_revoked_token_is_replaced_by_a_new_login() -> Result<(), Error> {
    let Some(fixture) = Fixture::new(json!({})).await? else {
        return Ok(());
    };
    let signer = fixture.signer(SigningScheme::Rs256).await?;
    signer.sign(b"before.revocation").await?;
    // Revoke every token of the fixture's role, as an operator would.
    let accessors = fixture
        .bao
        .api("LIST", "auth/token/accessors", None)
        .await?;
    let mut revoked = 0;
    for accessor in accessors["keys"].as_array().ok_or("no accessors")? {
        let info = fixture
            .bao
            .api(
                "POST",
                "auth/token/lookup-accessor",
                Some(json!({ "accessor": accessor })),
            )
            .await?;
        if info["meta"]["role_name"] == json!(fixture.role) {
            fixture
                .bao
                .api(
                    "POST",
                    "auth/token/revoke-accessor",
                    Some(json!({ "accessor": accessor })),
                )
                .await?;
            revoked += 1;
        }
    }
    assert_eq!(revoked, 1, "the signer holds one token");
    let segment = signer.sign(b"after.revocation").await?;
    let signature = b64url_decode(&segment).ok_or("not base64url")?;
    assert!(signer.verify(b"after.revocation", &signature).await?);
    Ok(())
}

#[tokio::test]
async fn rotated_key_versions_verify() -> Result<(), Error> {
    let Some(fixture) = Fixture::new(json!({})).await? else {
        return Ok(());
    };
    let signer = fixture.signer(SigningScheme::Rs256).await?;
    // Another replica that connected before the rotation and never signs.
    let replica = fixture.signer(SigningScheme::AegisTransit).await?;
    let old = b64url_decode(&signer.sign(b"signed.with-v1").await?).ok_or("not base64url")?;
    fixture
        .bao
        .api(
            "POST",
            &format!("transit/keys/{}/rotate", fixture.key),
            None,
        )
        .await?;

    let new = b64url_decode(&signer.sign(b"signed.with-v2").await?).ok_or("not base64url")?;
    let der_v2 = fixture.bao.public_key_der(&fixture.key, 2).await?;
    assert!(
        verifies(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            &der_v2,
            b"signed.with-v2",
            &new
        ),
        "the signer signed with version 2"
    );
    assert!(signer.verify(b"signed.with-v2", &new).await?);
    assert!(replica.verify(b"signed.with-v2", &new).await?);
    assert!(signer.verify(b"signed.with-v1", &old).await?);
    assert!(replica.verify(b"signed.with-v1", &old).await?);
    let aegis = fixture
        .bao
        .transit_sign(&fixture.key, b"aegis.v2", json!({}))
        .await?;
    let (version, aegis) = transit_signature(&aegis)?;
    assert_eq!(version, 2);
    assert!(replica.verify(b"aegis.v2", &aegis).await?);
    Ok(())
}

#[tokio::test]
async fn missing_credentials_are_named() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let mut config = config("http://127.0.0.1:1", SHARED_KEY);
    config.role_id_file = Some(dir.path().join("role-id"));
    let env = std::collections::BTreeMap::new();
    let err = OpenBaoSigner::approle_credentials_from(&config, &env)
        .err()
        .ok_or("a missing file and an unset env var must fail")?
        .to_string();
    assert!(err.contains("role-id"), "{err}");
    assert!(err.contains("OPENBAO_SECRET_ID"), "{err}");

    std::fs::write(dir.path().join("role-id"), "the-role\n")?;
    config.secret_id_file = Some(dir.path().join("secret-id"));
    std::fs::write(dir.path().join("secret-id"), " the-secret ")?;
    let credentials = OpenBaoSigner::approle_credentials(&config)?;
    assert_eq!(
        credentials,
        ("the-role".to_owned(), "the-secret".to_owned())
    );
    Ok(())
}

#[tokio::test]
async fn a_bad_secret_id_is_a_clear_error() -> Result<(), Error> {
    let Some(fixture) = Fixture::new(json!({})).await? else {
        return Ok(());
    };
    let (role_id, _) = fixture.bao.role_credentials(&fixture.role).await?;
    let bad_secret = "not-the-secret-id-4f1c";
    let result = OpenBaoSigner::connect(
        &fixture.config,
        SigningScheme::Rs256,
        role_id.clone(),
        bad_secret.to_owned(),
    )
    .await;
    let Err(SignError::Key(message)) = result else {
        return Err(format!("expected a key error, got {result:?}").into());
    };
    assert!(message.contains("refused the AppRole login"), "{message}");
    assert!(message.contains("invalid role or secret ID"), "{message}");
    assert!(
        !message.contains(bad_secret) && !message.contains(&role_id),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn enrollment_tokens_round_trip_through_the_token_issuer() -> Result<(), Error> {
    let Some(bao) = Bao::from_env()? else {
        return Ok(());
    };
    // The key, policy and role exactly as start_openbao sets them up.
    let config = config(&bao.url, SHARED_KEY);
    for scheme in [SigningScheme::Rs256, SigningScheme::AegisTransit] {
        let (role_id, secret_id) = bao.role_credentials(SHARED_ROLE).await?;
        let signer: Arc<dyn Signer> =
            Arc::new(OpenBaoSigner::connect(&config, scheme, role_id, secret_id).await?);
        let issuer = TokenIssuer::new(
            signer,
            "aegis-relay-coordinator".to_owned(),
            Vec::new(),
            "relay.example:50056".to_owned(),
        );
        let now = aegis_relay::runtime::SystemClock.utc_now();
        let jti = aegis_relay::runtime::OsEntropy.uuid();
        let issued = issuer
            .mint_enrollment("t-openbao", "edge-7", jti, now)
            .await?;
        let claims = issuer.verify_enrollment(&issued.token, now).await?;
        assert_eq!(claims, issued.claims);
        assert_eq!(claims.jti, jti.hyphenated().to_string());

        let mut segments: Vec<&str> = issued.token.split('.').collect();
        let forged = b64url(&[0x42; 256]);
        segments[2] = &forged;
        assert!(
            issuer
                .verify_enrollment(&segments.join("."), now)
                .await
                .is_err(),
            "{scheme:?}: a forged signature is refused"
        );
    }
    Ok(())
}

/// Concurrent signs share batched transit requests; each verifies for its input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signs_share_transit_requests_and_all_verify() -> Result<(), Error> {
    let Some(fixture) = Fixture::new(json!({})).await? else {
        return Ok(());
    };
    let signer = Arc::new(fixture.signer(SigningScheme::Rs256).await?);
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..200 {
        let signer = Arc::clone(&signer);
        let input = format!("eyJhbGciOiJSUzI1NiJ9.{index}");
        tasks.spawn(async move { (signer.sign(input.as_bytes()).await, input) });
    }
    for (segment, input) in tasks.join_all().await {
        let signature = b64url_decode(&segment?).ok_or("not base64url")?;
        assert!(signer.verify(input.as_bytes(), &signature).await?);
    }
    let requests = signer.transit_sign_requests();
    assert!(requests < 200, "200 signs took {requests} transit requests");
    Ok(())
}

/// Signing throughput with 8 concurrent signers; run with `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a measurement, not a check"]
async fn signing_throughput() -> Result<(), Error> {
    let Some(fixture) = Fixture::new(json!({})).await? else {
        return Ok(());
    };
    for scheme in [SigningScheme::Rs256, SigningScheme::AegisTransit] {
        let signer = Arc::new(fixture.signer(scheme).await?);
        let start = tokio::time::Instant::now();
        let window = Duration::from_secs(3);
        let mut tasks = Vec::new();
        for worker in 0..8 {
            let signer = Arc::clone(&signer);
            tasks.push(tokio::spawn(async move {
                let mut count = 0u64;
                while start.elapsed() < window {
                    signer
                        .sign(format!("h.{worker}.{count}").as_bytes())
                        .await?;
                    count += 1;
                }
                Ok::<u64, SignError>(count)
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += task.await??;
        }
        let elapsed = start.elapsed().as_secs_f64();
        eprintln!(
            "{scheme:?}: {total} signs in {elapsed:.1} s = {:.0} signs/s (8 concurrent)",
            total as f64 / elapsed
        );
        let verify_start = tokio::time::Instant::now();
        let signature = b64url_decode(&signer.sign(b"h.c").await?).ok_or("not base64url")?;
        for _ in 0..200 {
            assert!(signer.verify(b"h.c", &signature).await?);
        }
        eprintln!(
            "{scheme:?}: local verify {:.0} µs each",
            verify_start.elapsed().as_secs_f64() * 1e6 / 200.0
        );
    }
    Ok(())
}

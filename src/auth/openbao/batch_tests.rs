//! Unit tests of the group-commit signer in `batch.rs`: answer parsing and
//! request bodies, then whole batches against a fake OpenBao on loopback
//! (AppRole login plus a `transit/sign` that "signs" by echoing its input,
//! refuses one marked input per item, and counts its requests). The real
//! OpenBao is exercised by tests/openbao.rs.

use std::sync::atomic::AtomicU16;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::json;

use super::super::keys::KeyRing;
use super::super::session::LoginTarget;
use super::*;
use crate::auth::jws::b64url_decode;
use crate::config::Secret;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const WHAT: &str = "signing with transit key transit/sign/k";

#[test]
fn items_succeed_and_fail_independently() {
    // The shape OpenBao 2.x answers with when one item is not base64.
    let answer = json!({ "data": { "batch_results": [
        { "signature": "vault:v3:AAEC", "key_version": 3, "reference": "0" },
        { "key_version": 0, "reference": "1",
          "error": "unable to decode input as base64: illegal base64 data at input byte 0" },
        { "signature": "vault:v3:AAE", "key_version": 3, "reference": "2" },
        { "signature": "vault:v4:AwQF", "key_version": 4, "reference": "" },
        { "key_version": 0 },
    ] } });
    let results = distribute(&answer, 5, WHAT);
    assert!(matches!(&results[0], Ok((3, raw)) if raw == &[0, 1, 2]));
    assert!(
        matches!(&results[1], Err(SignError::Backend(m)) if m.contains("batch item 1: unable to decode")),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(&results[2], Err(SignError::Backend(m)) if m.contains("malformed") && m.contains("base64")),
        "{:?}",
        results[2]
    );
    assert!(matches!(&results[3], Ok((4, raw)) if raw == &[3, 4, 5]));
    assert!(
        matches!(&results[4], Err(SignError::Backend(m)) if m.contains("neither")),
        "{:?}",
        results[4]
    );
}

#[test]
fn a_malformed_answer_fails_every_item() {
    for answer in [
        json!({ "data": {} }),
        json!({ "data": { "batch_results": [ { "signature": "vault:v1:AAEC" } ] } }),
        json!({ "data": { "batch_results": [
            { "signature": "vault:v1:AAEC", "reference": "1" },
            { "signature": "vault:v1:AAEC", "reference": "0" },
        ] } }),
        Value::Null,
    ] {
        let results = distribute(&answer, 2, WHAT);
        assert_eq!(results.len(), 2);
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(SignError::Backend(m)) if m.contains("malformed"))),
            "{answer}: {results:?}"
        );
    }
}

#[test]
fn rs256_batches_ask_for_pkcs1_and_aegis_ones_for_nothing() -> Result<(), serde_json::Error> {
    let inputs = ["AAEC", "AwQF"];
    let items =
        json!([{ "input": "AAEC", "reference": "0" }, { "input": "AwQF", "reference": "1" }]);
    assert_eq!(
        serde_json::to_value(SignBatch::new(SigningScheme::Rs256, &inputs))?,
        json!({ "batch_input": items, "signature_algorithm": "pkcs1v15", "hash_algorithm": "sha2-256" })
    );
    assert_eq!(
        serde_json::to_value(SignBatch::new(SigningScheme::AegisTransit, &inputs))?,
        json!({ "batch_input": items })
    );
    Ok(())
}

#[test]
fn errors_are_copied_with_their_kind() {
    assert!(matches!(
        copy(&SignError::Unavailable("x".into())),
        SignError::Unavailable(m) if m == "x"
    ));
    assert!(matches!(copy(&SignError::Key("y".into())), SignError::Key(m) if m == "y"));
    assert!(matches!(
        copy(&SignError::Backend("z".into())),
        SignError::Backend(m) if m == "z"
    ));
}

/// The input the fake refuses, as Transit refuses an undecodable one.
const REFUSED: &[u8] = b"refuse.me";

/// The fake OpenBao's state.
#[derive(Default)]
struct Fake {
    logins: AtomicU64,
    sign_requests: AtomicU64,
    /// Tokens of logins before this one are refused with 403.
    valid_from_login: AtomicU64,
    /// When set, every sign request fails with this status.
    fail_status: AtomicU16,
}

async fn login(State(fake): State<Arc<Fake>>) -> Json<Value> {
    let login = fake.logins.fetch_add(1, Ordering::SeqCst) + 1;
    Json(json!({
        "request_id": "", "lease_id": "", "lease_duration": 0, "renewable": false, "data": null,
        "auth": {
            "client_token": format!("token-{login}"), "accessor": "", "policies": [],
            "token_policies": [], "metadata": null, "lease_duration": 3600, "renewable": true,
            "entity_id": "", "token_type": "service", "orphan": true,
        },
    }))
}

async fn sign(
    State(fake): State<Arc<Fake>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, String) {
    fake.sign_requests.fetch_add(1, Ordering::SeqCst);
    // Slow enough for concurrent callers to queue up behind a batch.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let login = headers
        .get("x-vault-token")
        .and_then(|token| token.to_str().ok())
        .and_then(|token| token.strip_prefix("token-"))
        .and_then(|login| login.parse::<u64>().ok())
        .unwrap_or(0);
    if login < fake.valid_from_login.load(Ordering::SeqCst) {
        return (
            StatusCode::FORBIDDEN,
            r#"{"errors":["permission denied"]}"#.into(),
        );
    }
    match fake.fail_status.load(Ordering::SeqCst) {
        0 => {}
        503 => {
            let body = r#"{"errors":["Vault is sealed"]}"#;
            return (StatusCode::SERVICE_UNAVAILABLE, body.into());
        }
        status => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::IM_A_TEAPOT);
            return (status, "<html>proxy error page</html>".into());
        }
    }
    let items = body["batch_input"].as_array().cloned().unwrap_or_default();
    let results: Vec<Value> = items
        .iter()
        .map(|item| {
            let input = STANDARD
                .decode(item["input"].as_str().unwrap_or_default())
                .unwrap_or_default();
            if input == REFUSED {
                json!({ "error": "refused by the fake", "reference": item["reference"] })
            } else {
                json!({
                    "signature": format!("vault:v1:{}", STANDARD.encode(&input)),
                    "key_version": 1,
                    "reference": item["reference"],
                })
            }
        })
        .collect();
    let answer = json!({ "data": { "batch_results": results } });
    (StatusCode::OK, answer.to_string())
}

/// A fake OpenBao on loopback and a batcher logged in to it.
async fn fake_signer() -> Result<(Arc<Fake>, Batcher), Box<dyn std::error::Error>> {
    use crate::net::{AxumListener, Network, TokioNetwork};
    let listener = TokioNetwork
        .bind_tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await?;
    let endpoint = format!("http://{}", listener.local_addr());
    let fake = Arc::new(Fake::default());
    let router = axum::Router::new()
        .route("/v1/auth/approle/login", post(login))
        .route("/v1/transit/sign/k", post(sign))
        .with_state(Arc::clone(&fake));
    tokio::spawn(async move { axum::serve(AxumListener(listener), router).await });
    let sessions = Sessions::login(LoginTarget {
        endpoint,
        mount: "approle".to_owned(),
        role_id: Secret::new("role"),
        secret_id: Secret::new("secret"),
    })
    .await?;
    let batcher = Batcher::start(Target {
        sessions: Arc::new(sessions),
        keys: Arc::new(KeyCache::new(KeyRing::default(), Duration::from_secs(5))),
        mount: "transit".to_owned(),
        key: "k".to_owned(),
        scheme: SigningScheme::Rs256,
    })?;
    Ok((fake, batcher))
}

/// Signs `inputs` concurrently; each caller's result, in input order.
async fn sign_all(batcher: &Arc<Batcher>, inputs: &[Vec<u8>]) -> Vec<Result<String, SignError>> {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, input) in inputs.iter().cloned().enumerate() {
        let batcher = Arc::clone(batcher);
        tasks.spawn(async move { (index, batcher.sign(&input).await) });
    }
    let mut results: Vec<_> = tasks.join_all().await;
    results.sort_by_key(|(index, _)| *index);
    results.into_iter().map(|(_, result)| result).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_requests_and_an_item_error_fails_only_its_caller() -> TestResult {
    let (fake, batcher) = fake_signer().await?;
    let batcher = Arc::new(batcher);
    let inputs: Vec<Vec<u8>> = (0..100)
        .map(|i| match i {
            37 => REFUSED.to_vec(),
            _ => format!("header.claims-{i}").into_bytes(),
        })
        .collect();
    let results = sign_all(&batcher, &inputs).await;
    for (input, result) in inputs.iter().zip(&results) {
        if input == REFUSED {
            assert!(
                matches!(result, Err(SignError::Backend(m)) if m.contains("refused by the fake")),
                "{result:?}"
            );
        } else {
            // The fake's "signature" is the input: each caller got its own.
            let segment = result.as_ref().map_err(|err| err.to_string())?;
            assert_eq!(b64url_decode(segment).as_ref(), Some(input));
        }
    }
    let requests = fake.sign_requests.load(Ordering::SeqCst);
    assert_eq!(requests, batcher.requests());
    assert!(
        requests < 20,
        "100 concurrent signs took {requests} requests"
    );
    // Idle again: a lone signature goes out at once, alone.
    batcher.sign(b"lone").await?;
    assert_eq!(batcher.requests(), requests + 1);
    Ok(())
}

#[tokio::test]
async fn a_refused_token_logs_in_again_and_the_batch_is_retried() -> TestResult {
    let (fake, batcher) = fake_signer().await?;
    let batcher = Arc::new(batcher);
    fake.valid_from_login.store(2, Ordering::SeqCst);
    let inputs: Vec<Vec<u8>> = (0..10).map(|i| format!("h.{i}").into_bytes()).collect();
    for (input, result) in inputs.iter().zip(sign_all(&batcher, &inputs).await) {
        assert_eq!(b64url_decode(&result?).as_ref(), Some(input));
    }
    assert_eq!(fake.logins.load(Ordering::SeqCst), 2, "one re-login in all");
    Ok(())
}

#[tokio::test]
async fn a_failed_request_fails_its_whole_batch_with_the_right_kind() -> TestResult {
    let (fake, batcher) = fake_signer().await?;
    let batcher = Arc::new(batcher);
    let inputs: Vec<Vec<u8>> = (0..5).map(|i| format!("h.{i}").into_bytes()).collect();
    for (status, unavailable) in [(503, true), (502, true), (500, false)] {
        fake.fail_status.store(status, Ordering::SeqCst);
        for result in sign_all(&batcher, &inputs).await {
            match result {
                Err(SignError::Unavailable(m)) if unavailable => {
                    assert!(m.contains(&format!("status {status}")), "{m}")
                }
                Err(SignError::Backend(m)) if !unavailable => {
                    assert!(m.contains(&format!("status {status}")), "{m}")
                }
                other => return Err(format!("status {status}: {other:?}").into()),
            }
        }
    }
    fake.fail_status.store(0, Ordering::SeqCst);
    assert!(batcher.sign(b"recovered").await.is_ok());
    Ok(())
}

#[tokio::test]
async fn dropping_the_batcher_stops_its_workers() -> TestResult {
    let (_fake, batcher) = fake_signer().await?;
    batcher.sign(b"one").await?;
    let shared = Arc::downgrade(&batcher.shared);
    drop(batcher);
    // Every worker holds the shared state: it is freed once all are gone.
    tokio::time::timeout(Duration::from_secs(5), async {
        while shared.strong_count() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .map_err(|_| "worker tasks outlive the batcher")?;
    Ok(())
}

#[tokio::test]
async fn a_stopped_batcher_ends_its_workers_and_refuses_to_sign() -> TestResult {
    let (_fake, batcher) = fake_signer().await?;
    batcher.sign(b"one").await?;
    batcher.stop();
    let refused = tokio::time::timeout(Duration::from_secs(5), batcher.sign(b"two")).await?;
    assert!(
        matches!(&refused, Err(SignError::Unavailable(why)) if why.contains("stopped")),
        "{refused:?}"
    );
    // Only the batcher itself still holds the shared state.
    tokio::time::timeout(Duration::from_secs(5), async {
        while Arc::strong_count(&batcher.shared) > 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .map_err(|_| "worker tasks outlive stop")?;
    Ok(())
}

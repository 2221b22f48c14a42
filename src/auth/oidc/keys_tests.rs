//! Unit tests of the key cache in `keys.rs` against a minimal provider on
//! loopback that counts its discovery requests: rate-limited refetching,
//! ageing out, and the reasons given when the realm is wrong.

use std::sync::atomic::{AtomicUsize, Ordering};

use axum::routing::get;
use axum::Json;
use serde_json::json;

use super::*;

/// A minimal provider on loopback that counts discovery requests.
struct Idp {
    issuer: String,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

async fn idp() -> std::io::Result<Idp> {
    use crate::net::{AxumListener, Network, TokioNetwork};
    let listener = TokioNetwork
        .bind_tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await?;
    let issuer = format!("http://{}/realms/r", listener.local_addr());
    let fetches = Arc::new(AtomicUsize::new(0));
    let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/certs")});
    // Any base64url modulus makes a well-formed JWK; nothing is verified here.
    let jwks = json!({"keys": [
        {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "k1", "n": "sXchDaQebHnP", "e": "AQAB"},
        {"kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "kid": "e1", "n": "sXchDaQebHnP", "e": "AQAB"},
        {"kty": "oct", "kid": "h1", "k": "c2VjcmV0"},
    ]});
    let counter = Arc::clone(&fetches);
    let router = axum::Router::new()
        .route(
            "/realms/r/.well-known/openid-configuration",
            get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let body = discovery.clone();
                async move { Json(body) }
            }),
        )
        .route("/realms/r/certs", get(move || async move { Json(jwks) }));
    let task = tokio::spawn(async move {
        let _ = axum::serve(AxumListener(listener), router).await;
    });
    Ok(Idp {
        issuer,
        fetches,
        task,
    })
}

#[tokio::test]
async fn a_flood_of_unknown_kids_does_not_refetch() -> Result<(), Box<dyn std::error::Error>> {
    let idp = idp().await?;
    let cache = Arc::new(KeyCache::new(&idp.issuer, Duration::from_secs(300))?);
    let set = cache.keys_for(Some("k1")).await?;
    let kids: Vec<Option<&str>> = set.keys.iter().map(SigningKey::kid).collect();
    assert_eq!(
        kids,
        vec![Some("k1")],
        "encryption and symmetric keys are dropped"
    );
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..50 {
        let cache = Arc::clone(&cache);
        flood.spawn(async move { cache.keys_for(Some(&format!("made-up-{i}"))).await });
    }
    while let Some(result) = flood.join_next().await {
        let refused = result?;
        assert!(
            matches!(&refused, Err(CallerError::Invalid(why)) if why.contains("unknown key id")),
            "{refused:?}"
        );
    }
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1, "one fetch in all");
    assert!(cache.keys_for(Some("k1")).await.is_ok());
    assert!(cache.keys_for(None).await.is_ok());
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 1);
    idp.task.abort();
    Ok(())
}

#[tokio::test]
async fn unknown_kid_refetches_once_the_interval_has_passed(
) -> Result<(), Box<dyn std::error::Error>> {
    let idp = idp().await?;
    let cache = KeyCache::new(&idp.issuer, Duration::from_secs(300))?;
    assert!(cache.keys_for(Some("k1")).await.is_ok());
    tokio::time::pause();
    tokio::time::advance(MIN_REFETCH + Duration::from_secs(1)).await;
    tokio::time::resume();
    let refused = cache.keys_for(Some("rotated")).await;
    assert!(
        matches!(refused, Err(CallerError::Invalid(_))),
        "{refused:?}"
    );
    assert_eq!(
        idp.fetches.load(Ordering::SeqCst),
        2,
        "a rotation is looked for"
    );
    idp.task.abort();
    Ok(())
}

#[tokio::test]
async fn aged_out_keys_are_refetched() -> Result<(), Box<dyn std::error::Error>> {
    let idp = idp().await?;
    let cache = KeyCache::new(&idp.issuer, Duration::from_secs(60))?;
    assert!(cache.keys_for(Some("k1")).await.is_ok());
    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(61)).await;
    tokio::time::resume();
    assert!(cache.keys_for(Some("k1")).await.is_ok());
    assert_eq!(idp.fetches.load(Ordering::SeqCst), 2);
    idp.task.abort();
    Ok(())
}

#[tokio::test]
async fn wrong_realm_is_reported_with_a_hint() -> Result<(), Box<dyn std::error::Error>> {
    let idp = idp().await?;
    let issuer = idp.issuer.replace("/realms/r", "/realms/x");
    let cache = KeyCache::new(&issuer, Duration::from_secs(60))?;
    let refused = cache.keys_for(Some("k1")).await;
    assert!(
        matches!(&refused, Err(CallerError::Invalid(why)) if why.contains("404") && why.contains("keycloak.realm")),
        "{refused:?}"
    );
    idp.task.abort();
    Ok(())
}

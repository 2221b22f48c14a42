//! REST conventions every route follows: 405 with the JSON error body and
//! `Allow`, `WWW-Authenticate: Bearer` on 401, an `x-request-id` on every
//! response, and database error text never sent to a client.

mod common;

use std::sync::Arc;

use aegis_relay::store::SqliteStore;
use common::enroll::admin_bearer;
use common::{start_relay_with, TestResult};
use serde_json::Value;

type BoxError = Box<dyn std::error::Error>;

async fn send(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, reqwest::header::HeaderMap, String), BoxError> {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .timeout(std::time::Duration::from_secs(30));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    Ok((status, headers, response.text().await?))
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test]
async fn errors_follow_the_conventions_and_hide_database_text() -> TestResult {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("relay.db");
    let store = SqliteStore::open(&db).await?;
    store.migrate().await?;
    let relay = start_relay_with(Arc::new(store), |_| {}).await?;
    let http = format!("http://{}", relay.http_addr());
    let admin = admin_bearer(&relay).await?;

    // 405: JSON body, and Allow names what the route takes.
    let (status, headers, body) =
        send(reqwest::Method::PUT, &format!("{http}/v1/edge/hosts"), &[]).await?;
    assert_eq!(status, 405, "{body}");
    let json: Value = serde_json::from_str(&body)?;
    assert_eq!(json["status"], 405);
    assert_eq!(json["code"], "method_not_allowed");
    assert!(
        json["message"].as_str().unwrap_or_default().contains("GET"),
        "{body}"
    );
    assert!(header(&headers, "allow").contains("GET"), "{headers:?}");
    assert!(header(&headers, "content-type").starts_with("application/json"));

    // 401: a bearer challenge, with error= once a token was sent.
    let hosts = format!("{http}/v1/edge/hosts");
    let (status, headers, _) = send(reqwest::Method::GET, &hosts, &[]).await?;
    assert_eq!(status, 401);
    assert_eq!(
        header(&headers, "www-authenticate"),
        r#"Bearer realm="aegis-relay""#
    );
    let (status, headers, _) = send(
        reqwest::Method::GET,
        &hosts,
        &[("authorization", "Bearer a.b.c")],
    )
    .await?;
    assert_eq!(status, 401);
    assert_eq!(
        header(&headers, "www-authenticate"),
        r#"Bearer realm="aegis-relay", error="invalid_token""#
    );

    // Request ids: generated when absent (a UUID), kept when sent, on every
    // kind of answer.
    let (_, headers, _) = send(reqwest::Method::GET, &format!("{http}/healthz"), &[]).await?;
    let generated = header(&headers, "x-request-id");
    assert_eq!(uuid::Uuid::parse_str(generated)?.get_version_num(), 4);
    let (_, again, _) = send(reqwest::Method::GET, &format!("{http}/healthz"), &[]).await?;
    assert_ne!(
        header(&again, "x-request-id"),
        generated,
        "ids are per request"
    );
    let (status, headers, _) = send(
        reqwest::Method::GET,
        &format!("{http}/no/such/route"),
        &[("x-request-id", "trace-42")],
    )
    .await?;
    assert_eq!(
        (status, header(&headers, "x-request-id")),
        (404, "trace-42")
    );

    // A database failure: the client learns where to look, not the text.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await?;
    sqlx::query("DROP TABLE edge_groups").execute(&pool).await?;
    pool.close().await;
    let (status, headers, body) = send(
        reqwest::Method::GET,
        &format!("{http}/v1/edge/groups"),
        &[("authorization", admin.as_str())],
    )
    .await?;
    assert_eq!(status, 500, "{body}");
    let json: Value = serde_json::from_str(&body)?;
    assert_eq!(json["code"], "internal");
    assert!(
        !body.contains("edge_groups") && !body.contains("no such table"),
        "{body}"
    );
    assert!(body.contains("x-request-id"), "{body}");
    assert!(!header(&headers, "x-request-id").is_empty());
    assert_eq!(
        relay.shutdown().await,
        aegis_relay::app::ShutdownOutcome::Graceful
    );
    Ok(())
}

//! Shared fixtures of the integration tests: an in-process relay on
//! ephemeral loopback ports, clients for it, and polling with a deadline.

#![allow(dead_code)] // each test binary uses a different subset

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use std::sync::Arc;

use aegis_relay::app::{self, RelaySettings, RunningRelay};
use aegis_relay::runtime::Runtime;
use aegis_relay::store::SqliteStore;
use tonic::transport::Channel;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A relay started by a test, with its temporary SQLite store.
pub struct TestRelay {
    relay: RunningRelay,
    _dir: Option<tempfile::TempDir>,
    _store_dir: Option<tempfile::TempDir>,
}

impl std::ops::Deref for TestRelay {
    type Target = RunningRelay;
    fn deref(&self) -> &RunningRelay {
        &self.relay
    }
}

impl TestRelay {
    /// Keeps `dir` (the relay's store) alive as long as the relay.
    pub fn keep_store_dir(&mut self, dir: tempfile::TempDir) {
        self._store_dir = Some(dir);
    }

    /// Drains and stops the relay. The outcome must be looked at: a test
    /// with live edges asserts `Graceful` (a drain that had to abort work is
    /// a bug those tests exist to catch).
    #[must_use = "assert the outcome, e.g. assert_graceful(relay.shutdown().await)"]
    pub async fn shutdown(self) -> app::ShutdownOutcome {
        self.relay.shutdown().await
    }
}

/// Fails unless `outcome` is `Graceful`.
pub fn assert_graceful(outcome: app::ShutdownOutcome) {
    assert_eq!(
        outcome,
        app::ShutdownOutcome::Graceful,
        "the drain had to abort work"
    );
}

/// Starts a relay on 127.0.0.1 with ephemeral ports and a fresh SQLite store.
pub async fn start_relay(drain_timeout: Duration) -> Result<TestRelay, Box<dyn std::error::Error>> {
    start_relay_configured(|settings| settings.drain_timeout = drain_timeout).await
}

/// Like [`start_relay`], after `configure` adjusts the settings.
pub async fn start_relay_configured(
    configure: impl FnOnce(&mut RelaySettings),
) -> Result<TestRelay, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("relay.db")).await?;
    store.migrate().await?;
    let mut relay = start_relay_with(Arc::new(store), configure).await?;
    relay._store_dir = Some(dir);
    Ok(relay)
}

/// Starts a relay on 127.0.0.1 with ephemeral ports on `store`, after
/// `configure` adjusts its settings.
pub async fn start_relay_with(
    store: Arc<dyn aegis_relay::store::Store>,
    configure: impl FnOnce(&mut RelaySettings),
) -> Result<TestRelay, Box<dyn std::error::Error>> {
    start_relay_authenticating(store, None, configure).await
}

/// As [`start_relay_with`], with `callers` authenticating callers (`None`:
/// the relay's own operator tokens).
pub async fn start_relay_authenticating(
    store: Arc<dyn aegis_relay::store::Store>,
    callers: Option<Arc<dyn aegis_relay::auth::CallerAuth>>,
    configure: impl FnOnce(&mut RelaySettings),
) -> Result<TestRelay, Box<dyn std::error::Error>> {
    let mut settings = RelaySettings::local("relay-test", IpAddr::V4(Ipv4Addr::LOCALHOST), 0, 0);
    // Every test client shares 127.0.0.1: the rate-limit test sets its own.
    settings.attest_rate_limit.per_second = 10_000.0;
    settings.attest_rate_limit.burst = 10_000;
    configure(&mut settings);
    let key_dir = tempfile::tempdir()?;
    let signer = aegis_relay::auth::LocalSigner::load_or_create(&key_dir.path().join("key.pem"))?;
    let deps = app::Dependencies {
        store,
        signer: Arc::new(signer),
        callers,
    };
    let relay = app::start(settings, Runtime::real(), deps).await?;
    Ok(TestRelay {
        relay,
        _dir: Some(key_dir),
        _store_dir: None,
    })
}

/// A gRPC channel to the relay's cluster port.
pub async fn grpc_channel(relay: &RunningRelay) -> Result<Channel, Box<dyn std::error::Error>> {
    let endpoint = Channel::from_shared(format!("http://{}", relay.grpc_addr()))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10));
    Ok(endpoint.connect().await?)
}

/// GET `path` on the relay's HTTP port: (status, body).
pub async fn http_get(
    relay: &RunningRelay,
    path: &str,
) -> Result<(u16, String), Box<dyn std::error::Error>> {
    http_get_url(&format!("http://{}{path}", relay.http_addr())).await
}

/// GET `url` (HTTP/1.1, 10 s timeout): (status, body).
pub async fn http_get_url(url: &str) -> Result<(u16, String), Box<dyn std::error::Error>> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let response =
        tokio::time::timeout(Duration::from_secs(10), client.get(url.parse()?)).await??;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// POST `body` to `url` with `headers`: (status, body).
pub async fn http_post(
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String), Box<dyn std::error::Error>> {
    http_request("POST", url, headers, body).await
}

/// Sends `method` to `url` with `headers` and `body`: (status, body).
pub async fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String), Box<dyn std::error::Error>> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(http_body_util::Full::new(bytes::Bytes::from(
        body.to_owned(),
    )))?;
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request)).await??;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Polls `check` until it returns `Some` or `deadline` passes.
pub async fn eventually<T, F, Fut>(
    deadline: Duration,
    what: &str,
    mut check: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= until {
            return Err(format!("timed out after {deadline:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `owner`'s registry holds `node` in a session `accept`s;
/// that session.
pub async fn registered_session(
    owner: &aegis_relay::owner::Owner,
    node: uuid::Uuid,
    what: &str,
    accept: impl Fn(&aegis_relay::owner::SessionEntry) -> bool,
) -> Result<aegis_relay::owner::SessionEntry, String> {
    eventually(Duration::from_secs(10), what, || {
        std::future::ready(owner.registry().get(node).filter(|entry| accept(entry)))
    })
    .await
}

/// The value of the counter line `name{labels}` in a Prometheus exposition
/// (0 when absent). `labels` must be written in the exporter's order.
pub fn counter_value(exposition: &str, name_and_labels: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| {
            line.strip_prefix(name_and_labels)
                .and_then(|rest| rest.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

/// The path of an external tool named by env var `var`. When unset, the test
/// is skipped with a printed reason, except under `CI=true`, where it fails.
pub fn required_tool(var: &str) -> Result<Option<String>, String> {
    match std::env::var(var) {
        Ok(path) if !path.is_empty() => Ok(Some(path)),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => Err(format!(
            "{var} is not set but CI=true: cluster/test installs it and sets {var}"
        )),
        _ => {
            eprintln!("skipping: {var} is not set (cluster/test sets it)");
            Ok(None)
        }
    }
}

pub mod authz;
pub mod bao;
pub mod binary;
pub mod deploy;
pub mod edges;
pub mod enroll;
pub mod fleet_calls;
pub mod idp;
pub mod pg_server;
pub mod postgres;
pub mod raw;
pub mod replica_processes;
pub mod replicas;
pub mod rest;

//! The relay under test: one in-process replica on loopback (PostgreSQL
//! when AEGIS_RELAY_TEST_POSTGRES_URL names a server, else SQLite), edges
//! enrolled and run by our edge client, and a keep-alive HTTP/1.1 caller.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aegis_relay::app::{self, Dependencies, RelaySettings, RunningRelay};
use aegis_relay::auth::LocalSigner;
use aegis_relay::edge_client::{self, EdgeOptions, EdgeState, EnrollOptions};
use aegis_relay::runtime::Runtime;
use aegis_relay::store::{PostgresMode, PostgresStore, SqliteStore, Store};
use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::Uri;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::instant_edge;
use crate::postgres_db;
use crate::{BoxError, CALL_TIMEOUT};

/// The tenant every bench edge and caller belongs to.
pub const TENANT: &str = "t-bench";

/// Enrollments in flight at once.
const ENROLL_CONCURRENCY: usize = 32;

/// The single-host invoke body.
const INVOKE_BODY: &str = r#"{"tool_name":"cmd.run","args":{"command":"echo","args":["x"]},"security_context_name":"zaru-free"}"#;

/// The fleet invoke body.
const FLEET_BODY: &str = r#"{"target":"All","mode":"parallel","failure_policy":"continue","tool_name":"cmd.run","args":{"command":"echo","args":["x"]},"security_context_name":"zaru-free"}"#;

/// The HTTP/1.1 client every relay figure is measured with.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A relay, its running edges and a caller.
pub struct BenchRelay {
    relay: RunningRelay,
    pub backend: &'static str,
    postgres_url: Option<String>,
    dir: tempfile::TempDir,
    runtime: Arc<Runtime>,
    edges_stop: CancellationToken,
    /// `POST /v1/edge/hosts/{id}/invoke` of each running edge.
    invoke_uris: Vec<Uri>,
    caller: Caller,
}

/// A tenant caller of the relay's REST API (cheap to clone: one shared
/// keep-alive connection pool).
#[derive(Clone)]
pub struct Caller {
    http: HttpClient,
    bearer: HeaderValue,
    invoke_uris: Arc<[Uri]>,
    fleet_uri: Uri,
}

impl BenchRelay {
    /// Starts a replica with a fresh store and a caller token of [`TENANT`].
    pub async fn start() -> Result<Self, BoxError> {
        let dir = tempfile::tempdir()?;
        let (store, backend, postgres_url) = store(dir.path()).await?;
        let signer = LocalSigner::load_or_create(&dir.path().join("key.pem"))?;
        let mut settings = RelaySettings::local("bench", IpAddr::V4(Ipv4Addr::LOCALHOST), 0, 0);
        // Every bench edge enrolls from 127.0.0.1.
        settings.attest_rate_limit.per_second = 1e9;
        settings.attest_rate_limit.burst = u32::MAX;
        let deps = Dependencies {
            store,
            signer: Arc::new(signer),
            callers: None,
        };
        let relay = app::start(settings, Runtime::real(), deps).await?;
        let token = relay
            .tokens()
            .mint_tenant_token(
                "bench",
                TENANT,
                &[aegis_relay::auth::FLEET_MANAGE_ROLE],
                aegis_relay::runtime::SystemClock.utc_now(),
                Duration::from_secs(3600),
            )
            .await?;
        let bearer = HeaderValue::from_str(&format!("Bearer {}", token.token))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new()).build(connector);
        let fleet_uri = format!("http://{}/v1/edge/fleet/invoke", relay.http_addr()).parse()?;
        Ok(Self {
            relay,
            backend,
            postgres_url,
            dir,
            runtime: Arc::new(Runtime::real()),
            edges_stop: CancellationToken::new(),
            invoke_uris: Vec::new(),
            caller: Caller {
                http,
                bearer,
                invoke_uris: Arc::from(Vec::new()),
                fleet_uri,
            },
        })
    }

    /// Enrolls `count` edges, runs them with `per_connection` streams to an
    /// HTTP/2 connection, and waits until the relay has them all connected.
    pub async fn add_edges(&mut self, count: usize, per_connection: usize) -> Result<(), BoxError> {
        let started = Instant::now();
        let states = self.enroll(count).await?;
        let enrolled = started.elapsed();
        let url = format!("http://{}", self.relay.grpc_addr());
        let mut channel = None;
        for (index, state) in states.into_iter().enumerate() {
            if index % per_connection.max(1) == 0 || channel.is_none() {
                channel = Some(edge_client::channel(Arc::clone(&self.runtime.net), &url).await?);
            }
            let channel = channel.clone().ok_or("no channel")?;
            self.invoke_uris.push(self.invoke_uri(state.node_id)?);
            tokio::spawn(edge_client::run_edge(
                Arc::clone(&self.runtime),
                move || channel.clone(),
                state,
                EdgeOptions::default(),
                self.edges_stop.clone(),
            ));
        }
        let want = self.invoke_uris.len();
        let until =
            Instant::now() + Duration::from_secs(60) + Duration::from_millis(50 * want as u64);
        while self.relay.owner().registry().len() < want {
            if Instant::now() >= until {
                return Err(format!(
                    "only {} of {want} edges connected",
                    self.relay.owner().registry().len()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "   {count} edges enrolled in {:.1} s, all connected after {:.1} s",
            enrolled.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Enrolls one more edge and runs it with [`instant_edge`] (answers
    /// without the edge client's timer wait); its index for `invoke`.
    pub async fn add_instant_edge(&mut self) -> Result<usize, BoxError> {
        let state = self.enroll(1).await?.pop().ok_or("no edge enrolled")?;
        let node_id = state.node_id;
        let url = format!("http://{}", self.relay.grpc_addr());
        let stop = self.edges_stop.clone();
        tokio::spawn(async move {
            if let Err(err) = instant_edge::run(url, state, stop.clone()).await {
                if !stop.is_cancelled() {
                    eprintln!("instant edge ended: {err}");
                }
            }
        });
        let until = Instant::now() + Duration::from_secs(10);
        while !self.relay.owner().is_connected(node_id) {
            if Instant::now() >= until {
                return Err("the instant edge did not connect".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.invoke_uris.push(self.invoke_uri(node_id)?);
        Ok(self.invoke_uris.len() - 1)
    }

    fn invoke_uri(&self, node_id: Uuid) -> Result<Uri, BoxError> {
        Ok(format!(
            "http://{}/v1/edge/hosts/{node_id}/invoke",
            self.relay.http_addr()
        )
        .parse()?)
    }

    async fn enroll(&self, count: usize) -> Result<Vec<EdgeState>, BoxError> {
        let limit = Arc::new(Semaphore::new(ENROLL_CONCURRENCY));
        let mut tasks = JoinSet::new();
        for _ in 0..count {
            let permit = Arc::clone(&limit).acquire_owned().await?;
            let tokens = Arc::clone(self.relay.tokens());
            let runtime = Arc::clone(&self.runtime);
            let dir = self.dir.path().join(format!(
                "edge-{}",
                aegis_relay::runtime::OsEntropy.uuid().simple()
            ));
            tasks.spawn(async move {
                let minted = tokens
                    .mint_enrollment(
                        TENANT,
                        "bench-edge",
                        aegis_relay::runtime::OsEntropy.uuid(),
                        aegis_relay::runtime::SystemClock.utc_now(),
                    )
                    .await
                    .map_err(|err| err.to_string())?;
                let enrolled =
                    edge_client::enroll(&runtime, &minted.token, &dir, &EnrollOptions::default())
                        .await
                        .map_err(|err| err.to_string());
                drop(permit);
                enrolled.map(|enrolled| enrolled.state)
            });
        }
        let mut states = Vec::with_capacity(count);
        while let Some(joined) = tasks.join_next().await {
            states.push(joined??);
        }
        Ok(states)
    }

    /// A caller of [`TENANT`] that knows every running edge.
    pub fn caller(&self) -> Caller {
        Caller {
            invoke_uris: Arc::from(self.invoke_uris.clone()),
            ..self.caller.clone()
        }
    }

    /// Stops the edges and drains the relay; drops a PostgreSQL database.
    pub async fn shutdown(self) -> Result<(), BoxError> {
        self.edges_stop.cancel();
        self.relay.shutdown().await;
        if let Some(url) = self.postgres_url {
            postgres_db::drop_database(&url)
                .await
                .map_err(|err| err.to_string())?;
        }
        Ok(())
    }
}

impl Caller {
    /// A single-host echo on edge `edge`; fails unless 200 with `"ok":true`.
    pub async fn invoke(&self, edge: usize) -> Result<(), BoxError> {
        let uri = self.invoke_uris[edge % self.invoke_uris.len()].clone();
        let request = self.post(uri, INVOKE_BODY)?;
        let response = tokio::time::timeout(CALL_TIMEOUT, self.http.request(request)).await??;
        let status = response.status();
        let body = tokio::time::timeout(CALL_TIMEOUT, response.into_body().collect())
            .await??
            .to_bytes();
        if status != http::StatusCode::OK || !contains(&body, b"\"ok\":true") {
            return Err(format!(
                "invoke answered {status}: {}",
                String::from_utf8_lossy(&body)
            )
            .into());
        }
        Ok(())
    }

    /// One fleet echo to every edge: time from sending the request to the
    /// `Done` event, and the `Done` summary.
    pub async fn fleet(&self) -> Result<(Duration, serde_json::Value), BoxError> {
        let request = self.post(self.fleet_uri.clone(), FLEET_BODY)?;
        let started = Instant::now();
        let deadline = started + CALL_TIMEOUT;
        let response = tokio::time::timeout_at(deadline, self.http.request(request)).await??;
        let status = response.status();
        let mut body = response.into_body();
        if status != http::StatusCode::OK {
            let text = tokio::time::timeout_at(deadline, body.collect())
                .await??
                .to_bytes();
            return Err(format!(
                "fleet answered {status}: {}",
                String::from_utf8_lossy(&text)
            )
            .into());
        }
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let frame = tokio::time::timeout_at(deadline, body.frame())
                .await?
                .ok_or("the event stream ended before Done")??;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let Some(json) = line.strip_prefix(b"data:") else {
                    continue;
                };
                if !json.trim_ascii_start().starts_with(b"{\"Done\"") {
                    continue;
                }
                let elapsed = started.elapsed();
                let done: serde_json::Value = serde_json::from_slice(json.trim_ascii())?;
                // Read the rest so the connection is reused.
                let _ = tokio::time::timeout(Duration::from_secs(5), body.collect()).await;
                return Ok((elapsed, done["Done"]["summary"].clone()));
            }
        }
    }

    fn post(&self, uri: Uri, body: &'static str) -> Result<http::Request<Full<Bytes>>, BoxError> {
        Ok(http::Request::post(uri)
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, self.bearer.clone())
            .body(Full::new(Bytes::from_static(body.as_bytes())))?)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

async fn store(dir: &Path) -> Result<(Arc<dyn Store>, &'static str, Option<String>), BoxError> {
    if let Some(url) = postgres_db::fresh_database("bench_edges")
        .await
        .map_err(|err| err.to_string())?
    {
        let store = PostgresStore::connect(&url, PostgresMode::Standalone).await?;
        store.migrate().await?;
        return Ok((Arc::new(store), "postgres", Some(url)));
    }
    let store = SqliteStore::open(&dir.join("relay.db")).await?;
    store.migrate().await?;
    Ok((Arc::new(store), "sqlite", None))
}

//! The session half of our edge client: hold a ConnectEdge stream the way
//! the real daemon does (protocol.md §7.1). Hello is queued before the call;
//! heartbeats every interval (the first one interval after connecting);
//! commands strictly one at a time; Cancel answered at once with
//! `cancelled`; Drain stops heartbeats and refuses invokes; Shutdown leaves
//! the stream and reconnects after the first backoff step. Reconnect
//! backoff escalates only for failures before the stream is established.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use uuid::Uuid;

use super::signer::EventSigner;
use super::tools::run_tool;
use super::EdgeState;
use crate::proto::cluster::node_cluster_service_client::NodeClusterServiceClient;
use crate::proto::cluster::{edge_command, EdgeCapabilities, EdgeCommand, EdgeEvent, EdgeResult};
use crate::runtime::Runtime;

/// How an edge behaves.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// Heartbeat period (the daemon's default is 30 s).
    pub heartbeat_interval: Duration,
    /// Reported in the Hello.
    pub capabilities: EdgeCapabilities,
    /// Security contexts the edge knows.
    pub security_contexts: Vec<String>,
    /// Reconnect delays (the daemon's default is 1, 2, 5, 15, 60 s).
    pub backoff: Vec<Duration>,
    /// Receives a copy of every command the edge gets (tests).
    pub observer: Option<mpsc::Sender<EdgeCommand>>,
    /// Counters shared with other edges (load generation).
    pub counters: Option<Arc<SessionCounters>>,
}

/// What a group of edges did, counted without locks: many edges may share
/// one instance, and readers sum instances.
#[derive(Debug, Default)]
pub struct SessionCounters {
    /// Streams whose response headers arrived and that have not ended yet.
    pub connected: AtomicUsize,
    /// Streams established since start.
    pub established: AtomicU64,
    /// Attempts refused before a stream was established.
    pub refused: AtomicU64,
    /// CommandResults sent.
    pub answered: AtomicU64,
}

/// Counts an established stream as connected until dropped.
struct ConnectedGuard(Option<Arc<SessionCounters>>);

impl ConnectedGuard {
    fn new(counters: Option<&Arc<SessionCounters>>) -> Self {
        if let Some(counters) = counters {
            counters.connected.fetch_add(1, Ordering::Relaxed);
            counters.established.fetch_add(1, Ordering::Relaxed);
        }
        Self(counters.cloned())
    }

    fn answered(&self) {
        if let Some(counters) = &self.0 {
            counters.answered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        if let Some(counters) = &self.0 {
            counters.connected.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Default for EdgeOptions {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(30),
            capabilities: EdgeCapabilities {
                os: std::env::consts::OS.to_owned(),
                arch: std::env::consts::ARCH.to_owned(),
                local_tools: vec!["shell".to_owned()],
                ..EdgeCapabilities::default()
            },
            security_contexts: vec!["zaru-free".to_owned()],
            backoff: [1, 2, 5, 15, 60].map(Duration::from_secs).to_vec(),
            observer: None,
            counters: None,
        }
    }
}

/// How an established stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The relay ended it (OK, or this status after the headers).
    Closed(Option<(tonic::Code, String)>),
    /// A Shutdown command arrived.
    Shutdown,
    /// Our own stop.
    Stopped,
}

/// Why a stream could not be established.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// The relay answered with an error status instead of headers.
    #[error("ConnectEdge refused ({code:?}): {message}")]
    Refused {
        /// Status code.
        code: tonic::Code,
        /// Status message.
        message: String,
    },
}

fn now_ms(runtime: &Runtime) -> i64 {
    chrono::DateTime::<chrono::Utc>::from(runtime.clock.now()).timestamp_millis()
}

/// Opens one stream on `channel` and serves it until it ends.
pub async fn connect_once(
    runtime: &Runtime,
    channel: Channel,
    state: &EdgeState,
    options: &EdgeOptions,
    stop: &CancellationToken,
) -> Result<StreamEnd, ConnectError> {
    let mut stream_seed = [0u8; 16];
    runtime.entropy.fill(&mut stream_seed);
    let stream_id = uuid::Builder::from_random_bytes(stream_seed)
        .into_uuid()
        .to_string();
    let signer = EventSigner::new(
        state.key.clone(),
        state.token.clone(),
        state.node_id.hyphenated().to_string(),
        stream_id,
    );
    let (events, events_rx) = mpsc::channel::<EdgeEvent>(64);
    let _ = events
        .send(signer.hello(now_ms(runtime), options.capabilities.clone()))
        .await;
    let mut client = NodeClusterServiceClient::new(channel)
        .max_decoding_message_size(16 * 1024 * 1024)
        .max_encoding_message_size(16 * 1024 * 1024);
    let response = tokio::select! {
        response = client.connect_edge(ReceiverStream::new(events_rx)) => response,
        () = stop.cancelled() => return Ok(StreamEnd::Stopped),
    };
    let mut commands = response
        .map_err(|status| {
            if let Some(counters) = &options.counters {
                counters.refused.fetch_add(1, Ordering::Relaxed);
            }
            ConnectError::Refused {
                code: status.code(),
                message: status.message().to_owned(),
            }
        })?
        .into_inner();
    let connected = ConnectedGuard::new(options.counters.as_ref());
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + options.heartbeat_interval,
        options.heartbeat_interval,
    );
    let mut draining = false;
    loop {
        let command = tokio::select! {
            () = stop.cancelled() => return Ok(StreamEnd::Stopped),
            _ = ticker.tick(), if !draining => {
                if events.send(signer.heartbeat(now_ms(runtime))).await.is_err() {
                    return Ok(StreamEnd::Closed(None));
                }
                continue;
            }
            command = commands.message() => command,
        };
        let command = match command {
            Ok(Some(command)) => command,
            Ok(None) => return Ok(StreamEnd::Closed(None)),
            Err(status) => {
                return Ok(StreamEnd::Closed(Some((
                    status.code(),
                    status.message().to_owned(),
                ))))
            }
        };
        if let Some(observer) = &options.observer {
            let _ = observer.try_send(command.clone());
        }
        let Some(command) = command.command else {
            continue;
        };
        match command {
            edge_command::Command::InvokeTool(invoke) => {
                let id = invoke.command_id.clone();
                if draining {
                    let result = EdgeResult {
                        ok: false,
                        error_kind: "draining".to_owned(),
                        error_message: "edge is draining".to_owned(),
                        ..EdgeResult::default()
                    };
                    let _ = events
                        .send(signer.result(now_ms(runtime), &id, result))
                        .await;
                    connected.answered();
                    continue;
                }
                let run = run_tool(&invoke, &options.security_contexts);
                let (mut out_seq, mut err_seq) = (0u32, 0u32);
                for (stderr, line) in run.lines {
                    let seq = if stderr { &mut err_seq } else { &mut out_seq };
                    let event = signer.progress(now_ms(runtime), &id, *seq, stderr, line);
                    *seq += 1;
                    let _ = events.send(event).await;
                }
                // The daemon reads nothing while a command runs; heartbeats
                // go on from their own task.
                // A zero sleep would still wait for the next timer tick (~1 ms).
                let done = tokio::time::sleep(run.duration);
                tokio::pin!(done);
                while !run.duration.is_zero() {
                    tokio::select! {
                        () = &mut done => break,
                        () = stop.cancelled() => return Ok(StreamEnd::Stopped),
                        _ = ticker.tick(), if !draining => {
                            let _ = events.send(signer.heartbeat(now_ms(runtime))).await;
                        }
                    }
                }
                let _ = events
                    .send(signer.result(now_ms(runtime), &id, run.result))
                    .await;
                connected.answered();
            }
            edge_command::Command::Cancel(cancel) => {
                let result = EdgeResult {
                    ok: false,
                    error_kind: "cancelled".to_owned(),
                    error_message: "cancelled by operator".to_owned(),
                    ..EdgeResult::default()
                };
                let _ = events
                    .send(signer.result(now_ms(runtime), &cancel.command_id, result))
                    .await;
                connected.answered();
            }
            edge_command::Command::PushConfig(_) => {
                tracing::info!("push-config received (ignored, as the daemon does)");
            }
            edge_command::Command::Drain(_) => draining = true,
            edge_command::Command::Shutdown(_) => return Ok(StreamEnd::Shutdown),
        }
    }
}

/// Keeps an edge connected until `stop`, reconnecting as the daemon does.
/// `channel` gives the connection for each attempt (shared connections
/// multiplex many edges).
pub async fn run_edge<F>(
    runtime: Arc<Runtime>,
    channel: F,
    state: EdgeState,
    options: EdgeOptions,
    stop: CancellationToken,
) where
    F: Fn() -> Channel + Send,
{
    let mut attempt = 0usize;
    while !stop.is_cancelled() {
        let delay = match connect_once(&runtime, channel(), &state, &options, &stop).await {
            Ok(StreamEnd::Stopped) => return,
            Ok(end) => {
                tracing::debug!(node_id = %state.node_id, ?end, "stream ended; reconnecting");
                attempt = 0;
                options.backoff.first().copied()
            }
            Err(err) => {
                tracing::debug!(node_id = %state.node_id, error = %err, "connect failed");
                let step = options
                    .backoff
                    .get(attempt.min(options.backoff.len().saturating_sub(1)));
                attempt += 1;
                step.copied()
            }
        };
        let delay = delay.unwrap_or(Duration::from_secs(1));
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// A fresh random command id (tests and load generation).
pub fn random_command_id(runtime: &Runtime) -> Uuid {
    let mut seed = [0u8; 16];
    runtime.entropy.fill(&mut seed);
    uuid::Builder::from_random_bytes(seed).into_uuid()
}

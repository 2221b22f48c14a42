//! Holding a load run's edges: one task per connection dials it, brings
//! its edges up while holding one of a bounded number of ramp permits, then
//! drives every edge's reconnect loop; counters are per connection and
//! summed on demand.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt as _};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::LoadOptions;
use crate::edge_client::{channel, run_edge, EdgeOptions, EdgeState, SessionCounters};
use crate::runtime::Runtime;

/// How long a connection may take to bring its edges up before the next
/// connection starts its ramp anyway.
const RAMP_LIMIT: Duration = Duration::from_secs(30);
/// How often a ramping connection checks its edges.
const RAMP_POLL: Duration = Duration::from_millis(20);

/// A snapshot of held edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldStatus {
    /// All edges.
    pub edges: usize,
    /// All connections.
    pub connections: usize,
    /// Connections dialed.
    pub dialed: usize,
    /// Edges whose stream is established now.
    pub connected: usize,
    /// Streams that ended while held (each one reconnects).
    pub reconnects: u64,
    /// Connect attempts refused before a stream was established.
    pub refused: u64,
    /// CommandResults sent.
    pub answered: u64,
}

impl std::fmt::Display for HoldStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "connected {}/{} over {}/{} connections; {} reconnects, {} refused attempts, {} commands answered",
            self.connected,
            self.edges,
            self.dialed,
            self.connections,
            self.reconnects,
            self.refused,
            self.answered
        )
    }
}

/// Edges being held; stop them with [`Holding::shutdown`].
#[derive(Debug)]
pub struct Holding {
    groups: Vec<Arc<SessionCounters>>,
    dialed: Arc<AtomicUsize>,
    edges: usize,
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// Starts holding `edges`: `edges_per_connection` of them share each
/// connection, and at most `connect_concurrency` connections dial and
/// bring their edges up at once. Must be called inside a tokio runtime.
pub fn hold(runtime: Arc<Runtime>, options: &LoadOptions, edges: Vec<EdgeState>) -> Holding {
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let dialed = Arc::new(AtomicUsize::new(0));
    let ramp = Arc::new(Semaphore::new(options.connect_concurrency.max(1)));
    let count = edges.len();
    let per_connection = options.edges_per_connection.max(1);
    let mut groups = Vec::with_capacity(count.div_ceil(per_connection));
    let mut edges = edges.into_iter();
    loop {
        let members: Vec<EdgeState> = edges.by_ref().take(per_connection).collect();
        if members.is_empty() {
            break;
        }
        let counters = Arc::new(SessionCounters::default());
        let edge_options = EdgeOptions {
            heartbeat_interval: options.heartbeat_interval,
            counters: Some(Arc::clone(&counters)),
            ..EdgeOptions::default()
        };
        // Without endpoints given, dial what the edges were enrolled with
        // (their config's controller endpoint), as the daemon does.
        let endpoint = options
            .grpc_endpoints
            .get(groups.len() % options.grpc_endpoints.len().max(1))
            .cloned()
            .unwrap_or_else(|| members[0].endpoint.clone());
        tasks.spawn(run_connection(Connection {
            runtime: Arc::clone(&runtime),
            endpoint,
            members,
            options: edge_options,
            counters: Arc::clone(&counters),
            ramp: Arc::clone(&ramp),
            dialed: Arc::clone(&dialed),
            stop: stop.clone(),
        }));
        groups.push(counters);
    }
    tasks.close();
    Holding {
        groups,
        dialed,
        edges: count,
        stop,
        tasks,
    }
}

impl Holding {
    /// Counts summed over every connection.
    pub fn status(&self) -> HoldStatus {
        let mut status = HoldStatus {
            edges: self.edges,
            connections: self.groups.len(),
            dialed: self.dialed.load(Ordering::Relaxed),
            connected: 0,
            reconnects: 0,
            refused: 0,
            answered: 0,
        };
        for counters in &self.groups {
            let connected = counters.connected.load(Ordering::Relaxed);
            let established = counters.established.load(Ordering::Relaxed);
            status.connected += connected;
            status.reconnects += established.saturating_sub(connected as u64);
            status.refused += counters.refused.load(Ordering::Relaxed);
            status.answered += counters.answered.load(Ordering::Relaxed);
        }
        status
    }

    /// Closes every stream and connection and waits for them.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

/// One connection and the edges it carries.
struct Connection {
    runtime: Arc<Runtime>,
    endpoint: String,
    members: Vec<EdgeState>,
    options: EdgeOptions,
    counters: Arc<SessionCounters>,
    ramp: Arc<Semaphore>,
    dialed: Arc<AtomicUsize>,
    stop: CancellationToken,
}

/// Dials, brings the edges up while holding a ramp permit, then drives
/// every edge's reconnect loop in this one task until stop.
async fn run_connection(connection: Connection) {
    let Connection {
        runtime,
        endpoint,
        members,
        options,
        counters,
        ramp,
        dialed,
        stop,
    } = connection;
    let permit = tokio::select! {
        permit = ramp.acquire_owned() => permit,
        () = stop.cancelled() => return,
    };
    let mut attempt = 0usize;
    let channel = loop {
        match channel(Arc::clone(&runtime.net), &endpoint).await {
            Ok(channel) => break channel,
            Err(err) => {
                tracing::warn!(endpoint, error = %err, "dial failed; retrying");
                let delay = options
                    .backoff
                    .get(attempt.min(options.backoff.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or(Duration::from_secs(1));
                attempt += 1;
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    };
    dialed.fetch_add(1, Ordering::Relaxed);
    let size = members.len() as u64;
    let mut sessions: FuturesUnordered<_> = members
        .into_iter()
        .map(|state| {
            let channel = channel.clone();
            run_edge(
                Arc::clone(&runtime),
                move || channel.clone(),
                state,
                options.clone(),
                stop.clone(),
            )
        })
        .collect();
    // The next connection starts once every edge here made a first attempt.
    let ramp_until = Instant::now() + RAMP_LIMIT;
    while counters.established.load(Ordering::Relaxed) + counters.refused.load(Ordering::Relaxed)
        < size
        && Instant::now() < ramp_until
    {
        tokio::select! {
            next = sessions.next() => if next.is_none() { break },
            () = tokio::time::sleep(RAMP_POLL) => {}
        }
    }
    drop(permit);
    while sessions.next().await.is_some() {}
}

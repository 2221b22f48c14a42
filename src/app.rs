//! Wiring and supervision of one replica: binds its listeners through the
//! runtime seam, runs its servers as owned tasks, and shuts them down in
//! order within a hard deadline.
//!
//! Architecture invariant: every task a replica spawns lives in its
//! [`RunningRelay`]'s task set and ends by the end of [`RunningRelay::shutdown`];
//! connections the servers still hold at the drain deadline are severed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::admission::{self, AdmissionSettings, ConnectionGate};
use crate::auth::{CachedCallerAuth, CallerAuth, CommandTokens, LocalCallerAuth, TokenIssuer};
use crate::change_feed::{self, FeedParts, Follower};
use crate::enroll::{EnrollmentService, RpcRateLimits};
use crate::fleet::FleetRuns;
use crate::grpc::{self};
use crate::hop::{IngressId, Owners};
use crate::http::{self, HttpState};
use crate::membership::{GossipTask, Membership, MembershipSettings, Phase};
use crate::net;
use crate::owner::Owner;
use crate::readiness::{Readiness, DRAINING, STARTING};
use crate::runtime::{Clock, Entropy, Runtime};
use crate::session::{HelloChecker, Ingress, IngressParts};
use crate::store::Store;
use crate::store_health::{self};
use crate::telemetry::Metrics;

mod drain;
mod settings;
pub use drain::DrainPhases;
pub use settings::{Dependencies, RelaySettings};

/// Why a replica could not start or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A listener could not be bound.
    #[error("cannot bind the {listener} listener on {addr}: {source}{hint}")]
    Bind {
        /// Which listener.
        listener: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
        /// A suggestion when the cause is common.
        hint: &'static str,
    },
    /// The gRPC server failed.
    #[error(transparent)]
    Grpc(#[from] grpc::GrpcServeError),
    /// The HTTP server failed.
    #[error(transparent)]
    Http(#[from] http::HttpServeError),
    /// A server task ended without being asked to.
    #[error("the {0} server stopped unexpectedly")]
    ServerExited(&'static str),
    /// A server task panicked.
    #[error("a server task panicked: {0}")]
    Panicked(String),
    /// Gossip could not start.
    #[error(transparent)]
    Membership(#[from] crate::membership::MembershipError),
}

/// How a shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownOutcome {
    /// Every server finished its in-flight work within the drain timeout.
    Graceful,
    /// The drain timeout passed; this many tasks were aborted.
    Forced {
        /// Tasks still running at the deadline.
        aborted: usize,
    },
}

/// A started replica.
pub struct RunningRelay {
    name: String,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    readiness: Readiness,
    metrics: Metrics,
    phases: DrainPhases,
    kill: CancellationToken,
    tasks: JoinSet<(&'static str, Result<(), RelayError>)>,
    drain_timeout: Duration,
    store: Arc<dyn Store>,
    tokens: Arc<TokenIssuer>,
    owner: Arc<Owner>,
    ingress: Arc<Ingress>,
    api: Api,
    membership: Membership,
    /// Stopped last, after the servers drained.
    gossip: Option<GossipTask>,
}

/// What request handlers of both servers share.
#[derive(Clone)]
pub struct Api {
    /// Enrollment and token issuance.
    pub enrollment: Arc<EnrollmentService>,
    /// Caller authentication.
    pub callers: Arc<dyn CallerAuth>,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// Randomness (request ids).
    pub entropy: Arc<dyn Entropy>,
    /// Buckets per source of AttestNode, ChallengeNode and RotateEdgeKey.
    pub rate_limits: Arc<RpcRateLimits>,
    /// This replica's metrics.
    pub metrics: Metrics,
    /// The store (host management).
    pub store: Arc<dyn Store>,
    /// The owner half of edge sessions: registry and dispatch.
    pub owner: Arc<Owner>,
    /// The ingress half: ConnectEdge streams.
    pub ingress: Arc<Ingress>,
    /// Fleet runs and their history.
    pub fleets: Arc<FleetRuns>,
    /// Who else is in the cluster.
    pub membership: Membership,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

impl Api {
    /// The current wall-clock time.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from(self.clock.now())
    }
}

/// Binds every listener and starts serving. Returns once all listeners are
/// bound and their servers run; readiness is then SERVING.
pub async fn start(
    settings: RelaySettings,
    runtime: Runtime,
    deps: Dependencies,
) -> Result<RunningRelay, RelayError> {
    let readiness = Readiness::new();
    let metrics = Metrics::new(&settings.name);
    let grpc_listener = bind(&runtime, "gRPC", settings.grpc_addr).await?;
    let http_listener = bind(&runtime, "HTTP", settings.http_addr).await?;
    let grpc_addr = grpc_listener.local_addr();
    let http_addr = http_listener.local_addr();
    // Joining from here; serving once every server runs.
    let (membership, gossip) = Membership::start(
        MembershipSettings {
            name: settings.name.clone(),
            peer_url: settings.peer_url.clone(),
            gossip: settings.gossip.clone(),
        },
        &runtime,
        metrics.clone(),
    )
    .await?;
    let store = deps.store;
    let tokens = Arc::new(TokenIssuer::new(
        deps.signer,
        settings.issuer.clone(),
        settings.accepted_issuers.clone(),
        settings
            .public_endpoint
            .clone()
            .unwrap_or_else(|| format!("http://{grpc_addr}")),
    ));
    let callers: Arc<dyn CallerAuth> =
        Arc::new(CachedCallerAuth::new(deps.callers.unwrap_or_else(|| {
            Arc::new(LocalCallerAuth::new(Arc::clone(&tokens)))
        })));
    let enrollment = Arc::new(EnrollmentService::new(
        Arc::clone(&store),
        Arc::clone(&tokens),
        Arc::clone(&runtime.clock),
        Arc::clone(&runtime.entropy),
        settings.rotation_overlap,
    ));
    // `stop` asks servers to finish gracefully; `kill` severs every connection
    // when the drain deadline passes (tonic and hyper own per-connection tasks
    // we cannot abort directly).
    let kill = CancellationToken::new();
    // One gate for both ports: caps and the first headers' deadline.
    let gate = ConnectionGate::new(
        AdmissionSettings {
            max_connections: settings.limits.max_connections,
            max_connections_per_source: settings.limits.max_connections_per_source,
            trusted_proxies: settings.attest_rate_limit.trusted_proxies.clone(),
            header_read_timeout: settings.limits.header_read_timeout,
            write_stall_timeout: settings.limits.write_stall_timeout,
        },
        metrics.clone(),
    );
    let grpc_listener = admission::gated(grpc_listener, Arc::clone(&gate));
    let http_listener = admission::gated(http_listener, gate);
    let grpc_listener = net::with_kill_switch(grpc_listener, kill.clone());
    let http_listener = net::with_kill_switch(http_listener, kill.clone());
    // Drain phase 1 (stop accepting) is what the servers and timers stop on.
    let phases = DrainPhases::default();
    let stop = phases.stop_accepting.clone();

    let owner = Owner::new(
        Arc::clone(&runtime.clock),
        metrics.clone(),
        CommandTokens::from_entropy(runtime.entropy.as_ref(), settings.issuer.clone()),
        settings.sessions.outcome_limits(),
    );
    let ingress = Ingress::new(IngressParts {
        hello: HelloChecker {
            store: Arc::clone(&store),
            tokens: Arc::clone(&tokens),
            skew: settings.sessions.clock_skew,
        },
        owners: Owners::InProcess(Arc::clone(&owner)),
        clock: Arc::clone(&runtime.clock),
        metrics: metrics.clone(),
        settings: settings.sessions,
        id: IngressId::new(membership.name(), membership.generation()),
        finish_in_flight: phases.finish_in_flight.clone(),
        end_streams: phases.end_streams.clone(),
    });
    // Fleet runs get the drain timeout to finish; the kill switch ends them.
    let fleets = FleetRuns::new(settings.fleet_runs, &kill, &store, &runtime, &membership);
    let api = Api {
        enrollment,
        callers,
        clock: Arc::clone(&runtime.clock),
        entropy: Arc::clone(&runtime.entropy),
        rate_limits: Arc::new(RpcRateLimits::new(&settings.attest_rate_limit)),
        metrics: metrics.clone(),
        store: Arc::clone(&store),
        owner: Arc::clone(&owner),
        ingress: Arc::clone(&ingress),
        fleets: Arc::clone(&fleets),
        membership: membership.clone(),
    };

    // Where the feed stands, read before anything serves.
    let feed = Arc::new(FeedParts {
        store: Arc::clone(&store),
        owner: Arc::clone(&owner),
        clock: Arc::clone(&runtime.clock),
        metrics: metrics.clone(),
    });
    let follower = Follower::start(&feed).await;

    let span = tracing::info_span!("replica", replica = %settings.name);
    let mut tasks = JoinSet::new();
    tasks.spawn({
        let follow = change_feed::run(settings.change_feed, follower, feed, stop.clone());
        async move {
            follow.await;
            ("change feed", Ok(()))
        }
        .instrument(span.clone())
    });
    tasks.spawn({
        let (ingress, stop) = (Arc::clone(&ingress), stop.clone());
        let fleets = Arc::clone(&fleets);
        // The writer outlives the sessions: their last updates are flushed.
        let writer_stop = CancellationToken::new();
        let writer = ingress.write_facts(
            Arc::clone(&store),
            settings.sessions.store_flush_interval,
            writer_stop.clone(),
        );
        let records = fleets.write_records(writer_stop.clone());
        async move {
            // Sessions end in the drain's phases 3 and 4.
            let sessions = async {
                stop.cancelled().await;
                tokio::join!(ingress.wait_sessions(), fleets.wait());
                writer_stop.cancel();
            };
            tokio::join!(sessions, writer, records);
            ("edge sessions", Ok(()))
        }
        .instrument(span.clone())
    });
    tasks.spawn({
        let (readiness, metrics, stop) = (readiness.clone(), metrics.clone(), stop.clone());
        let api = api.clone();
        async move {
            let result =
                grpc::serve(grpc_listener, settings.grpc, api, readiness, metrics, stop).await;
            ("gRPC", result.map_err(RelayError::from))
        }
        .instrument(span.clone())
    });
    tasks.spawn({
        let state = HttpState {
            metrics_token: settings.metrics_token.as_ref().map(|t| t.expose().into()),
            replica: settings.name.clone(),
            readiness: readiness.clone(),
            metrics: metrics.clone(),
            api: api.clone(),
        };
        let stop = stop.clone();
        let timeouts = http::HttpTimeouts {
            header_read: settings.limits.header_read_timeout,
            request_body: settings.limits.request_body_timeout,
        };
        async move {
            let result = http::serve(http_listener, state, timeouts, stop).await;
            ("HTTP", result.map_err(RelayError::from))
        }
        .instrument(span.clone())
    });
    let watch = store_health::watch_store(
        Arc::clone(&store),
        settings.store_check,
        readiness.clone(),
        stop.clone(),
    );
    tasks.spawn(infallible("store check", watch).instrument(span.clone()));
    let timers = crate::housekeeping::run(
        crate::housekeeping::Intervals::default(),
        Arc::clone(&api.rate_limits),
        Arc::clone(&store),
        Arc::clone(&runtime.clock),
        stop.clone(),
    );
    tasks.spawn(infallible("housekeeping", timers).instrument(span.clone()));
    readiness.set_ok(STARTING);
    membership.set_phase(Phase::Serving).await;
    tracing::info!(replica = %settings.name, grpc = %grpc_addr, http = %http_addr, "relay serving");
    Ok(RunningRelay {
        name: settings.name,
        grpc_addr,
        http_addr,
        readiness,
        metrics,
        phases,
        kill,
        tasks,
        drain_timeout: settings.drain_timeout,
        store,
        tokens,
        owner,
        ingress,
        api,
        membership,
        gossip: Some(gossip),
    })
}

async fn bind(
    runtime: &Runtime,
    listener: &'static str,
    addr: SocketAddr,
) -> Result<Box<dyn crate::net::Listener>, RelayError> {
    runtime
        .net
        .bind_tcp(addr)
        .await
        .map_err(|source| RelayError::Bind {
            listener,
            addr,
            hint: match source.kind() {
                std::io::ErrorKind::AddrInUse => {
                    "; another process (perhaps another relay) uses this port: stop it or pick another port"
                }
                std::io::ErrorKind::PermissionDenied => {
                    "; ports below 1024 need privileges: pick a port of 1024 or more"
                }
                _ => "",
            },
            source,
        })
}

impl RunningRelay {
    /// Replica name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Shared readiness (tests and later subsystems set conditions on it).
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// This replica's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The store this replica uses.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Mints and verifies this replica's tokens.
    pub fn tokens(&self) -> &Arc<TokenIssuer> {
        &self.tokens
    }

    /// The owner half of edge sessions (registry and dispatch).
    pub fn owner(&self) -> &Arc<Owner> {
        &self.owner
    }

    /// What this replica's request handlers share (tests serve a second
    /// ingress half with it).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// This replica's membership (its view of the cluster).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Resolves when a server task ends on its own (an error: servers only
    /// end when asked). Never resolves while all servers run.
    pub async fn failed(&mut self) -> RelayError {
        match self.tasks.join_next().await {
            Some(Ok((_, Err(err)))) => err,
            Some(Ok((server, Ok(())))) => RelayError::ServerExited(server),
            Some(Err(join_error)) => RelayError::Panicked(join_error.to_string()),
            None => std::future::pending().await,
        }
    }

    /// Drains and stops: readiness turns NOT_SERVING and gossip says
    /// `draining` first (load balancers and peers stop sending new work),
    /// then the phases of [`DrainPhases`] run in order within the drain
    /// timeout, whatever remains at its end is aborted; gossip stops last.
    pub async fn shutdown(mut self) -> ShutdownOutcome {
        self.readiness
            .set_failing(DRAINING, "replica is shutting down");
        self.membership.set_phase(Phase::Draining).await;
        let deadline = tokio::time::Instant::now() + self.drain_timeout;
        self.phases
            .run(&self.owner, &self.ingress, deadline, self.drain_timeout)
            .await;
        let outcome = self.drain(deadline).await;
        // Tasks the signer runs for itself (OpenBao's batch workers).
        self.tokens.signer().stop();
        // Last: peers keep hearing from this replica until it is done.
        if let Some(gossip) = self.gossip.take() {
            gossip.stop().await;
        }
        outcome
    }

    /// Waits for every task up to `deadline`, then aborts the rest.
    async fn drain(&mut self, deadline: tokio::time::Instant) -> ShutdownOutcome {
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(None) => return ShutdownOutcome::Graceful,
                Ok(Some(Ok((server, Err(err))))) => {
                    tracing::warn!(server, error = %err, "server ended with an error while draining");
                }
                Ok(Some(Ok((_, Ok(()))))) => {}
                Ok(Some(Err(join_error))) => {
                    tracing::warn!(error = %join_error, "server task failed while draining");
                }
                Err(_elapsed) => {
                    let aborted = self.tasks.len();
                    tracing::warn!(
                        aborted,
                        drain_timeout = ?self.drain_timeout,
                        "drain timeout reached; aborting remaining work"
                    );
                    self.kill.cancel();
                    self.tasks.shutdown().await;
                    return ShutdownOutcome::Forced { aborted };
                }
            }
        }
    }
}

impl Drop for RunningRelay {
    /// A replica dropped without `shutdown` still ends everything it started.
    fn drop(&mut self) {
        self.phases.cancel_all();
        self.kill.cancel();
        self.tokens.signer().stop();
    }
}

impl std::fmt::Debug for RunningRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningRelay")
            .field("name", &self.name)
            .field("grpc_addr", &self.grpc_addr)
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

/// A replica task that cannot fail, named for the shutdown report.
async fn infallible(
    name: &'static str,
    task: impl std::future::Future<Output = ()>,
) -> (&'static str, Result<(), RelayError>) {
    task.await;
    (name, Ok(()))
}

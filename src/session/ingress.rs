//! One task per ConnectEdge stream: authenticate the Hello before answering
//! (a refusal reaches the daemon as an error status, so it backs off), then
//! loop over the edge's events, the owner's commands, the heartbeat timer
//! and the replica's drain, until one of them ends the stream.
//!
//! Each session reaches owners only through its own owner links (one per
//! owner it has been homed on, the newest current): a command is answered on
//! the link it came from, so after a move the old owner still gets the
//! results of the commands it sent.

mod commands;
mod events;
mod links;
mod reload;
mod run;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Status, Streaming};
use tracing::Instrument;
use uuid::Uuid;

use super::edge_facts::UpdateBuffer;
use super::hello::{HelloChecker, HelloError};
use super::ledger::Ledger;
use super::outbound::{Outbound, OutboundCommands};
pub use super::settings::SessionSettings;
use crate::edge::{EventKind, StreamAuth};
use crate::hop::{
    CloseReason, DownLink, DownQueue, IngressId, LinkId, Opened, OwnerLink, Owners, SessionKey,
    Tagged,
};
use crate::proto::cluster::EdgeEvent;
use crate::runtime::Clock;
use crate::store::EdgeCapabilities;
use crate::telemetry::Metrics;

/// Accepts ConnectEdge streams and runs their sessions.
pub struct Ingress {
    hello: HelloChecker,
    /// Where sessions find their owner; a change re-homes them.
    owners: watch::Sender<Owners>,
    ledger: Ledger,
    /// Heartbeats, capabilities and statuses of this ingress's edges.
    facts: Arc<UpdateBuffer>,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    settings: SessionSettings,
    id: IngressId,
    sessions: TaskTracker,
    /// Drain phase 3: each session ends once its commands are answered.
    finish_in_flight: CancellationToken,
    /// Drain phase 4: every session ends now.
    end_streams: CancellationToken,
    /// The connection number of the next accepted stream: unique in this
    /// ingress's life, so no two sessions of a node share a key.
    next_connection: AtomicU64,
}

impl std::fmt::Debug for Ingress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingress")
            .field("id", &self.id)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// The parts of [`Ingress`] chosen by the replica.
pub struct IngressParts {
    /// Hello checks.
    pub hello: HelloChecker,
    /// Where the owner halves are.
    pub owners: Owners,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// Metrics.
    pub metrics: Metrics,
    /// Settings.
    pub settings: SessionSettings,
    /// This replica's name and generation (session keys, log spans).
    pub id: IngressId,
    /// Drain phase 3: sessions end once their commands are answered.
    pub finish_in_flight: CancellationToken,
    /// Drain phase 4: sessions end now.
    pub end_streams: CancellationToken,
}

impl Ingress {
    /// An ingress with no sessions.
    pub fn new(parts: IngressParts) -> Arc<Self> {
        Arc::new(Self {
            ledger: Ledger::new(parts.settings.outcome_limits()),
            facts: Arc::new(UpdateBuffer::default()),
            hello: parts.hello,
            owners: watch::Sender::new(parts.owners),
            clock: parts.clock,
            metrics: parts.metrics,
            settings: parts.settings,
            id: parts.id,
            sessions: TaskTracker::new(),
            finish_in_flight: parts.finish_in_flight,
            end_streams: parts.end_streams,
            next_connection: AtomicU64::new(1),
        })
    }

    fn now(&self) -> DateTime<Utc> {
        DateTime::from(self.clock.now())
    }

    /// This ingress's identity in session keys.
    pub fn id(&self) -> &IngressId {
        &self.id
    }

    /// Runs the batched writer of this ingress's edge facts until `stop`
    /// (then flushes once more).
    pub fn write_facts(
        &self,
        store: Arc<dyn crate::store::Store>,
        interval: std::time::Duration,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        Arc::clone(&self.facts).run(store, self.metrics.clone(), interval, stop)
    }

    /// Edge streams this replica holds now (its ingress half).
    pub fn live_streams(&self) -> usize {
        self.sessions.len()
    }

    /// Waits until every session task has ended (after the drain began).
    pub async fn wait_sessions(&self) {
        self.sessions.close();
        self.sessions.wait().await;
    }

    /// Routes sessions to `owners` from now on: each session whose owner
    /// link does not lead there opens a link to its new owner, which sends
    /// its commands from then on; the old link stays until the commands it
    /// sent are answered.
    pub fn route_to(&self, owners: Owners) {
        self.owners.send_replace(owners);
    }

    /// Authenticates the stream's Hello and starts its session; the error
    /// is the status the edge gets instead of response headers.
    pub async fn connect(
        self: &Arc<Self>,
        mut inbound: Streaming<EdgeEvent>,
    ) -> Result<OutboundCommands, Status> {
        // Taken before the Hello reads the store: a change applied after it
        // makes the session reload once registered.
        let epoch = self.owners.borrow().change_epoch();
        let first = match tokio::time::timeout(self.settings.hello_timeout, inbound.message()).await
        {
            Err(_elapsed) => Err(HelloError::Timeout(self.settings.hello_timeout)),
            Ok(Err(status)) if status.code() == tonic::Code::OutOfRange => {
                Err(HelloError::TooLarge(status.message().to_owned()))
            }
            Ok(Err(status)) => Err(HelloError::Stream(status.message().to_owned())),
            Ok(Ok(None)) => Err(HelloError::NoHello),
            Ok(Ok(Some(event))) => self.hello.check(event, self.now()).await,
        };
        let hello = first.map_err(|err| {
            self.metrics.handshake_failure(err.reason());
            tracing::info!(reason = err.reason(), error = %err, "edge Hello refused");
            err.to_status()
        })?;
        let node_id = hello.edge.node_id;
        let (queue_tx, queue_rx) = mpsc::channel(self.settings.command_queue);
        let (out_tx, out_rx) = mpsc::channel(self.settings.command_queue);
        let tenant_id: Arc<str> = hello.edge.tenant_id.as_str().into();
        let key = SessionKey {
            node_id,
            tenant: Arc::clone(&tenant_id),
            stream_id: hello.auth.stream_id().into(),
            ingress: self.id.clone(),
            connection: self.next_connection.fetch_add(1, Ordering::Relaxed),
        };
        let known = Known {
            capabilities: Arc::new(hello.capabilities),
            tags: hello.edge.tags.into(),
            public_key: hello.edge.public_key.into(),
            seq: hello.edge.seq,
            hello_ms: hello.auth.last_timestamp_ms(),
        };
        let queue = queue_tx.downgrade();
        let opened = known.opened(
            &tenant_id,
            DownLink::in_process(queue_tx, 0),
            Some(epoch),
            self,
        );
        self.metrics.edge_event(EventKind::Hello.name());
        let span = tracing::info_span!(
            "edge_session",
            replica = %self.id.name,
            node_id = %node_id,
            tenant = %tenant_id,
            stream_id = %key.stream_id,
        );
        let owners = self.owners.subscribe();
        let link = owners.borrow().link(&tenant_id);
        let session = Session {
            ingress: Arc::clone(self),
            key,
            auth: hello.auth,
            inbound,
            commands: queue_rx,
            queue,
            out: out_tx,
            links: vec![Some(link)],
            known,
            in_flight: HashMap::new(),
        };
        // The task registers the session itself, so a caller that goes away
        // meanwhile cannot leave a registration without a task behind it;
        // headers are answered once the owner has the session.
        let (registered, is_registered) = tokio::sync::oneshot::channel();
        self.sessions.spawn(
            session
                .run(Box::new(opened), owners, registered)
                .instrument(span),
        );
        let _ = is_registered.await;
        Ok(OutboundCommands::new(out_rx))
    }
}

/// What a session knows of its node, to register with an owner it moves to.
struct Known {
    capabilities: Arc<EdgeCapabilities>,
    tags: Arc<[String]>,
    public_key: Arc<[u8]>,
    seq: i64,
    hello_ms: i64,
}

impl Known {
    /// The registration of `tenant`'s session with an owner reaching it by
    /// `commands`; `epoch` as in [`Opened::epoch`].
    fn opened(
        &self,
        tenant: &Arc<str>,
        commands: DownLink,
        epoch: Option<u64>,
        ingress: &Ingress,
    ) -> Opened {
        Opened {
            tenant_id: Arc::clone(tenant),
            capabilities: Arc::clone(&self.capabilities),
            tags: Arc::clone(&self.tags),
            commands,
            seq: self.seq,
            public_key: Arc::clone(&self.public_key),
            epoch,
            hello_ms: self.hello_ms,
            replay_window: ingress.settings.clock_skew.saturating_mul(2),
        }
    }
}

struct Session {
    ingress: Arc<Ingress>,
    key: SessionKey,
    auth: StreamAuth,
    inbound: Streaming<EdgeEvent>,
    /// Messages of every owner link of this session.
    commands: DownQueue,
    /// The queue's sending side, to hand to an owner the session moves to
    /// (weak: the queue closes when no owner holds it).
    queue: mpsc::WeakSender<Tagged>,
    out: mpsc::Sender<Outbound>,
    /// Owner links by [`LinkId`], the last one current; a link is retired
    /// (`None`) once the session moved on and its commands are answered.
    links: Vec<Option<OwnerLink>>,
    known: Known,
    /// Commands sent and not answered.
    in_flight: HashMap<Uuid, InFlight>,
}

/// A command sent to the edge and not answered yet.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    /// When it is released if the edge never answers (its deadline plus
    /// `call_grace`).
    release: tokio::time::Instant,
    /// The owner link it came from, which gets its progress and outcome.
    link: LinkId,
}

/// How a step of the loop ends the stream.
struct End {
    reason: CloseReason,
    status: Option<Status>,
}

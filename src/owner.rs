//! The owner half of edge sessions (ARCHITECTURE.md): the registry of a
//! tenant's connected edges, dispatch of commands to them, and the recent
//! outcomes of those commands. It receives [`Up`] messages from ingress
//! halves and sends [`Down`] messages back over each session's
//! [`DownLink`]; it never touches an edge's stream itself, so an ingress
//! on another replica fits in later. Edge facts (heartbeats, capabilities,
//! statuses) are the ingress's to write.

mod calls;
mod command;
mod feed;
mod ingress_gone;
mod recent;
mod registry;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use calls::{CallEvent, CallHandle, Joined};
pub use command::{cancel_command, invoke_command, json_object, Addressed, Control, ToolCall};
pub use recent::RecentOutcomes;
pub use registry::{Applied, Refusal, Registered, Registry, SessionEntry};

use crate::auth::CommandTokens;
use crate::hop::{CloseReason, Down, DownLink, Opened, SessionKey, Up};
use crate::outcomes::OutcomeLimits;
use crate::runtime::Clock;
use crate::telemetry::Metrics;

/// What a revoked edge is told.
const REVOKED_MESSAGE: &str = "this edge was revoked; enroll a new node with a fresh token";

/// What a stream of a re-enrolled edge is told.
const KEY_REPLACED_MESSAGE: &str = "this node was re-enrolled with a new key; the key that \
     opened this stream is no longer the node's key: reconnect with the new key";

/// How long sending a command may wait for room in a session's queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Failure messages of calls that never reached the edge, or lost it.
const NOT_SENT: &str = "the edge's stream ended before the command was sent";
const QUEUE_FULL: &str = "the edge's command queue stayed full for 5 s; retry later";
const STREAM_ENDED: &str = "the edge's stream ended before it answered";

/// Why a command could not be dispatched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// Not connected to this relay (or not in the caller's tenant).
    #[error("edge {0} is not connected; check `GET /v1/edge/hosts/{0}` and the edge daemon")]
    NotConnected(Uuid),
    /// The edge's command queue stayed full.
    #[error("edge {0} is not taking commands (its queue is full); retry later")]
    Busy(Uuid),
    /// The relay is draining.
    #[error("this relay is shutting down and takes no new commands; retry")]
    Draining,
    /// The command could not be built; it was not sent.
    #[error("the command was not sent: {0}")]
    Command(#[from] crate::auth::CommandTokenError),
}

/// The owner of every tenant served by this replica.
pub struct Owner {
    registry: Registry,
    calls: calls::Calls,
    /// Outcomes of recent commands, whichever ingress they came through.
    recent: RecentOutcomes,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    /// Mints the user token of an InvokeTool whose caller sent none.
    command_tokens: CommandTokens,
    draining: AtomicBool,
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl Owner {
    /// An owner with no sessions, keeping outcomes within `outcomes`.
    pub fn new(
        clock: Arc<dyn Clock>,
        metrics: Metrics,
        command_tokens: CommandTokens,
        outcomes: OutcomeLimits,
    ) -> Arc<Self> {
        Arc::new(Self {
            registry: Registry::default(),
            calls: calls::Calls::default(),
            recent: RecentOutcomes::new(outcomes),
            clock,
            metrics,
            command_tokens,
            draining: AtomicBool::new(false),
        })
    }

    fn now(&self) -> DateTime<Utc> {
        DateTime::from(self.clock.now())
    }

    /// Connected edges.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Refuses new commands from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Handles one message from an ingress. Opening and closing are rare
    /// and make large futures: they are boxed, so that the future of the
    /// common messages (outcomes, progress) stays small.
    pub async fn deliver(&self, key: &SessionKey, up: Up) {
        match up {
            Up::Opened(opened) => Box::pin(self.open(key, *opened)).await,
            Up::Capabilities(capabilities) => {
                self.registry.set_capabilities(key, capabilities);
            }
            Up::Reloaded(reloaded) => {
                self.registry
                    .reloaded(key, &reloaded.tags, &reloaded.public_key, reloaded.seq);
            }
            Up::Progress(progress) => self.calls.progress(key, *progress).await,
            Up::Result(outcome) => {
                // Kept before the waiters hear of it: a retry from then on
                // is answered here.
                self.recent.record(key.node_id, &key.tenant, &outcome);
                self.calls.complete(key, *outcome).await;
            }
            Up::Answer(outcome) => {
                self.calls.complete(key, *outcome).await;
            }
            // Why it ended is the ingress's business (it wrote the status).
            Up::Closed(_) => Box::pin(self.closed(key)).await,
        }
    }

    /// Registers a newly opened session, ending the stream it supersedes.
    async fn open(&self, key: &SessionKey, opened: Opened) {
        let now = self.now();
        let entry = SessionEntry {
            key: key.clone(),
            tenant_id: opened.tenant_id,
            capabilities: opened.capabilities,
            tags: opened.tags,
            commands: opened.commands,
            connected_at: now,
            hello_ms: opened.hello_ms,
            seq: opened.seq,
            public_key: opened.public_key,
        };
        let registered = match self
            .registry
            .register(entry, opened.epoch, opened.replay_window)
        {
            Ok(registered) => registered,
            Err((refusal, refused)) => {
                let message = if refusal == Refusal::Replayed {
                    "this node already opened a stream with this stream id; a Hello is \
                     never replayed: open every connection with a fresh stream id"
                } else {
                    "this node's live stream has a newer Hello; an older Hello cannot \
                     take over (check the edge's clock, or close the other stream)"
                };
                tracing::warn!(node_id = %key.node_id, stream_id = %key.stream_id, ?refusal, "refused a replayed or older Hello");
                self.metrics.handshake_failure("replayed");
                close(
                    &refused,
                    CloseReason::Rejected,
                    tonic::Code::AlreadyExists,
                    message,
                )
                .await;
                return;
            }
        };
        if registered.reload {
            tracing::debug!(node_id = %key.node_id, "a change landed while the Hello was checked; the session reloads");
        }
        if let Some(older) = registered.replaced {
            let older_key = older.key.clone();
            close(
                &older.commands,
                CloseReason::Superseded,
                tonic::Code::Aborted,
                "a newer stream of this node took over",
            )
            .await;
            self.calls
                .fail_session(
                    &older_key,
                    "edge_disconnected",
                    "the edge reconnected on a newer stream before answering",
                )
                .await;
        }
        self.metrics.edges_connected(self.registry.len());
    }

    /// Forgets an ended session and fails the calls it left unanswered.
    async fn closed(&self, key: &SessionKey) {
        self.registry.unregister(key);
        self.calls
            .fail_session(key, "edge_disconnected", STREAM_ENDED)
            .await;
        self.metrics.edges_connected(self.registry.len());
    }

    /// Sends `call` to `node_id` (of `tenant`, or any tenant for `None`)
    /// under `command_id`; a command id already in flight there is joined,
    /// not sent again.
    pub async fn invoke(
        self: &Arc<Self>,
        tenant: Option<&str>,
        node_id: Uuid,
        command_id: Uuid,
        call: &ToolCall,
    ) -> Result<CallHandle, DispatchError> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(DispatchError::Draining);
        }
        let session = self.session(tenant, node_id)?;
        let deadline = tokio::time::Instant::now() + call.deadline;
        // Finished already (perhaps through another ingress): never again.
        if let Some(outcome) = self.recent.answer(node_id, command_id) {
            return Ok(CallHandle::answered(
                outcome,
                node_id,
                deadline,
                Arc::clone(self),
            ));
        }
        let key = session.key.clone();
        let (joined, events) = self.calls.wait_for(command_id, &key);
        if joined == Joined::First {
            let to = Addressed {
                command_id,
                node_id,
                tenant_id: &session.tenant_id,
                now: self.now().timestamp(),
            };
            let command = match invoke_command(to, call, &self.command_tokens) {
                Ok(command) => command,
                Err(err) => {
                    // Retries that joined meanwhile learn the same.
                    self.calls
                        .abandon(&key, command_id, "internal", &err.to_string())
                        .await;
                    return Err(DispatchError::Command(err));
                }
            };
            let sent = tokio::time::timeout(
                SEND_TIMEOUT,
                session.commands.send(Down::Command(Box::new(command))),
            )
            .await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(_closed)) => {
                    // Retries that joined meanwhile learn the same.
                    self.calls
                        .abandon(&key, command_id, "edge_disconnected", NOT_SENT)
                        .await;
                    return Err(DispatchError::NotConnected(node_id));
                }
                Err(_elapsed) => {
                    self.calls
                        .abandon(&key, command_id, "edge_busy", QUEUE_FULL)
                        .await;
                    return Err(DispatchError::Busy(node_id));
                }
            }
        }
        // The stream may have ended (or been superseded) between the lookup
        // and `wait_for`, after it failed its calls: nobody else would end
        // this one.
        if !self.registry.is_current(&key) {
            self.calls
                .abandon(&key, command_id, "edge_disconnected", STREAM_ENDED)
                .await;
        }
        Ok(CallHandle::new(
            command_id,
            node_id,
            events,
            deadline,
            Arc::clone(self),
        ))
    }

    /// Sends a Cancel for `command_id` to `node_id` (best effort: a full
    /// queue or a gone session drops it).
    pub fn cancel_command(&self, node_id: Uuid, command_id: Uuid) {
        if let Some(session) = self.registry.get(node_id) {
            let _ = session
                .commands
                .try_send(Down::Command(Box::new(cancel_command(command_id))));
        }
    }

    /// Sends an operator command to `node_id`.
    pub async fn control(
        &self,
        tenant: Option<&str>,
        node_id: Uuid,
        control: &Control,
    ) -> Result<(), DispatchError> {
        let session = self.session(tenant, node_id)?;
        let command = Down::Command(Box::new(control.to_command()));
        match tokio::time::timeout(SEND_TIMEOUT, session.commands.send(command)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_closed)) => Err(DispatchError::NotConnected(node_id)),
            Err(_elapsed) => Err(DispatchError::Busy(node_id)),
        }
    }

    /// Whether `node_id` is connected.
    pub fn is_connected(&self, node_id: Uuid) -> bool {
        self.registry.contains(node_id)
    }

    fn session(&self, tenant: Option<&str>, node_id: Uuid) -> Result<SessionEntry, DispatchError> {
        match self.registry.get(node_id) {
            Some(session) if tenant.is_none_or(|tenant| *session.tenant_id == *tenant) => {
                Ok(session)
            }
            _ => Err(DispatchError::NotConnected(node_id)),
        }
    }
}

/// Asks a session to end. A session whose queue stays full this long is
/// stuck behind an edge that reads nothing; its keepalive ends it.
async fn close(commands: &DownLink, reason: CloseReason, code: tonic::Code, message: &str) {
    let close = Down::Close {
        reason,
        code,
        message: message.to_owned(),
    };
    if tokio::time::timeout(SEND_TIMEOUT, commands.send(close))
        .await
        .is_err()
    {
        tracing::warn!(?reason, "could not ask a stuck session to close");
    }
}

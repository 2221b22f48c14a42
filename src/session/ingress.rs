//! One task per ConnectEdge stream: authenticate the Hello before answering
//! (a refusal reaches the daemon as an error status, so it backs off), then
//! loop over the edge's events, the owner's commands, the heartbeat timer
//! and the replica's shutdown, until one of them ends the stream.

mod reload;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Status, Streaming};
use tracing::Instrument;
use uuid::Uuid;

use super::hello::{from_wire, variant_name, HelloChecker, HelloError};
use super::ledger::{Admission, Ledger, LedgerLimits};
use super::link::{failure, CloseReason, CommandOutcome, Down, Opened, Progress, SessionKey, Up};
use super::outbound::{Outbound, OutboundCommands};
pub use super::settings::SessionSettings;
use crate::edge::{EventError, EventKind, Inner, StreamAuth};
use crate::owner::Owner;
use crate::proto::cluster::{edge_command, edge_event, EdgeCommand, EdgeEvent};
use crate::runtime::Clock;
use crate::telemetry::Metrics;

/// An edge whose command queue stays full this long is not reading: its
/// stream ends (the session loop must keep serving its timers).
const EDGE_NOT_READING: Duration = Duration::from_secs(30);

/// Accepts ConnectEdge streams and runs their sessions.
pub struct Ingress {
    hello: HelloChecker,
    owner: Arc<Owner>,
    ledger: Ledger,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    settings: SessionSettings,
    replica: String,
    sessions: TaskTracker,
    stop: CancellationToken,
    /// The connection number of the next accepted stream: unique in this
    /// replica's life, so no two sessions of a node share a key.
    next_connection: AtomicU64,
}

impl std::fmt::Debug for Ingress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingress")
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

/// The parts of [`Ingress`] chosen by the replica.
pub struct IngressParts {
    /// Hello checks.
    pub hello: HelloChecker,
    /// The owner half.
    pub owner: Arc<Owner>,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// Metrics.
    pub metrics: Metrics,
    /// Settings.
    pub settings: SessionSettings,
    /// Replica name (log spans).
    pub replica: String,
    /// Fires when the replica drains.
    pub stop: CancellationToken,
}

impl Ingress {
    /// An ingress with no sessions.
    pub fn new(parts: IngressParts) -> Arc<Self> {
        Arc::new(Self {
            ledger: Ledger::new(LedgerLimits {
                retention: parts.settings.idempotency_retention,
                max_entries: parts.settings.idempotency_capacity,
                bytes_per_tenant: parts.settings.idempotency_bytes_per_tenant,
                max_bytes: super::ledger::MAX_BYTES,
            }),
            hello: parts.hello,
            owner: parts.owner,
            clock: parts.clock,
            metrics: parts.metrics,
            settings: parts.settings,
            replica: parts.replica,
            sessions: TaskTracker::new(),
            stop: parts.stop,
            next_connection: AtomicU64::new(1),
        })
    }

    fn now(&self) -> DateTime<Utc> {
        DateTime::from(self.clock.now())
    }

    /// Edge streams this replica holds now (its ingress half).
    pub fn live_streams(&self) -> usize {
        self.sessions.len()
    }

    /// Waits until every session task has ended (after `stop`).
    pub async fn wait_sessions(&self) {
        self.sessions.close();
        self.sessions.wait().await;
    }

    /// Authenticates the stream's Hello and starts its session; the error
    /// is the status the edge gets instead of response headers.
    pub async fn connect(
        self: &Arc<Self>,
        mut inbound: Streaming<EdgeEvent>,
    ) -> Result<OutboundCommands, Status> {
        // Taken before the Hello reads the store: a change applied after it
        // makes the session reload once registered.
        let epoch = self.owner.registry().epoch();
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
        let key = SessionKey {
            node_id,
            stream_id: hello.auth.stream_id().into(),
            connection: self.next_connection.fetch_add(1, Ordering::Relaxed),
        };
        let (commands_tx, commands_rx) = mpsc::channel(self.settings.command_queue);
        let (out_tx, out_rx) = mpsc::channel(self.settings.command_queue);
        let tenant_id: Arc<str> = hello.edge.tenant_id.as_str().into();
        let opened = Opened {
            tenant_id: Arc::clone(&tenant_id),
            capabilities: hello.capabilities,
            tags: hello.edge.tags.clone(),
            commands: commands_tx,
            seq: hello.edge.seq,
            public_key: hello.edge.public_key.clone(),
            epoch,
            hello_ms: hello.auth.last_timestamp_ms(),
            replay_window: self.settings.clock_skew.saturating_mul(2),
        };
        self.metrics.edge_event(EventKind::Hello.name());
        let span = tracing::info_span!(
            "edge_session",
            replica = %self.replica,
            node_id = %node_id,
            tenant = %tenant_id,
            stream_id = %key.stream_id,
        );
        let session = Session {
            ingress: Arc::clone(self),
            key,
            tenant: Arc::clone(&tenant_id),
            auth: hello.auth,
            inbound,
            commands: commands_rx,
            out: out_tx,
            in_flight: HashMap::new(),
        };
        // The task registers the session itself, so a caller that goes away
        // meanwhile cannot leave a registration without a task behind it;
        // headers are answered once the owner has the session.
        let (registered, is_registered) = tokio::sync::oneshot::channel();
        self.sessions
            .spawn(session.run(Box::new(opened), registered).instrument(span));
        let _ = is_registered.await;
        Ok(OutboundCommands::new(out_rx))
    }
}

struct Session {
    ingress: Arc<Ingress>,
    key: SessionKey,
    tenant: Arc<str>,
    auth: StreamAuth,
    inbound: Streaming<EdgeEvent>,
    commands: mpsc::Receiver<Down>,
    out: mpsc::Sender<Outbound>,
    /// Commands sent and not answered, with when each is released if the
    /// edge never answers (its deadline plus `call_grace`).
    in_flight: HashMap<Uuid, tokio::time::Instant>,
}

/// How a step of the loop ends the stream.
struct End {
    reason: CloseReason,
    status: Option<Status>,
}

impl Session {
    async fn run(mut self, opened: Box<Opened>, registered: tokio::sync::oneshot::Sender<()>) {
        let ingress = Arc::clone(&self.ingress);
        ingress.owner.deliver(&self.key, Up::Opened(opened)).await;
        let _ = registered.send(());
        tracing::info!("edge connected");
        let timeout = ingress.settings.heartbeat_timeout;
        let silence = tokio::time::sleep(timeout);
        tokio::pin!(silence);
        let mut draining = false;
        // Armed only while a command is unanswered.
        let mut release: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        let end = loop {
            let step = tokio::select! {
                biased;
                () = ingress.stop.cancelled(), if !draining => {
                    draining = true;
                    Ok(())
                }
                () = async {
                    if let Some(sleep) = release.as_mut() {
                        sleep.as_mut().await;
                    }
                }, if release.is_some() => {
                    self.release_overdue().await;
                    Ok(())
                }
                down = self.commands.recv() => match down {
                    Some(down) => self.on_down(down).await,
                    None => Err(End { reason: CloseReason::Superseded, status: None }),
                },
                event = self.inbound.message() => match event {
                    Ok(Some(event)) => match self.on_event(event).await {
                        Ok(true) => {
                            silence.as_mut().reset(tokio::time::Instant::now() + timeout);
                            Ok(())
                        }
                        Ok(false) => Ok(()),
                        Err(end) => Err(end),
                    },
                    Ok(None) | Err(_) => Err(End { reason: CloseReason::Disconnected, status: None }),
                },
                () = &mut silence => Err(End {
                    reason: CloseReason::HeartbeatTimeout,
                    status: Some(Status::unavailable(format!(
                        "no event from this edge for {timeout:?}; reconnect"
                    ))),
                }),
            };
            if let Err(end) = step {
                break end;
            }
            match self.in_flight.values().min().copied() {
                None => release = None,
                Some(at) => match release.as_mut() {
                    Some(sleep) if sleep.deadline() == at => {}
                    Some(sleep) => sleep.as_mut().reset(at),
                    None => release = Some(Box::pin(tokio::time::sleep_until(at))),
                },
            }
            if draining && self.in_flight.is_empty() {
                break End {
                    reason: CloseReason::ShuttingDown,
                    status: Some(Status::unavailable(
                        "this relay replica is shutting down; reconnect",
                    )),
                };
            }
        };
        self.finish(end).await;
    }

    /// Releases the commands the edge left unanswered past their deadline
    /// and `call_grace` (it still heartbeats): their waiters get `timeout`,
    /// and a retry of the same id gets that outcome, never a second run.
    async fn release_overdue(&mut self) {
        let ingress = Arc::clone(&self.ingress);
        let now = tokio::time::Instant::now();
        let overdue: Vec<Uuid> = self
            .in_flight
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        for command_id in overdue {
            self.in_flight.remove(&command_id);
            let released = failure(
                command_id,
                "timeout",
                "the edge did not answer within the deadline and relay.edges.call_grace; the \
                 tool may have run",
            );
            ingress
                .ledger
                .complete(self.key.node_id, command_id, &self.tenant, &released.result);
            ingress
                .owner
                .deliver(&self.key, Up::Result(Box::new(released)))
                .await;
            tracing::info!(%command_id, "released a command the edge never answered");
        }
    }

    async fn finish(mut self, end: End) {
        let ingress = Arc::clone(&self.ingress);
        if let Some(status) = end.status {
            // The edge may read nothing any more; the kill switch ends it then.
            let _ =
                tokio::time::timeout(Duration::from_secs(1), self.out.send(Box::new(Err(status))))
                    .await;
        }
        for command_id in std::mem::take(&mut self.in_flight).into_keys() {
            let lost = failure(
                command_id,
                "edge_disconnected",
                "the edge's stream ended before it answered; the tool may have run",
            );
            ingress
                .ledger
                .complete(self.key.node_id, command_id, &self.tenant, &lost.result);
            ingress
                .owner
                .deliver(&self.key, Up::Result(Box::new(lost)))
                .await;
        }
        ingress
            .owner
            .deliver(&self.key, Up::Closed(end.reason))
            .await;
        tracing::info!(reason = ?end.reason, "edge disconnected");
    }

    async fn send(&self, command: EdgeCommand) -> Result<(), End> {
        match tokio::time::timeout(EDGE_NOT_READING, self.out.send(Box::new(Ok(command)))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_closed)) => Err(End {
                reason: CloseReason::Disconnected,
                status: None,
            }),
            Err(_elapsed) => Err(End {
                reason: CloseReason::Disconnected,
                status: Some(Status::unavailable(format!(
                    "this edge read no command for {EDGE_NOT_READING:?}; reconnect"
                ))),
            }),
        }
    }

    async fn on_down(&mut self, down: Down) -> Result<(), End> {
        let ingress = Arc::clone(&self.ingress);
        match down {
            Down::Command(command) => {
                let kind = command_kind(&command);
                if let Some(edge_command::Command::InvokeTool(invoke)) = &command.command {
                    let Ok(command_id) = Uuid::parse_str(&invoke.command_id) else {
                        return Ok(());
                    };
                    match ingress
                        .ledger
                        .admit(self.key.node_id, command_id, self.key.connection)
                    {
                        Admission::Send => {
                            let deadline = invoke
                                .deadline
                                .as_ref()
                                .map_or(Duration::from_secs(60), |d| {
                                    Duration::from_secs(u64::try_from(d.seconds).unwrap_or(0))
                                });
                            let release = tokio::time::Instant::now()
                                .checked_add(deadline.saturating_add(ingress.settings.call_grace))
                                .unwrap_or_else(tokio::time::Instant::now);
                            self.in_flight.insert(command_id, release);
                        }
                        Admission::InFlight => return Ok(()),
                        Admission::Lost => {
                            let lost = failure(
                                command_id,
                                "edge_disconnected",
                                "this command was in flight on the edge's previous stream; the tool may have run",
                            );
                            ingress
                                .owner
                                .deliver(&self.key, Up::Result(Box::new(lost)))
                                .await;
                            return Ok(());
                        }
                        Admission::Expired => {
                            let expired = failure(
                                command_id,
                                "outcome_expired",
                                "this command ran already; its outcome was dropped to keep within \
                                 relay.edges.idempotency_bytes_per_tenant and is not sent again \
                                 (use a new Idempotency-Key to run it again)",
                            );
                            ingress
                                .owner
                                .deliver(&self.key, Up::Result(Box::new(expired)))
                                .await;
                            return Ok(());
                        }
                        Admission::Completed(result) => {
                            let outcome = CommandOutcome {
                                command_id,
                                result: (*result).clone(),
                            };
                            ingress
                                .owner
                                .deliver(&self.key, Up::Result(Box::new(outcome)))
                                .await;
                            return Ok(());
                        }
                    }
                }
                ingress.metrics.edge_command(kind);
                self.send(*command).await
            }
            Down::Close {
                reason,
                code,
                message,
            } => Err(End {
                reason,
                status: Some(Status::new(code, message)),
            }),
            Down::Reload => self.reload().await,
        }
    }

    /// Handles one event; `Ok(true)` when it was verified (liveness).
    async fn on_event(&mut self, event: EdgeEvent) -> Result<bool, End> {
        let ingress = Arc::clone(&self.ingress);
        let now = ingress.now();
        let Some(event) = event.event else {
            return Ok(false);
        };
        let kind = variant_name(&event);
        let verified = match &event {
            edge_event::Event::Hello(_) => {
                return Err(End {
                    reason: CloseReason::Rejected,
                    status: Some(Status::invalid_argument(
                        "a second Hello on a stream is not allowed; open a new stream",
                    )),
                });
            }
            edge_event::Event::Heartbeat(hb) => self.auth.check(
                hb.envelope.as_ref(),
                EventKind::Heartbeat,
                Inner::Empty,
                now,
            ),
            edge_event::Event::CommandResult(result) => self.auth.check(
                result.envelope.as_ref(),
                EventKind::CommandResult,
                Inner::CommandId(&result.command_id),
                now,
            ),
            edge_event::Event::CommandProgress(progress) => self.auth.check(
                progress.envelope.as_ref(),
                EventKind::CommandProgress,
                Inner::Progress {
                    command_id: &progress.command_id,
                    sequence: progress.sequence,
                    stderr: progress.stderr,
                    chunk: &progress.chunk,
                },
                now,
            ),
            // The protocol defines no signed kind for it: it is signed as a
            // heartbeat (kind 2, empty inner) binding node, stream and time.
            edge_event::Event::CapabilityUpdate(update) => self.auth.check(
                update.envelope.as_ref(),
                EventKind::Heartbeat,
                Inner::Empty,
                now,
            ),
        };
        if let Err(err) = verified {
            return Err(self.refuse(kind, &err));
        }
        ingress.metrics.edge_event(kind);
        self.act_on(event).await?;
        Ok(true)
    }

    /// Acts on a verified event.
    async fn act_on(&mut self, event: edge_event::Event) -> Result<(), End> {
        let ingress = Arc::clone(&self.ingress);
        match event {
            edge_event::Event::Hello(_) => Ok(()),
            edge_event::Event::Heartbeat(_) => {
                ingress.owner.deliver(&self.key, Up::Heartbeat).await;
                Ok(())
            }
            edge_event::Event::CapabilityUpdate(update) => {
                if let Some(capabilities) = &update.capabilities {
                    if let Err(err) = crate::enroll::check_edge_capabilities(
                        "capability_update.capabilities",
                        capabilities,
                    ) {
                        return Err(End {
                            reason: CloseReason::Rejected,
                            status: Some(Status::invalid_argument(format!(
                                "CapabilityUpdate refused: {err}"
                            ))),
                        });
                    }
                }
                let mut capabilities = update.capabilities.map(from_wire).unwrap_or_default();
                capabilities.tags.clear();
                ingress
                    .owner
                    .deliver(&self.key, Up::Capabilities(Box::new(capabilities)))
                    .await;
                Ok(())
            }
            edge_event::Event::CommandProgress(progress) => {
                let Some(command_id) = self.known_command(&progress.command_id) else {
                    return Ok(());
                };
                let progress = Progress {
                    command_id,
                    sequence: progress.sequence,
                    stderr: progress.stderr,
                    chunk: progress.chunk,
                };
                ingress
                    .owner
                    .deliver(&self.key, Up::Progress(Box::new(progress)))
                    .await;
                Ok(())
            }
            edge_event::Event::CommandResult(result) => {
                let Some(command_id) = self.known_command(&result.command_id) else {
                    return Ok(());
                };
                self.in_flight.remove(&command_id);
                let result = result.result.unwrap_or_default();
                ingress
                    .ledger
                    .complete(self.key.node_id, command_id, &self.tenant, &result);
                ingress
                    .owner
                    .deliver(
                        &self.key,
                        Up::Result(Box::new(CommandOutcome { command_id, result })),
                    )
                    .await;
                Ok(())
            }
        }
    }

    /// The command id if a command of this stream awaits it; late answers
    /// (a Cancel's acknowledgement of a finished command) are dropped.
    fn known_command(&self, command_id: &str) -> Option<Uuid> {
        Uuid::parse_str(command_id)
            .ok()
            .filter(|id| self.in_flight.contains_key(id))
    }

    fn refuse(&self, kind: &'static str, err: &EventError) -> End {
        self.ingress.metrics.edge_event_refused(kind);
        tracing::warn!(event = kind, error = %err, "edge event refused; ending the stream");
        End {
            reason: CloseReason::Rejected,
            status: Some(Status::unauthenticated(format!("event refused: {err}"))),
        }
    }
}

fn command_kind(command: &EdgeCommand) -> &'static str {
    match &command.command {
        Some(edge_command::Command::InvokeTool(_)) => "invoke_tool",
        Some(edge_command::Command::Cancel(_)) => "cancel",
        Some(edge_command::Command::PushConfig(_)) => "push_config",
        Some(edge_command::Command::Drain(_)) => "drain",
        Some(edge_command::Command::Shutdown(_)) => "shutdown",
        None => "empty",
    }
}

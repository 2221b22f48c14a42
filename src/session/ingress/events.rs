//! What a session does with an event from its edge: verify it (any failure
//! ends the stream), then act: heartbeats and capabilities are edge facts,
//! progress and results go back to the owner link whose command they
//! answer.

use std::sync::Arc;

use tonic::Status;
use uuid::Uuid;

use super::{End, Session};
use crate::edge::{EventError, EventKind, Inner};
use crate::hop::{CloseReason, CommandOutcome, Progress, Up};
use crate::proto::cluster::{edge_event, EdgeEvent};
use crate::session::hello::{from_wire, variant_name};

impl Session {
    /// Handles one event; `Ok(true)` when it was verified (liveness).
    pub(super) async fn on_event(&mut self, event: EdgeEvent) -> Result<bool, End> {
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
        match event {
            edge_event::Event::Hello(_) => Ok(()),
            edge_event::Event::Heartbeat(_) => {
                let (node_id, connection) = (self.key.node_id, self.key.connection);
                let now = self.ingress.now();
                self.ingress.facts.heartbeat(node_id, connection, now);
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
                let (node_id, connection) = (self.key.node_id, self.key.connection);
                let facts = &self.ingress.facts;
                facts.capabilities(node_id, connection, capabilities.clone());
                self.known.capabilities = Arc::new(capabilities);
                let capabilities = Arc::clone(&self.known.capabilities);
                self.to_all(|| Up::Capabilities(Arc::clone(&capabilities)))
                    .await;
                Ok(())
            }
            edge_event::Event::CommandProgress(progress) => {
                let Some(command_id) = self.known_command(&progress.command_id) else {
                    return Ok(());
                };
                let Some(link) = self.link_of(&command_id) else {
                    return Ok(());
                };
                let progress = Progress {
                    command_id,
                    sequence: progress.sequence,
                    stderr: progress.stderr,
                    chunk: progress.chunk,
                };
                self.to_link(link, Up::Progress(Box::new(progress))).await;
                Ok(())
            }
            edge_event::Event::CommandResult(result) => {
                let Some(command_id) = self.known_command(&result.command_id) else {
                    return Ok(());
                };
                let result = Arc::new(result.result.unwrap_or_default());
                self.answer(CommandOutcome { command_id, result }).await;
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

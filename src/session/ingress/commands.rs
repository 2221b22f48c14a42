//! What a session does with a message from one of its owner links: an
//! InvokeTool is deduplicated by command id in the replica's ledger (a
//! known id is answered on that link, never sent twice), other commands go
//! to the edge, Close ends the stream, Reload reloads the node's keys.

use std::time::Duration;

use tonic::Status;
use uuid::Uuid;

use super::{End, InFlight, Session};
use crate::hop::{failure, CommandOutcome, Down, LinkId, Up};
use crate::outcomes::EXPIRED_MESSAGE;
use crate::proto::cluster::{edge_command, EdgeCommand};
use crate::session::ledger::Admission;

impl Session {
    pub(super) async fn on_down(&mut self, link: LinkId, down: Down) -> Result<(), End> {
        if usize::try_from(link)
            .ok()
            .and_then(|index| self.links.get(index))
            .is_none_or(Option::is_none)
        {
            // A retired link's owner let the session go before this was read.
            tracing::debug!(link, "dropped a message of a retired owner link");
            return Ok(());
        }
        match down {
            Down::Command(command) => self.on_command(link, *command).await,
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

    async fn on_command(&mut self, link: LinkId, command: EdgeCommand) -> Result<(), End> {
        let ingress = std::sync::Arc::clone(&self.ingress);
        let kind = command_kind(&command);
        if let Some(edge_command::Command::InvokeTool(invoke)) = &command.command {
            let Ok(command_id) = Uuid::parse_str(&invoke.command_id) else {
                return Ok(());
            };
            let answer = match ingress
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
                    self.in_flight
                        .insert(command_id, InFlight { release, link });
                    None
                }
                Admission::InFlight => return Ok(()),
                Admission::Lost => Some(Up::Answer(Box::new(failure(
                    command_id,
                    "edge_disconnected",
                    "this command was in flight on the edge's previous stream; the tool may have run",
                )))),
                Admission::Expired => Some(Up::Answer(Box::new(failure(
                    command_id,
                    "outcome_expired",
                    EXPIRED_MESSAGE,
                )))),
                Admission::Completed(result) => {
                    Some(Up::Result(Box::new(CommandOutcome { command_id, result })))
                }
            };
            if let Some(answer) = answer {
                self.to_link(link, answer).await;
                return Ok(());
            }
        }
        ingress.metrics.edge_command(kind);
        self.send(command).await
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

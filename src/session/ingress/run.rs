//! The session loop: the edge's events, the owners' messages, the release
//! timer of unanswered commands, re-homing and the replica's drain, until
//! one of them ends the stream; then every owner link learns the end.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::Status;
use uuid::Uuid;

use super::{End, Session};
use crate::hop::{failure, CloseReason, Opened, Owners, Up};
use crate::session::edge_facts::FactsStream;
use crate::store::EdgeStatus;

/// An edge whose command queue stays full this long is not reading: its
/// stream ends (the session loop must keep serving its timers).
const EDGE_NOT_READING: Duration = Duration::from_secs(30);

impl Session {
    pub(super) async fn run(
        mut self,
        opened: Box<Opened>,
        owners: watch::Receiver<Owners>,
        registered: tokio::sync::oneshot::Sender<()>,
    ) {
        let ingress = Arc::clone(&self.ingress);
        let (node_id, connection) = (self.key.node_id, self.key.connection);
        let stream = FactsStream {
            connection,
            hello_ms: self.known.hello_ms,
            stream_id: Arc::clone(&self.key.stream_id),
        };
        if ingress.facts.hold(node_id, &stream) {
            ingress.facts.heartbeat(node_id, connection, ingress.now());
            let capabilities = (*self.known.capabilities).clone();
            ingress
                .facts
                .capabilities(node_id, connection, capabilities);
        }
        self.to_current(Up::Opened(opened)).await;
        let _ = registered.send(());
        tracing::info!("edge connected");
        let timeout = ingress.settings.heartbeat_timeout;
        let silence = tokio::time::sleep(timeout);
        tokio::pin!(silence);
        let mut draining = false;
        // Armed only while a command is unanswered.
        let mut release: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        // Made once: made in the loop, each step would enter and leave the
        // tokens' waiter lists, which every session of the replica shares.
        let end_streams = ingress.end_streams.cancelled();
        tokio::pin!(end_streams);
        let finish_in_flight = ingress.finish_in_flight.cancelled();
        tokio::pin!(finish_in_flight);
        let owner_change = next_owners(owners);
        tokio::pin!(owner_change);
        let mut routed = true;
        let end = loop {
            let step = tokio::select! {
                biased;
                () = &mut end_streams => Err(shutting_down()),
                () = &mut finish_in_flight, if !draining => {
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
                change = &mut owner_change, if routed => {
                    match change {
                        Some((owners, receiver)) => {
                            owner_change.set(next_owners(receiver));
                            self.rehome(owners).await;
                        }
                        None => routed = false,
                    }
                    Ok(())
                }
                tagged = self.commands.recv() => match tagged {
                    Some(tagged) => self.on_down(tagged.link, tagged.down).await,
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
            self.retire_idle().await;
            match self.in_flight.values().map(|f| f.release).min() {
                None => release = None,
                Some(at) => match release.as_mut() {
                    Some(sleep) if sleep.deadline() == at => {}
                    Some(sleep) => sleep.as_mut().reset(at),
                    None => release = Some(Box::pin(tokio::time::sleep_until(at))),
                },
            }
            if draining && self.in_flight.is_empty() {
                break shutting_down();
            }
        };
        self.finish(end).await;
    }

    /// Releases the commands the edge left unanswered past their deadline
    /// and `call_grace` (it still heartbeats): their waiters get `timeout`,
    /// and a retry of the same id gets that outcome, never a second run.
    async fn release_overdue(&mut self) {
        let now = tokio::time::Instant::now();
        let mut overdue: Vec<Uuid> = self
            .in_flight
            .iter()
            .filter(|(_, sent)| sent.release <= now)
            .map(|(id, _)| *id)
            .collect();
        overdue.sort_unstable();
        for command_id in overdue {
            let released = failure(
                command_id,
                "timeout",
                "the edge did not answer within the deadline and relay.edges.call_grace; the \
                 tool may have run",
            );
            self.answer(released).await;
            tracing::info!(%command_id, "released a command the edge never answered");
        }
    }

    async fn finish(mut self, end: End) {
        let (node_id, connection) = (self.key.node_id, self.key.connection);
        if end.reason == CloseReason::HeartbeatTimeout {
            let facts = &self.ingress.facts;
            facts.status(node_id, connection, EdgeStatus::Unhealthy);
        }
        self.ingress.facts.release(node_id, connection);
        if let Some(status) = end.status {
            // The edge may read nothing any more; the kill switch ends it then.
            let _ =
                tokio::time::timeout(Duration::from_secs(1), self.out.send(Box::new(Err(status))))
                    .await;
        }
        let mut lost: Vec<Uuid> = self.in_flight.keys().copied().collect();
        lost.sort_unstable();
        for command_id in lost {
            let lost = failure(
                command_id,
                "edge_disconnected",
                "the edge's stream ended before it answered; the tool may have run",
            );
            self.answer(lost).await;
        }
        for link in std::mem::take(&mut self.links).into_iter().flatten() {
            link.send(&self.key, Up::Closed(end.reason)).await;
        }
        tracing::info!(reason = ?end.reason, "edge disconnected");
    }

    pub(super) async fn send(
        &self,
        command: crate::proto::cluster::EdgeCommand,
    ) -> Result<(), End> {
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
}

/// The ingress's next routing, with the receiver that waits for the one
/// after; `None` once the ingress is gone. Made once per change, not per
/// step of the loop (each making would enter and leave a waiter list every
/// session of the replica shares).
async fn next_owners(
    mut receiver: watch::Receiver<Owners>,
) -> Option<(Owners, watch::Receiver<Owners>)> {
    receiver.changed().await.ok()?;
    let owners = receiver.borrow_and_update().clone();
    Some((owners, receiver))
}

/// How the drain ends a stream (its commands in flight, if any, end
/// `edge_disconnected`).
fn shutting_down() -> End {
    End {
        reason: CloseReason::ShuttingDown,
        status: Some(Status::unavailable(
            "this relay replica is shutting down; reconnect",
        )),
    }
}

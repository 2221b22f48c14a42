//! Calls in flight at the owner: who waits for which command id, and the
//! handle a caller reads progress and the outcome from. Several waiters may
//! share a command id (an `Idempotency-Key` retry while the first call
//! runs); each gets the outcome.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;
use uuid::Uuid;

use crate::hop::{failure, CommandOutcome, Progress, SessionKey};

/// What a caller receives about its command.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// A chunk of output, in the edge's order.
    Progress(Box<Progress>),
    /// The end: the edge's result or a failure the relay decided.
    Done(Box<CommandOutcome>),
}

/// Slots per call between the owner and its caller.
const CALL_QUEUE: usize = 64;
/// How long a slow caller may hold up an edge's stream before its progress
/// chunks are dropped (the outcome is still delivered).
const SLOW_CALLER: Duration = Duration::from_secs(1);

struct Waiting {
    session: SessionKey,
    waiters: Vec<mpsc::Sender<CallEvent>>,
}

/// Waiters by node, then by command id and stream: command ids come from
/// callers (`Idempotency-Key`), so the same id may name commands on two
/// nodes, or on an ending and a newer stream of one node (a retry holding
/// the older stream must not displace the newer stream's waiters); a closed
/// stream fails its node's calls without scanning everyone else's.
#[derive(Default)]
pub struct Calls {
    inner: Mutex<HashMap<Uuid, NodeCalls>>,
}

/// A node's calls by (command id, `SessionKey::connection`).
type NodeCalls = HashMap<(Uuid, u64), Waiting>;

impl std::fmt::Debug for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls").finish_non_exhaustive()
    }
}

/// Whether a new waiter started the command or joined one in flight.
#[derive(Debug, PartialEq, Eq)]
pub enum Joined {
    /// First waiter: the command must be sent.
    First,
    /// The command is already in flight on this session.
    Existing,
}

impl Calls {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, NodeCalls>> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a waiter for `command_id` on `session`.
    pub fn wait_for(
        &self,
        command_id: Uuid,
        session: &SessionKey,
    ) -> (Joined, mpsc::Receiver<CallEvent>) {
        let (tx, rx) = mpsc::channel(CALL_QUEUE);
        let mut inner = self.lock();
        let node = inner.entry(session.node_id).or_default();
        match node.get_mut(&(command_id, session.connection)) {
            Some(waiting) if waiting.session == *session => {
                waiting.waiters.push(tx);
                (Joined::Existing, rx)
            }
            _ => {
                node.insert(
                    (command_id, session.connection),
                    Waiting {
                        session: session.clone(),
                        waiters: vec![tx],
                    },
                );
                (Joined::First, rx)
            }
        }
    }

    /// Ends `command_id` on `session` with a failure for everyone waiting on
    /// it there (it could not be sent, or its stream is gone). A call of the
    /// same id on another stream of the node is left alone.
    pub async fn abandon(&self, session: &SessionKey, command_id: Uuid, kind: &str, message: &str) {
        let waiting = {
            let mut inner = self.lock();
            remove_call(&mut inner, session, command_id)
        };
        if let Some(waiting) = waiting {
            let failure = failure(command_id, kind, message);
            deliver(waiting.waiters, failure).await;
        }
    }

    /// Hands a progress chunk from `session` to the command's waiters.
    pub async fn progress(&self, session: &SessionKey, progress: Progress) {
        let waiters = {
            let inner = self.lock();
            match inner
                .get(&session.node_id)
                .and_then(|node| node.get(&(progress.command_id, session.connection)))
            {
                Some(waiting) if waiting.session == *session => waiting.waiters.clone(),
                _ => return,
            }
        };
        hand_to(
            &waiters,
            CallEvent::Progress(Box::new(progress)),
            SLOW_CALLER,
        )
        .await;
    }

    /// Hands the outcome from `session` to the command's waiters; false when
    /// nobody waited for it there.
    pub async fn complete(&self, session: &SessionKey, outcome: CommandOutcome) -> bool {
        let waiting = {
            let mut inner = self.lock();
            remove_call(&mut inner, session, outcome.command_id)
        };
        let Some(waiting) = waiting else {
            return false;
        };
        deliver(waiting.waiters, outcome).await;
        true
    }

    /// Fails every command still awaited on `session` (its stream ended).
    pub async fn fail_session(&self, session: &SessionKey, kind: &str, message: &str) {
        let failed: Vec<(Uuid, Vec<mpsc::Sender<CallEvent>>)> = {
            let mut inner = self.lock();
            let Some(node) = inner.get_mut(&session.node_id) else {
                return;
            };
            let mut keys: Vec<(Uuid, u64)> = node
                .iter()
                .filter(|(_, waiting)| waiting.session == *session)
                .map(|(key, _)| *key)
                .collect();
            // Callers learn of the failure in command-id order, not the map's.
            keys.sort_unstable();
            let failed = keys
                .into_iter()
                .filter_map(|key| node.remove(&key).map(|waiting| (key.0, waiting.waiters)))
                .collect();
            if node.is_empty() {
                inner.remove(&session.node_id);
            }
            failed
        };
        for (command_id, waiters) in failed {
            deliver(waiters, failure(command_id, kind, message)).await;
        }
    }
}

/// Removes `session`'s call `command_id`, and its node's map when that was
/// the node's last call.
fn remove_call(
    inner: &mut HashMap<Uuid, NodeCalls>,
    session: &SessionKey,
    command_id: Uuid,
) -> Option<Waiting> {
    let node = inner.get_mut(&session.node_id)?;
    let key = (command_id, session.connection);
    if !node
        .get(&key)
        .is_some_and(|waiting| waiting.session == *session)
    {
        return None;
    }
    let removed = node.remove(&key);
    if node.is_empty() {
        inner.remove(&session.node_id);
    }
    removed
}

/// The outcome must arrive even behind queued progress; a caller that
/// stopped reading for this long has gone.
const OUTCOME_PATIENCE: Duration = Duration::from_secs(10);

async fn deliver(waiters: Vec<mpsc::Sender<CallEvent>>, outcome: CommandOutcome) {
    hand_to(
        &waiters,
        CallEvent::Done(Box::new(outcome)),
        OUTCOME_PATIENCE,
    )
    .await;
}

/// Hands `event` to every waiter, the last one without a copy.
async fn hand_to(waiters: &[mpsc::Sender<CallEvent>], event: CallEvent, patience: Duration) {
    let Some((last, others)) = waiters.split_last() else {
        return;
    };
    for waiter in others {
        if let Some(wait) = hand_one(waiter, event.clone(), patience) {
            wait.await;
        }
    }
    if let Some(wait) = hand_one(last, event, patience) {
        wait.await;
    }
}

/// A wait for room in a caller's queue.
type RoomWait<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// Queues `event` for `waiter` at once when there is room (nearly always);
/// else the wait, up to `patience`, for room. The wait is boxed so that the
/// future every outcome and chunk makes stays small.
fn hand_one(
    waiter: &mpsc::Sender<CallEvent>,
    event: CallEvent,
    patience: Duration,
) -> Option<RoomWait<'_>> {
    match waiter.try_send(event) {
        Ok(()) | Err(TrySendError::Closed(_)) => None,
        Err(TrySendError::Full(event)) => Some(Box::pin(async move {
            let _ = tokio::time::timeout(patience, waiter.send(event)).await;
        })),
    }
}

/// A caller's view of one command: progress in order, then one outcome,
/// which is `timeout` when the deadline passes first (the edge is then sent
/// a Cancel).
pub struct CallHandle {
    command_id: Uuid,
    node_id: Uuid,
    events: mpsc::Receiver<CallEvent>,
    deadline: Instant,
    owner: Arc<super::Owner>,
    finished: bool,
}

impl std::fmt::Debug for CallHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallHandle")
            .field("command_id", &self.command_id)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl CallHandle {
    pub(super) fn new(
        command_id: Uuid,
        node_id: Uuid,
        events: mpsc::Receiver<CallEvent>,
        deadline: Instant,
        owner: Arc<super::Owner>,
    ) -> Self {
        Self {
            command_id,
            node_id,
            events,
            deadline,
            owner,
            finished: false,
        }
    }

    /// A handle whose outcome is known already (a retry of a finished
    /// command).
    pub(super) fn answered(
        outcome: CommandOutcome,
        node_id: Uuid,
        deadline: Instant,
        owner: Arc<super::Owner>,
    ) -> Self {
        let (tx, events) = mpsc::channel(1);
        let command_id = outcome.command_id;
        // A new channel has room for its one event.
        let _ = tx.try_send(CallEvent::Done(Box::new(outcome)));
        Self::new(command_id, node_id, events, deadline, owner)
    }

    /// The command id the edge sees.
    pub fn command_id(&self) -> Uuid {
        self.command_id
    }

    /// The target edge.
    pub fn node_id(&self) -> Uuid {
        self.node_id
    }

    /// The next event; after `Done`, always `None`.
    pub async fn next(&mut self) -> Option<CallEvent> {
        if self.finished {
            return None;
        }
        let event = tokio::select! {
            event = self.events.recv() => event.unwrap_or_else(|| {
                CallEvent::Done(Box::new(failure(
                    self.command_id,
                    "edge_disconnected",
                    "the edge's session ended before the command finished",
                )))
            }),
            () = tokio::time::sleep_until(self.deadline) => {
                self.owner.cancel_command(self.node_id, self.command_id);
                CallEvent::Done(Box::new(failure(
                    self.command_id,
                    "timeout",
                    "the edge did not answer within the deadline; a Cancel was sent",
                )))
            }
        };
        if matches!(event, CallEvent::Done(_)) {
            self.finished = true;
        }
        Some(event)
    }

    /// Cancels the command: the edge is sent a Cancel and this call ends
    /// with `cancelled` unless its outcome is already in.
    pub async fn cancel(mut self, reason: &str) -> CommandOutcome {
        self.owner.cancel_command(self.node_id, self.command_id);
        self.finished = true;
        // An outcome already queued behind progress wins over the cancel.
        while let Ok(event) = self.events.try_recv() {
            if let CallEvent::Done(outcome) = event {
                return *outcome;
            }
        }
        failure(self.command_id, "cancelled", reason)
    }

    /// Reads to the end, dropping progress; the outcome.
    pub async fn outcome(mut self) -> CommandOutcome {
        while let Some(event) = self.next().await {
            if let CallEvent::Done(outcome) = event {
                return *outcome;
            }
        }
        failure(self.command_id, "internal", "call ended without an outcome")
    }
}

impl Drop for CallHandle {
    /// A caller that goes away before the outcome cancels its command.
    fn drop(&mut self) {
        if !self.finished {
            self.owner.cancel_command(self.node_id, self.command_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(node_id: Uuid, stream: &str, connection: u64) -> SessionKey {
        SessionKey {
            node_id,
            tenant: Arc::from("t-a"),
            stream_id: Arc::from(stream),
            ingress: crate::hop::IngressId::new("r-1", 1),
            connection,
        }
    }

    fn outcome(event: Option<CallEvent>) -> Option<CommandOutcome> {
        match event {
            Some(CallEvent::Done(outcome)) => Some(*outcome),
            _ => None,
        }
    }

    #[tokio::test]
    async fn a_closed_stream_fails_only_its_own_calls() {
        let calls = Calls::default();
        let shared_id = crate::runtime::test_id();
        let (a, b) = (
            session(crate::runtime::test_id(), "a", 1),
            session(crate::runtime::test_id(), "b", 1),
        );
        let newer_a = session(a.node_id, "a2", 2);
        let (joined, mut on_a) = calls.wait_for(shared_id, &a);
        assert_eq!(joined, Joined::First);
        let (joined, mut on_b) = calls.wait_for(shared_id, &b);
        assert_eq!(
            joined,
            Joined::First,
            "same id on another node is another call"
        );
        let (joined, mut retry_on_a) = calls.wait_for(shared_id, &a);
        assert_eq!(joined, Joined::Existing);
        let other_id = crate::runtime::test_id();
        let (_, mut on_newer_a) = calls.wait_for(other_id, &newer_a);

        calls.fail_session(&a, "edge_disconnected", "gone").await;
        for receiver in [&mut on_a, &mut retry_on_a] {
            let failed = outcome(receiver.recv().await);
            assert_eq!(failed.map(|o| o.command_id), Some(shared_id));
        }
        assert!(on_b.try_recv().is_err(), "node b's call must stay open");
        assert!(
            on_newer_a.try_recv().is_err(),
            "a newer stream's call must stay open"
        );

        let done = failure(shared_id, "x", "from b");
        assert!(calls.complete(&b, done).await);
        assert_eq!(
            outcome(on_b.recv().await).map(|o| o.command_id),
            Some(shared_id)
        );
        let stale = failure(other_id, "x", "from the old stream");
        assert!(
            !calls.complete(&a, stale).await,
            "an older stream cannot complete it"
        );
        calls.abandon(&a, other_id, "x", "not a's call").await;
        assert!(
            on_newer_a.try_recv().is_err(),
            "abandoned by another stream"
        );
        calls.abandon(&newer_a, other_id, "edge_busy", "full").await;
        let failed = outcome(on_newer_a.recv().await);
        assert_eq!(
            failed.map(|o| o.result.error_kind.clone()),
            Some("edge_busy".to_owned())
        );
        assert!(calls.lock().is_empty(), "emptied nodes are dropped");
    }

    #[tokio::test]
    async fn a_retry_holding_an_older_stream_leaves_the_newer_streams_call_alone() {
        let calls = Calls::default();
        let node = crate::runtime::test_id();
        let (older, newer) = (session(node, "s", 1), session(node, "s-2", 2));
        let id = crate::runtime::test_id();
        let (joined, mut first) = calls.wait_for(id, &newer);
        assert_eq!(joined, Joined::First);
        let (joined, _stale) = calls.wait_for(id, &older);
        assert_eq!(
            joined,
            Joined::First,
            "a call of its own on the older stream"
        );
        calls.abandon(&older, id, "edge_disconnected", "gone").await;
        assert!(
            first.try_recv().is_err(),
            "the newer stream's caller was failed"
        );
        let done = failure(id, "", "the real result");
        assert!(calls.complete(&newer, done).await);
        assert_eq!(outcome(first.recv().await).map(|o| o.command_id), Some(id));
    }
}

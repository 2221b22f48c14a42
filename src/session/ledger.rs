//! Command deduplication at the ingress: a command id already in flight on
//! an edge, or completed recently, is never sent to the edge again. A retry
//! of a completed command gets the first outcome back; a retry of one that
//! was in flight when its stream broke gets `edge_disconnected` again (the
//! tool may have run: it is never re-run silently).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use crate::proto::cluster::EdgeResult;

/// What to do with a command about to be sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// New: send it.
    Send,
    /// Already on its way or running: its result will come.
    InFlight,
    /// Done before: answer with this outcome, do not send.
    Completed(Arc<EdgeResult>),
}

enum Entry {
    InFlight,
    Done(Arc<EdgeResult>),
}

struct Inner {
    entries: HashMap<(Uuid, Uuid), Entry>,
    expiry: VecDeque<(Instant, (Uuid, Uuid))>,
}

/// Commands per (node, command id), outcomes kept for a retention period.
pub struct Ledger {
    inner: Mutex<Inner>,
    retention: Duration,
    max_entries: usize,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Keeps outcomes for `retention`, and at most `max_entries` of them
    /// (the oldest go first beyond that).
    pub fn new(retention: Duration, max_entries: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                expiry: VecDeque::new(),
            }),
            retention,
            max_entries: max_entries.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Decides whether `command_id` goes to `node_id`; a new one is marked
    /// in flight.
    pub fn admit(&self, node_id: Uuid, command_id: Uuid) -> Admission {
        let now = Instant::now();
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        match inner.entries.get(&(node_id, command_id)) {
            Some(Entry::InFlight) => Admission::InFlight,
            Some(Entry::Done(result)) => Admission::Completed(Arc::clone(result)),
            None => {
                inner.entries.insert((node_id, command_id), Entry::InFlight);
                Admission::Send
            }
        }
    }

    /// Records the outcome of a command in flight; false when the command
    /// was not in flight (unknown, or completed already: a late duplicate).
    pub fn complete(&self, node_id: Uuid, command_id: Uuid, result: &EdgeResult) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        let key = (node_id, command_id);
        match inner.entries.get_mut(&key) {
            Some(entry @ Entry::InFlight) => {
                *entry = Entry::Done(Arc::new(result.clone()));
                inner.expiry.push_back((now + self.retention, key));
                true
            }
            _ => false,
        }
    }

    /// Commands in flight.
    pub fn in_flight(&self) -> usize {
        self.lock()
            .entries
            .values()
            .filter(|entry| matches!(entry, Entry::InFlight))
            .count()
    }

    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some(&(at, key)) = inner.expiry.front() {
            if at > now && inner.expiry.len() <= self.max_entries {
                break;
            }
            inner.expiry.pop_front();
            if matches!(inner.entries.get(&key), Some(Entry::Done(_))) {
                inner.entries.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_sent_once_and_its_outcome_replayed() {
        let ledger = Ledger::new(Duration::from_secs(600), 100);
        let (node, cmd) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(ledger.admit(node, cmd), Admission::Send);
        assert_eq!(ledger.admit(node, cmd), Admission::InFlight);
        assert_eq!(ledger.admit(Uuid::new_v4(), cmd), Admission::Send);
        let result = EdgeResult {
            ok: true,
            exit_code: 0,
            ..EdgeResult::default()
        };
        assert!(ledger.complete(node, cmd, &result));
        assert!(!ledger.complete(node, cmd, &EdgeResult::default()));
        assert_eq!(
            ledger.admit(node, cmd),
            Admission::Completed(Arc::new(result))
        );
    }

    #[test]
    fn beyond_the_cap_the_oldest_outcomes_go() {
        let ledger = Ledger::new(Duration::from_secs(600), 2);
        let node = Uuid::new_v4();
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        for id in &ids {
            assert_eq!(ledger.admit(node, *id), Admission::Send);
            assert!(ledger.complete(node, *id, &EdgeResult::default()));
        }
        assert_eq!(ledger.admit(node, Uuid::new_v4()), Admission::Send);
        assert_eq!(ledger.admit(node, ids[0]), Admission::Send);
        assert!(matches!(
            ledger.admit(node, ids[2]),
            Admission::Completed(_)
        ));
    }
}

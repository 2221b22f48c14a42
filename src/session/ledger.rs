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
    /// In flight on an older stream of the node, which is ending: its
    /// outcome is unknown (answer `edge_disconnected`, do not send).
    Lost,
}

enum Entry {
    /// On the stream with this `SessionKey::connection`.
    InFlight(u64),
    Done(Arc<EdgeResult>, usize),
}

struct Inner {
    entries: HashMap<(Uuid, Uuid), Entry>,
    expiry: VecDeque<(Instant, (Uuid, Uuid))>,
    bytes: usize,
}

/// Most output bytes kept in outcomes by default; the oldest go first
/// beyond it.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// Commands per (node, command id), outcomes kept for a retention period.
pub struct Ledger {
    inner: Mutex<Inner>,
    retention: Duration,
    max_entries: usize,
    max_bytes: usize,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Keeps outcomes for `retention`, at most `max_entries` of them and at
    /// most `max_bytes` of their output (stdout, stderr and error message);
    /// the oldest go first beyond either cap.
    pub fn new(retention: Duration, max_entries: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                expiry: VecDeque::new(),
                bytes: 0,
            }),
            retention,
            max_entries: max_entries.max(1),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Decides whether `command_id` goes to `node_id` on the stream
    /// numbered `connection` (`SessionKey::connection`); a new one is marked
    /// in flight there.
    pub fn admit(&self, node_id: Uuid, command_id: Uuid, connection: u64) -> Admission {
        let now = Instant::now();
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        match inner.entries.get(&(node_id, command_id)) {
            Some(Entry::InFlight(on)) if *on == connection => Admission::InFlight,
            Some(Entry::InFlight(_)) => Admission::Lost,
            Some(Entry::Done(result, _)) => Admission::Completed(Arc::clone(result)),
            None => {
                inner
                    .entries
                    .insert((node_id, command_id), Entry::InFlight(connection));
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
            Some(entry @ Entry::InFlight(_)) => {
                let bytes = result.stdout.len() + result.stderr.len() + result.error_message.len();
                *entry = Entry::Done(Arc::new(result.clone()), bytes);
                inner.bytes += bytes;
                inner.expiry.push_back((now + self.retention, key));
                true
            }
            _ => false,
        }
    }

    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some(&(at, key)) = inner.expiry.front() {
            if at > now && inner.expiry.len() <= self.max_entries && inner.bytes <= self.max_bytes {
                break;
            }
            inner.expiry.pop_front();
            if let Some(Entry::Done(_, bytes)) = inner.entries.get(&key) {
                inner.bytes -= *bytes;
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
        let ledger = Ledger::new(Duration::from_secs(600), 100, DEFAULT_MAX_BYTES);
        let (node, cmd) = (crate::runtime::test_id(), crate::runtime::test_id());
        let (stream, newer) = (1, 2);
        assert_eq!(ledger.admit(node, cmd, stream), Admission::Send);
        assert_eq!(ledger.admit(node, cmd, stream), Admission::InFlight);
        assert_eq!(ledger.admit(node, cmd, newer), Admission::Lost);
        assert_eq!(
            ledger.admit(crate::runtime::test_id(), cmd, stream),
            Admission::Send
        );
        let result = EdgeResult {
            ok: true,
            exit_code: 0,
            ..EdgeResult::default()
        };
        assert!(ledger.complete(node, cmd, &result));
        assert!(!ledger.complete(node, cmd, &EdgeResult::default()));
        assert_eq!(
            ledger.admit(node, cmd, newer),
            Admission::Completed(Arc::new(result))
        );
    }

    #[test]
    fn beyond_the_cap_the_oldest_outcomes_go() {
        let ledger = Ledger::new(Duration::from_secs(600), 2, DEFAULT_MAX_BYTES);
        let node = crate::runtime::test_id();
        let s = 1;
        let ids: Vec<Uuid> = (0..3).map(|_| crate::runtime::test_id()).collect();
        for id in &ids {
            assert_eq!(ledger.admit(node, *id, s), Admission::Send);
            assert!(ledger.complete(node, *id, &EdgeResult::default()));
        }
        assert_eq!(
            ledger.admit(node, crate::runtime::test_id(), s),
            Admission::Send
        );
        assert_eq!(ledger.admit(node, ids[0], s), Admission::Send);
        assert!(matches!(
            ledger.admit(node, ids[2], s),
            Admission::Completed(_)
        ));
    }

    fn output(stdout: &str, stderr: &str, error: &str) -> EdgeResult {
        EdgeResult {
            stdout: stdout.into(),
            stderr: stderr.into(),
            error_message: error.into(),
            ..EdgeResult::default()
        }
    }

    #[test]
    fn beyond_the_byte_cap_the_oldest_outcomes_go() {
        // 10 bytes of output in all; each outcome below holds 4.
        let ledger = Ledger::new(Duration::from_secs(600), 100, 10);
        let node = crate::runtime::test_id();
        let s = 1;
        let ids: Vec<Uuid> = (0..3).map(|_| crate::runtime::test_id()).collect();
        let outcomes = [
            output("abcd", "", ""),
            output("ab", "cd", ""),
            output("", "a", "bcd"),
        ];
        for (id, outcome) in ids.iter().zip(&outcomes) {
            assert_eq!(ledger.admit(node, *id, s), Admission::Send);
            assert!(ledger.complete(node, *id, outcome));
        }
        // 12 bytes kept > 10: the next admission drops the oldest (8 left),
        // and only the oldest; the others still replay their own outcome.
        assert_eq!(
            ledger.admit(node, ids[1], s),
            Admission::Completed(Arc::new(outcomes[1].clone()))
        );
        assert_eq!(
            ledger.admit(node, ids[2], s),
            Admission::Completed(Arc::new(outcomes[2].clone()))
        );
        assert_eq!(ledger.admit(node, ids[0], s), Admission::Send);
    }

    #[test]
    fn an_outcome_larger_than_the_byte_cap_is_not_kept() {
        let ledger = Ledger::new(Duration::from_secs(600), 100, 10);
        let (node, small, large) = (
            crate::runtime::test_id(),
            crate::runtime::test_id(),
            crate::runtime::test_id(),
        );
        assert_eq!(ledger.admit(node, small, 1), Admission::Send);
        assert!(ledger.complete(node, small, &output("ok", "", "")));
        assert_eq!(ledger.admit(node, large, 1), Admission::Send);
        assert!(ledger.complete(node, large, &output("0123456789a", "", "")));
        // Over the cap the oldest go first until it fits: both, here.
        assert_eq!(ledger.admit(node, large, 1), Admission::Send);
        assert_eq!(ledger.admit(node, small, 1), Admission::Send);
    }

    #[test]
    fn at_the_byte_cap_every_outcome_stays() {
        let ledger = Ledger::new(Duration::from_secs(600), 100, 8);
        let node = crate::runtime::test_id();
        let ids: Vec<Uuid> = (0..2).map(|_| crate::runtime::test_id()).collect();
        for id in &ids {
            assert_eq!(ledger.admit(node, *id, 1), Admission::Send);
            assert!(ledger.complete(node, *id, &output("abcd", "", "")));
        }
        for id in &ids {
            assert!(matches!(
                ledger.admit(node, *id, 1),
                Admission::Completed(_)
            ));
        }
    }
}

//! Command deduplication at the ingress: a command id already in flight on
//! an edge, or completed recently, is never sent to the edge again. A retry
//! of a completed command gets the first outcome back; a retry of one that
//! was in flight when its stream broke gets `edge_disconnected` again (the
//! tool may have run: it is never re-run silently). Completed outcomes are
//! kept within [`OutcomeLimits`] (`crate::outcomes`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use uuid::Uuid;

use crate::outcomes::{Kept, KeptOutcomes, OutcomeKey, OutcomeLimits};
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
    /// Done before, but its outcome was evicted to keep within the byte
    /// bounds: answer `outcome_expired`, do not send.
    Expired,
}

struct Inner {
    /// Commands in flight, with the `SessionKey::connection` of their stream.
    in_flight: HashMap<OutcomeKey, u64>,
    outcomes: KeptOutcomes,
}

/// Commands per (node, command id), outcomes kept for a retention period.
pub struct Ledger {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

impl Ledger {
    /// A ledger within `limits`.
    pub fn new(limits: OutcomeLimits) -> Self {
        Self {
            inner: Mutex::new(Inner {
                in_flight: HashMap::new(),
                outcomes: KeptOutcomes::new(limits),
            }),
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
        let key = (node_id, command_id);
        let mut inner = self.lock();
        match inner.in_flight.get(&key) {
            Some(on) if *on == connection => return Admission::InFlight,
            Some(_) => return Admission::Lost,
            None => {}
        }
        match inner.outcomes.get(key, now) {
            Some(Kept::Completed(result)) => Admission::Completed(result),
            Some(Kept::Expired) => Admission::Expired,
            None => {
                inner.in_flight.insert(key, connection);
                Admission::Send
            }
        }
    }

    /// Records the outcome of a command in flight for `tenant`; false when
    /// the command was not in flight (unknown, or completed already: a late
    /// duplicate).
    pub fn complete(
        &self,
        node_id: Uuid,
        command_id: Uuid,
        tenant: &Arc<str>,
        result: &Arc<EdgeResult>,
    ) -> bool {
        let now = Instant::now();
        let key = (node_id, command_id);
        let mut inner = self.lock();
        if inner.in_flight.remove(&key).is_none() {
            return false;
        }
        inner.outcomes.insert(key, tenant, result, now);
        true
    }

    /// Output bytes kept replica-wide (tests).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().outcomes.bytes()
    }

    /// Outcomes and evicted keys held (tests).
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        self.lock().outcomes.held()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::outcomes::MAX_BYTES;

    fn ledger(max_entries: usize, bytes_per_tenant: usize) -> Ledger {
        Ledger::new(OutcomeLimits {
            retention: Duration::from_secs(600),
            max_entries,
            bytes_per_tenant,
            max_bytes: MAX_BYTES,
        })
    }

    /// Runs `command_id` on `node` for `tenant` with `bytes` of output.
    fn run(ledger: &Ledger, node: Uuid, command_id: Uuid, tenant: &Arc<str>, bytes: usize) {
        assert_eq!(ledger.admit(node, command_id, 1), Admission::Send);
        assert!(ledger.complete(node, command_id, tenant, &output(bytes)));
    }

    fn output(bytes: usize) -> Arc<EdgeResult> {
        Arc::new(EdgeResult {
            ok: true,
            stdout: "x".repeat(bytes).into(),
            ..EdgeResult::default()
        })
    }

    #[test]
    fn a_command_is_sent_once_and_its_outcome_replayed() {
        let ledger = ledger(100, 1 << 20);
        let tenant: Arc<str> = "t-a".into();
        let (node, cmd) = (crate::runtime::test_id(), crate::runtime::test_id());
        let (stream, newer) = (1, 2);
        assert_eq!(ledger.admit(node, cmd, stream), Admission::Send);
        assert_eq!(ledger.admit(node, cmd, stream), Admission::InFlight);
        assert_eq!(ledger.admit(node, cmd, newer), Admission::Lost);
        assert_eq!(
            ledger.admit(crate::runtime::test_id(), cmd, stream),
            Admission::Send
        );
        let result = Arc::new(EdgeResult {
            ok: true,
            exit_code: 0,
            ..EdgeResult::default()
        });
        assert!(ledger.complete(node, cmd, &tenant, &result));
        assert!(!ledger.complete(node, cmd, &tenant, &Arc::default()));
        assert_eq!(ledger.admit(node, cmd, newer), Admission::Completed(result));
    }

    #[test]
    fn beyond_the_cap_the_oldest_outcomes_are_evicted_but_remembered() {
        let ledger = ledger(2, 1 << 20);
        let tenant: Arc<str> = "t-a".into();
        let node = crate::runtime::test_id();
        let s = 1;
        let ids: Vec<Uuid> = (0..3).map(|_| crate::runtime::test_id()).collect();
        for id in &ids {
            assert_eq!(ledger.admit(node, *id, s), Admission::Send);
            assert!(ledger.complete(node, *id, &tenant, &Arc::default()));
        }
        assert_eq!(
            ledger.admit(node, crate::runtime::test_id(), s),
            Admission::Send
        );
        assert_eq!(
            ledger.admit(node, ids[0], s),
            Admission::Expired,
            "never a second run"
        );
        assert!(matches!(
            ledger.admit(node, ids[2], s),
            Admission::Completed(_)
        ));
        assert_eq!(ledger.held(), (2, 1));
    }

    #[test]
    fn one_tenants_outputs_cannot_evict_anothers_outcome() {
        let ledger = ledger(1_000, 10_000);
        let (a, b): (Arc<str>, Arc<str>) = ("t-a".into(), "t-b".into());
        let node_b = crate::runtime::test_id();
        let kept = crate::runtime::test_id();
        assert_eq!(ledger.admit(node_b, kept, 1), Admission::Send);
        assert!(ledger.complete(node_b, kept, &b, &output(5_000)));
        let node_a = crate::runtime::test_id();
        let first_a = crate::runtime::test_id();
        assert_eq!(ledger.admit(node_a, first_a, 1), Admission::Send);
        assert!(ledger.complete(node_a, first_a, &a, &output(4_000)));
        for _ in 0..20 {
            let id = crate::runtime::test_id();
            assert_eq!(ledger.admit(node_a, id, 1), Admission::Send);
            assert!(ledger.complete(node_a, id, &a, &output(4_000)));
        }
        assert!(matches!(
            ledger.admit(node_b, kept, 2),
            Admission::Completed(_)
        ));
        assert_eq!(ledger.admit(node_a, first_a, 2), Admission::Expired);
        let (kept_outcomes, evicted) = ledger.held();
        assert_eq!(
            kept_outcomes,
            1 + 2,
            "B's one and A's newest two (8,000 bytes)"
        );
        assert_eq!(evicted, 19);
    }

    #[test]
    fn tenants_under_their_own_cap_are_bounded_replica_wide_oldest_first() {
        // Per tenant 8,000 bytes; replica-wide 10,000.
        let ledger = Ledger::new(OutcomeLimits {
            retention: Duration::from_secs(600),
            max_entries: 1_000,
            bytes_per_tenant: 8_000,
            max_bytes: 10_000,
        });
        let tenants: Vec<Arc<str>> = vec!["t-a".into(), "t-b".into(), "t-c".into()];
        let node = crate::runtime::test_id();
        let mut ids = Vec::new();
        // A1, B1, C1: 9,000 bytes, within both caps.
        for tenant in &tenants {
            let id = crate::runtime::test_id();
            run(&ledger, node, id, tenant, 3_000);
            ids.push(id);
        }
        assert_eq!((ledger.held(), ledger.bytes()), ((3, 0), 9_000));
        // A2 and B2: each tenant holds at most 6,000 (under its 8,000), but
        // the replica would hold 12,000: the oldest outcome goes each time,
        // whoever's it is (A1, then B1).
        for tenant in &tenants[..2] {
            let id = crate::runtime::test_id();
            run(&ledger, node, id, tenant, 3_000);
            ids.push(id);
            assert!(ledger.bytes() <= 10_000, "{} bytes kept", ledger.bytes());
        }
        assert_eq!(ledger.held(), (3, 2));
        for evicted in &ids[..2] {
            assert_eq!(
                ledger.admit(node, *evicted, 2),
                Admission::Expired,
                "never a second run"
            );
        }
        for kept in &ids[2..] {
            assert!(matches!(
                ledger.admit(node, *kept, 2),
                Admission::Completed(_)
            ));
        }
        // An outcome over the replica-wide cap by itself evicts everything,
        // itself included: only the keys are left.
        let big = crate::runtime::test_id();
        run(&ledger, node, big, &tenants[2], 12_000);
        assert_eq!(ledger.held(), (0, 6));
        assert_eq!(ledger.bytes(), 0);
        assert_eq!(ledger.admit(node, big, 2), Admission::Expired);
    }
}

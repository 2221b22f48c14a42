//! Command deduplication at the ingress: a command id already in flight on
//! an edge, or completed recently, is never sent to the edge again. A retry
//! of a completed command gets the first outcome back; a retry of one that
//! was in flight when its stream broke gets `edge_disconnected` again (the
//! tool may have run: it is never re-run silently).
//!
//! Kept outcomes are bounded per tenant (so one tenant's outputs cannot
//! evict another's) and replica-wide. An outcome evicted before its
//! retention ends leaves its key behind until then (about 16 bytes of id
//! and the map's overhead): a retry gets `outcome_expired`, never a second
//! run.

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
    /// Done before, but its outcome was evicted to keep within the byte
    /// bounds: answer `outcome_expired`, do not send.
    Expired,
}

type Key = (Uuid, Uuid);

enum Entry {
    /// On the stream with this `SessionKey::connection`.
    InFlight(u64),
    Done {
        result: Arc<EdgeResult>,
        bytes: usize,
        tenant: Arc<str>,
    },
    /// Evicted before its retention ended.
    Evicted,
}

#[derive(Default)]
struct TenantOutcomes {
    bytes: usize,
    /// Its kept outcomes in completion order.
    order: VecDeque<Key>,
}

struct Inner {
    entries: HashMap<Key, Entry>,
    /// Retention deadlines in completion order.
    expiry: VecDeque<(Instant, Key)>,
    /// Retention deadlines of evicted keys.
    evicted: VecDeque<(Instant, Key)>,
    bytes: usize,
    kept: usize,
    tenants: HashMap<Arc<str>, TenantOutcomes>,
    /// Retention deadline of each kept outcome.
    deadlines: HashMap<Key, Instant>,
}

/// Most output bytes kept in outcomes replica-wide; the oldest go first.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

/// The bounds of a [`Ledger`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerLimits {
    /// How long outcomes (or the keys of evicted ones) are kept.
    pub retention: Duration,
    /// Most outcomes kept replica-wide.
    pub max_entries: usize,
    /// Most output bytes kept per tenant.
    pub bytes_per_tenant: usize,
    /// Most output bytes kept replica-wide ([`MAX_BYTES`]).
    pub max_bytes: usize,
}

/// Commands per (node, command id), outcomes kept for a retention period.
pub struct Ledger {
    inner: Mutex<Inner>,
    limits: LedgerLimits,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// A ledger within `limits`.
    pub fn new(limits: LedgerLimits) -> Self {
        Self {
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                expiry: VecDeque::new(),
                evicted: VecDeque::new(),
                bytes: 0,
                kept: 0,
                tenants: HashMap::new(),
                deadlines: HashMap::new(),
            }),
            limits: LedgerLimits {
                max_entries: limits.max_entries.max(1),
                ..limits
            },
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
            Some(Entry::Done { result, .. }) => Admission::Completed(Arc::clone(result)),
            Some(Entry::Evicted) => Admission::Expired,
            None => {
                inner
                    .entries
                    .insert((node_id, command_id), Entry::InFlight(connection));
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
        result: &EdgeResult,
    ) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        let key = (node_id, command_id);
        let Some(entry @ Entry::InFlight(_)) = inner.entries.get_mut(&key) else {
            return false;
        };
        let bytes = result.stdout.len() + result.stderr.len() + result.error_message.len();
        *entry = Entry::Done {
            result: Arc::new(result.clone()),
            bytes,
            tenant: Arc::clone(tenant),
        };
        let until = now + self.limits.retention;
        inner.bytes += bytes;
        inner.kept += 1;
        inner.expiry.push_back((until, key));
        inner.deadlines.insert(key, until);
        let outcomes = inner.tenants.entry(Arc::clone(tenant)).or_default();
        outcomes.bytes += bytes;
        outcomes.order.push_back(key);
        // The tenant's own oldest outcomes make room, never another's.
        while inner
            .tenants
            .get(tenant)
            .is_some_and(|t| t.bytes > self.limits.bytes_per_tenant && t.order.len() > 1)
        {
            let oldest = inner
                .tenants
                .get_mut(tenant)
                .and_then(|t| t.order.pop_front());
            match oldest {
                Some(oldest) => evict(&mut inner, oldest, false),
                None => break,
            }
        }
        self.expire(&mut inner, now);
        true
    }

    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some(&(at, key)) = inner.evicted.front() {
            if at > now {
                break;
            }
            inner.evicted.pop_front();
            if matches!(inner.entries.get(&key), Some(Entry::Evicted)) {
                inner.entries.remove(&key);
            }
        }
        while let Some(&(at, key)) = inner.expiry.front() {
            let over = inner.kept > self.limits.max_entries || inner.bytes > self.limits.max_bytes;
            if at > now && !over {
                break;
            }
            inner.expiry.pop_front();
            if !matches!(inner.entries.get(&key), Some(Entry::Done { .. })) {
                continue;
            }
            // Completion order is the same per tenant: `key` is its tenant's oldest.
            if let Some(Entry::Done { tenant, .. }) = inner.entries.get(&key) {
                let tenant = Arc::clone(tenant);
                if let Some(outcomes) = inner.tenants.get_mut(&tenant) {
                    if outcomes.order.front() == Some(&key) {
                        outcomes.order.pop_front();
                    }
                }
            }
            evict(inner, key, at <= now);
        }
    }

    /// Output bytes kept replica-wide (tests).
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Outcomes and evicted keys held (tests).
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let inner = self.lock();
        let evicted = inner
            .entries
            .values()
            .filter(|entry| matches!(entry, Entry::Evicted))
            .count();
        (inner.kept, evicted)
    }
}

/// Drops the outcome of `key`: entirely once its retention is `over`, else
/// keeping its key until then.
fn evict(inner: &mut Inner, key: Key, over: bool) {
    let Some(Entry::Done { bytes, tenant, .. }) = inner.entries.remove(&key) else {
        return;
    };
    inner.bytes -= bytes;
    inner.kept -= 1;
    let until = inner.deadlines.remove(&key);
    if let Some(outcomes) = inner.tenants.get_mut(&tenant) {
        outcomes.bytes -= bytes;
        if outcomes.order.is_empty() {
            inner.tenants.remove(&tenant);
        }
    }
    if !over {
        if let Some(until) = until {
            inner.entries.insert(key, Entry::Evicted);
            inner.evicted.push_back((until, key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(max_entries: usize, bytes_per_tenant: usize) -> Ledger {
        Ledger::new(LedgerLimits {
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

    fn output(bytes: usize) -> EdgeResult {
        EdgeResult {
            ok: true,
            stdout: "x".repeat(bytes).into(),
            ..EdgeResult::default()
        }
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
        let result = EdgeResult {
            ok: true,
            exit_code: 0,
            ..EdgeResult::default()
        };
        assert!(ledger.complete(node, cmd, &tenant, &result));
        assert!(!ledger.complete(node, cmd, &tenant, &EdgeResult::default()));
        assert_eq!(
            ledger.admit(node, cmd, newer),
            Admission::Completed(Arc::new(result))
        );
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
            assert!(ledger.complete(node, *id, &tenant, &EdgeResult::default()));
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
        let ledger = Ledger::new(LedgerLimits {
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

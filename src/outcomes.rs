//! Recent command outcomes by (node, command id), bounded: each is kept
//! for a retention period, and at most so many outcomes and output bytes
//! are kept in total, and so many bytes per tenant (one tenant's outputs
//! cannot evict another's). An outcome evicted before its retention ends
//! leaves its key behind until then (about 16 bytes of id and the map's
//! overhead), so a retry learns it expired rather than running the tool
//! again.
//!
//! Both halves of a session keep one: the ingress's ledger (beside the
//! commands in flight on its streams) and the owner's record, which
//! answers a retry after the edge moved to another ingress.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;

use crate::proto::cluster::EdgeResult;

/// (node id, command id).
pub type OutcomeKey = (Uuid, Uuid);

/// Most output bytes kept in outcomes replica-wide; the oldest go first.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;

/// What a retry of a command whose outcome was evicted is answered.
pub const EXPIRED_MESSAGE: &str = "this command ran already; its outcome was dropped to keep \
     within relay.edges.idempotency_bytes_per_tenant and is not sent again (use a new \
     Idempotency-Key to run it again)";

/// The bounds of [`KeptOutcomes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutcomeLimits {
    /// How long outcomes (or the keys of evicted ones) are kept.
    pub retention: Duration,
    /// Most outcomes kept.
    pub max_entries: usize,
    /// Most output bytes kept per tenant.
    pub bytes_per_tenant: usize,
    /// Most output bytes kept in total ([`MAX_BYTES`]).
    pub max_bytes: usize,
}

/// What is known of a finished command.
#[derive(Debug, Clone, PartialEq)]
pub enum Kept {
    /// Its outcome.
    Completed(Arc<EdgeResult>),
    /// It finished, but its outcome was evicted to keep within the bounds.
    Expired,
}

enum Entry {
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
    order: VecDeque<OutcomeKey>,
}

/// Recent outcomes within [`OutcomeLimits`]; not synchronised (its owner
/// holds it under its own lock).
pub struct KeptOutcomes {
    entries: HashMap<OutcomeKey, Entry>,
    /// Retention deadlines in completion order.
    expiry: VecDeque<(Instant, OutcomeKey)>,
    /// Retention deadlines of evicted keys.
    evicted: VecDeque<(Instant, OutcomeKey)>,
    bytes: usize,
    kept: usize,
    tenants: HashMap<Arc<str>, TenantOutcomes>,
    /// Retention deadline of each kept outcome.
    deadlines: HashMap<OutcomeKey, Instant>,
    limits: OutcomeLimits,
}

impl std::fmt::Debug for KeptOutcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptOutcomes")
            .field("kept", &self.kept)
            .field("bytes", &self.bytes)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl KeptOutcomes {
    /// Nothing kept yet, within `limits`.
    pub fn new(limits: OutcomeLimits) -> Self {
        Self {
            entries: HashMap::new(),
            expiry: VecDeque::new(),
            evicted: VecDeque::new(),
            bytes: 0,
            kept: 0,
            tenants: HashMap::new(),
            deadlines: HashMap::new(),
            limits: OutcomeLimits {
                max_entries: limits.max_entries.max(1),
                ..limits
            },
        }
    }

    /// What is known of `key` at `now`.
    pub fn get(&mut self, key: OutcomeKey, now: Instant) -> Option<Kept> {
        self.expire(now);
        match self.entries.get(&key)? {
            Entry::Done { result, .. } => Some(Kept::Completed(Arc::clone(result))),
            Entry::Evicted => Some(Kept::Expired),
        }
    }

    /// Keeps `result` as the outcome of `key` for `tenant`; false when an
    /// outcome of `key` is known already (the first one stays).
    pub fn insert(
        &mut self,
        key: OutcomeKey,
        tenant: &Arc<str>,
        result: &Arc<EdgeResult>,
        now: Instant,
    ) -> bool {
        if self.entries.contains_key(&key) {
            return false;
        }
        let bytes = result.stdout.len() + result.stderr.len() + result.error_message.len();
        self.entries.insert(
            key,
            Entry::Done {
                result: Arc::clone(result),
                bytes,
                tenant: Arc::clone(tenant),
            },
        );
        let until = now + self.limits.retention;
        self.bytes += bytes;
        self.kept += 1;
        self.expiry.push_back((until, key));
        self.deadlines.insert(key, until);
        let outcomes = self.tenants.entry(Arc::clone(tenant)).or_default();
        outcomes.bytes += bytes;
        outcomes.order.push_back(key);
        // The tenant's own oldest outcomes make room, never another's.
        while self
            .tenants
            .get(tenant)
            .is_some_and(|t| t.bytes > self.limits.bytes_per_tenant && t.order.len() > 1)
        {
            let oldest = self
                .tenants
                .get_mut(tenant)
                .and_then(|t| t.order.pop_front());
            match oldest {
                Some(oldest) => self.evict(oldest, false),
                None => break,
            }
        }
        self.expire(now);
        true
    }

    /// Drops what passed its retention at `now`, and the oldest outcomes
    /// beyond the count and byte bounds.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.evicted.front() {
            if at > now {
                break;
            }
            self.evicted.pop_front();
            if matches!(self.entries.get(&key), Some(Entry::Evicted)) {
                self.entries.remove(&key);
            }
        }
        while let Some(&(at, key)) = self.expiry.front() {
            let over = self.kept > self.limits.max_entries || self.bytes > self.limits.max_bytes;
            if at > now && !over {
                break;
            }
            self.expiry.pop_front();
            let Some(Entry::Done { tenant, .. }) = self.entries.get(&key) else {
                continue;
            };
            // Completion order is the same per tenant: `key` is its tenant's oldest.
            let tenant = Arc::clone(tenant);
            if let Some(outcomes) = self.tenants.get_mut(&tenant) {
                if outcomes.order.front() == Some(&key) {
                    outcomes.order.pop_front();
                }
            }
            self.evict(key, at <= now);
        }
    }

    /// Drops the outcome of `key`: entirely once its retention is `over`,
    /// else keeping its key until then.
    fn evict(&mut self, key: OutcomeKey, over: bool) {
        let Some(Entry::Done { bytes, tenant, .. }) = self.entries.remove(&key) else {
            return;
        };
        self.bytes -= bytes;
        self.kept -= 1;
        let until = self.deadlines.remove(&key);
        if let Some(outcomes) = self.tenants.get_mut(&tenant) {
            outcomes.bytes -= bytes;
            if outcomes.order.is_empty() {
                self.tenants.remove(&tenant);
            }
        }
        if !over {
            if let Some(until) = until {
                self.entries.insert(key, Entry::Evicted);
                self.evicted.push_back((until, key));
            }
        }
    }

    /// Output bytes kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Outcomes kept and evicted keys held.
    pub fn held(&self) -> (usize, usize) {
        let evicted = self
            .entries
            .values()
            .filter(|entry| matches!(entry, Entry::Evicted))
            .count();
        (self.kept, evicted)
    }
}

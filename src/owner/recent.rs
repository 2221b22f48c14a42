//! The owner's own record of recent command outcomes by (node, command
//! id), fed by every `Up::Result` whichever ingress it came through, and
//! bounded like the ingress's ledger (`crate::outcomes`). A retry after the
//! edge moved to another ingress (a rolling restart moves every edge) is
//! answered from here, never sent again; the ingress's ledger still answers
//! when the owner moved instead.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;
use uuid::Uuid;

use crate::hop::{failure, CommandOutcome};
use crate::outcomes::{Kept, KeptOutcomes, OutcomeLimits, EXPIRED_MESSAGE};

/// Recent outcomes of the commands of the edges this owner holds.
pub struct RecentOutcomes {
    inner: Mutex<KeptOutcomes>,
}

impl std::fmt::Debug for RecentOutcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecentOutcomes").finish_non_exhaustive()
    }
}

impl RecentOutcomes {
    /// Nothing recorded yet, within `limits`.
    pub fn new(limits: OutcomeLimits) -> Self {
        Self {
            inner: Mutex::new(KeptOutcomes::new(limits)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, KeptOutcomes> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records `outcome` of a command of `node_id` (of `tenant`); the first
    /// outcome of a command id stays.
    pub fn record(&self, node_id: Uuid, tenant: &Arc<str>, outcome: &CommandOutcome) {
        let key = (node_id, outcome.command_id);
        self.lock()
            .insert(key, tenant, &outcome.result, Instant::now());
    }

    /// The answer to a retry of `command_id` on `node_id`, if it finished:
    /// its outcome, or `outcome_expired` when the outcome was evicted.
    pub fn answer(&self, node_id: Uuid, command_id: Uuid) -> Option<CommandOutcome> {
        let kept = self.lock().get((node_id, command_id), Instant::now())?;
        Some(match kept {
            Kept::Completed(result) => CommandOutcome { command_id, result },
            Kept::Expired => failure(command_id, "outcome_expired", EXPIRED_MESSAGE),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::proto::cluster::EdgeResult;

    #[test]
    fn the_first_outcome_of_a_command_is_the_answer_until_it_expires() {
        let recent = RecentOutcomes::new(OutcomeLimits {
            retention: Duration::from_secs(600),
            max_entries: 1,
            bytes_per_tenant: 1 << 20,
            max_bytes: 1 << 20,
        });
        let tenant: Arc<str> = "t-a".into();
        let (node, first, second) = (
            crate::runtime::test_id(),
            crate::runtime::test_id(),
            crate::runtime::test_id(),
        );
        let ran = CommandOutcome {
            command_id: first,
            result: Arc::new(EdgeResult {
                ok: true,
                stdout: b"once".to_vec(),
                ..EdgeResult::default()
            }),
        };
        assert_eq!(recent.answer(node, first), None, "never ran: send it");
        recent.record(node, &tenant, &ran);
        recent.record(node, &tenant, &failure(first, "edge_disconnected", "late"));
        assert_eq!(recent.answer(node, first), Some(ran));
        assert_eq!(
            recent.answer(crate::runtime::test_id(), first),
            None,
            "another node"
        );
        // Over the cap of one outcome, the older is evicted but remembered.
        recent.record(node, &tenant, &failure(second, "timeout", "released"));
        let expired = recent
            .answer(node, first)
            .map(|o| o.result.error_kind.clone());
        assert_eq!(expired.as_deref(), Some("outcome_expired"));
    }
}

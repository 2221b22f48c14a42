//! Memory store: the change feed. Every method runs under the store's one
//! lock, so changes are numbered in the order they are made.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Tables;
use crate::store::{ChangeKind, EdgeChange, EdgeKey, EdgeRecord, FeedPage};

impl Tables {
    /// Appends a change; returns its `seq`.
    pub(super) fn record(
        &mut self,
        node_id: Uuid,
        tenant_id: &str,
        kind: ChangeKind,
        at: DateTime<Utc>,
    ) -> i64 {
        self.head += 1;
        self.changes.insert(
            self.head,
            EdgeChange {
                seq: self.head,
                node_id,
                tenant_id: tenant_id.to_owned(),
                kind,
                at,
            },
        );
        self.head
    }

    /// `edge` with the `seq` of its latest change still kept.
    pub(super) fn with_seq(&self, mut edge: EdgeRecord) -> EdgeRecord {
        edge.seq = self
            .changes
            .values()
            .rev()
            .find(|change| change.node_id == edge.node_id)
            .map_or(0, |change| change.seq);
        edge
    }

    pub(super) fn changes_since(&self, after: i64, limit: u32) -> FeedPage {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        FeedPage {
            changes: self
                .changes
                .range(after.saturating_add(1)..)
                .take(limit)
                .map(|(_, change)| change.clone())
                .collect(),
            head: self.head,
            oldest: self.changes.keys().next().copied().unwrap_or(self.head + 1),
        }
    }

    pub(super) fn purge_changes(&mut self, before: DateTime<Utc>) -> u64 {
        let count = self.changes.len();
        self.changes.retain(|_, change| change.at >= before);
        u64::try_from(count - self.changes.len()).unwrap_or(u64::MAX)
    }

    pub(super) fn edge_keys(&self, node_ids: &[Uuid]) -> Vec<EdgeKey> {
        let mut keys: Vec<EdgeKey> = node_ids
            .iter()
            .filter_map(|node_id| self.edges.get(node_id))
            .map(|edge| EdgeKey {
                node_id: edge.node_id,
                public_key: edge.public_key.clone(),
            })
            .collect();
        keys.sort_by_key(|key| key.node_id);
        keys.dedup_by_key(|key| key.node_id);
        keys
    }
}

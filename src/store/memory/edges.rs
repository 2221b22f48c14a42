//! Memory store: edge reads, batched session updates, server-side tags,
//! names, key rotation and revocation.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{in_scope, ReplacedKey, Tables};
use crate::store::batch::coalesce_updates;
use crate::store::types::{
    EdgeRecord, EdgeUpdate, KeyRotation, PreviousKey, RotationOutcome, TagChange, Tombstone,
};
use crate::store::ChangeKind;

impl Tables {
    /// Edges of one tenant (or all), ordered by node id.
    pub(super) fn list_edges(&self, tenant: Option<&str>) -> Vec<EdgeRecord> {
        self.edges
            .values()
            .filter(|edge| in_scope(tenant, &edge.tenant_id))
            .map(|edge| self.with_seq(edge.clone()))
            .collect()
    }

    /// Unknown edges are skipped; returns the edges updated. The
    /// capabilities' tag copy always comes from the server-side tags.
    pub(super) fn apply_edge_updates(&mut self, updates: &[EdgeUpdate]) -> u64 {
        let mut updated = 0;
        for update in coalesce_updates(updates) {
            let Some(edge) = self.edges.get_mut(&update.node_id) else {
                continue;
            };
            if let Some(heartbeat) = update.last_heartbeat_at {
                edge.last_heartbeat_at = Some(heartbeat);
            }
            if let Some(mut capabilities) = update.capabilities {
                capabilities.tags.clone_from(&edge.tags);
                edge.capabilities = capabilities;
            }
            if let Some(status) = update.status {
                edge.status = status;
            }
            updated += 1;
        }
        updated
    }

    fn edge_in_scope(&mut self, tenant: Option<&str>, node_id: Uuid) -> Option<&mut EdgeRecord> {
        self.edges
            .get_mut(&node_id)
            .filter(|edge| in_scope(tenant, &edge.tenant_id))
    }

    pub(super) fn change_edge_tags(
        &mut self,
        tenant: Option<&str>,
        node_id: Uuid,
        change: &TagChange,
        now: DateTime<Utc>,
    ) -> Option<EdgeRecord> {
        let edge = self.edge_in_scope(tenant, node_id)?;
        edge.tags = change.apply(&edge.tags);
        edge.capabilities.tags.clone_from(&edge.tags);
        let mut updated = edge.clone();
        updated.seq = self.record(node_id, &updated.tenant_id, ChangeKind::Tags, now);
        Some(updated)
    }

    pub(super) fn set_edge_name(
        &mut self,
        tenant: Option<&str>,
        node_id: Uuid,
        name: &str,
        now: DateTime<Utc>,
    ) -> Option<EdgeRecord> {
        let edge = self.edge_in_scope(tenant, node_id)?;
        name.clone_into(&mut edge.display_name);
        let mut updated = edge.clone();
        updated.seq = self.record(node_id, &updated.tenant_id, ChangeKind::Renamed, now);
        Some(updated)
    }

    /// Checks in this order: the edge exists, the nonce is new for it, the
    /// key is still the one the request was verified with. A refusal burns
    /// no nonce.
    pub(super) fn rotate_edge_key(&mut self, rotation: &KeyRotation) -> RotationOutcome {
        let Some(edge) = self.edges.get_mut(&rotation.node_id) else {
            return RotationOutcome::UnknownEdge;
        };
        let history = self.key_history.entry(rotation.node_id).or_default();
        if history.iter().any(|entry| entry.nonce == rotation.nonce) {
            return RotationOutcome::NonceReused;
        }
        if edge.public_key != rotation.current_key {
            return RotationOutcome::KeyChanged;
        }
        history.push(ReplacedKey {
            public_key: rotation.current_key.clone(),
            replaced_at: rotation.now,
            valid_until: rotation.previous_valid_until,
            nonce: rotation.nonce.clone(),
        });
        edge.public_key.clone_from(&rotation.new_key);
        let tenant_id = edge.tenant_id.clone();
        self.record(
            rotation.node_id,
            &tenant_id,
            ChangeKind::KeyRotated,
            rotation.now,
        );
        RotationOutcome::Rotated
    }

    /// Replaced keys still inside their window, newest first (expired
    /// entries are kept: they remember used nonces).
    pub(super) fn previous_keys(&self, node_id: Uuid, now: DateTime<Utc>) -> Vec<PreviousKey> {
        let mut live: Vec<&ReplacedKey> = self
            .key_history
            .get(&node_id)
            .into_iter()
            .flatten()
            .filter(|entry| entry.valid_until > now)
            .collect();
        live.sort_by_key(|entry| std::cmp::Reverse((entry.replaced_at, entry.valid_until)));
        live.into_iter()
            .map(|entry| PreviousKey {
                public_key: entry.public_key.clone(),
                valid_until: entry.valid_until,
            })
            .collect()
    }

    /// Hard-deletes the edge, records (or refreshes) its tombstone and
    /// forgets its key history.
    pub(super) fn revoke_edge(
        &mut self,
        tenant: Option<&str>,
        node_id: Uuid,
        revoked_by: &str,
        now: DateTime<Utc>,
    ) -> Option<Tombstone> {
        self.edge_in_scope(tenant, node_id)?;
        let edge = self.edges.remove(&node_id)?;
        let tombstone = Tombstone {
            node_id,
            tenant_id: edge.tenant_id,
            revoked_at: now,
            revoked_by: revoked_by.to_owned(),
        };
        self.tombstones.insert(node_id, tombstone.clone());
        self.key_history.remove(&node_id);
        self.record(node_id, &tombstone.tenant_id, ChangeKind::Revoked, now);
        Some(tombstone)
    }
}

//! Preparing a batch of edge updates: one entry per edge, later fields
//! winning, so a batch is one statement whatever its order.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::types::EdgeUpdate;

/// Merges updates of the same edge (a later `Some` replaces an earlier one)
/// and orders the result by node id.
pub fn coalesce_updates(updates: &[EdgeUpdate]) -> Vec<EdgeUpdate> {
    let mut merged: BTreeMap<Uuid, EdgeUpdate> = BTreeMap::new();
    for update in updates {
        match merged.get_mut(&update.node_id) {
            None => {
                merged.insert(update.node_id, update.clone());
            }
            Some(existing) => {
                if update.last_heartbeat_at.is_some() {
                    existing.last_heartbeat_at = update.last_heartbeat_at;
                }
                if update.capabilities.is_some() {
                    existing.capabilities.clone_from(&update.capabilities);
                }
                if update.status.is_some() {
                    existing.status = update.status;
                }
            }
        }
    }
    merged.into_values().collect()
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::store::EdgeStatus;

    #[test]
    fn later_fields_win_and_earlier_ones_survive() {
        let node = Uuid::from_u128(1);
        let t1 = Utc.timestamp_opt(100, 0).single();
        let t2 = Utc.timestamp_opt(200, 0).single();
        let merged = coalesce_updates(&[
            EdgeUpdate {
                node_id: node,
                last_heartbeat_at: t1,
                capabilities: None,
                status: Some(EdgeStatus::Unhealthy),
            },
            EdgeUpdate {
                node_id: Uuid::from_u128(0),
                last_heartbeat_at: t1,
                capabilities: None,
                status: None,
            },
            EdgeUpdate {
                node_id: node,
                last_heartbeat_at: t2,
                capabilities: None,
                status: None,
            },
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].node_id, Uuid::from_u128(0));
        assert_eq!(merged[1].last_heartbeat_at, t2);
        assert_eq!(merged[1].status, Some(EdgeStatus::Unhealthy));
    }
}

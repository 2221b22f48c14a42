//! How changes to edges reach the sessions this replica holds: its own
//! writes at once (read-your-writes), every replica's through the change
//! feed (`crate::change_feed`), a resync after falling behind the feed's
//! retention, and, in shared mode, the check of the AEGIS rows. All of them
//! go through the registry, which orders them by `seq`.

use chrono::{DateTime, Utc};
use tokio::sync::mpsc::error::TrySendError;
use uuid::Uuid;

use super::registry::Applied;
use super::{close, Owner, KEY_REPLACED_MESSAGE, REVOKED_MESSAGE, SEND_TIMEOUT};
use crate::hop::{CloseReason, Down, SessionKey};
use crate::store::{EdgeChange, EdgeKey, EdgeRecord, Store, StoreResult, TagChange};

impl Owner {
    /// Applies one change read from the feed.
    pub async fn apply_change(&self, change: &EdgeChange) {
        if let Some(applied) = self.registry.apply(change) {
            self.act(applied).await;
        }
    }

    /// Brings every session held here up to date with `edges` (every stored
    /// row, read after this replica missed changes).
    pub async fn resync(&self, edges: &[EdgeRecord]) {
        for applied in self.registry.resync(edges) {
            self.act(applied).await;
        }
    }

    /// The sessions held now (what the shared-mode check asks about).
    pub fn held(&self) -> Vec<SessionKey> {
        self.registry.keys()
    }

    /// Applies the shared-mode check: `keys` are the stored keys of the
    /// nodes of `asked`. A deleted row ends its session as a revoke does; a
    /// changed key is reloaded.
    pub async fn check_keys(&self, asked: &[SessionKey], keys: &[EdgeKey]) {
        for applied in self.registry.check_keys(asked, keys) {
            self.act(applied).await;
        }
    }

    /// Ends `node_id`'s stream with PERMISSION_DENIED (it was revoked here):
    /// the node is unregistered at once, so no further command reaches it,
    /// and a Hello already past its store read reloads and ends.
    pub async fn revoke(&self, node_id: Uuid) {
        if let Some(session) = self.registry.revoke(node_id) {
            self.act(Applied::Revoked(session)).await;
        }
    }

    /// Ends `node_id`'s stream with UNAUTHENTICATED because the node was
    /// re-enrolled here with a new key (`replace_node`): the stream proved
    /// the old key, so no further command reaches it.
    pub async fn key_replaced(&self, node_id: Uuid) {
        if let Some(session) = self.registry.key_replaced(node_id) {
            self.act(Applied::KeyReplaced(session)).await;
        }
    }

    /// Tells `node_id`'s stream that its keys changed (rotated here).
    pub async fn keys_changed(&self, node_id: Uuid) {
        if let Some(session) = self.registry.keys_rotated(node_id) {
            self.act(Applied::Reload(session)).await;
        }
    }

    /// Applies `change` to a node's stored tags and then to its session
    /// (which fleet selectors match), unless the session already reflects a
    /// later change; `None` when the node is not in scope.
    pub async fn change_tags(
        &self,
        store: &dyn Store,
        tenant: Option<&str>,
        node_id: Uuid,
        change: &TagChange,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<EdgeRecord>> {
        let updated = store.change_edge_tags(tenant, node_id, change, now).await?;
        if let Some(edge) = &updated {
            self.registry.set_tags(edge);
        }
        Ok(updated)
    }

    async fn act(&self, applied: Applied) {
        match applied {
            Applied::Revoked(session) => {
                self.metrics.edges_connected(self.registry.len());
                close(
                    &session.commands,
                    CloseReason::Revoked,
                    tonic::Code::PermissionDenied,
                    REVOKED_MESSAGE,
                )
                .await;
                self.calls
                    .fail_session(&session.key, "edge_disconnected", "the edge was revoked")
                    .await;
            }
            Applied::KeyReplaced(session) => {
                self.metrics.edges_connected(self.registry.len());
                close(
                    &session.commands,
                    CloseReason::Rejected,
                    tonic::Code::Unauthenticated,
                    KEY_REPLACED_MESSAGE,
                )
                .await;
                self.calls
                    .fail_session(
                        &session.key,
                        "edge_disconnected",
                        "the edge was re-enrolled with a new key before answering",
                    )
                    .await;
            }
            // A busy session's queue gets room within the send timeout; a
            // stuck one is ended by its keepalive.
            Applied::Reload(session) => match session.commands.try_send(Down::Reload) {
                Ok(()) | Err(TrySendError::Closed(_)) => {}
                Err(TrySendError::Full(reload)) => {
                    let sent =
                        tokio::time::timeout(SEND_TIMEOUT, session.commands.send(reload)).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        tracing::warn!(node_id = %session.key.node_id, "could not tell a stuck session to reload its keys and tags");
                    }
                }
            },
        }
    }
}

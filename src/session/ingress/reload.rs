//! What a session reads when it is told to reload (`Down::Reload`): the
//! node's current key and the previous keys still inside their overlap,
//! its tags and the `seq` they reflect; or that its row is gone.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tonic::Status;
use uuid::Uuid;

use super::{End, Session};
use crate::edge::AcceptedKey;
use crate::hop::{CloseReason, Reloaded, Up};
use crate::session::hello::accepted_keys;
use crate::store::{Store, StoreError};

/// What the store holds for a session's node now.
#[derive(Debug)]
enum Reload {
    /// The node's row is gone (revoked here, or deleted by AEGIS).
    Gone,
    /// Its keys for the verifier, and what the owner takes.
    Loaded(Vec<AcceptedKey>, Reloaded),
}

/// Reads `node_id`'s keys and tags as of `now`.
async fn reload(
    store: &dyn Store,
    node_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Reload, StoreError> {
    let Some(edge) = store.get_edge(node_id).await? else {
        return Ok(Reload::Gone);
    };
    let keys = accepted_keys(store, &edge, now).await?;
    Ok(Reload::Loaded(
        keys,
        Reloaded {
            tags: edge.tags.into(),
            public_key: edge.public_key.into(),
            seq: edge.seq,
        },
    ))
}

impl Session {
    /// Reloads the node's keys and tags from the store (and tells every
    /// owner holding the session); a node whose row is gone ends the stream
    /// as revoked. A
    /// store failure keeps what the session holds (the next change, resync
    /// or shared-mode check tries again).
    pub(super) async fn reload(&mut self) -> Result<(), End> {
        let ingress = Arc::clone(&self.ingress);
        let store = ingress.hello.store.as_ref();
        match reload(store, self.key.node_id, ingress.now()).await {
            Ok(Reload::Loaded(keys, reloaded)) => {
                self.auth.set_keys(keys);
                self.known.tags = Arc::clone(&reloaded.tags);
                self.known.public_key = Arc::clone(&reloaded.public_key);
                self.known.seq = reloaded.seq;
                self.to_all(|| Up::Reloaded(Box::new(reloaded.clone())))
                    .await;
                Ok(())
            }
            Ok(Reload::Gone) => Err(End {
                reason: CloseReason::Revoked,
                status: Some(Status::permission_denied(
                    "this edge was revoked (its enrollment is gone); enroll a new node with a \
                     fresh token",
                )),
            }),
            Err(err) => {
                tracing::warn!(error = %err, "cannot reload the edge's keys and tags");
                Ok(())
            }
        }
    }
}

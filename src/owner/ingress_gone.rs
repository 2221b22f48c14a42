//! Ending every session an owner holds through one ingress replica (one
//! start of it: name and generation) at once, when that ingress is gone:
//! its edges' streams died with it, so their calls end with
//! `edge_disconnected` now rather than at their deadlines, and the nodes
//! are free for the streams the edges open elsewhere.

use super::Owner;
use crate::hop::{CloseReason, Down, IngressId};

/// What an edge is told when its session is ended this way (if its
/// ingress is in fact still there and reads it).
const INGRESS_GONE_MESSAGE: &str =
    "the relay replica holding this stream was declared gone; reconnect";

impl Owner {
    /// Ends every session held through `ingress`; the number ended. Each
    /// session's calls fail with `edge_disconnected`; a session that still
    /// runs is told to end (without waiting for a full queue).
    pub async fn fail_ingress(&self, ingress: &IngressId) -> usize {
        let ended = self.registry.remove_ingress(ingress);
        self.metrics.edges_connected(self.registry.len());
        for session in &ended {
            let close = Down::Close {
                reason: CloseReason::IngressGone,
                code: tonic::Code::Unavailable,
                message: INGRESS_GONE_MESSAGE.to_owned(),
            };
            if session.commands.try_send(close).is_err() {
                tracing::debug!(node_id = %session.key.node_id, "a session of a gone ingress could not be told to end");
            }
            self.calls
                .fail_session(
                    &session.key,
                    "edge_disconnected",
                    "the relay replica holding the edge's stream is gone; the tool may have run",
                )
                .await;
        }
        tracing::info!(%ingress, sessions = ended.len(), "ended the sessions of a gone ingress");
        ended.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::mpsc;

    use super::*;
    use crate::hop::{DownLink, SessionKey, Tagged};
    use crate::owner::{Joined, SessionEntry};

    fn owner() -> Arc<Owner> {
        Owner::new(
            Arc::new(crate::runtime::SystemClock),
            crate::telemetry::Metrics::new("ingress-gone-test"),
            crate::auth::CommandTokens::with_secret(b"ingress-gone-test", "relay"),
            crate::outcomes::OutcomeLimits {
                retention: std::time::Duration::from_secs(600),
                max_entries: 100,
                bytes_per_tenant: 1 << 20,
                max_bytes: 1 << 20,
            },
        )
    }

    /// Registers a session of a new node through `ingress`; its queue.
    fn connect(owner: &Owner, ingress: &IngressId) -> (SessionKey, mpsc::Receiver<Tagged>) {
        let key = SessionKey {
            node_id: crate::runtime::test_id(),
            tenant: "t-a".into(),
            stream_id: "s".into(),
            ingress: ingress.clone(),
            connection: 1,
        };
        let (tx, rx) = mpsc::channel(4);
        let entry = SessionEntry {
            key: key.clone(),
            tenant_id: "t-a".into(),
            capabilities: Arc::default(),
            tags: Arc::from(Vec::<String>::new()),
            commands: DownLink::in_process(tx, 0),
            connected_at: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
            hello_ms: 0,
            seq: 0,
            public_key: Arc::from(vec![1u8; 32]),
        };
        let registry = owner.registry();
        let registered =
            registry.register(entry, Some(registry.epoch()), std::time::Duration::ZERO);
        assert!(registered.is_ok());
        (key, rx)
    }

    #[tokio::test]
    async fn failing_an_ingress_ends_exactly_the_sessions_of_that_start() {
        let owner = owner();
        let gone = IngressId::new("r-1", 1);
        let restarted = IngressId::new("r-1", 2);
        let other = IngressId::new("r-2", 1);
        let (a, mut a_rx) = connect(&owner, &gone);
        let (b, mut b_rx) = connect(&owner, &gone);
        let (c, mut c_rx) = connect(&owner, &restarted);
        let (d, mut d_rx) = connect(&owner, &other);
        let command = crate::runtime::test_id();
        let (joined, mut waiting) = owner.calls.wait_for(command, &a);
        assert_eq!(joined, Joined::First);
        let (_, mut elsewhere) = owner.calls.wait_for(command, &d);

        assert_eq!(owner.fail_ingress(&gone).await, 2);
        for rx in [&mut a_rx, &mut b_rx] {
            let told = rx.try_recv().map(|tagged| tagged.down);
            assert!(
                matches!(
                    told,
                    Ok(Down::Close {
                        reason: CloseReason::IngressGone,
                        code: tonic::Code::Unavailable,
                        ..
                    })
                ),
                "{told:?}"
            );
        }
        for rx in [&mut c_rx, &mut d_rx] {
            assert!(
                rx.try_recv().is_err(),
                "another ingress's session was told to end"
            );
        }
        for key in [&a, &b] {
            assert!(!owner.is_connected(key.node_id));
        }
        for key in [&c, &d] {
            assert!(owner.registry().is_current(key));
        }
        let failed = match waiting.recv().await {
            Some(crate::owner::CallEvent::Done(outcome)) => outcome.result.error_kind.clone(),
            other => format!("{other:?}"),
        };
        assert_eq!(failed, "edge_disconnected");
        assert!(
            elsewhere.try_recv().is_err(),
            "a call on another ingress was failed"
        );
        assert_eq!(owner.fail_ingress(&gone).await, 0, "nothing left of it");
    }
}

//! Unit tests of the follower on a `MemoryStore` shared with "another
//! replica" (the test writing to the store directly), with sessions
//! registered by hand: their command queues show what the follower did.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::*;
use crate::hop::{CloseReason, Down, DownLink, IngressId, SessionKey, Tagged};
use crate::owner::SessionEntry;
use crate::runtime::SystemClock;
use crate::store::{
    EdgeKey, Enrollment, EnrollmentOutcome, KeyRotation, MemoryStore, RotationOutcome, TagChange,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn now() -> DateTime<Utc> {
    SystemClock.utc_now()
}

struct Fixture {
    store: Arc<MemoryStore>,
    parts: FeedParts,
}

impl Fixture {
    fn new() -> Self {
        let store = Arc::new(MemoryStore::new());
        let owner = Owner::new(
            Arc::new(SystemClock),
            Metrics::new("feed-test"),
            crate::auth::CommandTokens::with_secret(b"feed-test", "relay"),
            crate::session::SessionSettings::default().outcome_limits(),
        );
        let parts = FeedParts {
            store: Arc::clone(&store) as Arc<dyn Store>,
            owner,
            clock: Arc::new(SystemClock),
            metrics: Metrics::new("feed-test"),
        };
        Self { store, parts }
    }

    async fn enroll(&self, key: u8) -> Result<Uuid, Box<dyn std::error::Error>> {
        let node_id = crate::runtime::test_id();
        let outcome = self
            .store
            .complete_enrollment(&Enrollment {
                jti: crate::runtime::test_id(),
                tenant_id: "t-a".to_owned(),
                issued_to: "host".to_owned(),
                token_expires_at: now(),
                node_id,
                public_key: vec![key; 32],
                challenge_id: crate::runtime::test_id(),
                now: now(),
                own_token: true,
            })
            .await?;
        assert_eq!(outcome, EnrollmentOutcome::Enrolled);
        Ok(node_id)
    }

    /// Registers a session as a Hello reading the store now would.
    async fn connect(&self, node_id: Uuid) -> Result<Downs, Box<dyn std::error::Error>> {
        let registry = self.parts.owner.registry();
        let epoch = registry.epoch();
        let edge = self.store.get_edge(node_id).await?.ok_or("no edge")?;
        let (commands, rx) = mpsc::channel(8);
        let commands = DownLink::in_process(commands, 0);
        registry
            .register(
                SessionEntry {
                    key: SessionKey {
                        node_id,
                        tenant: Arc::from(edge.tenant_id.as_str()),
                        stream_id: Arc::from("s"),
                        ingress: IngressId::new("r-1", 1),
                        connection: 1,
                    },
                    tenant_id: Arc::from(edge.tenant_id.as_str()),
                    capabilities: Arc::default(),
                    tags: edge.tags.as_slice().into(),
                    commands,
                    connected_at: now(),
                    hello_ms: 0,
                    seq: edge.seq,
                    public_key: edge.public_key.as_slice().into(),
                },
                Some(epoch),
                std::time::Duration::from_secs(60),
            )
            .map_err(|_| "refused")?;
        Ok(Downs(rx))
    }

    async fn tag(&self, node_id: Uuid, tag: &str) -> Result<(), Box<dyn std::error::Error>> {
        let change = TagChange {
            replace: Some(vec![tag.to_owned()]),
            ..TagChange::default()
        };
        self.store
            .change_edge_tags(None, node_id, &change, now())
            .await?
            .ok_or("no edge")?;
        Ok(())
    }

    fn tags(&self, node_id: Uuid) -> Option<Vec<String>> {
        let session = self.parts.owner.registry().get(node_id);
        session.map(|session| session.tags.to_vec())
    }
}

/// A session's queue, as the messages it holds.
struct Downs(mpsc::Receiver<Tagged>);

impl Downs {
    fn try_recv(&mut self) -> Result<Down, mpsc::error::TryRecvError> {
        self.0.try_recv().map(|tagged| tagged.down)
    }
}

fn is_revoked(down: Option<Down>) -> bool {
    matches!(
        down,
        Some(Down::Close {
            reason: CloseReason::Revoked,
            ..
        })
    )
}

#[tokio::test]
async fn changes_of_other_replicas_reach_the_sessions_held_here() -> TestResult {
    let fx = Fixture::new();
    let (tagged, revoked) = (fx.enroll(1).await?, fx.enroll(2).await?);
    let mut follower = Follower::start(&fx.parts).await;
    assert_eq!(follower.cursor(), Some(2), "two enrollments so far");
    let mut tagged_rx = fx.connect(tagged).await?;
    let mut revoked_rx = fx.connect(revoked).await?;
    fx.tag(tagged, "db").await?;
    fx.store
        .revoke_edge(None, revoked, "admin", now())
        .await?
        .ok_or("not revoked")?;
    follower.poll(&fx.parts).await?;
    assert_eq!(follower.cursor(), Some(4));
    assert!(matches!(tagged_rx.try_recv(), Ok(Down::Reload)));
    assert!(is_revoked(revoked_rx.try_recv().ok()));
    assert!(!fx.parts.owner.is_connected(revoked));
    // Nothing new: nothing sent.
    follower.poll(&fx.parts).await?;
    assert!(tagged_rx.try_recv().is_err());
    Ok(())
}

#[tokio::test]
async fn a_follower_paused_past_the_retention_resyncs() -> TestResult {
    let fx = Fixture::new();
    let (tagged, revoked, rotated) = (
        fx.enroll(1).await?,
        fx.enroll(2).await?,
        fx.enroll(3).await?,
    );
    let mut follower = Follower::start(&fx.parts).await;
    let _tagged_rx = fx.connect(tagged).await?;
    let mut revoked_rx = fx.connect(revoked).await?;
    let mut rotated_rx = fx.connect(rotated).await?;
    // While this replica does not poll: a tag change, a revocation and a
    // rotation, all purged by the time it polls again.
    fx.tag(tagged, "web").await?;
    fx.store.revoke_edge(None, revoked, "admin", now()).await?;
    let rotation = fx
        .store
        .rotate_edge_key(&KeyRotation {
            node_id: rotated,
            current_key: vec![3; 32],
            new_key: vec![4; 32],
            nonce: vec![5; 32],
            previous_valid_until: now(),
            now: now(),
        })
        .await?;
    assert_eq!(rotation, RotationOutcome::Rotated);
    let purged = fx
        .store
        .purge_changes(now() + TimeDelta::seconds(1))
        .await?;
    assert_eq!(purged, 6);
    follower.poll(&fx.parts).await?;
    assert_eq!(follower.cursor(), Some(6));
    assert_eq!(fx.tags(tagged), Some(vec!["web".to_owned()]));
    assert!(is_revoked(revoked_rx.try_recv().ok()));
    assert!(matches!(rotated_rx.try_recv(), Ok(Down::Reload)));
    let metrics = fx.parts.metrics.render();
    assert!(
        metrics.contains("aegis_relay_change_feed_resyncs_total 1"),
        "{metrics}"
    );
    // Caught up again: the next changes come from the feed.
    fx.tag(tagged, "api").await?;
    follower.poll(&fx.parts).await?;
    assert_eq!(follower.cursor(), Some(7));
    Ok(())
}

#[tokio::test]
async fn a_follower_that_never_read_the_feed_resyncs_first() -> TestResult {
    let fx = Fixture::new();
    let node = fx.enroll(1).await?;
    let mut rx = fx.connect(node).await?;
    fx.store.revoke_edge(None, node, "admin", now()).await?;
    let mut follower = Follower::at(None);
    follower.poll(&fx.parts).await?;
    assert_eq!(follower.cursor(), Some(2));
    assert!(is_revoked(rx.try_recv().ok()));
    Ok(())
}

#[tokio::test]
async fn the_shared_check_ends_sessions_whose_row_is_gone() -> TestResult {
    let fx = Fixture::new();
    let (kept, deleted) = (fx.enroll(1).await?, fx.enroll(2).await?);
    let _kept_rx = fx.connect(kept).await?;
    let mut deleted_rx = fx.connect(deleted).await?;
    // As the AEGIS controller does, without a change in the feed.
    fx.store.revoke_edge(None, deleted, "aegis", now()).await?;
    shared::check(&fx.parts).await;
    assert!(is_revoked(deleted_rx.try_recv().ok()));
    assert!(fx.parts.owner.is_connected(kept));
    assert_eq!(
        fx.store.edge_keys(&[kept, deleted]).await?,
        vec![EdgeKey {
            node_id: kept,
            public_key: vec![1; 32]
        }]
    );
    Ok(())
}

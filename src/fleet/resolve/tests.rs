//! Unit tests of target resolution: a SQLite store in a temporary directory
//! and an owner whose registry is filled by hand (no streams).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::mpsc;

use super::*;
use crate::fleet::TagMatch;
use crate::hop::SessionKey;
use crate::runtime::SystemClock;
use crate::store::{
    EdgeCapabilities, EdgeGroup, Enrollment, EnrollmentOutcome, SqliteStore, TagChange,
};
use crate::telemetry::Metrics;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const TENANT_A: &str = "t-a";
const TENANT_B: &str = "t-b";

struct Fixture {
    store: SqliteStore,
    owner: Arc<Owner>,
    _dir: tempfile::TempDir,
}

fn at() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
}

impl Fixture {
    async fn new() -> Result<Self, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = SqliteStore::open(&dir.path().join("relay.db")).await?;
        store.migrate().await?;
        Ok(Self {
            store,
            owner: Owner::new(
                Arc::new(SystemClock),
                Metrics::new("resolve-test"),
                crate::auth::CommandTokens::with_secret(b"resolve-test", "relay"),
                crate::session::SessionSettings::default().outcome_limits(),
            ),
            _dir: dir,
        })
    }

    /// Stores an enrolled edge of `tenant`.
    async fn enroll(&self, tenant: &str) -> Result<Uuid, Box<dyn std::error::Error>> {
        let node_id = crate::runtime::test_id();
        let outcome = self
            .store
            .complete_enrollment(&Enrollment {
                jti: crate::runtime::test_id(),
                tenant_id: tenant.to_owned(),
                issued_to: "host".to_owned(),
                token_expires_at: at(),
                node_id,
                public_key: vec![7; 32],
                challenge_id: crate::runtime::test_id(),
                now: at(),
                own_token: true,
            })
            .await?;
        assert_eq!(outcome, EnrollmentOutcome::Enrolled);
        Ok(node_id)
    }

    /// Enrolls and connects an edge of `tenant` with `tools` and `tags`.
    async fn connect(
        &self,
        tenant: &str,
        tools: &[&str],
        tags: &[&str],
    ) -> Result<Uuid, Box<dyn std::error::Error>> {
        let node_id = self.enroll(tenant).await?;
        let (commands, _) = mpsc::channel(1);
        let commands = crate::hop::DownLink::in_process(commands, 0);
        let capabilities = EdgeCapabilities {
            os: "linux".to_owned(),
            arch: "x86_64".to_owned(),
            local_tools: tools.iter().map(|tool| (*tool).to_owned()).collect(),
            custom_labels: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
            ..EdgeCapabilities::default()
        };
        let tags: Vec<String> = tags.iter().map(|tag| (*tag).to_owned()).collect();
        self.owner
            .registry()
            .register(
                SessionEntry {
                    key: SessionKey {
                        node_id,
                        tenant: Arc::from(tenant),
                        stream_id: Arc::from(node_id.to_string()),
                        ingress: crate::hop::IngressId::new("r-1", 1),
                        connection: 1,
                    },
                    tenant_id: Arc::from(tenant),
                    capabilities: Arc::new(capabilities),
                    tags: tags.into(),
                    commands,
                    connected_at: at(),
                    hello_ms: 0,
                    seq: 0,
                    public_key: Arc::from(vec![7u8; 32]),
                },
                Some(self.owner.registry().epoch()),
                std::time::Duration::from_secs(600),
            )
            .map_err(|_| "node refused as revoked")?;
        Ok(node_id)
    }

    async fn group(
        &self,
        tenant: &str,
        selector: serde_json::Value,
        pinned: Vec<Uuid>,
    ) -> Result<Uuid, Box<dyn std::error::Error>> {
        let group = self
            .store
            .create_group(&EdgeGroup {
                id: crate::runtime::test_id(),
                tenant_id: tenant.to_owned(),
                name: format!("group-{}", crate::runtime::test_id()),
                selector,
                pinned_members: pinned,
                created_by: "tests".to_owned(),
                created_at: at(),
            })
            .await?;
        Ok(group.id)
    }

    async fn resolve(
        &self,
        target: &EdgeTarget,
        scope: Option<&str>,
    ) -> Result<Vec<Uuid>, ResolveError> {
        resolve(target, scope, &self.store, &self.owner).await
    }
}

fn sorted(mut ids: Vec<Uuid>) -> Vec<Uuid> {
    ids.sort();
    ids
}

fn has_tag(tag: &str) -> EdgeTarget {
    EdgeTarget::Selector(EdgeSelector {
        tags: vec![TagMatch::Has(tag.to_owned())],
        ..EdgeSelector::default()
    })
}

#[tokio::test]
async fn node_targets_follow_the_resolution_table() -> TestResult {
    let fx = Fixture::new().await?;
    let connected = fx.connect(TENANT_A, &[], &[]).await?;
    let offline = fx.enroll(TENANT_A).await?;
    let foreign = fx.connect(TENANT_B, &[], &[]).await?;
    let foreign_offline = fx.enroll(TENANT_B).await?;
    let unknown = crate::runtime::test_id();

    let scope = Some(TENANT_A);
    assert_eq!(
        fx.resolve(&EdgeTarget::Node(connected), scope).await?,
        vec![connected]
    );
    let err = fx.resolve(&EdgeTarget::Node(offline), scope).await;
    assert!(matches!(err, Err(ResolveError::Unavailable(id)) if id == offline));
    for hidden in [foreign, foreign_offline, unknown] {
        let err = fx
            .resolve(&EdgeTarget::Node(hidden), scope)
            .await
            .err()
            .ok_or("a node outside the tenant resolved")?;
        assert!(matches!(err, ResolveError::NotFound(id) if id == hidden));
        assert_eq!(err.http_status(), (404, "not_found"));
        assert!(!err.to_string().contains(TENANT_B), "{err}");
    }
    // Operators reach every tenant's nodes.
    assert_eq!(
        fx.resolve(&EdgeTarget::Node(foreign), None).await?,
        vec![foreign]
    );
    Ok(())
}

#[tokio::test]
async fn all_and_selectors_see_only_connected_edges_of_the_scope() -> TestResult {
    let fx = Fixture::new().await?;
    let web = fx.connect(TENANT_A, &["shell"], &["web"]).await?;
    let db = fx.connect(TENANT_A, &["shell", "psql"], &["db"]).await?;
    let _offline = fx.enroll(TENANT_A).await?;
    let other = fx.connect(TENANT_B, &["shell"], &["web"]).await?;

    assert_eq!(
        fx.resolve(&EdgeTarget::All, Some(TENANT_A)).await?,
        sorted(vec![web, db])
    );
    assert_eq!(
        fx.resolve(&EdgeTarget::All, None).await?,
        sorted(vec![web, db, other])
    );
    assert_eq!(
        fx.resolve(&has_tag("web"), Some(TENANT_A)).await?,
        vec![web]
    );
    let psql = EdgeTarget::Selector(EdgeSelector {
        tools: vec!["psql".to_owned()],
        labels: vec![crate::fleet::LabelMatch::Equals(
            "env".to_owned(),
            "prod".to_owned(),
        )],
        ..EdgeSelector::default()
    });
    assert_eq!(fx.resolve(&psql, Some(TENANT_A)).await?, vec![db]);

    let err = fx
        .resolve(&has_tag("nowhere"), Some(TENANT_A))
        .await
        .err()
        .ok_or("an unmatched selector resolved")?;
    assert!(matches!(err, ResolveError::NoMatchingEdges));
    assert_eq!(err.http_status(), (400, "bad_request"));
    let empty = fx.resolve(&EdgeTarget::All, Some("t-empty")).await;
    assert!(matches!(empty, Err(ResolveError::NoMatchingEdges)));
    Ok(())
}

#[tokio::test]
async fn tags_come_from_the_registry_and_follow_tag_changes() -> TestResult {
    let fx = Fixture::new().await?;
    let node = fx.connect(TENANT_A, &[], &[]).await?;
    assert!(fx.resolve(&has_tag("x"), Some(TENANT_A)).await.is_err());
    let change = TagChange {
        add: vec!["x".to_owned()],
        ..TagChange::default()
    };
    let changed = fx
        .owner
        .change_tags(&fx.store, Some(TENANT_A), node, &change, at())
        .await?;
    assert_eq!(changed.map(|edge| edge.tags), Some(vec!["x".to_owned()]));
    assert_eq!(fx.resolve(&has_tag("x"), Some(TENANT_A)).await?, vec![node]);
    let foreign = fx
        .owner
        .change_tags(&fx.store, Some("t-b"), node, &change, at())
        .await?;
    assert!(foreign.is_none(), "another tenant's scope changed the tags");
    Ok(())
}

#[tokio::test]
async fn groups_union_selector_matches_and_connected_pinned_members() -> TestResult {
    let fx = Fixture::new().await?;
    let tagged = fx.connect(TENANT_A, &[], &["db"]).await?;
    let pinned = fx.connect(TENANT_A, &[], &[]).await?;
    let pinned_offline = fx.enroll(TENANT_A).await?;
    let pinned_foreign = fx.connect(TENANT_B, &[], &["db"]).await?;
    let _unrelated = fx.connect(TENANT_A, &[], &["web"]).await?;
    let selector = json!({"tools": [], "labels": [], "tags": [{"Has": "db"}]});
    let group = fx
        .group(
            TENANT_A,
            selector,
            vec![pinned, tagged, pinned_offline, pinned_foreign],
        )
        .await?;

    let expected = sorted(vec![tagged, pinned]);
    assert_eq!(
        fx.resolve(&EdgeTarget::Group(group), Some(TENANT_A))
            .await?,
        expected
    );
    // An operator resolves the group within the group's own tenant.
    assert_eq!(fx.resolve(&EdgeTarget::Group(group), None).await?, expected);
    let hidden = fx.resolve(&EdgeTarget::Group(group), Some(TENANT_B)).await;
    assert!(matches!(hidden, Err(ResolveError::GroupNotFound(id)) if id == group));
    let unknown = fx
        .resolve(
            &EdgeTarget::Group(crate::runtime::test_id()),
            Some(TENANT_A),
        )
        .await;
    assert!(matches!(unknown, Err(ResolveError::GroupNotFound(_))));

    let nothing = json!({"tools": [], "labels": [], "tags": [{"Has": "none"}]});
    let empty_group = fx.group(TENANT_A, nothing, Vec::new()).await?;
    assert_eq!(
        fx.resolve(&EdgeTarget::Group(empty_group), Some(TENANT_A))
            .await?,
        Vec::<Uuid>::new()
    );
    Ok(())
}

#[tokio::test]
async fn a_malformed_stored_selector_is_a_clear_error() -> TestResult {
    let fx = Fixture::new().await?;
    fx.connect(TENANT_A, &[], &[]).await?;
    let bad = json!({"tools": [], "labels": [], "tags": [{"Has": 5}]});
    let group = fx.group(TENANT_A, bad, Vec::new()).await?;
    let err = fx
        .resolve(&EdgeTarget::Group(group), Some(TENANT_A))
        .await
        .err()
        .ok_or("a malformed selector resolved")?;
    assert!(
        matches!(&err, ResolveError::InvalidGroupSelector { path, .. } if path == "tags[0].Has"),
        "{err:?}"
    );
    assert!(err.to_string().contains("PATCH /v1/edge/groups/"), "{err}");
    assert_eq!(err.http_status(), (400, "bad_request"));
    Ok(())
}

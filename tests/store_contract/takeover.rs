//! The takeover part of the store contract: an enrolled node id is
//! re-enrolled (new key) only by an own token bound to it at issuance; every
//! other attempt is refused without writing or burning the token.

use std::sync::Arc;

use aegis_relay::store::{BindOutcome, Enrollment, EnrollmentOutcome, Store, TokenBinding};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::tags::replace;
use super::{at, enroll, enrollment, TestResult};

type BoxError = Box<dyn std::error::Error>;

fn binding(jti: Uuid, node_id: Uuid, tenant: &str, expires_at: DateTime<Utc>) -> TokenBinding {
    TokenBinding {
        jti,
        node_id,
        tenant_id: tenant.into(),
        expires_at,
        now: expires_at - chrono::Duration::minutes(15),
    }
}

/// The edge's tenant, key and tags: what a refused takeover must not change.
async fn identity(
    store: &dyn Store,
    node_id: Uuid,
) -> Result<(String, Vec<u8>, Vec<String>), BoxError> {
    let edge = store.get_edge(node_id).await?.ok_or("edge missing")?;
    Ok((edge.tenant_id, edge.public_key, edge.tags))
}

/// Redeems `jti` for a fresh node: proves a refusal did not burn it.
async fn assert_redeemable(
    store: &dyn Store,
    jti: Uuid,
    tenant: &str,
    now: DateTime<Utc>,
) -> TestResult {
    assert_eq!(
        store
            .complete_enrollment(&enrollment(
                jti,
                aegis_relay::runtime::OsEntropy.uuid(),
                tenant,
                9,
                now
            ))
            .await?,
        EnrollmentOutcome::Enrolled,
        "the refused token is still redeemable"
    );
    Ok(())
}

pub async fn re_enrollment_needs_a_token_bound_to_the_node(store: &dyn Store) -> TestResult {
    let node_id = aegis_relay::runtime::OsEntropy.uuid();
    store
        .complete_enrollment(&enrollment(
            aegis_relay::runtime::OsEntropy.uuid(),
            node_id,
            "t-one",
            1,
            at(0),
        ))
        .await?;
    store
        .change_edge_tags(None, node_id, &replace(&["prod"]), at(0))
        .await?;
    let before = identity(store, node_id).await?;
    assert_eq!(before, ("t-one".into(), vec![1; 32], vec!["prod".into()]));

    // Another tenant's token cannot take the node id.
    let foreign_jti = aegis_relay::runtime::OsEntropy.uuid();
    assert_eq!(
        store
            .complete_enrollment(&enrollment(foreign_jti, node_id, "t-two", 9, at(50)))
            .await?,
        EnrollmentOutcome::NodeInAnotherTenant
    );
    assert_eq!(identity(store, node_id).await?, before);
    assert_redeemable(store, foreign_jti, "t-two", at(51)).await?;

    // Nor can an unbound token of the node's own tenant.
    let unbound = aegis_relay::runtime::OsEntropy.uuid();
    assert_eq!(
        store
            .complete_enrollment(&enrollment(unbound, node_id, "t-one", 2, at(60)))
            .await?,
        EnrollmentOutcome::NodeAlreadyEnrolled
    );
    assert_eq!(identity(store, node_id).await?, before);
    assert_redeemable(store, unbound, "t-one", at(61)).await?;

    // Bindings name an enrolled node of the binding's tenant.
    let exp = at(900);
    for (node, tenant) in [
        (node_id, "t-two"),
        (aegis_relay::runtime::OsEntropy.uuid(), "t-one"),
    ] {
        assert_eq!(
            store
                .bind_enrollment_token(&binding(
                    aegis_relay::runtime::OsEntropy.uuid(),
                    node,
                    tenant,
                    exp
                ))
                .await?,
            BindOutcome::NodeNotFound
        );
    }
    let bound = aegis_relay::runtime::OsEntropy.uuid();
    assert_eq!(
        store
            .bind_enrollment_token(&binding(bound, node_id, "t-one", exp))
            .await?,
        BindOutcome::Bound
    );
    // A bound token enrolls no other node, and is not burned trying.
    let other = aegis_relay::runtime::OsEntropy.uuid();
    assert_eq!(
        store
            .complete_enrollment(&enrollment(bound, other, "t-one", 3, at(70)))
            .await?,
        EnrollmentOutcome::TokenBoundToAnotherNode(node_id)
    );
    assert_eq!(store.get_edge(other).await?, None);
    // A token of another issuer never replaces, whatever its jti.
    let foreign_issuer = Enrollment {
        own_token: false,
        ..enrollment(bound, node_id, "t-one", 3, at(80))
    };
    assert_eq!(
        store.complete_enrollment(&foreign_issuer).await?,
        EnrollmentOutcome::NodeAlreadyEnrolled
    );
    assert_eq!(identity(store, node_id).await?, before);

    assert_eq!(
        store
            .complete_enrollment(&enrollment(bound, node_id, "t-one", 3, at(100)))
            .await?,
        EnrollmentOutcome::Replaced
    );
    let edge = store.get_edge(node_id).await?.ok_or("edge missing")?;
    assert_eq!(edge.tenant_id, "t-one");
    assert_eq!(edge.public_key, vec![3; 32]);
    assert!(edge.tags.is_empty(), "tags reset on re-enrollment");
    assert_eq!(edge.display_name, "host-3");
    assert_eq!(edge.enrolled_at, at(0));
    assert_eq!(
        store
            .complete_enrollment(&enrollment(bound, node_id, "t-one", 4, at(101)))
            .await?,
        EnrollmentOutcome::TokenAlreadyRedeemed
    );
    Ok(())
}

/// Tokens racing to enroll one new node id: one wins, the others cannot take
/// the id from it and are not burned.
pub async fn concurrent_first_enrollments_of_one_node_id_have_one_winner(
    store: Arc<dyn Store>,
) -> TestResult {
    let node_id = aegis_relay::runtime::OsEntropy.uuid();
    let mut attempts = tokio::task::JoinSet::new();
    for key in 0..20u8 {
        let store = Arc::clone(&store);
        attempts.spawn(async move {
            let jti = aegis_relay::runtime::OsEntropy.uuid();
            let outcome = store
                .complete_enrollment(&enrollment(jti, node_id, "t-race", key, at(0)))
                .await;
            (jti, key, outcome)
        });
    }
    let (mut winners, mut losers) = (Vec::new(), Vec::new());
    while let Some(joined) = attempts.join_next().await {
        let (jti, key, outcome) = joined?;
        match outcome? {
            EnrollmentOutcome::Enrolled => winners.push(key),
            EnrollmentOutcome::NodeAlreadyEnrolled => losers.push(jti),
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one first enrollment wins");
    assert_eq!(losers.len(), 19);
    let (_, key, _) = identity(store.as_ref(), node_id).await?;
    assert_eq!(key, vec![winners[0]; 32], "the winner's key stays");
    for jti in losers {
        assert_redeemable(store.as_ref(), jti, "t-race", at(1)).await?;
    }
    Ok(())
}

pub async fn bindings_refuse_revoked_nodes_and_are_pruned_after_expiry(
    store: &dyn Store,
) -> TestResult {
    let node_id = enroll(store, "t-bind", 1, at(0)).await?;
    // Pruned once expired: a later binding's issuance removes it.
    let stale = aegis_relay::runtime::OsEntropy.uuid();
    assert_eq!(
        store
            .bind_enrollment_token(&binding(stale, node_id, "t-bind", at(900)))
            .await?,
        BindOutcome::Bound
    );
    let pending = aegis_relay::runtime::OsEntropy.uuid();
    assert_eq!(
        store
            .bind_enrollment_token(&binding(pending, node_id, "t-bind", at(1900)))
            .await?,
        BindOutcome::Bound
    );
    assert_eq!(
        store
            .complete_enrollment(&enrollment(stale, node_id, "t-bind", 2, at(100)))
            .await?,
        EnrollmentOutcome::NodeAlreadyEnrolled,
        "the expired binding was pruned"
    );
    // Revocation is final: a binding made before it does not bring the node back.
    store
        .revoke_edge(Some("t-bind"), node_id, "alice", at(200))
        .await?
        .ok_or("not revoked")?;
    assert_eq!(
        store
            .complete_enrollment(&enrollment(pending, node_id, "t-bind", 3, at(210)))
            .await?,
        EnrollmentOutcome::NodeRevoked
    );
    assert_eq!(store.get_edge(node_id).await?, None);
    assert_eq!(
        store
            .bind_enrollment_token(&binding(
                aegis_relay::runtime::OsEntropy.uuid(),
                node_id,
                "t-bind",
                at(1900)
            ))
            .await?,
        BindOutcome::NodeRevoked
    );
    assert_eq!(
        store
            .bind_enrollment_token(&binding(
                aegis_relay::runtime::OsEntropy.uuid(),
                node_id,
                "t-else",
                at(1900)
            ))
            .await?,
        BindOutcome::NodeNotFound,
        "another tenant learns nothing about the node"
    );
    Ok(())
}

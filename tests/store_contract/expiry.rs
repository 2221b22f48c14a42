//! The expiry part of the store contract: challenges swept at their TTL,
//! replaced keys listed newest first until their deadline and forgotten
//! when the node is re-enrolled.

use aegis_relay::store::{
    BindOutcome, EnrollmentOutcome, KeyRotation, RotationOutcome, Store, StoreError, TokenBinding,
};

use super::{at, challenge, enroll, enrollment, TestResult};

pub async fn challenges_are_swept_at_their_ttl(store: &dyn Store) -> TestResult {
    let node = aegis_relay::runtime::OsEntropy.uuid();
    let (old, middle, young) = (
        challenge(node, at(0)),
        challenge(node, at(100)),
        challenge(node, at(400)),
    );
    for stored in [&old, &middle, &young] {
        store.put_challenge(stored).await?;
    }
    let duplicate = store.put_challenge(&old).await;
    assert!(
        matches!(duplicate, Err(StoreError::Conflict(_))),
        "{duplicate:?}"
    );
    // The TTL is 300 s: at 300 only the first has expired, at 400 the second.
    assert_eq!(store.sweep_challenges(at(299)).await?, 0);
    assert_eq!(store.sweep_challenges(at(300)).await?, 1);
    assert_eq!(store.sweep_challenges(at(300)).await?, 0);
    assert_eq!(store.sweep_challenges(at(400)).await?, 1);
    assert_eq!(store.get_challenge(old.challenge_id, at(0)).await?, None);
    assert_eq!(
        store.get_challenge(middle.challenge_id, at(100)).await?,
        None
    );
    assert_eq!(
        store.get_challenge(young.challenge_id, at(401)).await?,
        Some(young)
    );
    Ok(())
}

fn rotation(node_id: uuid::Uuid, from: u8, to: u8, nonce: u8, now: i64) -> KeyRotation {
    KeyRotation {
        node_id,
        current_key: vec![from; 32],
        new_key: vec![to; 32],
        nonce: vec![nonce; 32],
        previous_valid_until: at(now + 300),
        now: at(now),
    }
}

pub async fn previous_keys_are_newest_first_and_forgotten_on_re_enrollment(
    store: &dyn Store,
) -> TestResult {
    let node_id = enroll(store, "t-hist", 1, at(0)).await?;
    for step in [
        rotation(node_id, 1, 2, 1, 100),
        rotation(node_id, 2, 3, 2, 200),
    ] {
        assert_eq!(
            store.rotate_edge_key(&step).await?,
            RotationOutcome::Rotated
        );
    }
    let keys = move |now| async move {
        let previous = store.previous_keys(node_id, at(now)).await?;
        Ok::<_, StoreError>(
            previous
                .into_iter()
                .map(|key| (key.public_key[0], key.valid_until))
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(keys(300).await?, vec![(2, at(500)), (1, at(400))]);
    assert_eq!(keys(450).await?, vec![(2, at(500))]);
    assert!(keys(500).await?.is_empty());
    // Expired history still remembers its nonces.
    assert_eq!(
        store
            .rotate_edge_key(&rotation(node_id, 3, 4, 1, 600))
            .await?,
        RotationOutcome::NonceReused
    );

    let jti = aegis_relay::runtime::OsEntropy.uuid();
    let binding = TokenBinding {
        jti,
        node_id,
        tenant_id: "t-hist".into(),
        expires_at: at(1500),
        now: at(600),
    };
    assert_eq!(
        store.bind_enrollment_token(&binding).await?,
        BindOutcome::Bound
    );
    let rebound = store.bind_enrollment_token(&binding).await;
    assert!(
        matches!(rebound, Err(StoreError::Conflict(_))),
        "{rebound:?}"
    );
    assert_eq!(
        store
            .complete_enrollment(&enrollment(jti, node_id, "t-hist", 7, at(610)))
            .await?,
        EnrollmentOutcome::Replaced
    );
    assert!(
        store.previous_keys(node_id, at(611)).await?.is_empty(),
        "a re-enrolled node keeps no old key"
    );
    assert_eq!(
        store
            .rotate_edge_key(&rotation(node_id, 7, 8, 1, 620))
            .await?,
        RotationOutcome::Rotated,
        "and no old nonce"
    );
    Ok(())
}

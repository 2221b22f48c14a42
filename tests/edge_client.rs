//! Our edge client's enrollment half against a real relay: the state files
//! of protocol.md §11.1, the stored edge, refusals that leave an earlier
//! identity intact, and `--force` re-enrollment with a token issued for the
//! node.

mod common;

use std::time::Duration;

use aegis_relay::edge_client::{enroll, EdgeState, EnrollError, EnrollOptions, NODE_KEY, NODE_PUB};
use aegis_relay::runtime::Runtime;
use common::rest::{caller_bearer, Rest};
use common::{start_relay, TestResult};

#[tokio::test]
async fn enrolls_writes_daemon_state_and_keeps_it_on_refusal() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let minted = relay
        .tokens()
        .mint_enrollment(
            "t-edge",
            "laptop",
            aegis_relay::runtime::OsEntropy.uuid(),
            aegis_relay::runtime::SystemClock.utc_now(),
        )
        .await?;
    assert_eq!(minted.claims.cep, format!("http://{}", relay.grpc_addr()));
    let dir = tempfile::tempdir()?;
    let state_dir = dir.path().join("edge");
    let runtime = Runtime::real();
    let enrolled = enroll(
        &runtime,
        &minted.token,
        &state_dir,
        &EnrollOptions::default(),
    )
    .await?;
    assert_eq!(enrolled.state.tenant_id, "t-edge");

    let key = std::fs::read(state_dir.join(NODE_KEY))?;
    let public = std::fs::read(state_dir.join(NODE_PUB))?;
    assert_eq!((key.len(), public.len()), (32, 32));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&state_dir)?.permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            std::fs::metadata(state_dir.join(NODE_KEY))?
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    let loaded = EdgeState::load(&state_dir)?;
    assert_eq!(loaded.node_id, enrolled.state.node_id);
    assert_eq!(loaded.key.verifying_key().to_bytes().to_vec(), public);
    let stored = relay
        .store()
        .get_edge(loaded.node_id)
        .await?
        .ok_or("edge not stored")?;
    assert_eq!(stored.public_key, public);
    assert_eq!(stored.display_name, "laptop");
    let claims = aegis_relay::auth::b64url_decode(loaded.token.split('.').nth(1).ok_or("token")?)
        .ok_or("token claims")?;
    let claims: serde_json::Value = serde_json::from_slice(&claims)?;
    assert_eq!(claims["sub"], serde_json::json!(loaded.node_id.to_string()));

    // An enrolled directory is not overwritten by accident.
    let again = enroll(
        &runtime,
        &minted.token,
        &state_dir,
        &EnrollOptions::default(),
    )
    .await;
    assert!(matches!(again, Err(EnrollError::Exists(_))), "{again:?}");
    // With --force and a spent token, the relay refuses and the old identity stays.
    let forced = EnrollOptions {
        force: true,
        ..EnrollOptions::default()
    };
    let spent = enroll(&runtime, &minted.token, &state_dir, &forced).await;
    match spent {
        Err(EnrollError::Refused { code, message, .. }) => {
            assert_eq!(code, tonic::Code::Unauthenticated);
            assert!(message.contains("already redeemed"), "{message}");
        }
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    assert_eq!(
        std::fs::read(state_dir.join(NODE_KEY))?,
        key,
        "key kept after a refusal"
    );
    // A fresh token cannot take the enrolled node id over...
    let fresh = relay
        .tokens()
        .mint_enrollment(
            "t-edge",
            "laptop",
            aegis_relay::runtime::OsEntropy.uuid(),
            aegis_relay::runtime::SystemClock.utc_now(),
        )
        .await?;
    match enroll(&runtime, &fresh.token, &state_dir, &forced).await {
        Err(EnrollError::Refused { code, message, .. }) => {
            assert_eq!(code, tonic::Code::FailedPrecondition);
            assert!(message.contains("replace_node="), "{message}");
        }
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }
    assert_eq!(std::fs::read(state_dir.join(NODE_KEY))?, key, "key kept");
    // ...a token issued for it re-enrolls the same node id with a new key.
    let bearer = caller_bearer(&relay, "ops", "t-edge", "aegis:operator").await?;
    let issued = Rest::new(&relay, Some(&bearer))
        .post(
            "/v1/edge/enrollment-tokens",
            &serde_json::json!({"issued_to": "laptop", "replace_node": loaded.node_id}),
        )
        .await?;
    let bound = issued.json["token"].as_str().ok_or(issued.text.clone())?;
    let again = enroll(&runtime, bound, &state_dir, &forced).await?;
    assert_eq!(again.state.node_id, loaded.node_id);
    assert_ne!(std::fs::read(state_dir.join(NODE_KEY))?, key);
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn unreadable_tokens_and_unreachable_relays_are_clear_errors() -> TestResult {
    let dir = tempfile::tempdir()?;
    let runtime = Runtime::real();
    let bad = enroll(
        &runtime,
        "not-a-token",
        dir.path(),
        &EnrollOptions::default(),
    )
    .await;
    assert!(matches!(bad, Err(EnrollError::Token(_))), "{bad:?}");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let claims = aegis_relay::auth::b64url(
        format!(r#"{{"tid":"t-x","cep":"127.0.0.1:{port}"}}"#).as_bytes(),
    );
    let token = format!("e30.{claims}.c2ln");
    let unreachable = enroll(&runtime, &token, dir.path(), &EnrollOptions::default()).await;
    assert!(
        matches!(unreachable, Err(EnrollError::Connect { .. })),
        "{unreachable:?}"
    );
    assert!(
        !dir.path().join(NODE_KEY).exists(),
        "nothing written on failure"
    );
    Ok(())
}

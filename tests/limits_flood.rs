//! A flood of RotateEdgeKey from one source: readiness stays SERVING, calls
//! past the rate limit cause no store query, and malformed ones (a bad
//! new-key signature) none at all, even inside the burst. Statements are
//! counted from sqlx's own log, so this file holds one test (the subscriber
//! is process-wide).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aegis_relay::enroll::rotation_challenge;
use aegis_relay::proto::cluster::RotateEdgeKeyRequest;
use common::enroll::client;
use common::{http_get, start_relay_configured, TestResult};
use ed25519_dalek::{Signer, SigningKey};
use tracing_subscriber::layer::SubscriberExt;
use uuid::Uuid;

/// Counts statements that read or write edge rows (`edge_daemons`,
/// `edge_tombstones`, `edge_key_history`), as sqlx logs them.
struct EdgeStatements(Arc<AtomicU64>);

struct Statement(bool);

impl tracing::field::Visit for Statement {
    fn record_debug(&mut self, _: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        self.0 |= ["edge_daemons", "edge_tombstones", "edge_key_history"]
            .iter()
            .any(|table| text.contains(table));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for EdgeStatements {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            let mut statement = Statement(false);
            event.record(&mut statement);
            if statement.0 {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn request(node: Uuid, forge_new_key_signature: bool) -> RotateEdgeKeyRequest {
    let old = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let new = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let nonce: [u8; 32] = rand::random();
    let mut request = common::edges::rotate_request(node, &old, &new, nonce);
    if forge_new_key_signature {
        // The old key signs where the new one must.
        request.signature_with_new_key = old
            .sign(&rotation_challenge(
                node,
                &new.verifying_key().to_bytes(),
                &nonce,
            ))
            .to_bytes()
            .to_vec();
    }
    request
}

/// Sends `count` concurrent calls; (admitted, rate-limited).
async fn flood(
    grpc: &common::enroll::Client,
    count: usize,
    forged: bool,
) -> Result<(u64, u64), Box<dyn std::error::Error>> {
    let calls: Vec<_> = (0..count)
        .map(|_| {
            let mut grpc = grpc.clone();
            tokio::spawn(async move {
                grpc.rotate_edge_key(request(aegis_relay::runtime::OsEntropy.uuid(), forged))
                    .await
            })
        })
        .collect();
    let (mut admitted, mut limited) = (0, 0);
    for call in calls {
        match tokio::time::timeout(Duration::from_secs(60), call).await?? {
            Ok(_) => return Err("a rotation of an unknown node succeeded".into()),
            Err(status) if status.code() == tonic::Code::ResourceExhausted => limited += 1,
            Err(status) if status.code() == tonic::Code::Unauthenticated => admitted += 1,
            Err(status) => return Err(format!("unexpected refusal: {status:?}").into()),
        }
    }
    Ok((admitted, limited))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotate_flood_costs_the_store_nothing_past_the_limit() -> TestResult {
    let statements = Arc::new(AtomicU64::new(0));
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::filter::Targets::new()
                .with_target("sqlx::query", tracing::Level::TRACE),
        )
        .with(EdgeStatements(Arc::clone(&statements)));
    tracing::subscriber::set_global_default(subscriber)?;

    let relay = start_relay_configured(|settings| {
        settings.attest_rate_limit.per_second = 10.0;
        settings.attest_rate_limit.burst = 50;
    })
    .await?;
    let grpc = client(&relay).await?;

    // Readiness is polled throughout the flood.
    let stop = tokio_util::sync::CancellationToken::new();
    let readiness = {
        let (stop, addr) = (stop.clone(), relay.http_addr());
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while !stop.is_cancelled() {
                let url = format!("http://{addr}/readyz");
                answers.push(
                    common::http_get_url(&url)
                        .await
                        .map(|(s, _)| s)
                        .unwrap_or(0),
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            answers
        })
    };

    let started = tokio::time::Instant::now();
    let before = statements.load(Ordering::Relaxed);
    let (forged_admitted, forged_limited) = flood(&grpc, 2_500, true).await?;
    let after_forged = statements.load(Ordering::Relaxed);
    assert!(forged_admitted >= 1 && forged_admitted <= 50 + 10 * (started.elapsed().as_secs() + 1));
    assert_eq!(forged_admitted + forged_limited, 2_500);
    assert_eq!(after_forged - before, 0, "forged calls read no edge row");

    let (admitted, limited) = flood(&grpc, 2_500, false).await?;
    let after_valid = statements.load(Ordering::Relaxed);
    let allowed = 50 + 10 * (started.elapsed().as_secs() + 1);
    assert!(
        forged_admitted + admitted <= allowed,
        "{forged_admitted} + {admitted} > {allowed}"
    );
    assert_eq!(admitted + limited, 2_500);
    // An admitted call of an unknown node reads its tombstone and its row
    // (at least one statement each: the counter does see them).
    assert!(
        (admitted..=2 * admitted).contains(&(after_valid - after_forged)),
        "{} statements for {admitted} admitted calls",
        after_valid - after_forged
    );
    eprintln!(
        "forged: {forged_admitted} admitted, {forged_limited} limited; valid: {admitted} admitted, \
         {limited} limited; {} edge statements",
        after_valid - before
    );

    stop.cancel();
    let answers = readiness.await?;
    assert!(!answers.is_empty());
    assert!(answers.iter().all(|status| *status == 200), "{answers:?}");
    assert_eq!(http_get(&relay, "/readyz").await?.0, 200);
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

//! Heartbeats reach the store in batches: with many edges heartbeating
//! fast, the relay runs one `UPDATE edge_daemons` per flush interval, not
//! one per heartbeat (statements counted from sqlx's own query log). A test
//! file of its own: it installs the process-wide tracing subscriber.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aegis_relay::edge_client::EdgeOptions;
use common::edges::{enroll_edge, run_edge};
use common::{counter_value, start_relay_configured, TestResult};
use tracing_subscriber::layer::SubscriberExt;

/// Counts sqlx statements that update `edge_daemons`.
struct UpdateCounter(Arc<AtomicU64>);

struct StatementText(bool);

impl tracing::field::Visit for StatementText {
    fn record_debug(&mut self, _field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if text.contains("UPDATE edge_daemons") {
            self.0 = true;
        }
    }

    fn record_str(&mut self, _field: &tracing::field::Field, value: &str) {
        if value.contains("UPDATE edge_daemons") {
            self.0 = true;
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for UpdateCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            let mut visitor = StatementText(false);
            event.record(&mut visitor);
            if visitor.0 {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[tokio::test]
async fn heartbeats_of_many_edges_are_written_one_statement_per_flush() -> TestResult {
    let relay = start_relay_configured(|settings| {
        settings.sessions.store_flush_interval = Duration::from_millis(200);
    })
    .await?;
    let mut edges = Vec::new();
    let mut running = Vec::new();
    for _ in 0..10 {
        let edge = enroll_edge(&relay, "t-a").await?;
        let options = EdgeOptions {
            heartbeat_interval: Duration::from_millis(100),
            ..EdgeOptions::default()
        };
        running.push(run_edge(&relay, &edge.state, options).await?);
        edges.push(edge);
    }
    // Installed only now: sqlx pretty-prints every logged statement, which
    // takes seconds for the migrations.
    let updates = Arc::new(AtomicU64::new(0));
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::filter::Targets::new()
                .with_target("sqlx::query", tracing::Level::TRACE),
        )
        .with(UpdateCounter(Arc::clone(&updates)));
    tracing::subscriber::set_global_default(subscriber)?;
    let statements_before = updates.load(Ordering::Relaxed);
    let beats =
        |text: &str| counter_value(text, "aegis_relay_edge_events_total{kind=\"heartbeat\"}");
    let flushes = |text: &str| counter_value(text, "aegis_relay_edge_update_flushes_total");
    let before = relay.metrics().render();
    let (heartbeats_before, flushes_before) = (beats(&before), flushes(&before));
    let window = tokio::time::Instant::now();
    // 10 edges x 10 heartbeats/s: about 2 s on a quiet machine, longer on a
    // loaded one; the bounds below scale with the time it took.
    let metrics = relay.metrics().clone();
    common::eventually(Duration::from_secs(60), "100 more heartbeats", || {
        let text = metrics.render();
        async move { (beats(&text) - heartbeats_before >= 100.0).then_some(()) }
    })
    .await?;
    let elapsed = window.elapsed();
    let statements = updates.load(Ordering::Relaxed) - statements_before;
    let after = relay.metrics().render();
    let heartbeats = beats(&after) - heartbeats_before;
    let flushed = flushes(&after) - flushes_before;
    // One statement per flush (a flush may straddle either end of the
    // window), and flushes paced by the 200 ms interval, never one per
    // heartbeat (the interval delays missed ticks rather than bursting).
    assert!(statements >= 1, "no UPDATE in {elapsed:?}");
    assert!(
        statements.abs_diff(flushed as u64) <= 1,
        "{statements} UPDATE statements for {flushed} flushes"
    );
    let most = elapsed.as_millis() as u64 / 200 + 2;
    assert!(
        statements <= most,
        "{statements} UPDATE statements for {heartbeats} heartbeats in {elapsed:?} (at most {most} expected)"
    );
    drop(running);
    Ok(())
}

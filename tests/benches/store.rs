//! Store benchmark: batched heartbeat flushes and token redemption under
//! contention, on SQLite and (when AEGIS_RELAY_TEST_POSTGRES_URL names a
//! server) PostgreSQL. Gates correctness, per backend: every flush is one
//! statement and updates every edge, and every token has exactly one
//! winning redemption; the speeds are printed without targets. Exits
//! non-zero on a failed gate (gate.rs).
//!
//!   cargo bench --bench store -- [--edges N] [--rounds R] [--tokens T] [--contenders C]

#[path = "gate.rs"]
mod gate;
#[path = "../common/postgres.rs"]
mod postgres_db;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aegis_relay::store::{
    EdgeUpdate, Enrollment, EnrollmentOutcome, PostgresMode, PostgresStore, SqliteStore, Store,
};
use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tracing_subscriber::layer::SubscriberExt;
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Counts statements as sqlx logs them (target `sqlx::query`).
struct StatementCounter(Arc<AtomicU64>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StatementCounter {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Options {
    edges: usize,
    rounds: usize,
    tokens: usize,
    contenders: usize,
}

fn options() -> Result<Options, BoxError> {
    let mut options = Options {
        edges: 10_000,
        rounds: 5,
        tokens: 1_000,
        contenders: 4,
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        let value = || pair[1].parse::<usize>();
        match pair[0].as_str() {
            "--edges" => options.edges = value()?,
            "--rounds" => options.rounds = value()?.max(1),
            "--tokens" => options.tokens = value()?,
            "--contenders" => options.contenders = value()?.max(1),
            _ => {}
        }
    }
    Ok(options)
}

struct Figures {
    backend: &'static str,
    enroll_per_sec: f64,
    flush_ms: Vec<f64>,
    /// Statements sqlx logged around each flush.
    statements_per_flush: Vec<u64>,
    attempts_per_sec: f64,
    wins_per_sec: f64,
    /// Tokens, and how many of them had exactly one winner.
    tokens: usize,
    tokens_with_one_winner: usize,
}

fn enrollment(jti: Uuid, node_id: Uuid, now: DateTime<Utc>) -> Enrollment {
    Enrollment {
        jti,
        tenant_id: "t-bench".into(),
        issued_to: "bench".into(),
        token_expires_at: now + chrono::Duration::minutes(15),
        node_id,
        public_key: vec![1; 32],
        challenge_id: aegis_relay::runtime::OsEntropy.uuid(),
        now,
        own_token: true,
    }
}

/// Runs `job(0..count)`, `concurrency` at a time; the outcomes in job
/// order (index `i` is `job(i)`'s).
async fn run_all<F, Fut>(
    count: usize,
    concurrency: usize,
    job: F,
) -> Result<Vec<EnrollmentOutcome>, BoxError>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<EnrollmentOutcome, BoxError>> + Send + 'static,
{
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..count {
        let permit = Arc::clone(&limit).acquire_owned().await?;
        let future = job(index);
        tasks.spawn(async move {
            let outcome = future.await;
            drop(permit);
            outcome.map(|outcome| (index, outcome))
        });
    }
    let mut outcomes = vec![EnrollmentOutcome::Enrolled; count];
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        let (index, outcome) = joined??;
        outcomes[index] = outcome;
        done += 1;
    }
    if done != count {
        return Err(format!("{done} of {count} jobs finished").into());
    }
    Ok(outcomes)
}

async fn bench(
    backend: &'static str,
    store: Arc<dyn Store>,
    statements: &AtomicU64,
    options: &Options,
) -> Result<Figures, BoxError> {
    let now = aegis_relay::runtime::SystemClock.utc_now();
    let nodes: Vec<Uuid> = (0..options.edges)
        .map(|_| aegis_relay::runtime::OsEntropy.uuid())
        .collect();
    let started = Instant::now();
    let nodes_for_jobs = Arc::new(nodes.clone());
    run_all(options.edges, 16, |index| {
        let store = Arc::clone(&store);
        let node = nodes_for_jobs[index];
        async move {
            Ok(store
                .complete_enrollment(&enrollment(
                    aegis_relay::runtime::OsEntropy.uuid(),
                    node,
                    now,
                ))
                .await?)
        }
    })
    .await?;
    let enroll_per_sec = options.edges as f64 / started.elapsed().as_secs_f64();

    let mut flush_ms = Vec::new();
    let mut statements_per_flush = Vec::new();
    for round in 0..options.rounds {
        let beat = now + chrono::Duration::seconds(30 * (round as i64 + 1));
        let updates: Vec<EdgeUpdate> = nodes
            .iter()
            .map(|node_id| EdgeUpdate {
                node_id: *node_id,
                last_heartbeat_at: Some(beat),
                capabilities: None,
                status: None,
            })
            .collect();
        let before = statements.load(Ordering::Relaxed);
        let started = Instant::now();
        let updated = store.apply_edge_updates(&updates).await?;
        flush_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        statements_per_flush.push(statements.load(Ordering::Relaxed) - before);
        if updated != options.edges as u64 {
            return Err(format!(
                "{backend}: flush updated {updated} of {} edges",
                options.edges
            )
            .into());
        }
    }

    let tokens: Vec<Uuid> = (0..options.tokens)
        .map(|_| aegis_relay::runtime::OsEntropy.uuid())
        .collect();
    let tokens = Arc::new(tokens);
    let contenders = options.contenders;
    let started = Instant::now();
    let outcomes = run_all(options.tokens * contenders, 32, |index| {
        let store = Arc::clone(&store);
        let jti = tokens[index / contenders];
        async move {
            Ok(store
                .complete_enrollment(&enrollment(
                    jti,
                    aegis_relay::runtime::OsEntropy.uuid(),
                    now,
                ))
                .await?)
        }
    })
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    // Attempt `index` redeemed token `index / contenders`.
    let mut winners = vec![0usize; options.tokens];
    for (index, outcome) in outcomes.iter().enumerate() {
        // A redemption, whichever kind: the token is burned.
        if matches!(
            outcome,
            EnrollmentOutcome::Enrolled | EnrollmentOutcome::Replaced
        ) {
            winners[index / contenders] += 1;
        }
    }
    let wins: usize = winners.iter().sum();
    let tokens_with_one_winner = winners.iter().filter(|w| **w == 1).count();
    Ok(Figures {
        backend,
        enroll_per_sec,
        flush_ms,
        statements_per_flush,
        attempts_per_sec: outcomes.len() as f64 / elapsed,
        wins_per_sec: wins as f64 / elapsed,
        tokens: options.tokens,
        tokens_with_one_winner,
    })
}

fn print(figures: &[Figures], options: &Options, gates: &mut gate::Gates) {
    println!(
        "\nstore benchmark: {} edges, {} flushes, {} tokens x {} contenders",
        options.edges, options.rounds, options.tokens, options.contenders
    );
    println!(
        "{:<9} {:>10} {:>22} {:>11} {:>14} {:>12}",
        "backend", "enroll/s", "flush ms med/min/max", "stmts/flush", "redeem try/s", "redeem ok/s"
    );
    for f in figures {
        let mut sorted = f.flush_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let median = gate::median(&sorted).unwrap_or(f64::NAN);
        let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
        let statements = f
            .statements_per_flush
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        println!(
            "{:<9} {:>10.0} {:>8.1} /{:>6.1} /{:>6.1} {:>11} {:>14.0} {:>12.0}",
            f.backend,
            f.enroll_per_sec,
            median,
            min,
            max,
            statements,
            f.attempts_per_sec,
            f.wins_per_sec
        );
        let b = f.backend;
        gates.check(
            &format!("{b} statements per flush"),
            f.statements_per_flush.iter().all(|n| *n == 1),
            format!("[{statements}]"),
            "1 each flush",
        );
        gates.check(
            &format!("{b} winners per token"),
            f.tokens_with_one_winner == f.tokens,
            format!(
                "{} of {} tokens had exactly 1",
                f.tokens_with_one_winner, f.tokens
            ),
            "exactly 1 per token",
        );
        gates.info(
            &format!("{b} flush of {} edges", options.edges),
            format!("median {median:.1} / min {min:.1} / max {max:.1} ms"),
        );
        gates.info(
            &format!("{b} redemptions"),
            format!(
                "{:.0} attempts/s, {:.0} winning/s",
                f.attempts_per_sec, f.wins_per_sec
            ),
        );
        gates.info(
            &format!("{b} enrollments"),
            format!("{:.0}/s", f.enroll_per_sec),
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let options = options()?;
    let mut gates = gate::Gates::from_args("store")?;
    let statements = Arc::new(AtomicU64::new(0));
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::filter::Targets::new()
                .with_target("sqlx::query", tracing::Level::TRACE),
        )
        .with(StatementCounter(Arc::clone(&statements)));
    tracing::subscriber::set_global_default(subscriber)?;

    let mut figures = Vec::new();
    let dir = tempfile::tempdir()?;
    let sqlite = SqliteStore::open(&dir.path().join("bench.db")).await?;
    sqlite.migrate().await?;
    figures.push(bench("sqlite", Arc::new(sqlite), &statements, &options).await?);

    match postgres_db::fresh_database("bench")
        .await
        .map_err(|e| e.to_string())?
    {
        Some(url) => {
            let postgres = PostgresStore::connect(&url, PostgresMode::Standalone).await?;
            postgres.migrate().await?;
            figures.push(
                bench(
                    "postgres",
                    Arc::new(postgres.clone()),
                    &statements,
                    &options,
                )
                .await?,
            );
            postgres.close().await;
            postgres_db::drop_database(&url)
                .await
                .map_err(|e| e.to_string())?;
        }
        None => eprintln!("postgres skipped: set AEGIS_RELAY_TEST_POSTGRES_URL"),
    }
    print(&figures, &options, &mut gates);
    gates.finish()
}

//! Scenario `throughput`: REST invokes spread round robin over several
//! edges of one tenant at a fixed concurrency, against raw tonic unary
//! echo at the same concurrency, in alternating windows; the target is
//! judged on the median over rounds of each round's ratio.

use std::time::Duration;

use crate::gate::{median, Gates};
use crate::relay::BenchRelay;
use crate::stats::{self, saturate, Rate};
use crate::unary::{self, UnaryBaseline};
use crate::{BoxError, Options};

/// Target: relay throughput at least this fraction of unary echo's.
const TARGET: f64 = 0.2;

/// Concurrent streams per HTTP/2 connection of the unary baseline.
const STREAMS_PER_CONNECTION: usize = 8;

/// Runs the scenario and records its gate.
pub async fn run(options: &Options, gates: &mut Gates) -> Result<(), BoxError> {
    stats::header(
        "throughput",
        &options.flags,
        "invocation throughput, relay REST vs raw tonic unary echo",
    );
    let concurrency = options.concurrency.max(1);
    let mut relay = BenchRelay::start().await?;
    relay.add_edges(options.edges.max(1), 1).await?;
    let backend = relay.backend;
    let baseline = std::sync::Arc::new(
        UnaryBaseline::start(concurrency.div_ceil(STREAMS_PER_CONNECTION)).await?,
    );

    let relay_window = |duration: Duration| {
        let caller = relay.caller();
        let edges = options.edges.max(1);
        saturate(
            concurrency,
            duration,
            options.max_calls,
            move |worker, n| {
                let caller = caller.clone();
                async move { caller.invoke((worker + n as usize) % edges).await }
            },
        )
    };
    let unary_window = |duration: Duration| {
        let baseline = std::sync::Arc::clone(&baseline);
        saturate(
            concurrency,
            duration,
            options.max_calls,
            move |worker, n| unary::call(baseline.client(worker), n),
        )
    };

    let warm_up = Duration::from_secs(1);
    relay_window(warm_up).await;
    unary_window(warm_up).await;
    let rounds = options.rounds.max(3);
    let window = Duration::from_secs_f64(options.seconds / rounds as f64);
    let mut relay_rate = empty();
    let mut unary_rate = empty();
    let mut round_fractions = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let (relay_round, unary_round) = (relay_window(window).await, unary_window(window).await);
        // A window without a completed baseline call has no ratio (NaN fails).
        round_fractions.push(if unary_round.ok == 0 {
            f64::NAN
        } else {
            relay_round.per_second() / unary_round.per_second()
        });
        relay_rate.add(relay_round);
        unary_rate.add(unary_round);
    }
    relay.shutdown().await?;

    let fraction = median(&round_fractions).unwrap_or(f64::NAN);
    println!(
        "   concurrency {concurrency}, {} edges round robin, {rounds} alternating windows of {:.1} s each, store {backend}",
        options.edges.max(1),
        window.as_secs_f64()
    );
    println!(
        "   relay {:.0} invokes/s ({} ok, {} errors) | unary echo {:.0} calls/s ({} ok, {} errors)",
        relay_rate.per_second(),
        relay_rate.ok,
        relay_rate.errors,
        unary_rate.per_second(),
        unary_rate.ok,
        unary_rate.errors
    );
    for (name, rate) in [("relay", &relay_rate), ("unary", &unary_rate)] {
        if let Some(err) = &rate.first_error {
            println!("   first {name} error: {err}");
        }
    }
    let per_round: Vec<String> = round_fractions.iter().map(|f| format!("{f:.3}")).collect();
    println!(
        "   ratio relay/unary, all windows {:.3}; per round {}; median {fraction:.3} (target ≥ {TARGET})",
        relay_rate.per_second() / unary_rate.per_second().max(f64::MIN_POSITIVE),
        per_round.join(" / ")
    );
    if relay_rate.errors > 0 || unary_rate.errors > 0 {
        return Err("calls failed during the throughput windows".into());
    }
    gates.at_least(
        "throughput_ratio",
        &format!("relay/unary echo, median of {rounds} rounds, {backend}"),
        fraction,
        TARGET,
        "x",
    );
    Ok(())
}

fn empty() -> Rate {
    Rate {
        ok: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        first_error: None,
    }
}

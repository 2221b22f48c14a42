//! Scenario `invoke`: single-edge REST invoke round trips at concurrency 1
//! against the bidi echo and the two-hop forwarder, in alternating rounds
//! so drift on a shared machine hits every system alike. The target is
//! judged on our edge client (as the brief sets it up), on the median over
//! rounds of each round's p99 ratio; a second edge that answers without the
//! client's timer wait is printed as a diagnostic.

use crate::echo::EchoBaseline;
use crate::gate::{median, Gates};
use crate::relay::BenchRelay;
use crate::stats::{self, ratio, us, Samples};
use crate::two_hop::TwoHop;
use crate::{BoxError, Options};

/// Target: relay p99 at most this many times the two-hop p99.
const TARGET: f64 = 1.5;

/// Runs the scenario and records its gate.
pub async fn run(options: &Options, gates: &mut Gates) -> Result<(), BoxError> {
    stats::header(
        "invoke",
        &options.flags,
        "single-edge invoke round trip, concurrency 1",
    );
    let mut relay = BenchRelay::start().await?;
    relay.add_edges(1, 1).await?;
    let instant = relay.add_instant_edge().await?;
    let backend = relay.backend;
    let caller = relay.caller();
    let mut two_hop = TwoHop::start(1, 1).await?;
    let mut echo = EchoBaseline::start().await?;

    for _ in 0..options.warmup {
        caller.invoke(0).await?;
        caller.invoke(instant).await?;
        two_hop.round_trip().await?;
        echo.round_trip().await?;
    }
    let (mut relay_rt, mut instant_rt) = (Samples::default(), Samples::default());
    let (mut two_hop_rt, mut echo_rt) = (Samples::default(), Samples::default());
    let rounds = options.rounds.max(3);
    let per_round = options.calls.div_ceil(rounds).max(1);
    let mut round_ratios = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let (mut relay_round, mut hop_round) = (Samples::default(), Samples::default());
        for _ in 0..per_round {
            let started = tokio::time::Instant::now();
            caller.invoke(0).await?;
            let took = started.elapsed();
            relay_rt.push(took);
            relay_round.push(took);
        }
        for _ in 0..per_round {
            let started = tokio::time::Instant::now();
            caller.invoke(instant).await?;
            instant_rt.push(started.elapsed());
        }
        for _ in 0..per_round {
            let took = two_hop.round_trip().await?;
            two_hop_rt.push(took);
            hop_round.push(took);
        }
        for _ in 0..per_round {
            echo_rt.push(echo.round_trip().await?);
        }
        round_ratios.push(ratio(
            relay_round.percentile(99.0),
            hop_round.percentile(99.0),
        ));
    }
    relay.shutdown().await?;

    let p = |s: &Samples| (s.percentile(50.0), s.percentile(99.0));
    let (relay_50, relay_99) = p(&relay_rt);
    let (instant_50, instant_99) = p(&instant_rt);
    let (hop_50, hop_99) = p(&two_hop_rt);
    let (echo_50, echo_99) = p(&echo_rt);
    // No samples (or a zero baseline) makes the median NaN, which fails.
    let against_two_hop = median(&round_ratios).unwrap_or(f64::NAN);
    println!(
        "   {} calls each after {} warm-up, {rounds} alternating rounds, store {backend}",
        relay_rt.len(),
        options.warmup,
    );
    println!(
        "   relay p50 {} p99 {} | two-hop p50 {} p99 {} | echo p50 {} p99 {}",
        us(relay_50),
        us(relay_99),
        us(hop_50),
        us(hop_99),
        us(echo_50),
        us(echo_99)
    );
    println!(
        "   ratio p50 relay/two-hop {:.2}, relay/echo {:.2} | ratio p99 relay/echo {:.2}",
        ratio(relay_50, hop_50),
        ratio(relay_50, echo_50),
        ratio(relay_99, echo_99)
    );
    let per_round: Vec<String> = round_ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "   ratio p99 relay/two-hop, all calls {:.2}; per round {}; median {against_two_hop:.2} (target ≤ {TARGET})",
        ratio(relay_99, hop_99),
        per_round.join(" / ")
    );
    println!(
        "   diagnostic, relay to an edge answering without the edge client's timer wait: \
p50 {} p99 {} | ratio p99 to two-hop {:.2}",
        us(instant_50),
        us(instant_99),
        ratio(instant_99, hop_99)
    );
    gates.at_most(
        "invoke_p99_ratio",
        &format!("relay/two-hop p99, median of {rounds} rounds, {backend}"),
        against_two_hop,
        TARGET,
        "x",
    );
    Ok(())
}

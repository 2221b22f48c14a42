//! Scenario `fanout`: a parallel fleet echo to every edge of one tenant,
//! timed from sending the request to the `Done` event, with the two-hop
//! forwarder fanning out to as many raw edges as the baseline.

use crate::gate::Gates;
use crate::relay::BenchRelay;
use crate::stats::{self, ms, ratio, Samples};
use crate::two_hop::TwoHop;
use crate::{BoxError, Options};

/// Target: median time to `Done`, milliseconds.
const TARGET_MS: f64 = 250.0;

/// Edge streams per HTTP/2 connection, for both the relay and the baseline.
const STREAMS_PER_CONNECTION: usize = 100;

/// Runs the scenario and records its gate.
pub async fn run(options: &Options, gates: &mut Gates) -> Result<(), BoxError> {
    let fleet = options.fleet.max(1);
    stats::header(
        "fanout",
        &options.flags,
        &format!("fleet fan-out to {fleet} echo edges until Done"),
    );
    let mut relay = BenchRelay::start().await?;
    relay.add_edges(fleet, STREAMS_PER_CONNECTION).await?;
    let backend = relay.backend;
    let caller = relay.caller();
    let mut two_hop = TwoHop::start(fleet, STREAMS_PER_CONNECTION).await?;

    let expected = fleet as u64;
    caller.fleet().await?;
    two_hop.fanout().await?;
    let (mut relay_times, mut two_hop_times) = (Samples::default(), Samples::default());
    for repeat in 0..options.repeats.max(1) {
        let (elapsed, summary) = caller.fleet().await?;
        if summary["ok"].as_u64() != Some(expected) {
            return Err(
                format!("fleet run {repeat}: summary {summary}, wanted ok {expected}").into(),
            );
        }
        relay_times.push(elapsed);
        let (elapsed, verified) = two_hop.fanout().await?;
        if verified != expected {
            return Err(
                format!("two-hop fan-out {repeat}: {verified} of {expected} verified").into(),
            );
        }
        two_hop_times.push(elapsed);
    }
    relay.shutdown().await?;

    let relay_median = relay_times.percentile(50.0);
    let hop_median = two_hop_times.percentile(50.0);
    println!(
        "   {} runs after 1 warm-up, summary.ok == {expected} each time, store {backend}",
        relay_times.len()
    );
    println!(
        "   relay min {} median {} max {} | two-hop min {} median {} max {}",
        ms(relay_times.min()),
        ms(relay_median),
        ms(relay_times.max()),
        ms(two_hop_times.min()),
        ms(hop_median),
        ms(two_hop_times.max())
    );
    println!(
        "   ratio median relay/two-hop {:.2} | relay median {} (target ≤ {TARGET_MS} ms)",
        ratio(relay_median, hop_median),
        ms(relay_median),
    );
    gates.at_most(
        "fanout_ms",
        &format!("median to Done, {fleet} edges, {backend}"),
        relay_median.as_secs_f64() * 1000.0,
        TARGET_MS,
        "ms",
    );
    Ok(())
}

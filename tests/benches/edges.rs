//! Edge path benchmark: what a caller sees when the relay runs tools on
//! edges, each scenario measured against raw tonic baselines started in
//! the same process and run, and printed with its ratio and target:
//!
//! - `invoke`: single-edge REST invoke round trip p50/p99 at concurrency 1,
//!   against a bidi echo and a two-hop sign-and-verify forwarder (plus a
//!   diagnostic edge that skips the edge client's timer wait);
//! - `throughput`: REST invokes/s over several edges at concurrency 64,
//!   against raw unary echo at the same concurrency;
//! - `fanout`: fleet echo to 1,000 edges until `Done`, against the two-hop
//!   forwarder fanning out to as many raw edges;
//! - `mint`: the CPU cost of one per-command user token.
//!
//! Runs on PostgreSQL when AEGIS_RELAY_TEST_POSTGRES_URL names a server,
//! else SQLite. Fails on a wrong answer, and exits non-zero on a missed
//! target (gate.rs); ratio targets are judged on the median of at least
//! three alternating rounds with their baseline.
//!
//!   cargo bench --bench edges -- [invoke|throughput|fanout|mint|all] [--calls N]
//!     [--warmup N] [--rounds R] [--seconds S] [--concurrency C] [--edges E]
//!     [--fleet N] [--repeats R] [--max-calls N] [--target NAME=VALUE]

#[path = "../common/postgres.rs"]
mod postgres_db;

#[path = "edges/echo.rs"]
mod echo;
#[path = "edges/fanout.rs"]
mod fanout;
#[path = "gate.rs"]
mod gate;
#[path = "edges/instant_edge.rs"]
mod instant_edge;
#[path = "edges/invoke.rs"]
mod invoke;
#[path = "edges/mint.rs"]
mod mint;
#[path = "edges/relay.rs"]
mod relay;
#[path = "edges/stats.rs"]
mod stats;
#[path = "edges/throughput.rs"]
mod throughput;
#[path = "edges/two_hop.rs"]
mod two_hop;
#[path = "edges/unary.rs"]
mod unary;
#[path = "edges/wire.rs"]
mod wire;

use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bound on any single call, stream read or fleet run.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

const USAGE: &str = "usage: cargo bench --bench edges -- [invoke|throughput|fanout|mint|all] \
[--calls N] [--warmup N] [--rounds R] [--seconds S] [--concurrency C] [--edges E] \
[--fleet N] [--repeats R] [--max-calls N] [--target NAME=VALUE]";

/// What to run, and how much.
pub struct Options {
    scenario: String,
    /// The flags as given, for the printed command.
    pub flags: String,
    /// `invoke`: measured calls per system.
    pub calls: usize,
    /// `invoke`: warm-up calls per system.
    pub warmup: usize,
    /// `invoke`, `throughput` and `mint`: rounds the work is split into
    /// (at least 3; ratios are judged on their median).
    pub rounds: usize,
    /// `throughput`: measured seconds per system.
    pub seconds: f64,
    /// `throughput`: calls in flight.
    pub concurrency: usize,
    /// `throughput`: edges the calls rotate over.
    pub edges: usize,
    /// `fanout`: edges in the fleet.
    pub fleet: usize,
    /// `fanout`: measured runs.
    pub repeats: usize,
    /// `throughput`: cap on calls per window.
    pub max_calls: u64,
}

fn options() -> Result<Options, BoxError> {
    let mut options = Options {
        scenario: "all".to_owned(),
        flags: String::new(),
        calls: 2_000,
        warmup: 200,
        rounds: 4,
        seconds: 10.0,
        concurrency: 64,
        edges: 16,
        fleet: 1_000,
        repeats: 7,
        max_calls: 5_000_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || -> Result<String, BoxError> {
            let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
            options.flags.push_str(&format!(" {arg} {value}"));
            Ok(value)
        };
        match arg.as_str() {
            // cargo bench passes --bench to every bench target.
            "--bench" => {}
            "--calls" => options.calls = value()?.parse()?,
            "--warmup" => options.warmup = value()?.parse()?,
            "--rounds" => options.rounds = value()?.parse()?,
            "--seconds" => options.seconds = value()?.parse()?,
            "--concurrency" => options.concurrency = value()?.parse()?,
            "--edges" => options.edges = value()?.parse()?,
            "--fleet" => options.fleet = value()?.parse()?,
            "--repeats" => options.repeats = value()?.parse()?,
            "--max-calls" => options.max_calls = value()?.parse()?,
            // Read by gate::Gates.
            "--target" => {
                value()?;
            }
            "invoke" | "throughput" | "fanout" | "mint" | "all" => options.scenario = arg,
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}").into()),
        }
    }
    Ok(options)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let options = options()?;
    let scenarios: &[&str] = match options.scenario.as_str() {
        "all" => &["invoke", "throughput", "fanout", "mint"],
        one => &[one],
    };
    let mut gates = gate::Gates::from_args("edges")?;
    for scenario in scenarios {
        match *scenario {
            "invoke" => invoke::run(&options, &mut gates).await?,
            "throughput" => throughput::run(&options, &mut gates).await?,
            "mint" => mint::run(&options, &mut gates).await?,
            _ => fanout::run(&options, &mut gates).await?,
        }
    }
    gates.finish()
}

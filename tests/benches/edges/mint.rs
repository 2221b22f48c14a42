//! `mint`: the cost of the per-command user token each InvokeTool carries
//! (HMAC-SHA256 compact JWS), which must stay far below a call's cost.

use tokio::time::Instant;

use aegis_relay::auth::{CommandGrant, CommandTokens};
use uuid::Uuid;

use crate::gate::{median, Gates};
use crate::{BoxError, Options};

/// Target: at most this many microseconds per token.
const TARGET_MICROS: f64 = 5.0;
const PER_ROUND: u32 = 100_000;

/// Runs the scenario and records its gate (the median over rounds).
pub async fn run(options: &Options, gates: &mut Gates) -> Result<(), BoxError> {
    let tokens = CommandTokens::with_secret(&[7u8; 32], "aegis-relay-coordinator");
    let mut rounds = Vec::new();
    let mut length = 0;
    for round in 0..options.rounds.max(3) {
        let started = Instant::now();
        for i in 0..PER_ROUND {
            let token = tokens.mint(&CommandGrant {
                subject: "service-account-controller",
                tenant_id: "t-4a1f0c2e9b7d4e8f",
                node_id: Uuid::from_u128(u128::from(i)),
                command_id: Uuid::from_u128(u128::from(i) << 64 | round as u128),
                issued_at: 1_800_000_000,
                expires_at: 1_800_000_060,
            })?;
            length = token.len();
            std::hint::black_box(token);
        }
        rounds.push(started.elapsed().as_secs_f64() * 1e6 / f64::from(PER_ROUND));
    }
    rounds.sort_by(f64::total_cmp);
    let median = median(&rounds).unwrap_or(f64::NAN);
    println!(
        "\nmint: per-command token ({length} bytes), {PER_ROUND} per round, {} rounds: median \
         {median:.2} µs (min {:.2}, max {:.2}); target ≤ {TARGET_MICROS} µs",
        rounds.len(),
        rounds[0],
        rounds[rounds.len() - 1],
    );
    gates.at_most(
        "mint_us",
        &format!("per token, median of {} rounds", rounds.len()),
        median,
        TARGET_MICROS,
        "µs",
    );
    Ok(())
}

//! Deterministic simulation of aegis-relay on turmoil.
//!
//! The relay takes its network, wall clock and randomness from
//! [`aegis_relay::runtime::Runtime`]; this crate supplies simulated versions
//! of each, so the production code runs unchanged on turmoil's simulated TCP
//! and time. A seed fixes every random choice: the same seed replays the same
//! run. Later issues add the cluster harness, fault schedule and invariants.

mod net;
mod runtime;

pub use net::{grpc_channel, TurmoilNetwork};
pub use runtime::{sim_runtime, SeededEntropy, SimClock, SIM_EPOCH};

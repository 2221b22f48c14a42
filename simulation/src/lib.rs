//! Deterministic simulation of aegis-relay on turmoil.
//!
//! The relay takes its network, wall clock and randomness from
//! [`aegis_relay::runtime::Runtime`]; this crate supplies simulated versions
//! of each, so the production code runs unchanged on turmoil's simulated TCP,
//! UDP and time. On top, [`harness::run`] runs a [`Scenario`]: N real
//! replicas clustered over gossip, simulated edge daemons built on the
//! project's edge client, callers on the REST API, replica restarts; named
//! checks run throughout and a violation comes with the seed and a trace.

pub mod caller;
pub mod checks;
pub mod edge;
pub mod fixture;
pub mod harness;
mod http;
mod net;
pub mod replica;
pub mod runner;
mod runtime;
pub mod scenario;
pub mod world;

pub use harness::{run, HarnessError, Report, Stats};
pub use net::{grpc_channel, TurmoilNetwork};
pub use runner::{run_on_fresh_thread, SeedResult, ThreadStart};
pub use runtime::{sim_runtime, SeededEntropy, SimClock, SIM_EPOCH};
pub use scenario::{Restart, Restarts, Scenario};

//! aegis-relay: the highly available Relay Coordinator for AEGIS edge daemons.
//!
//! The binary (`src/main.rs`) is a thin shell around this library so that
//! integration tests and the deterministic simulator run the very same code.
//! See ARCHITECTURE.md for the code map.

pub mod admission;
pub mod app;
pub mod auth;
pub mod change_feed;
pub mod cli;
pub mod config;
pub mod edge;
pub mod edge_client;
pub mod endpoints;
pub mod enroll;
pub mod fleet;
pub mod grpc;
pub mod hop;
pub mod housekeeping;
pub mod http;
pub mod membership;
pub mod net;
pub mod outcomes;
pub mod owner;
pub mod proto;
pub mod readiness;
pub mod runtime;
pub mod session;
pub mod shutdown;
pub mod store;
pub mod store_health;
pub mod telemetry;

//! aegis-relay: the highly available Relay Coordinator for AEGIS edge daemons.
//!
//! The binary (`src/main.rs`) is a thin shell around this library so that
//! integration tests and the deterministic simulator run the very same code.
//! See ARCHITECTURE.md for the code map.

pub mod config;
pub mod proto;

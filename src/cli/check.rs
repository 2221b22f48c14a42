//! `aegis-relay check-config`: validate a file and say what it configures.

use std::path::Path;

use super::{ConfigArgs, Failure};
use crate::config::{load_file, ProcessEnv};

pub(super) fn check(args: &ConfigArgs) -> Result<(), Failure> {
    let config = load_file(&args.config, &ProcessEnv).map_err(Failure::Config)?;
    let path: &Path = &args.config;
    println!("{}: valid aegis-relay config", path.display());
    println!(
        "  replica {} binds {}: gRPC {}, HTTP {}",
        config.relay.name,
        config.relay.bind_address,
        config.cluster.grpc_port,
        config.relay.http_port
    );
    println!(
        "  enrollment tokens advertise {}",
        config.cluster.public_endpoint
    );
    println!("  store: {}", super::store_settings(&config).describe());
    for warning in &config.warnings {
        println!("  warning: {warning}");
    }
    Ok(())
}

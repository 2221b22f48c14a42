//! `aegis-relay edge-sim`: our edge client on the command line.
//! `enroll` does what `aegis edge enroll <token> --non-interactive` does.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use super::{tokio_runtime, Failure};
use crate::config::LogFormat;
use crate::edge_client::{enroll, EnrollOptions};
use crate::runtime::Runtime;
use crate::telemetry::init_logging;

/// Subcommands of `edge-sim`.
#[derive(Debug, Subcommand)]
pub(super) enum EdgeSimCommand {
    /// Enroll one edge with an enrollment token and write its state directory.
    Enroll(EnrollArgs),
}

#[derive(Debug, Args)]
pub(super) struct EnrollArgs {
    /// The enrollment token (or use --token-file).
    #[arg(
        long,
        conflicts_with = "token_file",
        required_unless_present = "token_file"
    )]
    token: Option<String>,
    /// File holding the enrollment token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Where the edge keeps node.key, node.pub, node.token and aegis-config.yaml.
    #[arg(long)]
    state_dir: PathBuf,
    /// Replace an existing key and token (the node id is kept).
    #[arg(long)]
    force: bool,
    /// Dial this endpoint instead of the token's cep.
    #[arg(long)]
    endpoint: Option<String>,
}

pub(super) fn run(command: EdgeSimCommand) -> Result<(), Failure> {
    init_logging(LogFormat::Text);
    match command {
        EdgeSimCommand::Enroll(args) => enroll_command(args),
    }
}

fn enroll_command(args: EnrollArgs) -> Result<(), Failure> {
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?,
        (None, None) => {
            return Err(Failure::Runtime(anyhow::anyhow!(
                "pass --token or --token-file"
            )))
        }
    };
    let options = EnrollOptions {
        force: args.force,
        endpoint_override: args.endpoint,
    };
    tokio_runtime()?.block_on(async move {
        let enrolled = enroll(&Runtime::real(), &token, &args.state_dir, &options)
            .await
            .context("enrollment failed")?;
        println!(
            "enrolled node {} in tenant {} (relay {}); state in {}",
            enrolled.state.node_id,
            enrolled.state.tenant_id,
            enrolled.state.endpoint,
            args.state_dir.display()
        );
        Ok(())
    })
}

//! The command line: `run`, `dev`, `check-config`, `migrate`, `admin-token`
//! and `edge-sim`, and their exit codes.
//!
//! This is the binary's edge: the only place that prints for humans, maps
//! errors to exit codes (2 for configuration and usage errors, 1 for runtime
//! failures) and uses `anyhow`.

mod admin_token;
mod check;
mod dev;
mod edge_sim;
mod migrate;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{ConfigError, LogFormat};

/// Exit code for a bad config or bad command line.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for a failure while running.
pub const EXIT_FAILURE: u8 = 1;

/// aegis-relay: the highly available Relay Coordinator for AEGIS edge daemons.
#[derive(Debug, Parser)]
#[command(name = "aegis-relay", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one replica from a config file (the deployment guide's pod).
    Run(RunArgs),
    /// Run a local relay with zero set-up: loopback only, data under --data-dir.
    Dev(DevArgs),
    /// Validate a config file and exit (0 valid, 2 invalid).
    CheckConfig(ConfigArgs),
    /// Apply the store's migrations and exit (shared mode: only the relay's own tables).
    Migrate(ConfigArgs),
    /// Mint one of the relay's own operator tokens into a 0600 file (break-glass, scripts).
    AdminToken(admin_token::AdminTokenArgs),
    /// Our own edge client: enroll simulated edges (and, later, hold their sessions).
    EdgeSim {
        #[command(subcommand)]
        command: edge_sim::EdgeSimCommand,
    },
}

#[derive(Debug, Args)]
struct ConfigArgs {
    /// Path of aegis-config.yaml.
    #[arg(long, short = 'c', env = "AEGIS_RELAY_CONFIG")]
    config: PathBuf,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Do not apply migrations at start; only check the schema is complete.
    #[arg(long)]
    no_migrate: bool,
}

#[derive(Debug, Args)]
struct DevArgs {
    /// Where the local relay keeps its state (endpoints.json, the SQLite store; later keys).
    #[arg(long, default_value = ".aegis-relay")]
    data_dir: PathBuf,
    /// Cluster gRPC port on 127.0.0.1 (0 = pick a free port).
    #[arg(long, default_value_t = crate::config::DEFAULT_GRPC_PORT)]
    grpc_port: u16,
    /// HTTP port on 127.0.0.1 (0 = pick a free port).
    #[arg(long, default_value_t = crate::config::DEFAULT_HTTP_PORT)]
    http_port: u16,
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// A failure with its exit code.
#[derive(Debug)]
enum Failure {
    Config(ConfigError),
    Runtime(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Self::Runtime(err)
    }
}

impl From<crate::app::RelayError> for Failure {
    fn from(err: crate::app::RelayError) -> Self {
        Self::Runtime(err.into())
    }
}

/// Parses the command line, runs the command and returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(&args.config.config, args.no_migrate),
        Command::Dev(args) => dev::dev(args),
        Command::CheckConfig(args) => check::check(&args),
        Command::Migrate(args) => migrate::migrate(&args.config),
        Command::AdminToken(args) => admin_token::admin_token(args),
        Command::EdgeSim { command } => edge_sim::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(err)) => {
            eprintln!("aegis-relay: invalid config: {err}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(Failure::Runtime(err)) => {
            eprintln!("aegis-relay: {err:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// How long start-up waits for a database that is not reachable yet.
const STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The store a config asks for.
fn store_settings(config: &crate::config::Config) -> crate::store::StoreSettings {
    use crate::store::{PostgresMode, StoreSettings};
    match &config.postgres {
        Some(pg) => StoreSettings::Postgres {
            dsn: pg.dsn.clone(),
            mode: if pg.shared_with_aegis {
                PostgresMode::SharedWithAegis
            } else {
                PostgresMode::Standalone
            },
            max_connections: pg.max_connections,
        },
        None => StoreSettings::Sqlite {
            path: config.relay.data_dir.join(SQLITE_FILE),
        },
    }
}

/// The SQLite file inside a data dir.
const SQLITE_FILE: &str = "relay.db";
/// The local signing key inside a data dir.
const SIGNING_KEY_FILE: &str = "signing-key.pem";

/// The local signer of a data dir (created on first start).
fn local_signer(
    data_dir: &std::path::Path,
) -> anyhow::Result<std::sync::Arc<dyn crate::auth::Signer>> {
    let signer = crate::auth::LocalSigner::load_or_create(&data_dir.join(SIGNING_KEY_FILE))?;
    tracing::info!(signer = %crate::auth::Signer::describe(&signer), "signing with a local key");
    Ok(std::sync::Arc::new(signer))
}

/// A multi-threaded tokio runtime for the commands that serve.
fn tokio_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| Failure::Runtime(anyhow::anyhow!("cannot start the async runtime: {err}")))
}

/// Runs `relay` until a signal or a server failure, then drains it. A second
/// signal while draining cuts the drain short.
async fn serve_until_signal(
    relay: crate::app::RunningRelay,
    signals: &mut crate::shutdown::Signals,
) -> anyhow::Result<()> {
    let mut relay = relay;
    let failure = tokio::select! {
        name = signals.recv() => {
            tracing::info!(signal = name, "shutdown requested; draining");
            None
        }
        err = relay.failed() => Some(err),
    };
    let drained = async {
        match relay.shutdown().await {
            crate::app::ShutdownOutcome::Graceful => tracing::info!("shutdown complete"),
            crate::app::ShutdownOutcome::Forced { aborted } => {
                tracing::warn!(aborted, "shutdown forced at the drain timeout");
            }
        }
    };
    tokio::select! {
        () = drained => {}
        name = signals.recv() => tracing::warn!(signal = name, "second signal; exiting without waiting for the drain"),
    }
    match failure {
        Some(err) => Err(err.into()),
        None => Ok(()),
    }
}

//! `aegis-relay edge-sim`: our edge client on the command line.
//! `enroll` does what `aegis edge enroll <token> --non-interactive` does;
//! `run` is the load generator: it enrolls many edges (state reused across
//! runs) and holds their sessions, printing progress.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{tokio_runtime, Failure};
use crate::config::{ConfigError, LogFormat};
use crate::edge_client::{
    enroll, hold, load_tenants, prepare, promote_endpoint, EnrollOptions, LoadError, LoadOptions,
    MintError, Minter, PrepareProgress,
};
use crate::endpoints::Endpoints;
use crate::runtime::Runtime;
use crate::shutdown::Signals;
use crate::telemetry::init_logging;

/// Time allowed for each token-minting request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the counters are read while holding.
const STATUS_POLL: Duration = Duration::from_millis(100);
/// How long connect progress is printed every second.
const RAMP_REPORTING: Duration = Duration::from_secs(60);

/// Subcommands of `edge-sim`.
#[derive(Debug, Subcommand)]
pub(super) enum EdgeSimCommand {
    /// Enroll one edge with an enrollment token and write its state directory.
    Enroll(EnrollArgs),
    /// Load generator: enroll N edges (state reused by later runs) and hold
    /// their ConnectEdge streams, heartbeating and answering commands.
    Run(RunArgs),
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
    /// Replace an existing key and token (the node id is kept); needs a token
    /// issued with replace_node=<node id>.
    #[arg(long)]
    force: bool,
    /// Dial this endpoint instead of the token's cep.
    #[arg(long)]
    endpoint: Option<String>,
}

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    /// endpoints.json of the relay (`aegis-relay dev` writes it in its data
    /// dir): gives the gRPC URLs the edges dial (every replica, round-robin
    /// per connection) and the HTTP URL that mints tokens.
    #[arg(long, value_name = "PATH")]
    endpoints_file: Option<PathBuf>,
    /// gRPC URL the edges dial, e.g. http://127.0.0.1:50056 (repeat for
    /// several replicas; replaces the file's).
    #[arg(long, value_name = "URL")]
    endpoint: Vec<String>,
    /// HTTP base URL that mints enrollment tokens, e.g.
    /// http://127.0.0.1:8080 (replaces the file's).
    #[arg(long, value_name = "URL")]
    api: Option<String>,
    /// File holding the bearer that mints enrollment tokens, e.g. the dev
    /// relay's <data-dir>/admin.token. Needed only while some edge is not
    /// enrolled yet.
    #[arg(long, value_name = "FILE")]
    bearer_file: Option<PathBuf>,
    /// Number of edges.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    count: u32,
    /// Tenants: a number T (t-load-0 .. t-load-<T-1>) or a comma-separated
    /// list. Edges are spread over them round-robin.
    #[arg(long, default_value = "1", value_parser = parse_tenants)]
    tenants: Tenants,
    /// Parent of the edges' state directories (edge-0, edge-1, ...); a later
    /// run reuses them instead of enrolling again.
    #[arg(long, value_name = "DIR")]
    state_dir: PathBuf,
    /// Edges multiplexed over one HTTP/2 connection (1 = one connection per
    /// edge, as real daemons do).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    edges_per_connection: u32,
    /// Heartbeat period of every edge (the daemon's default is 30s).
    #[arg(long, default_value = "30s", value_parser = parse_interval)]
    heartbeat_interval: Duration,
    /// Enrollments in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    enroll_concurrency: u32,
    /// Connections dialing and bringing their edges up at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    connect_concurrency: u32,
    /// Stop holding after this long, e.g. 10m (default: until Ctrl-C or
    /// SIGTERM). Exits 1 if the edges were never all connected at once.
    #[arg(long, value_parser = parse_interval)]
    duration: Option<Duration>,
    /// Period of the status line while holding.
    #[arg(long, default_value = "5s", value_parser = parse_interval)]
    status_every: Duration,
    /// Enroll (or check) every edge, then exit without connecting.
    #[arg(long)]
    enroll_only: bool,
}

/// Tenant names from `--tenants`.
#[derive(Debug, Clone)]
struct Tenants(Vec<String>);

fn parse_tenants(value: &str) -> Result<Tenants, String> {
    if let Ok(count) = value.trim().parse::<usize>() {
        if !(1..=10_000).contains(&count) {
            return Err("a tenant count must be 1..=10000".to_owned());
        }
        return Ok(Tenants(load_tenants(count)));
    }
    let mut names: Vec<String> = Vec::new();
    for name in value.split(',').map(str::trim) {
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!(
                "{value:?}: tenant names are non-empty words separated by commas"
            ));
        }
        if names.iter().any(|seen| seen == name) {
            return Err(format!("tenant {name} is listed twice"));
        }
        names.push(name.to_owned());
    }
    Ok(Tenants(names))
}

fn parse_interval(value: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(value).map_err(|err| err.to_string())?;
    if interval.is_zero() || interval > Duration::from_secs(30 * 24 * 3600) {
        return Err("must be more than zero and at most 30 days".to_owned());
    }
    Ok(interval)
}

pub(super) fn run(command: EdgeSimCommand) -> Result<(), Failure> {
    init_logging(LogFormat::Text);
    match command {
        EdgeSimCommand::Enroll(args) => enroll_command(args),
        EdgeSimCommand::Run(args) => run_command(args),
    }
}

fn usage(flag: &str, reason: impl Into<String>) -> Failure {
    Failure::Config(ConfigError::invalid(flag, reason))
}

/// The gRPC URLs and the minting API the flags name.
fn resolve_endpoints(args: &RunArgs) -> Result<(Vec<String>, Option<String>), Failure> {
    let file = match &args.endpoints_file {
        Some(path) => Some(Endpoints::read(path).ok_or_else(|| {
            usage(
                "--endpoints-file",
                format!(
                    "cannot read {}: is `aegis-relay dev` running with that data dir? It writes the file once it serves",
                    path.display()
                ),
            )
        })?),
        None => None,
    };
    let replicas = file.map(|file| file.replicas).unwrap_or_default();
    let grpc = if args.endpoint.is_empty() {
        replicas
            .iter()
            .map(|replica| replica.grpc.clone())
            .collect()
    } else {
        args.endpoint.clone()
    };
    if grpc.is_empty() {
        return Err(usage(
            "--endpoint",
            "pass the relay's gRPC URL (--endpoint http://127.0.0.1:50056) or --endpoints-file <data-dir>/endpoints.json",
        ));
    }
    if let Some(tls) = grpc
        .iter()
        .find(|url| promote_endpoint(url).starts_with("https://"))
    {
        return Err(usage(
            "--endpoint",
            format!("{tls} would be dialed with TLS, which edge-sim does not support yet; give the plaintext URL, e.g. http://host:port"),
        ));
    }
    let api = args
        .api
        .clone()
        .or_else(|| replicas.first().map(|replica| replica.http.clone()));
    Ok((grpc, api))
}

fn read_bearer(path: &Path) -> Result<String, Failure> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        usage(
            "--bearer-file",
            format!("cannot read {}: {err}", path.display()),
        )
    })?;
    let bearer = text.trim();
    let bearer = bearer.strip_prefix("Bearer ").unwrap_or(bearer).trim();
    if bearer.is_empty() {
        return Err(usage(
            "--bearer-file",
            format!("{} is empty", path.display()),
        ));
    }
    Ok(bearer.to_owned())
}

fn run_command(args: RunArgs) -> Result<(), Failure> {
    let (grpc_endpoints, api) = resolve_endpoints(&args)?;
    let bearer = args.bearer_file.as_deref().map(read_bearer).transpose()?;
    let options = LoadOptions {
        count: args.count as usize,
        tenants: args.tenants.0.clone(),
        state_dir: args.state_dir.clone(),
        grpc_endpoints,
        edges_per_connection: args.edges_per_connection as usize,
        heartbeat_interval: args.heartbeat_interval,
        enroll_concurrency: args.enroll_concurrency as usize,
        connect_concurrency: args.connect_concurrency as usize,
    };
    tokio_runtime()?.block_on(async move {
        let mut signals = Signals::install().context("cannot install signal handlers")?;
        let stop = CancellationToken::new();
        tokio::spawn({
            let stop = stop.clone();
            async move {
                let name = signals.recv().await;
                println!("{name}: stopping");
                stop.cancel();
            }
        });
        let minter = match (&api, &bearer) {
            (Some(api), Some(bearer)) => Some(
                Minter::new(api, bearer, HTTP_TIMEOUT).context("cannot build the HTTP client")?,
            ),
            _ => None,
        };
        let runtime = Arc::new(Runtime::real());
        let mut report = |progress: PrepareProgress| println!("{}", describe_prepare(&progress));
        let prepared = match prepare(&runtime, &options, minter.as_ref(), &stop, &mut report).await
        {
            Ok(prepared) => prepared,
            Err(LoadError::Stopped) => return Ok(()),
            Err(err) => return Err(prepare_failure(err, &args, api.as_deref())),
        };
        let rate = prepared.enrolled as f64 / prepared.elapsed.as_secs_f64().max(0.001);
        println!(
            "ready: {} edges ({} enrolled at {rate:.1}/s, {} reused) in {:.1} s",
            prepared.edges.len(),
            prepared.enrolled,
            prepared.reused,
            prepared.elapsed.as_secs_f64()
        );
        if args.enroll_only {
            return Ok(());
        }
        hold_until_stopped(runtime, &options, prepared.edges, &args, &stop).await
    })
}

fn describe_prepare(progress: &PrepareProgress) -> String {
    let mut line = format!(
        "enrolled {}/{} ({:.1} s",
        progress.done,
        progress.total,
        progress.elapsed.as_secs_f64()
    );
    if progress.reused > 0 {
        line.push_str(&format!(", {} reused", progress.reused));
    }
    if progress.rate_limited > 0 {
        line.push_str(&format!(
            ", {} AttestNode calls rate-limited and retried",
            progress.rate_limited
        ));
    }
    line.push(')');
    line
}

/// Says what to fix for each way enrollment fails.
fn prepare_failure(err: LoadError, args: &RunArgs, api: Option<&str>) -> Failure {
    let bearer_file = args.bearer_file.as_deref().map_or_else(
        || "--bearer-file".to_owned(),
        |path| path.display().to_string(),
    );
    let api = api.unwrap_or("the relay");
    match err {
        LoadError::NoMinter { missing, count } => usage(
            "--bearer-file",
            format!(
                "{missing} of {count} edges are not enrolled yet; pass --bearer-file (and --api or --endpoints-file) to mint their tokens"
            ),
        ),
        err @ LoadError::TenantMismatch { .. } => usage("--tenants", err.to_string()),
        LoadError::Mint(MintError::Unauthorized(message)) => Failure::Runtime(anyhow::anyhow!(
            "the bearer in {bearer_file} was refused: {message}; use a current token (aegis-relay dev writes a fresh admin.token into its data dir at each start)"
        )),
        LoadError::Mint(MintError::Forbidden { tenant, message }) => {
            Failure::Runtime(anyhow::anyhow!(
                "the bearer in {bearer_file} may not mint tokens for tenant {tenant}: {message}; use an admin token, or --tenants naming the bearer's own tenant"
            ))
        }
        LoadError::Mint(MintError::Transport(message)) => Failure::Runtime(anyhow::anyhow!(
            "cannot mint tokens at {api}: {message}; check --api or --endpoints-file and that the relay is running"
        )),
        err => Failure::Runtime(anyhow::Error::new(err)),
    }
}

/// Holds the edges until a signal or `--duration`, printing status.
async fn hold_until_stopped(
    runtime: Arc<Runtime>,
    options: &LoadOptions,
    edges: Vec<crate::edge_client::EdgeState>,
    args: &RunArgs,
    stop: &CancellationToken,
) -> Result<(), Failure> {
    let holding = hold(runtime, options, edges);
    let started = Instant::now();
    let deadline = args.duration.map(|duration| started + duration);
    let mut ticker = tokio::time::interval(STATUS_POLL);
    ticker.tick().await;
    let mut all_connected = false;
    let mut last_print = started;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = sleep_until(deadline) => break,
            _ = ticker.tick() => {}
        }
        let status = holding.status();
        let elapsed = started.elapsed();
        if !all_connected && status.connected == status.edges {
            all_connected = true;
            println!(
                "all {} edges connected in {:.2} s",
                status.edges,
                elapsed.as_secs_f64()
            );
        }
        let ramping = !all_connected && elapsed < RAMP_REPORTING;
        let every = if ramping {
            Duration::from_secs(1)
        } else {
            args.status_every
        };
        if last_print.elapsed() >= every {
            println!("{:7.1} s  {status}", elapsed.as_secs_f64());
            last_print = Instant::now();
        }
    }
    let status = holding.status();
    holding.shutdown().await;
    println!(
        "stopped after {:.1} s: {status}",
        started.elapsed().as_secs_f64()
    );
    if deadline.is_some() && !stop.is_cancelled() && !all_connected {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "not every edge connected within --duration ({}/{} at the end); the relay's log says why",
            status.connected,
            status.edges
        )));
    }
    Ok(())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
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

//! `aegis-relay dev`: a local relay with zero set-up. Binds 127.0.0.1 only,
//! keeps its state under `--data-dir`, and writes `endpoints.json` there once
//! every listener serves.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::{bail, Context};

use super::{
    local_signer, serve_until_signal, tokio_runtime, DevArgs, Failure, SQLITE_FILE, STORE_WAIT,
};
use crate::app::{self, RelaySettings};
use crate::auth::write_private;
use crate::endpoints::{Endpoints, ReplicaEndpoints, ENDPOINTS_FILE};
use crate::runtime::Runtime;
use crate::shutdown::Signals;
use crate::store::{self, Migrations, StoreSettings};
use crate::telemetry::init_logging;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The dev operator token inside the data dir.
const ADMIN_TOKEN_FILE: &str = "admin.token";
/// AttestNode calls per second `dev` allows from one address.
const DEV_ATTEST_PER_SECOND: f64 = 2_000.0;
/// Burst of AttestNode calls `dev` allows from one address.
const DEV_ATTEST_BURST: u32 = 4_000;
/// Lifetime of the dev operator token.
const ADMIN_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

pub(super) fn dev(args: DevArgs) -> Result<(), Failure> {
    init_logging(args.log_format);
    prepare_data_dir(&args.data_dir)?;
    let endpoints_path = args.data_dir.join(ENDPOINTS_FILE);
    refuse_if_running(&endpoints_path, &args.data_dir)?;
    let mut settings = RelaySettings::local("relay-0", LOOPBACK, args.grpc_port, args.http_port);
    // Every local client is 127.0.0.1: a per-address limit would only slow
    // `edge-sim run` enrolling thousands of edges.
    settings.attest_rate_limit.per_second = DEV_ATTEST_PER_SECOND;
    settings.attest_rate_limit.burst = DEV_ATTEST_BURST;

    tokio_runtime()?.block_on(async move {
        let mut signals = Signals::install().context("cannot install signal handlers")?;
        let store_settings = StoreSettings::Sqlite {
            path: args.data_dir.join(SQLITE_FILE),
        };
        let store = store::open(&store_settings, Migrations::Apply, STORE_WAIT)
            .await
            .context("cannot open the local store")?;
        let deps = app::Dependencies {
            store,
            signer: local_signer(&args.data_dir)?,
            callers: None,
        };
        let runtime = Runtime::real();
        let now = crate::runtime::utc_now(runtime.clock.as_ref());
        let relay = app::start(settings, runtime, deps).await?;
        let admin_token_path = args.data_dir.join(ADMIN_TOKEN_FILE);
        let admin = relay
            .tokens()
            .mint_admin_token("dev-admin", now, ADMIN_TOKEN_TTL)
            .await
            .context("cannot mint the dev admin token")?;
        write_private(&admin_token_path, admin.token.as_bytes())
            .with_context(|| format!("cannot write {}", admin_token_path.display()))?;
        let grpc = format!("http://{}", relay.grpc_addr());
        let http = format!("http://{}", relay.http_addr());
        let endpoints = Endpoints {
            replicas: vec![ReplicaEndpoints {
                name: relay.name().to_owned(),
                grpc: grpc.clone(),
                http: http.clone(),
                peer: None,
                gossip: None,
                pid: std::process::id(),
            }],
        };
        endpoints
            .write_atomically(&endpoints_path)
            .context("cannot record where the relay listens")?;
        print_welcome(&Welcome {
            replica: relay.name(),
            grpc: &grpc,
            http: &http,
            store: &store_settings.describe(),
            admin_token: &admin_token_path,
            endpoints: &endpoints_path,
        });
        let served = serve_until_signal(relay, &mut signals).await;
        if let Err(err) = std::fs::remove_file(&endpoints_path) {
            tracing::warn!(path = %endpoints_path.display(), error = %err, "cannot remove endpoints file");
        }
        served?;
        Ok(())
    })
}

struct Welcome<'a> {
    replica: &'a str,
    grpc: &'a str,
    http: &'a str,
    store: &'a str,
    admin_token: &'a Path,
    endpoints: &'a Path,
}

/// Where everything is, and the commands of the whole single-replica
/// experience: get a token, enroll an edge, see it, run a command on it.
fn print_welcome(w: &Welcome<'_>) {
    let token = w.admin_token.display();
    let auth = format!("-H \"Authorization: Bearer $(cat {token})\"");
    let http = w.http;
    println!("aegis-relay dev: replica {} is serving", w.replica);
    println!("  gRPC  {}  (edges dial this; health, reflection)", w.grpc);
    println!("  HTTP  {http}  (/v1/edge/*, /healthz, /readyz, /metrics)");
    println!("  store {}", w.store);
    println!("  admin token (aegis:admin, tenant aegis-system, 30 days) in {token}");
    println!("  endpoints written to {}", w.endpoints.display());
    println!();
    println!("1. an enrollment token (valid 15 minutes):");
    println!(
        "   TOKEN=$(curl -s -X POST {http}/v1/edge/enrollment-tokens {auth} -d '{{\"issued_to\":\"my-host\"}}' | sed -E 's/.*\"token\":\"([^\"]+)\".*/\\1/')"
    );
    println!("2. enroll and run an edge, with the real AEGIS daemon:");
    println!("   HOME=/tmp/edge-home aegis edge enroll \"$TOKEN\" --state-dir /tmp/edge-home/.aegis/edge --non-interactive --no-service");
    println!("   HOME=/tmp/edge-home aegis edge daemon --state-dir /tmp/edge-home/.aegis/edge");
    println!("   or with simulated edges (they mint their own tokens):");
    println!(
        "   aegis-relay edge-sim run --endpoints-file {} --bearer-file {token} --count 3 --state-dir /tmp/aegis-sim-edges",
        w.endpoints.display()
    );
    println!("3. see the connected hosts:");
    println!("   curl -s {http}/v1/edge/hosts {auth}");
    println!("4. run a command on one (edge-sim answers echo, sleep, exit and fail):");
    println!(
        "   curl -s -X POST {http}/v1/edge/hosts/<host id>/invoke {auth} -d '{{\"tool_name\":\"cmd.run\",\"args\":{{\"command\":\"echo\",\"args\":[\"hello\"]}},\"security_context_name\":\"zaru-free\"}}'"
    );
    println!("Ctrl-C stops the relay.");
}

fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict data dir {} to its owner", dir.display()))?;
    }
    Ok(())
}

/// Two dev relays on one data dir would fight over its files.
fn refuse_if_running(endpoints_path: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let Some(existing) = Endpoints::read(endpoints_path) else {
        return Ok(());
    };
    let me = std::process::id();
    if let Some(live) = existing
        .replicas
        .iter()
        .find(|replica| replica.pid != me && process_alive(replica.pid))
    {
        bail!(
            "another aegis-relay dev (pid {}) is using {}: stop it, or pass a different --data-dir",
            live.pid,
            data_dir.display()
        );
    }
    Ok(())
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

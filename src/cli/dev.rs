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
/// Lifetime of the dev operator token.
const ADMIN_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

pub(super) fn dev(args: DevArgs) -> Result<(), Failure> {
    init_logging(args.log_format);
    prepare_data_dir(&args.data_dir)?;
    let endpoints_path = args.data_dir.join(ENDPOINTS_FILE);
    refuse_if_running(&endpoints_path, &args.data_dir)?;
    let settings = RelaySettings::local("relay-0", LOOPBACK, args.grpc_port, args.http_port);

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
        let relay = app::start(settings, Runtime::real(), deps).await?;
        let admin_token_path = args.data_dir.join(ADMIN_TOKEN_FILE);
        let admin = relay
            .tokens()
            .mint_admin_token("dev-admin", chrono::Utc::now(), ADMIN_TOKEN_TTL)
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
        println!("aegis-relay dev: replica {} is serving", relay.name());
        println!("  gRPC  {grpc}  (NodeClusterService, grpc.health.v1.Health, reflection)");
        println!("  HTTP  {http}  (/healthz, /readyz, /metrics)");
        println!("  store {}", store_settings.describe());
        println!(
            "  admin token (aegis:admin, tenant aegis-system, 30 days) in {}",
            admin_token_path.display()
        );
        println!("  endpoints written to {}", endpoints_path.display());
        println!(
            "next: curl -s -X POST {http}/v1/edge/enrollment-tokens -H \"Authorization: Bearer $(cat {})\" -d '{{\"issued_to\":\"my-host\"}}'",
            admin_token_path.display()
        );
        println!("      then: aegis edge enroll <token>   (Ctrl-C stops the relay)");
        let served = serve_until_signal(relay, &mut signals).await;
        if let Err(err) = std::fs::remove_file(&endpoints_path) {
            tracing::warn!(path = %endpoints_path.display(), error = %err, "cannot remove endpoints file");
        }
        served?;
        Ok(())
    })
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

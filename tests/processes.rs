//! The binary as an operator runs it: `dev` writes endpoints.json and serves
//! until SIGTERM, `run --config` serves from a config file, and both shut
//! down gracefully with exit code 0.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aegis_relay::endpoints::Endpoints;
use common::binary::{free_port, run_ready, sqlite_config, Process, BIN};
use common::{eventually, http_get_url, TestResult};

fn sigterm(child: &Child) -> std::io::Result<()> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("kill -TERM failed"))
    }
}

async fn wait_exit(process: &mut Process, deadline: Duration) -> Result<i32, String> {
    eventually(deadline, "process exit", || {
        let status = process.0.try_wait().ok().flatten();
        async move { status.and_then(|status| status.code()) }
    })
    .await
}

async fn wait_endpoints(path: &Path) -> Result<Endpoints, String> {
    eventually(Duration::from_secs(30), "endpoints.json", || async {
        Endpoints::read(path)
    })
    .await
}

#[tokio::test]
async fn dev_writes_endpoints_serves_and_stops_on_sigterm() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let mut relay = Process(
        Command::new(BIN)
            .args(["dev", "--grpc-port", "0", "--http-port", "0", "--data-dir"])
            .arg(&data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let endpoints_path = data_dir.join("endpoints.json");
    let endpoints = wait_endpoints(&endpoints_path).await?;
    let [replica] = endpoints.replicas.as_slice() else {
        return Err(format!("expected one replica: {endpoints:?}").into());
    };
    assert_eq!(replica.name, "relay-0");
    assert_eq!(replica.pid, relay.0.id());
    assert!(
        replica.grpc.starts_with("http://127.0.0.1:"),
        "{}",
        replica.grpc
    );
    assert!(
        replica.http.starts_with("http://127.0.0.1:"),
        "{}",
        replica.http
    );
    assert_eq!(
        (replica.peer.as_deref(), replica.gossip.as_deref()),
        (None, None)
    );
    assert_ne!(replica.grpc, "http://127.0.0.1:0");

    let (status, body) = http_get_url(&format!("{}/readyz", replica.http)).await?;
    assert_eq!(status, 200, "{body}");
    assert!(
        data_dir.join("relay.db").exists(),
        "dev keeps its SQLite store in the data dir"
    );
    let admin_path = data_dir.join("admin.token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&admin_path)?.permissions().mode() & 0o777,
            0o600
        );
    }
    let admin_token = std::fs::read_to_string(&admin_path)?;
    let bearer = format!("Bearer {}", admin_token.trim());
    let (status, body) = common::http_post(
        &format!("{}/v1/edge/enrollment-tokens", replica.http),
        &[("authorization", &bearer)],
        r#"{"name":"smoke-test-host"}"#,
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let issued: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(
        issued["controller_endpoint"],
        serde_json::json!(replica.grpc)
    );
    assert!(issued["command_hint"]
        .as_str()
        .unwrap_or_default()
        .starts_with("aegis edge enroll ey"));

    // A second dev relay on the same data dir is refused.
    let second = Command::new(BIN)
        .args(["dev", "--grpc-port", "0", "--http-port", "0", "--data-dir"])
        .arg(&data_dir)
        .output()?;
    assert_eq!(second.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&second.stderr).contains("another aegis-relay dev"));

    sigterm(&relay.0)?;
    assert_eq!(wait_exit(&mut relay, Duration::from_secs(25)).await?, 0);
    assert!(
        !endpoints_path.exists(),
        "endpoints.json is removed on exit"
    );
    let mut stdout = String::new();
    if let Some(mut pipe) = relay.0.stdout.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stdout)?;
    }
    for step in [
        "/v1/edge/enrollment-tokens",
        "aegis edge enroll",
        "edge-sim run",
        "/invoke",
    ] {
        assert!(stdout.contains(step), "{step} missing from: {stdout}");
    }
    assert!(stdout.contains("admin.token"), "{stdout}");
    assert!(
        !stdout.contains(admin_token.trim()),
        "the token itself is never printed"
    );
    Ok(())
}

#[tokio::test]
async fn run_serves_from_a_config_file_and_drains_on_sigterm() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (grpc_port, http_port) = (free_port()?, free_port()?);
    let config = dir.path().join("aegis-config.yaml");
    std::fs::write(
        &config,
        format!(
            "cluster:\n  enabled: true\n  role: relay-coordinator\n  cluster_grpc_port: {grpc_port}\n  \
             ingress:\n    public_endpoint: http://127.0.0.1:{grpc_port}\n\
             relay:\n  name: relay-run\n  bind_address: 127.0.0.1\n  http_port: {http_port}\n  drain_timeout: 5s\n  log_format: json\n  data_dir: {}\n",
            dir.path().join("state").display()
        ),
    )?;
    let mut relay = Process(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("POSTGRES_DSN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    let base = format!("http://127.0.0.1:{http_port}");
    let body = eventually(Duration::from_secs(30), "run to serve /healthz", || async {
        http_get_url(&format!("{base}/healthz"))
            .await
            .ok()
            .map(|(_, body)| body)
    })
    .await?;
    assert!(body.contains("relay-run"), "{body}");

    sigterm(&relay.0)?;
    assert_eq!(wait_exit(&mut relay, Duration::from_secs(10)).await?, 0);
    let mut stderr = String::new();
    if let Some(mut pipe) = relay.0.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr)?;
    }
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.starts_with('{'), "json logs expected: {stderr}");
    assert!(stderr.contains("shutdown complete"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn port_in_use_fails_with_a_clear_message() -> TestResult {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port().to_string();
    let dir = tempfile::tempdir()?;
    let output = Command::new(BIN)
        .args([
            "dev",
            "--http-port",
            "0",
            "--grpc-port",
            &port,
            "--data-dir",
        ])
        .arg(dir.path())
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot bind the gRPC listener"), "{stderr}");
    assert!(stderr.contains("pick another port"), "{stderr}");
    Ok(())
}

#[tokio::test]
async fn no_migrate_refuses_an_unmigrated_store_until_migrate_runs() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (grpc_port, http_port) = (free_port()?, free_port()?);
    let config = sqlite_config(dir.path(), grpc_port, http_port, "")?;
    let refused = Command::new(BIN)
        .args(["run", "--no-migrate", "--config"])
        .arg(&config)
        .env_remove("POSTGRES_DSN")
        .output()?;
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("aegis-relay migrate"), "{stderr}");

    let migrated = Command::new(BIN)
        .args(["migrate", "--config"])
        .arg(&config)
        .env_remove("POSTGRES_DSN")
        .output()?;
    assert_eq!(
        migrated.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    assert!(String::from_utf8_lossy(&migrated.stdout).contains("migrations applied"));

    let mut relay = Process(
        Command::new(BIN)
            .args(["run", "--no-migrate", "--config"])
            .arg(&config)
            .env_remove("POSTGRES_DSN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let base = format!("http://127.0.0.1:{http_port}");
    eventually(
        Duration::from_secs(30),
        "run --no-migrate to become ready",
        || async {
            let (status, _) = http_get_url(&format!("{base}/readyz")).await.ok()?;
            (status == 200).then_some(())
        },
    )
    .await?;
    sigterm(&relay.0)?;
    assert_eq!(wait_exit(&mut relay, Duration::from_secs(10)).await?, 0);
    Ok(())
}

#[tokio::test]
async fn admin_token_is_accepted_by_run_only_with_the_flag() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (grpc_port, http_port) = (free_port()?, free_port()?);
    let config = sqlite_config(dir.path(), grpc_port, http_port, "")?;
    let token_path = dir.path().join("ops.token");
    let minted = Command::new(BIN)
        .args(["admin-token", "--ttl", "10m", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&token_path)
        .env_remove("POSTGRES_DSN")
        .output()?;
    let stdout = String::from_utf8_lossy(&minted.stdout);
    assert_eq!(
        minted.status.code(),
        Some(0),
        "{stdout} {}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let token = std::fs::read_to_string(&token_path)?;
    assert_eq!(token.split('.').count(), 3);
    assert!(
        !stdout.contains(token.trim()),
        "the token itself is never printed"
    );
    assert!(
        stdout.contains("relay.accept_local_admin_tokens"),
        "{stdout}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&token_path)?.permissions().mode() & 0o777,
            0o600
        );
    }
    let tenant_path = dir.path().join("tenant.token");
    let tenant = Command::new(BIN)
        .args(["admin-token", "--tenant", "t-ci", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&tenant_path)
        .env_remove("POSTGRES_DSN")
        .output()?;
    assert_eq!(tenant.status.code(), Some(0));
    let bad = Command::new(BIN)
        .args(["admin-token", "--ttl", "90d", "--config"])
        .arg(&config)
        .args(["--out", "/dev/null"])
        .env_remove("POSTGRES_DSN")
        .output()?;
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--ttl"));

    let hosts = format!("http://127.0.0.1:{http_port}/v1/edge/hosts");
    let get = |token: String| {
        let hosts = hosts.clone();
        async move {
            let bearer = format!("Bearer {}", token.trim());
            common::http_request("GET", &hosts, &[("authorization", bearer.as_str())], "").await
        }
    };
    // Without the flag, `run` refuses it and says which setting decides.
    let mut relay = run_ready(&config, http_port).await?;
    let (status, body) = get(token.clone()).await?;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("relay.accept_local_admin_tokens"), "{body}");
    sigterm(&relay.0)?;
    assert_eq!(wait_exit(&mut relay, Duration::from_secs(10)).await?, 0);

    let text = std::fs::read_to_string(&config)?;
    std::fs::write(
        &config,
        format!("{text}  accept_local_admin_tokens: true\n"),
    )?;
    let mut relay = run_ready(&config, http_port).await?;
    let (status, body) = get(token).await?;
    assert_eq!((status, body.as_str()), (200, "[]"));
    let (status, body) = get(std::fs::read_to_string(&tenant_path)?).await?;
    assert_eq!((status, body.as_str()), (200, "[]"));
    sigterm(&relay.0)?;
    assert_eq!(wait_exit(&mut relay, Duration::from_secs(10)).await?, 0);
    Ok(())
}

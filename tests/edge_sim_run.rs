//! The load generator (`edge-sim run`): it mints tokens over REST and
//! enrolls many edges, holds them multiplexed over few connections with the
//! tenants split as asked, answers commands, and reuses its state dirs on the
//! next run; the binary wires the same thing to flags and exit codes.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aegis_relay::app::RunningRelay;
use aegis_relay::edge_client::{
    hold, load_tenants, prepare, Holding, LoadError, LoadOptions, Minter, PrepareProgress,
};
use aegis_relay::endpoints::Endpoints;
use aegis_relay::runtime::Runtime;
use common::binary::{Process, BIN};
use common::enroll::admin_bearer;
use common::{eventually, http_request, start_relay, TestResult};
use tokio_util::sync::CancellationToken;

fn options(relay: &RunningRelay, state_dir: &Path, count: usize) -> LoadOptions {
    LoadOptions {
        count,
        tenants: load_tenants(2),
        state_dir: state_dir.to_owned(),
        grpc_endpoints: vec![format!("http://{}", relay.grpc_addr())],
        edges_per_connection: 10,
        heartbeat_interval: Duration::from_millis(500),
        enroll_concurrency: 8,
        connect_concurrency: 2,
    }
}

async fn minter(relay: &RunningRelay) -> Result<Minter, Box<dyn std::error::Error>> {
    let bearer = admin_bearer(relay).await?;
    let token = bearer.trim_start_matches("Bearer ");
    Ok(Minter::new(
        &format!("http://{}", relay.http_addr()),
        token,
        Duration::from_secs(10),
    )?)
}

async fn all_connected(relay: &RunningRelay, holding: &Holding, count: usize) -> TestResult {
    let owner = Arc::clone(relay.owner());
    eventually(Duration::from_secs(60), "every edge connected", || {
        let seen = owner.registry().len();
        let ours = holding.status().connected;
        async move { (seen == count && ours == count).then_some(()) }
    })
    .await
    .map_err(|err| {
        format!(
            "{err}: relay has {}, we count {}",
            relay.owner().registry().len(),
            holding.status()
        )
    })?;
    Ok(())
}

#[tokio::test]
async fn enrolls_holds_multiplexed_edges_and_reuses_their_state() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let dir = tempfile::tempdir()?;
    let options = options(&relay, dir.path(), 50);
    let minter = minter(&relay).await?;
    let runtime = Arc::new(Runtime::real());
    let stop = CancellationToken::new();
    let mut reports = Vec::new();
    let mut report = |progress: PrepareProgress| reports.push(progress);
    let prepared = prepare(&runtime, &options, Some(&minter), &stop, &mut report).await?;
    assert_eq!((prepared.enrolled, prepared.reused), (50, 0));
    assert_eq!(prepared.edges.len(), 50);
    assert_eq!(reports.last().map(|p| (p.done, p.total)), Some((50, 50)));
    assert_eq!(relay.store().list_edges(None).await?.len(), 50);

    let holding = hold(Arc::clone(&runtime), &options, prepared.edges);
    all_connected(&relay, &holding, 50).await?;
    let status = holding.status();
    assert_eq!((status.connections, status.dialed), (5, 5), "{status}");
    assert_eq!((status.reconnects, status.refused), (0, 0), "{status}");
    for tenant in ["t-load-0", "t-load-1"] {
        let sessions = relay.owner().registry().sessions(Some(tenant));
        assert_eq!(sessions.len(), 25, "{tenant}");
    }

    // An edge answers a command as the daemon does.
    let (node_id, _) = relay
        .owner()
        .registry()
        .sessions(Some("t-load-1"))
        .into_iter()
        .next()
        .ok_or("no session")?;
    let bearer = admin_bearer(&relay).await?;
    let url = format!(
        "http://{}/v1/edge/hosts/{node_id}/invoke",
        relay.http_addr()
    );
    let body = serde_json::json!({
        "tool_name": "cmd.run",
        "args": {"command": "echo", "args": ["under", "load"]},
        "security_context_name": "zaru-free",
    });
    let (code, answer) = http_request(
        "POST",
        &url,
        &[
            ("authorization", bearer.as_str()),
            ("x-aegis-tenant", "t-load-1"),
        ],
        &body.to_string(),
    )
    .await?;
    assert_eq!(code, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer)?;
    assert_eq!(answer["stdout"], "under load\n", "{answer}");
    eventually(Duration::from_secs(30), "the answer counted", || {
        let answered = holding.status().answered;
        async move { (answered == 1).then_some(()) }
    })
    .await?;

    holding.shutdown().await;
    let owner = Arc::clone(relay.owner());
    eventually(Duration::from_secs(30), "every session gone", || {
        let left = owner.registry().len();
        async move { (left == 0).then_some(()) }
    })
    .await?;

    // A second run reuses every state dir: no minting needed, no new edge.
    let mut ignore = |_: PrepareProgress| {};
    let again = prepare(&runtime, &options, None, &stop, &mut ignore).await?;
    assert_eq!((again.enrolled, again.reused), (0, 50));
    assert_eq!(relay.store().list_edges(None).await?.len(), 50);
    let holding = hold(Arc::clone(&runtime), &options, again.edges);
    all_connected(&relay, &holding, 50).await?;
    holding.shutdown().await;

    // Growing the fleet enrolls only the new edges; a run that needs
    // tokens but has no minter says so.
    let grown = LoadOptions {
        count: 60,
        ..options.clone()
    };
    match prepare(&runtime, &grown, None, &stop, &mut ignore).await {
        Err(LoadError::NoMinter {
            missing: 10,
            count: 60,
        }) => {}
        other => return Err(format!("expected NoMinter, got {other:?}").into()),
    }
    let grown = prepare(&runtime, &grown, Some(&minter), &stop, &mut ignore).await?;
    assert_eq!((grown.enrolled, grown.reused), (10, 50));
    assert_eq!(relay.store().list_edges(None).await?.len(), 60);

    // Other tenants for the same dirs are refused, not silently mixed.
    let swapped = LoadOptions {
        tenants: vec!["t-load-1".to_owned(), "t-load-0".to_owned()],
        ..options
    };
    let refused = prepare(&runtime, &swapped, None, &stop, &mut ignore).await;
    assert!(
        matches!(refused, Err(LoadError::TenantMismatch { .. })),
        "{refused:?}"
    );
    Ok(())
}

#[tokio::test]
async fn one_connection_per_edge_like_real_daemons() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let dir = tempfile::tempdir()?;
    let options = LoadOptions {
        edges_per_connection: 1,
        tenants: vec!["t-solo".to_owned()],
        ..options(&relay, dir.path(), 6)
    };
    let runtime = Arc::new(Runtime::real());
    let minter = minter(&relay).await?;
    let mut ignore = |_: PrepareProgress| {};
    let prepared = prepare(
        &runtime,
        &options,
        Some(&minter),
        &CancellationToken::new(),
        &mut ignore,
    )
    .await?;
    let holding = hold(runtime, &options, prepared.edges);
    all_connected(&relay, &holding, 6).await?;
    assert_eq!(holding.status().dialed, 6);
    assert_eq!(relay.owner().registry().sessions(Some("t-solo")).len(), 6);
    holding.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_refused_bearer_stops_enrollment_with_its_reason() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let dir = tempfile::tempdir()?;
    let minter = Minter::new(
        &format!("http://{}", relay.http_addr()),
        "not-a-token",
        Duration::from_secs(10),
    )?;
    let mut ignore = |_: PrepareProgress| {};
    let result = prepare(
        &Runtime::real(),
        &options(&relay, dir.path(), 3),
        Some(&minter),
        &CancellationToken::new(),
        &mut ignore,
    )
    .await;
    assert!(
        matches!(
            result,
            Err(LoadError::Mint(
                aegis_relay::edge_client::MintError::Unauthorized(_)
            ))
        ),
        "{result:?}"
    );
    assert!(relay.store().list_edges(None).await?.is_empty());
    Ok(())
}

/// `aegis-relay edge-sim run ARGS`, run to completion off the runtime.
async fn edge_sim(args: &[&str]) -> Result<std::process::Output, Box<dyn std::error::Error>> {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["edge-sim", "run"])
            .args(&args)
            .stdin(Stdio::null())
            .output()
    })
    .await??;
    Ok(output)
}

#[tokio::test]
async fn the_binary_runs_against_a_dev_relay() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("relay");
    let data_arg = data.to_string_lossy().into_owned();
    let _relay = Process(
        Command::new(BIN)
            .args([
                "dev",
                "--data-dir",
                &data_arg,
                "--grpc-port",
                "0",
                "--http-port",
                "0",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let endpoints_path = data.join("endpoints.json");
    eventually(Duration::from_secs(30), "endpoints.json", || async {
        Endpoints::read(&endpoints_path)
    })
    .await?;
    let endpoints = endpoints_path.to_string_lossy().into_owned();
    let bearer = data.join("admin.token").to_string_lossy().into_owned();
    let state = dir.path().join("edges").to_string_lossy().into_owned();
    let common = [
        "--endpoints-file",
        &endpoints,
        "--count",
        "12",
        "--tenants",
        "t-x,t-y",
        "--state-dir",
        &state,
        "--edges-per-connection",
        "5",
        "--heartbeat-interval",
        "1s",
    ];
    let mut args = common.to_vec();
    args.extend(["--bearer-file", &bearer, "--duration", "2s"]);
    let run = edge_sim(&args).await?;
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("enrolled 12/12"), "{stdout}");
    assert!(stdout.contains("all 12 edges connected"), "{stdout}");

    // The second run needs no bearer: every edge is reused.
    let mut args = common.to_vec();
    args.push("--enroll-only");
    let again = edge_sim(&args).await?;
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{stdout}");
    assert!(stdout.contains("0 enrolled"), "{stdout}");
    assert!(stdout.contains("12 reused"), "{stdout}");

    // Bad flags exit 2; a refused bearer exits 1 and names the file.
    let no_endpoint = edge_sim(&["--count", "1", "--state-dir", "/nonexistent"]).await?;
    assert_eq!(no_endpoint.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_endpoint.stderr).contains("--endpoint"));
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-a-token\n")?;
    let wrong = wrong.to_string_lossy().into_owned();
    let fresh = dir.path().join("fresh").to_string_lossy().into_owned();
    let refused = edge_sim(&[
        "--endpoints-file",
        &endpoints,
        "--bearer-file",
        &wrong,
        "--count",
        "1",
        "--state-dir",
        &fresh,
    ])
    .await?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("wrong.token was refused"), "{stderr}");
    Ok(())
}

//! Several `run` replicas on one machine share one `relay.data_dir`: started
//! together on a fresh directory they all become ready, agree on one
//! signing key and one SQLite store, and none writes an admin token (only
//! `dev` does, and only `dev` refuses a data dir in use).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::binary::{free_port, Process, BIN};
use common::{eventually, http_request, TestResult};

const REPLICAS: usize = 3;

/// A replica's config: its own name and ports, the shared data dir.
fn replica_config(
    dir: &Path,
    name: &str,
    data_dir: &Path,
    grpc_port: u16,
    http_port: u16,
) -> std::io::Result<PathBuf> {
    let config = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &config,
        format!(
            "cluster:\n  role: relay-coordinator\n  cluster_grpc_port: {grpc_port}\n  \
             ingress:\n    public_endpoint: http://127.0.0.1:{grpc_port}\n\
             relay:\n  name: {name}\n  bind_address: 127.0.0.1\n  http_port: {http_port}\n  \
             drain_timeout: 5s\n  accept_local_admin_tokens: true\n  data_dir: {}\n",
            data_dir.display()
        ),
    )?;
    Ok(config)
}

async fn ready(http_port: u16) -> bool {
    let url = format!("http://127.0.0.1:{http_port}/readyz");
    matches!(http_request("GET", &url, &[], "").await, Ok((200, _)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_replicas_started_together_share_one_data_dir() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("state");
    let mut replicas = Vec::new();
    for index in 0..REPLICAS {
        let name = format!("relay-{index}");
        let http_port = free_port()?;
        let config = replica_config(dir.path(), &name, &data_dir, free_port()?, http_port)?;
        let log = std::fs::File::create(dir.path().join(format!("{name}.log")))?;
        replicas.push((name, config, http_port, log));
    }
    // Spawned back to back, so they race to create the key and the store.
    let mut processes = Vec::new();
    for (_, config, _, log) in &replicas {
        processes.push(Process(
            Command::new(BIN)
                .args(["run", "--config"])
                .arg(config)
                .env_remove("POSTGRES_DSN")
                .stdout(Stdio::null())
                .stderr(log.try_clone()?)
                .spawn()?,
        ));
    }
    for ((name, _, http_port, _), process) in replicas.iter().zip(&mut processes) {
        // Ready, or exited (a lost race fails at start: no use waiting).
        let became_ready = eventually(Duration::from_secs(30), name, || {
            let exited = process.0.try_wait().ok().flatten();
            async move {
                match exited {
                    Some(status) => Some(Err(format!("{name} exited with {status}"))),
                    None => ready(*http_port).await.then_some(Ok(())),
                }
            }
        })
        .await
        .and_then(|outcome| outcome);
        if let Err(err) = became_ready {
            let log = std::fs::read_to_string(dir.path().join(format!("{name}.log")))?;
            return Err(format!("{err}; its log:\n{log}").into());
        }
    }

    let mut files: Vec<String> = std::fs::read_dir(&data_dir)?
        .map(|entry| entry.map(|entry| entry.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    files.sort();
    assert!(
        files.contains(&"signing-key.pem".to_owned()) && files.contains(&"relay.db".to_owned()),
        "{files:?}"
    );
    assert!(
        !files.iter().any(|file| file == "admin.token"),
        "only dev writes an admin token: {files:?}"
    );
    assert!(
        !files.iter().any(|file| file.contains(".tmp.")),
        "no temporary file left: {files:?}"
    );

    // A token signed with the key on disk is accepted by every replica (each
    // loaded that key), and a group created through one is seen through all
    // (one store).
    let token_path = dir.path().join("tenant.token");
    let minted = Command::new(BIN)
        .args(["admin-token", "--tenant", "t-shared", "--config"])
        .arg(&replicas[0].1)
        .arg("--out")
        .arg(&token_path)
        .env_remove("POSTGRES_DSN")
        .output()?;
    assert_eq!(
        minted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let bearer = format!("Bearer {}", std::fs::read_to_string(&token_path)?.trim());
    let auth = [("authorization", bearer.as_str())];
    let groups = |http_port: u16| format!("http://127.0.0.1:{http_port}/v1/edge/groups");
    let body = r#"{"name":"everywhere","selector":{"tools":[],"labels":[],"tags":[]}}"#;
    let (status, created) = http_request("POST", &groups(replicas[1].2), &auth, body).await?;
    assert_eq!(status, 200, "{created}");
    for (name, _, http_port, _) in &replicas {
        let (status, listed) = http_request("GET", &groups(*http_port), &auth, "").await?;
        assert_eq!(status, 200, "{name}: {listed}");
        assert!(listed.contains("\"everywhere\""), "{name}: {listed}");
    }

    for process in &mut processes {
        let status = Command::new("kill")
            .args(["-TERM", &process.0.id().to_string()])
            .status()?;
        assert!(status.success());
    }
    for (process, (name, ..)) in processes.iter_mut().zip(&replicas) {
        let code = eventually(Duration::from_secs(15), name, || {
            let code = process.0.try_wait().ok().flatten().and_then(|s| s.code());
            async move { code }
        })
        .await?;
        assert_eq!(code, 0, "{name} exit code");
    }
    Ok(())
}

//! Several `run` replicas on one machine share one `relay.data_dir`: started
//! together on a fresh directory they all become ready, agree on one
//! signing key and one SQLite store, and none writes an admin token (only
//! `dev` does, and only `dev` refuses a data dir in use).

mod common;

use std::time::Duration;

use common::replica_processes::{terminate, write_configs, Layout, ReplicaProcess};
use common::{http_request, TestResult};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_replicas_started_together_share_one_data_dir() -> TestResult {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("state");
    let replicas = write_configs(
        dir.path(),
        &Layout {
            names: &["relay-0", "relay-1", "relay-2"],
            ..Layout::default()
        },
    )?;
    // Spawned back to back, so they race to create the key and the store.
    let mut processes = Vec::new();
    for replica in &replicas {
        processes.push(replica.spawn()?);
    }
    // Ready, or exited (a lost race fails at start: no use waiting).
    for (replica, process) in replicas.iter().zip(&mut processes) {
        replica.ready(process).await?;
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
    let bearer = replicas[0].bearer(Some("t-shared"))?;
    let auth = [("authorization", bearer.as_str())];
    let groups = |replica: &ReplicaProcess| format!("{}/v1/edge/groups", replica.http());
    let body = r#"{"name":"everywhere","selector":{"tools":[],"labels":[],"tags":[]}}"#;
    let (status, created) = http_request("POST", &groups(&replicas[1]), &auth, body).await?;
    assert_eq!(status, 200, "{created}");
    for replica in &replicas {
        let name = &replica.name;
        let (status, listed) = http_request("GET", &groups(replica), &auth, "").await?;
        assert_eq!(status, 200, "{name}: {listed}");
        assert!(listed.contains("\"everywhere\""), "{name}: {listed}");
    }

    for (process, replica) in processes.iter_mut().zip(&replicas) {
        let code = terminate(process, Duration::from_secs(15)).await?;
        assert_eq!(code, 0, "{} exit code", replica.name);
    }
    Ok(())
}

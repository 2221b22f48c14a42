//! Several `aegis-relay run` processes on one machine with no other set-up:
//! their own `relay.name` and ports, one `relay.data_dir` (SQLite store and
//! signing key), one secret file and two seeds form a cluster; a replica
//! killed with SIGKILL leaves every survivor's `members` within 3 s (the
//! failure detector's defaults, on real processes and real UDP).
//!
//! Prints the convergence and detection times and the gossip traffic per
//! replica. `cargo test --test cluster_processes -- --ignored --nocapture`
//! runs the five-replica measurement quoted in the README.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{counter_value, eventually, http_get_url};
use serde_json::Value;

type Error = Box<dyn std::error::Error>;

const BIN: &str = env!("CARGO_BIN_EXE_aegis-relay");
/// The detection target on real processes.
const DETECTION_LIMIT: Duration = Duration::from_secs(3);

/// Kills the child if a test fails before it stops it.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_tcp_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn free_udp_port() -> std::io::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Replica {
    name: String,
    config: PathBuf,
    http: String,
    gossip_port: u16,
}

/// Writes the config of `count` replicas sharing `dir`'s data dir and
/// secret file; the first two are the seeds.
fn configs(dir: &Path, count: usize) -> Result<Vec<Replica>, Error> {
    let secret = dir.join("cluster.secret");
    std::fs::write(&secret, "process-test-secret-0123456789abcdef0123456789\n")?;
    let data_dir = dir.join("shared-state");
    let gossip_ports = (0..count)
        .map(|_| free_udp_port())
        .collect::<Result<Vec<_>, _>>()?;
    let seeds = gossip_ports[..2]
        .iter()
        .map(|port| format!("\"127.0.0.1:{port}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut replicas = Vec::new();
    for (index, gossip_port) in gossip_ports.into_iter().enumerate() {
        let (grpc, http, peer) = (free_tcp_port()?, free_tcp_port()?, free_tcp_port()?);
        let name = format!("relay-{index}");
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!(
                "cluster:\n  enabled: true\n  role: relay-coordinator\n  cluster_grpc_port: {grpc}\n  \
                 ingress:\n    public_endpoint: http://127.0.0.1:{grpc}\n\
                 relay:\n  name: {name}\n  bind_address: 127.0.0.1\n  http_port: {http}\n  \
                 peer_port: {peer}\n  gossip_port: {gossip_port}\n  gossip_seeds: [{seeds}]\n  \
                 cluster_secret_file: {}\n  data_dir: {}\n  accept_local_admin_tokens: true\n  \
                 drain_timeout: 5s\n",
                secret.display(),
                data_dir.display()
            ),
        )?;
        replicas.push(Replica {
            name,
            config,
            http: format!("http://127.0.0.1:{http}"),
            gossip_port,
        });
    }
    Ok(replicas)
}

fn cli(args: &[&str], config: &Path, extra: &[&Path]) -> Result<(), Error> {
    let output = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .args(extra)
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(())
}

/// Prepares the shared data dir before any replica starts (replicas
/// starting together would race to migrate one SQLite file and to create
/// one signing key) and returns an operator token from `admin-token`.
fn prepare(replica: &Replica, dir: &Path) -> Result<String, Error> {
    cli(&["migrate"], &replica.config, &[])?;
    let out = dir.join("admin.token");
    cli(
        &["admin-token"],
        &replica.config,
        &[Path::new("--out"), &out],
    )?;
    Ok(format!("Bearer {}", std::fs::read_to_string(out)?.trim()))
}

fn start(replica: &Replica, dir: &Path) -> Result<Process, Error> {
    let log = std::fs::File::create(dir.join(format!("{}.log", replica.name)))?;
    Ok(Process(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&replica.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?,
    ))
}

async fn status(replica: &Replica, bearer: &str) -> Option<Value> {
    let (code, body) = common::http_request(
        "GET",
        &format!("{}/v1/relay/status", replica.http),
        &[("authorization", bearer)],
        "",
    )
    .await
    .ok()?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

fn members(status: &Value) -> BTreeSet<String> {
    status["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str().map(str::to_owned))
        .collect()
}

/// Every replica sees every name serving, with one epoch.
async fn converged(replicas: &[Replica], bearer: &str) -> Option<String> {
    let all: BTreeSet<String> = replicas.iter().map(|r| r.name.clone()).collect();
    let mut epochs = BTreeSet::new();
    for replica in replicas {
        let status = status(replica, bearer).await?;
        let serving: BTreeSet<String> = status["ring"]["shares"]
            .as_object()?
            .keys()
            .cloned()
            .collect();
        (members(&status) == all && serving == all).then_some(())?;
        epochs.insert(status["ring"]["epoch"].as_str()?.to_owned());
    }
    (epochs.len() == 1).then(|| epochs.into_iter().next())?
}

async fn sent_bytes(replica: &Replica) -> Result<f64, Error> {
    let (_, body) = http_get_url(&format!("{}/metrics", replica.http)).await?;
    Ok(counter_value(&body, "aegis_relay_gossip_sent_bytes_total"))
}

async fn cluster_of(count: usize) -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let replicas = configs(dir.path(), count)?;
    let bearer = prepare(&replicas[0], dir.path())?;
    let started = tokio::time::Instant::now();
    let mut processes = Vec::new();
    for replica in &replicas {
        processes.push(start(replica, dir.path())?);
    }
    let epoch = eventually(Duration::from_secs(60), "the replicas to converge", || {
        let exited = processes
            .iter_mut()
            .any(|p| p.0.try_wait().ok().flatten().is_some());
        let check = converged(&replicas, &bearer);
        async move {
            if exited {
                return Some(Err("a replica exited".to_owned()));
            }
            check.await.map(Ok)
        }
    })
    .await
    .and_then(|result| result)
    .map_err(|err| {
        let logs: String = replicas
            .iter()
            .map(|r| {
                std::fs::read_to_string(dir.path().join(format!("{}.log", r.name)))
                    .unwrap_or_default()
            })
            .collect();
        format!("{err}\n{logs}")
    })?;
    eprintln!(
        "{count} run processes converged (epoch {epoch}) {:?} after spawning",
        started.elapsed()
    );

    // Gossip traffic at steady state, per replica.
    let window = Duration::from_secs(5);
    let before = sent_bytes(&replicas[0]).await?;
    tokio::time::sleep(window).await;
    let rate = (sent_bytes(&replicas[0]).await? - before) / window.as_secs_f64();
    eprintln!(
        "{count} replicas: relay-0 sends {rate:.0} gossip bytes/s (UDP payload, authenticated)"
    );

    // SIGKILL the last one; every survivor drops it from `members`.
    let victim = &replicas[count - 1];
    let mut killed = processes.pop().ok_or("no process")?;
    killed.0.kill()?;
    let killed_at = tokio::time::Instant::now();
    let survivors = &replicas[..count - 1];
    eventually(
        Duration::from_secs(30),
        "the survivors to drop the killed replica",
        || async {
            for replica in survivors {
                let status = status(replica, &bearer).await?;
                members(&status)
                    .contains(&victim.name)
                    .then_some(())
                    .map_or(Some(()), |()| None)?;
            }
            Some(())
        },
    )
    .await?;
    let detected = killed_at.elapsed();
    eprintln!(
        "{} (gossip port {}) killed with SIGKILL: gone from every survivor's members after {detected:?}",
        victim.name, victim.gossip_port
    );
    assert!(
        detected <= DETECTION_LIMIT,
        "detection took {detected:?}, over {DETECTION_LIMIT:?}"
    );
    for survivor in survivors {
        let status = status(survivor, &bearer).await.ok_or("no status")?;
        assert_eq!(
            status["ring"]["shares"].as_object().map(|s| s.len()),
            Some(count - 1)
        );
    }
    drop(killed);
    Ok(())
}

#[tokio::test]
async fn three_run_processes_form_a_cluster_and_detect_a_kill_within_3_s() -> Result<(), Error> {
    cluster_of(3).await
}

#[tokio::test]
#[ignore = "measurement for the README: five processes"]
async fn five_run_processes_measurement() -> Result<(), Error> {
    cluster_of(5).await
}

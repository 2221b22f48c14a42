//! Several `aegis-relay run` replicas as real processes on one machine: each
//! its own `relay.name` and ports, all on one `relay.data_dir` (the SQLite
//! store and the signing key) or one PostgreSQL database, optionally
//! clustered over gossip (one secret file, the first two as seeds). Configs,
//! the CLI steps run before the replicas start, spawning with a log file,
//! readiness, and cluster status.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::binary::{free_ports, Process, BIN};
use super::enroll::BoxError;

/// How a set of replicas is laid out.
#[derive(Default)]
pub struct Layout<'a> {
    /// Their `relay.name`s.
    pub names: &'a [&'a str],
    /// A PostgreSQL DSN for the store (else SQLite in the data dir).
    pub postgres: Option<&'a str>,
    /// Clustered over gossip (a secret file, the first two as seeds).
    pub gossip: bool,
    /// More lines of the `relay:` block (indented by two spaces).
    pub relay_extra: &'a str,
}

/// One replica's config, written in the test's directory.
pub struct ReplicaProcess {
    pub name: String,
    pub config: PathBuf,
    pub grpc_port: u16,
    pub http_port: u16,
    /// The gossip port when clustered.
    pub gossip_port: Option<u16>,
    /// Where its stderr goes.
    pub log: PathBuf,
}

/// `count` distinct UDP loopback ports free now.
pub fn free_udp_ports(count: usize) -> std::io::Result<Vec<u16>> {
    let held = (0..count)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    held.iter()
        .map(|socket| Ok(socket.local_addr()?.port()))
        .collect()
}

/// Writes one config per name of `layout` in `dir`, all on `dir/state`.
pub fn write_configs(dir: &Path, layout: &Layout<'_>) -> Result<Vec<ReplicaProcess>, BoxError> {
    let data_dir = dir.join("state");
    let secret = dir.join("cluster.secret");
    let gossip_ports = if layout.gossip {
        std::fs::write(&secret, "process-test-secret-0123456789abcdef0123456789\n")?;
        free_udp_ports(layout.names.len())?
            .into_iter()
            .map(Some)
            .collect()
    } else {
        vec![None; layout.names.len()]
    };
    let seeds = gossip_ports
        .iter()
        .flatten()
        .take(2)
        .map(|port| format!("\"127.0.0.1:{port}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let store = layout
        .postgres
        .map_or(String::new(), |dsn| format!("postgres:\n  dsn: {dsn}\n"));
    let tcp_ports = free_ports(3 * layout.names.len())?;
    let mut replicas = Vec::new();
    for ((name, gossip_port), ports) in layout
        .names
        .iter()
        .zip(gossip_ports)
        .zip(tcp_ports.chunks(3))
    {
        let [grpc_port, http_port, peer_port] = ports else {
            return Err("three ports per replica".into());
        };
        let (grpc_port, http_port, peer_port) = (*grpc_port, *http_port, *peer_port);
        let gossip = gossip_port.map_or(String::new(), |port| {
            format!(
                "  gossip_port: {port}\n  gossip_seeds: [{seeds}]\n  cluster_secret_file: {}\n",
                secret.display()
            )
        });
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &config,
            format!(
                "cluster:\n  enabled: true\n  role: relay-coordinator\n  \
                 cluster_grpc_port: {grpc_port}\n  \
                 ingress:\n    public_endpoint: http://127.0.0.1:{grpc_port}\n{store}\
                 relay:\n  name: {name}\n  bind_address: 127.0.0.1\n  http_port: {http_port}\n  \
                 peer_port: {peer_port}\n  data_dir: {}\n  accept_local_admin_tokens: true\n  \
                 drain_timeout: 5s\n{gossip}{}",
                data_dir.display(),
                layout.relay_extra
            ),
        )?;
        replicas.push(ReplicaProcess {
            name: (*name).to_owned(),
            config,
            grpc_port,
            http_port,
            gossip_port,
            log: dir.join(format!("{name}.log")),
        });
    }
    Ok(replicas)
}

impl ReplicaProcess {
    /// `http://127.0.0.1:<http port>`.
    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// `http://127.0.0.1:<gRPC port>`.
    pub fn grpc(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// Runs `aegis-relay <args> --config <config> <extra>`; fails with its
    /// stderr unless it exits 0.
    pub fn cli(&self, args: &[&str], extra: &[&Path]) -> Result<(), BoxError> {
        let output = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .args(extra)
            .env_remove("POSTGRES_DSN")
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

    /// Migrates the store (replicas started together would race to migrate
    /// one SQLite file and to create one signing key).
    pub fn migrate(&self) -> Result<(), BoxError> {
        self.cli(&["migrate"], &[])
    }

    /// `Bearer` of a token from `admin-token`: an admin, or with `tenant` a
    /// user of that tenant who may manage its fleet and enroll.
    pub fn bearer(&self, tenant: Option<&str>) -> Result<String, BoxError> {
        let out =
            self.log
                .with_file_name(format!("{}-{}.token", self.name, tenant.unwrap_or("admin")));
        match tenant {
            Some(tenant) => self.cli(
                &["admin-token", "--tenant", tenant],
                &[Path::new("--out"), &out],
            )?,
            None => self.cli(&["admin-token"], &[Path::new("--out"), &out])?,
        }
        Ok(format!("Bearer {}", std::fs::read_to_string(out)?.trim()))
    }

    /// Spawns `run` (stderr appended to its log).
    pub fn spawn(&self) -> Result<Process, BoxError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        Ok(Process(
            Command::new(BIN)
                .args(["run", "--config"])
                .arg(&self.config)
                .env_remove("POSTGRES_DSN")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?,
        ))
    }

    /// Waits until `process` (this replica) is ready; fails at once if it
    /// exits, and with its log either way.
    pub async fn ready(&self, process: &mut Process) -> Result<(), BoxError> {
        let readyz = format!("{}/readyz", self.http());
        let ready = super::eventually(Duration::from_secs(30), &self.name, || {
            let exited = process.0.try_wait().ok().flatten();
            let readyz = &readyz;
            async move {
                if let Some(status) = exited {
                    return Some(Err(format!("exited with {status}")));
                }
                let (code, _) = super::http_get_url(readyz).await.ok()?;
                (code == 200).then_some(Ok(()))
            }
        })
        .await
        .and_then(|outcome| outcome);
        ready.map_err(|err| self.with_log(&err).into())
    }

    /// Spawns `run` and waits until it is ready.
    pub async fn start(&self) -> Result<Process, BoxError> {
        let mut process = self.spawn()?;
        self.ready(&mut process).await?;
        Ok(process)
    }

    /// `message` followed by this replica's log.
    pub fn with_log(&self, message: &str) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("{}: {message}; its log:\n{log}", self.name)
    }

    /// `GET /v1/relay/status` as `bearer` (an admin), `None` unless 200.
    pub async fn status(&self, bearer: &str) -> Option<Value> {
        let (code, body) = super::http_request(
            "GET",
            &format!("{}/v1/relay/status", self.http()),
            &[("authorization", bearer)],
            "",
        )
        .await
        .ok()?;
        (code == 200).then(|| serde_json::from_str(&body).ok())?
    }
}

/// The member names of a `/v1/relay/status` answer.
pub fn members(status: &Value) -> BTreeSet<String> {
    status["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str().map(str::to_owned))
        .collect()
}

/// Sends SIGTERM to `process` and waits (up to `deadline`) for its exit
/// code.
pub async fn terminate(process: &mut Process, deadline: Duration) -> Result<i32, BoxError> {
    let sent = Command::new("kill")
        .args(["-TERM", &process.0.id().to_string()])
        .status()?;
    if !sent.success() {
        return Err("kill -TERM failed".into());
    }
    let code = super::eventually(deadline, "the process to exit", || {
        let exited = process.0.try_wait().ok().flatten();
        async move { exited.map(|status| status.code().unwrap_or(-1)) }
    })
    .await?;
    Ok(code)
}

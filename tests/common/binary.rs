//! Running the relay binary from tests: a child that ends with the test,
//! free loopback ports, a SQLite `run` config, and `run` until ready.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::enroll::BoxError;

/// The relay binary Cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_aegis-relay");

/// A child process killed when the test ends.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `count` distinct loopback ports free now (held together while chosen,
/// so none is handed out twice).
pub fn free_ports(count: usize) -> std::io::Result<Vec<u16>> {
    let held = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    held.iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}

/// Writes `dir/aegis-config.yaml`: a relay on 127.0.0.1 with its SQLite
/// store under `dir/state`, then `extra` (lines of the `relay:` block).
pub fn sqlite_config(
    dir: &Path,
    grpc_port: u16,
    http_port: u16,
    extra: &str,
) -> std::io::Result<PathBuf> {
    let config = dir.join("aegis-config.yaml");
    std::fs::write(
        &config,
        format!(
            "cluster:\n  role: relay-coordinator\n  cluster_grpc_port: {grpc_port}\n  \
             ingress:\n    public_endpoint: http://127.0.0.1:{grpc_port}\n\
             relay:\n  bind_address: 127.0.0.1\n  http_port: {http_port}\n  data_dir: {}\n{extra}",
            dir.join("state").display()
        ),
    )?;
    Ok(config)
}

/// Starts `run` on `config` (whose HTTP port is `http_port`) and waits
/// until it is ready.
pub async fn run_ready(config: &Path, http_port: u16) -> Result<Process, BoxError> {
    let relay = Process(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env_remove("POSTGRES_DSN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let readyz = format!("http://127.0.0.1:{http_port}/readyz");
    super::eventually(Duration::from_secs(30), "run to become ready", || async {
        let (status, _) = super::http_get_url(&readyz).await.ok()?;
        (status == 200).then_some(())
    })
    .await?;
    Ok(relay)
}

/// A ready `run` relay on a SQLite config in `dir` with `extra`, and its
/// gRPC and HTTP addresses.
pub async fn run_relay(
    dir: &Path,
    extra: &str,
) -> Result<(Process, SocketAddr, SocketAddr), BoxError> {
    let (grpc_port, http_port) = (free_port()?, free_port()?);
    let config = sqlite_config(dir, grpc_port, http_port, extra)?;
    let process = run_ready(&config, http_port).await?;
    let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
    Ok((process, loopback(grpc_port), loopback(http_port)))
}

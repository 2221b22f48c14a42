//! Session benchmarks against real processes: the relay binary (`dev`,
//! SQLite embedded, so the database's CPU is the relay's) and `edge-sim run`
//! as the edges. Reads the relay's RSS and CPU from /proc and its counters
//! from /metrics; prints figures and target verdicts.
//!
//!   cargo bench --bench sessions -- streams [--edges 20000] [--per-connection 100] [--single 10000]
//!   cargo bench --bench sessions -- heartbeat-cpu [--edges 5000] [--seconds 20]
//!
//! `streams` measures relay memory per edge twice, each on a fresh relay:
//! N edges multiplexed over few connections (per stream), and edges with one
//! connection each like real daemons (per edge; the difference is the cost
//! of a connection). `heartbeat-cpu` holds edges heartbeating every second
//! and divides the relay's user+sys CPU by the heartbeats it verified.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const RELAY: &str = env!("CARGO_BIN_EXE_aegis-relay");

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|pair| pair[0] == name)
        .and_then(|pair| pair[1].parse().ok())
        .unwrap_or(default)
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// RSS in KiB.
fn rss_kib(pid: u32) -> u64 {
    proc_status(pid, "VmRSS:").unwrap_or(0)
}

/// user+sys CPU in clock ticks (100 per second here).
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let after = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat; `after` starts at field 3.
    let get = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

struct Relay {
    proc: Proc,
    http: String,
    data: PathBuf,
}

async fn start_relay(data: &Path) -> Result<Relay, BoxError> {
    let endpoints = data.join("endpoints.json");
    let _ = std::fs::remove_file(&endpoints);
    let child = Command::new(RELAY)
        .args(["dev", "--grpc-port", "0", "--http-port", "0", "--data-dir"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let proc = Proc(child);
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(&endpoints) {
            let value: serde_json::Value = serde_json::from_str(&text)?;
            if let Some(http) = value["replicas"][0]["http"].as_str() {
                return Ok(Relay {
                    proc,
                    http: http.to_owned(),
                    data: data.to_owned(),
                });
            }
        }
        if Instant::now() > until {
            return Err("the relay did not write endpoints.json within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Relay {
    fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    async fn metric(&self, name: &str) -> Result<f64, BoxError> {
        use http_body_util::BodyExt;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let uri = format!("{}/metrics", self.http).parse()?;
        let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri)).await??;
        let body = response.into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&body);
        Ok(text
            .lines()
            .find_map(|line| line.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0))
    }

    async fn wait_connected(&self, edges: u64, within: Duration) -> Result<Duration, BoxError> {
        let started = Instant::now();
        loop {
            let connected = self.metric("aegis_relay_edge_nodes_connected").await?;
            if connected as u64 >= edges {
                return Ok(started.elapsed());
            }
            if started.elapsed() > within {
                return Err(format!(
                    "only {connected} of {edges} edges connected within {within:?}"
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn edge_sim(
        &self,
        edges_dir: &Path,
        count: u64,
        per_connection: u64,
        heartbeat: &str,
        hold: bool,
    ) -> Result<Proc, BoxError> {
        let mut command = Command::new(RELAY);
        command
            .args(["edge-sim", "run", "--endpoints-file"])
            .arg(self.data.join("endpoints.json"))
            .arg("--bearer-file")
            .arg(self.data.join("admin.token"))
            .args(["--count", &count.to_string(), "--tenants", "4"])
            .arg("--state-dir")
            .arg(edges_dir)
            .args(["--edges-per-connection", &per_connection.to_string()])
            .args(["--heartbeat-interval", heartbeat])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if !hold {
            command.arg("--enroll-only");
        }
        Ok(Proc(command.spawn()?))
    }
}

async fn enroll_all(relay: &Relay, edges_dir: &Path, count: u64) -> Result<(), BoxError> {
    let started = Instant::now();
    let mut enroll = relay.edge_sim(edges_dir, count, 100, "30s", false)?;
    let status = tokio::task::spawn_blocking(move || enroll.0.wait()).await??;
    if !status.success() {
        return Err(format!("edge-sim --enroll-only failed: {status}").into());
    }
    println!(
        "  enrolled or reused {count} edges in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// RSS growth per connected edge on a fresh relay.
async fn memory_per_edge(
    data: &Path,
    edges_dir: &Path,
    count: u64,
    per_connection: u64,
) -> Result<(f64, u64), BoxError> {
    let relay = start_relay(data).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kib(relay.pid());
    let _edges = relay.edge_sim(edges_dir, count, per_connection, "30s", true)?;
    let took = relay
        .wait_connected(count, Duration::from_secs(600))
        .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss_kib(relay.pid());
    println!(
        "  {count} edges, {per_connection} per connection: connected in {:.1} s; relay RSS {:.1} MiB -> {:.1} MiB",
        took.as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    Ok((after.saturating_sub(before) as f64 / count as f64, after))
}

async fn streams() -> Result<(), BoxError> {
    let edges = arg("--edges", 20_000);
    let per_connection = arg("--per-connection", 100);
    let single = arg("--single", 10_000);
    let dir = tempfile::tempdir()?;
    let (data, edges_dir) = (dir.path().join("relay"), dir.path().join("edges"));
    println!("== streams: cargo bench --bench sessions -- streams --edges {edges} --per-connection {per_connection} --single {single}");
    {
        let relay = start_relay(&data).await?;
        enroll_all(&relay, &edges_dir, edges.max(single)).await?;
    }
    let (per_stream, _) = memory_per_edge(&data, &edges_dir, edges, per_connection).await?;
    let (per_edge, _) = memory_per_edge(&data, &edges_dir, single, 1).await?;
    println!(
        "  per multiplexed stream: {per_stream:.1} KiB ({edges} streams over {} connections)",
        edges.div_ceil(per_connection)
    );
    println!(
        "  per edge with its own connection: {per_edge:.1} KiB ({single} edges) -> {} (target <= 40 KiB; AEGIS relay 42.8, bare tonic stream 31.2)",
        if per_edge <= 40.0 { "PASS" } else { "MISS" }
    );
    println!(
        "  per connection (difference): {:.1} KiB",
        per_edge - per_stream
    );
    Ok(())
}

async fn heartbeat_cpu() -> Result<(), BoxError> {
    let edges = arg("--edges", 5_000);
    let seconds = arg("--seconds", 20);
    let dir = tempfile::tempdir()?;
    let (data, edges_dir) = (dir.path().join("relay"), dir.path().join("edges"));
    println!("== heartbeat-cpu: cargo bench --bench sessions -- heartbeat-cpu --edges {edges} --seconds {seconds}");
    let relay = start_relay(&data).await?;
    enroll_all(&relay, &edges_dir, edges).await?;
    let _edges = relay.edge_sim(&edges_dir, edges, 100, "1s", true)?;
    relay
        .wait_connected(edges, Duration::from_secs(300))
        .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let name = "aegis_relay_edge_events_total{kind=\"heartbeat\"}";
    let (beats_0, ticks_0, flushes_0) = (
        relay.metric(name).await?,
        cpu_ticks(relay.pid()),
        relay
            .metric("aegis_relay_edge_update_flushes_total")
            .await?,
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (beats_1, ticks_1, flushes_1) = (
        relay.metric(name).await?,
        cpu_ticks(relay.pid()),
        relay
            .metric("aegis_relay_edge_update_flushes_total")
            .await?,
    );
    let beats = beats_1 - beats_0;
    let cpu_us = (ticks_1 - ticks_0) as f64 * 10_000.0;
    let per = cpu_us / beats.max(1.0);
    println!(
        "  {beats:.0} heartbeats in {seconds} s ({:.0}/s), {:.0} store flushes; relay user+sys {:.2} s",
        beats / seconds as f64,
        flushes_1 - flushes_0,
        cpu_us / 1e6
    );
    println!(
        "  CPU per heartbeat (relay incl. its SQLite store): {per:.1} µs -> {} (target <= 60 µs; AEGIS relay about 115 µs, an Ed25519 verify about 27 µs)",
        if per <= 60.0 { "PASS" } else { "MISS" }
    );
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let scenario = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-') && a.parse::<u64>().is_err())
        .unwrap_or_else(|| "all".to_owned());
    runtime.block_on(async {
        match scenario.as_str() {
            "streams" => streams().await,
            "heartbeat-cpu" => heartbeat_cpu().await,
            "all" => {
                heartbeat_cpu().await?;
                streams().await
            }
            other => {
                Err(format!("unknown scenario {other:?}: streams, heartbeat-cpu or all").into())
            }
        }
    })
}

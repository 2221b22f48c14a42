//! Session benchmarks against real processes: the relay binary (`dev`,
//! SQLite embedded, so the database's CPU is the relay's) and `edge-sim run`
//! as the edges. Reads the relay's RSS and CPU from /proc (CPU ticks
//! converted with `getconf CLK_TCK`) and its counters from /metrics; exits
//! non-zero on a missed target or a figure it could not read: a relay that
//! died, an unreadable /proc or a missing counter fails the run (gate.rs).
//!
//!   cargo bench --bench sessions -- streams [--edges 20000] [--per-connection 100] [--single 10000]
//!   cargo bench --bench sessions -- heartbeat-cpu [--edges 5000] [--seconds 20]
//!   (either takes --target per_edge_kib=N or --target heartbeat_cpu_us=N)
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

#[path = "gate.rs"]
mod gate;

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

/// Target: relay RSS per edge with its own connection, KiB.
const TARGET_PER_EDGE_KIB: f64 = 40.0;
/// Target: relay CPU per verified heartbeat, microseconds.
const TARGET_HEARTBEAT_CPU_US: f64 = 60.0;

fn proc_file(pid: u32, file: &str) -> Result<String, BoxError> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .map_err(|e| format!("cannot read /proc/{pid}/{file} (has the relay exited?): {e}").into())
}

/// RSS in KiB; an error when /proc has no figure (a zombie has no VmRSS).
fn rss_kib(pid: u32) -> Result<u64, BoxError> {
    let text = proc_file(pid, "status")?;
    text.lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| format!("/proc/{pid}/status has no VmRSS (has the relay exited?)").into())
}

/// user+sys CPU in clock ticks (see [`gate::clock_ticks_per_second`]).
fn cpu_ticks(pid: u32) -> Result<u64, BoxError> {
    let text = proc_file(pid, "stat")?;
    let (_, after) = text
        .rsplit_once(')')
        .ok_or_else(|| format!("/proc/{pid}/stat has no command name"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3: the state, which is Z for a dead relay.
    if fields.first() == Some(&"Z") {
        return Err(format!("the relay (pid {pid}) has exited").into());
    }
    // Fields 14 and 15 of stat: utime and stime.
    let get = |i: usize| -> Result<u64, BoxError> {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("/proc/{pid}/stat field {i} is missing or not a number").into())
    };
    Ok(get(14)? + get(15)?)
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

    /// A counter or gauge from /metrics; an error when the relay does not
    /// answer or does not report it.
    async fn metric(&self, name: &str) -> Result<f64, BoxError> {
        self.metric_if_reported(name)
            .await?
            .ok_or_else(|| format!("the relay's /metrics has no {name}").into())
    }

    /// A figure from /metrics, or `None` when not reported (yet).
    async fn metric_if_reported(&self, name: &str) -> Result<Option<f64>, BoxError> {
        use http_body_util::BodyExt;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let uri: http::Uri = format!("{}/metrics", self.http).parse()?;
        let unread =
            |e: &dyn std::fmt::Display| format!("cannot read {uri} (has the relay exited?): {e}");
        let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri.clone()))
            .await
            .map_err(|e| unread(&e))?
            .map_err(|e| unread(&e))?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unread(&e))?
            .to_bytes();
        let text = String::from_utf8_lossy(&body);
        Ok(text
            .lines()
            .find_map(|line| line.strip_prefix(name).and_then(|v| v.trim().parse().ok())))
    }

    async fn wait_connected(&self, edges: u64, within: Duration) -> Result<Duration, BoxError> {
        let started = Instant::now();
        loop {
            // The gauge may appear only with the first session.
            let connected = self
                .metric_if_reported("aegis_relay_edge_nodes_connected")
                .await?
                .unwrap_or(0.0);
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
    let before = rss_kib(relay.pid())?;
    let _edges = relay.edge_sim(edges_dir, count, per_connection, "30s", true)?;
    let took = relay
        .wait_connected(count, Duration::from_secs(600))
        .await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = rss_kib(relay.pid())?;
    // Still serving: a relay that died after connecting must not pass.
    let connected = relay.metric("aegis_relay_edge_nodes_connected").await?;
    if (connected as u64) < count {
        return Err(format!("only {connected} of {count} edges still connected").into());
    }
    println!(
        "  {count} edges, {per_connection} per connection: connected in {:.1} s; relay RSS {:.1} MiB -> {:.1} MiB",
        took.as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    if after <= before {
        return Err(format!(
            "relay RSS did not grow ({before} -> {after} KiB): no per-edge figure"
        )
        .into());
    }
    Ok(((after - before) as f64 / count as f64, after))
}

async fn streams(gates: &mut gate::Gates) -> Result<(), BoxError> {
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
        "  per edge with its own connection: {per_edge:.1} KiB ({single} edges) (target <= {TARGET_PER_EDGE_KIB} KiB; AEGIS relay 42.8, bare tonic stream 31.2)"
    );
    println!(
        "  per connection (difference): {:.1} KiB",
        per_edge - per_stream
    );
    gates.check(
        "streams connected (sqlite)",
        true,
        format!(
            "{edges} over {} connections",
            edges.div_ceil(per_connection)
        ),
        "all connected",
    );
    gates.info(
        "per multiplexed stream (sqlite)",
        format!("{per_stream:.1} KiB"),
    );
    gates.at_most(
        "per_edge_kib",
        &format!("relay RSS per edge, {single} edges, sqlite"),
        per_edge,
        TARGET_PER_EDGE_KIB,
        "KiB",
    );
    Ok(())
}

async fn heartbeat_cpu(gates: &mut gate::Gates) -> Result<(), BoxError> {
    let ticks_per_second = gate::clock_ticks_per_second()?;
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
        cpu_ticks(relay.pid())?,
        relay
            .metric("aegis_relay_edge_update_flushes_total")
            .await?,
    );
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (beats_1, ticks_1, flushes_1) = (
        relay.metric(name).await?,
        cpu_ticks(relay.pid())?,
        relay
            .metric("aegis_relay_edge_update_flushes_total")
            .await?,
    );
    let beats = beats_1 - beats_0;
    if beats < 1.0 || ticks_1 <= ticks_0 {
        return Err(format!(
            "no figure: {beats} heartbeats and {} CPU ticks in {seconds} s",
            ticks_1.saturating_sub(ticks_0)
        )
        .into());
    }
    let cpu_us = (ticks_1 - ticks_0) as f64 * 1e6 / ticks_per_second as f64;
    let per = cpu_us / beats;
    println!(
        "  {beats:.0} heartbeats in {seconds} s ({:.0}/s), {:.0} store flushes; relay user+sys {:.2} s",
        beats / seconds as f64,
        flushes_1 - flushes_0,
        cpu_us / 1e6
    );
    println!(
        "  CPU per heartbeat (relay incl. its SQLite store): {per:.1} µs (target <= {TARGET_HEARTBEAT_CPU_US} µs; AEGIS relay about 115 µs, an Ed25519 verify about 27 µs; {ticks_per_second} ticks/s)"
    );
    gates.at_most(
        "heartbeat_cpu_us",
        &format!("relay CPU per heartbeat, {edges} edges, sqlite"),
        per,
        TARGET_HEARTBEAT_CPU_US,
        "µs",
    );
    Ok(())
}

fn main() -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    // The first argument that is neither a flag nor a flag's value.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut scenario = "all".to_owned();
    let mut index = 0;
    while index < args.len() {
        let arg = &args[index];
        if arg == "--bench" {
            index += 1;
        } else if arg.starts_with("--") {
            index += 2;
        } else {
            scenario = arg.clone();
            break;
        }
    }
    let mut gates = gate::Gates::from_args("sessions")?;
    runtime.block_on(async {
        match scenario.as_str() {
            "streams" => streams(&mut gates).await,
            "heartbeat-cpu" => heartbeat_cpu(&mut gates).await,
            "all" => {
                heartbeat_cpu(&mut gates).await?;
                streams(&mut gates).await
            }
            other => {
                Err(format!("unknown scenario {other:?}: streams, heartbeat-cpu or all").into())
            }
        }
    })?;
    gates.finish()
}

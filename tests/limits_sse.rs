//! A stalled SSE reader, live: a fleet call's caller that never reads its
//! response while its edges stream output. As the README says of
//! `relay.fleet_runs.sse_buffer_bytes`: the relay holds at most that many
//! bytes for the reader, drops progress past it, gives the reader up when
//! another event finds no room for 5 s, and the run goes on to record every
//! target's outcome. What it held is freed when the reader leaves.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use aegis_relay::fleet::FleetEvent;
use aegis_relay::proto::cluster::{edge_command, EdgeCommand, EdgeResult};
use aegis_relay::telemetry::{
    Metrics, CONNECTIONS_REFUSED, FLEET_SSE_BUFFERED, FLEET_SSE_GIVEN_UP,
    FLEET_SSE_PROGRESS_DROPPED,
};
use common::edges::{enroll_edge, now_ms, open_stream, tenant_bearer, Enrolled, RawStream};
use common::{counter_value, eventually, start_relay_configured, TestRelay, TestResult};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error>;

const BUFFER: usize = 64 * 1024;
const CHUNK: usize = 16 * 1024;
/// Progress streamed before the buffer is looked at: more than the
/// loopback socket buffers and hyper's write buffer absorb (a few MiB).
const MIN_STREAMED: usize = 16 * 1024 * 1024;
/// Progress streamed before the test gives up on filling the buffer.
const MAX_STREAMED: usize = 256 * 1024 * 1024;
/// Bytes held when the buffer has no room for another chunk.
const FULL: f64 = (BUFFER - CHUNK - 1024) as f64;

/// A relay with a 64 KiB SSE buffer, two raw edges of t-a that have
/// received one fleet run's InvokeTool, and that run's stalled reader.
struct Stalled {
    relay: TestRelay,
    metrics: Metrics,
    bearer: String,
    edges: Vec<(RawStream, Uuid)>,
    reader: tokio::net::TcpStream,
    sampler: (CancellationToken, tokio::task::JoinHandle<f64>),
    streamed: usize,
    sequence: u32,
    _enrolled: Vec<Enrolled>,
}

impl Stalled {
    async fn start() -> Result<Self, BoxError> {
        Self::start_with(Duration::from_secs(60)).await
    }

    /// Like [`Self::start`], with `relay.limits.write_stall_timeout`.
    async fn start_with(write_stall: Duration) -> Result<Self, BoxError> {
        let relay = start_relay_configured(|settings| {
            settings.fleet_runs.sse_buffer_bytes = BUFFER;
            settings.drain_timeout = Duration::from_secs(10);
            settings.limits.write_stall_timeout = write_stall;
        })
        .await?;
        let metrics = relay.metrics().clone();
        let enrolled = vec![
            enroll_edge(&relay, "t-a").await?,
            enroll_edge(&relay, "t-a").await?,
        ];
        let mut streams = Vec::new();
        for edge in &enrolled {
            streams.push(open_stream(&relay, &edge.state).await?);
        }
        let bearer = tenant_bearer(&relay, "t-a").await?;
        let body = serde_json::json!({
            "target": "All",
            "tool_name": "cmd.run",
            "args": {"command": "echo", "args": ["lots"]},
            "security_context_name": "zaru-free",
            "mode": "parallel",
            "deadline_secs": 120,
        })
        .to_string();
        let stop = CancellationToken::new();
        let sampler = sample_buffered(metrics.clone(), stop.clone());
        let reader = stalled_reader(relay.http_addr(), &bearer, &body).await?;
        let mut edges = Vec::new();
        for mut stream in streams {
            let id = invoked(&mut stream).await?;
            edges.push((stream, id));
        }
        Ok(Self {
            relay,
            metrics,
            bearer,
            edges,
            reader,
            sampler: (stop, sampler),
            streamed: 0,
            sequence: 0,
            _enrolled: enrolled,
        })
    }

    fn value(&self, name: &str) -> f64 {
        counter_value(&self.metrics.render(), name)
    }

    /// Sends one progress chunk of `bytes` from every edge.
    async fn progress(&mut self, bytes: usize) -> Result<(), BoxError> {
        for (edge, id) in &self.edges {
            send_progress(edge, *id, self.sequence, bytes).await?;
            self.streamed += bytes;
        }
        self.sequence += 1;
        Ok(())
    }

    /// Sends one progress chunk of `bytes` from edge `index` only.
    async fn progress_from(&mut self, index: usize, bytes: usize) -> Result<(), BoxError> {
        let (edge, id) = self.edges.get(index).ok_or("no such edge")?;
        send_progress(edge, *id, self.sequence, bytes).await?;
        self.streamed += bytes;
        self.sequence += 1;
        Ok(())
    }

    /// Waits until the buffer has held without room for a chunk for a
    /// second on end (the loopback socket can take a little more after
    /// [`Self::fill`] returns), streaming chunks meanwhile.
    async fn settle(&mut self) -> Result<(), BoxError> {
        let mut full_since = tokio::time::Instant::now();
        let until = full_since + Duration::from_secs(30);
        while full_since.elapsed() < Duration::from_secs(1) {
            if tokio::time::Instant::now() > until {
                return Err("the buffer never stayed full for a second".into());
            }
            self.progress(CHUNK).await?;
            if self.value(FLEET_SSE_BUFFERED) < FULL {
                full_since = tokio::time::Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Streams 16 KiB chunks from both edges until the reader's buffer has
    /// no room for another and progress is being dropped.
    async fn fill(&mut self) -> Result<(), BoxError> {
        while self.streamed < MIN_STREAMED
            || self.value(FLEET_SSE_BUFFERED) < FULL
            || self.value(FLEET_SSE_PROGRESS_DROPPED) < 1.0
        {
            if self.streamed > MAX_STREAMED {
                let streamed = self.streamed;
                return Err(format!("{streamed} bytes streamed, the buffer is not full").into());
            }
            self.progress(CHUNK).await?;
        }
        Ok(())
    }

    /// Both edges answer their call.
    async fn finish(&self) -> Result<(), BoxError> {
        for (edge, id) in &self.edges {
            let result = EdgeResult {
                ok: true,
                stdout: b"lots\n".to_vec(),
                ..EdgeResult::default()
            };
            let event = edge.signer.result(now_ms(), &id.to_string(), result);
            edge.send(event).await?;
        }
        Ok(())
    }

    /// The run once it is done, with both edges completed ok.
    async fn completed_run(&self) -> Result<Value, BoxError> {
        let runs_url = format!("http://{}/v1/edge/fleet/runs", self.relay.http_addr());
        let bearer = self.bearer.as_str();
        let run: Value = eventually(Duration::from_secs(30), "the run to finish", || async {
            let (_, text) = get(&runs_url, bearer).await.ok()?;
            let runs: Value = serde_json::from_str(&text).ok()?;
            let run = runs["runs"].get(0)?.clone();
            (run["state"] == "done").then_some(run)
        })
        .await?;
        let id = run["fleet_command_id"].as_str().ok_or("no run id")?;
        let (status, text) = get(&format!("{runs_url}/{id}"), bearer).await?;
        assert_eq!(status, 200, "{text}");
        let run: Value = serde_json::from_str(&text)?;
        assert_eq!(run["summary"]["ok"], 2, "{run}");
        let nodes = run["nodes"].as_array().ok_or("no nodes")?;
        assert_eq!(nodes.len(), 2, "{run}");
        assert!(
            nodes
                .iter()
                .all(|n| n["state"] == "completed" && n["ok"] == true),
            "{run}"
        );
        Ok(run)
    }

    /// The most ever buffered; then the reader leaves, and what was held
    /// for it is freed.
    async fn leave(self) -> Result<f64, BoxError> {
        let (stop, sampler) = self.sampler;
        stop.cancel();
        let highest = sampler.await?;
        eprintln!(
            "streamed {} KiB of progress; at most {highest} bytes buffered for the reader",
            self.streamed / 1024
        );
        drop(self.reader);
        let metrics = self.metrics;
        eventually(Duration::from_secs(10), "the buffer freed", || async {
            (counter_value(&metrics.render(), FLEET_SSE_BUFFERED) == 0.0).then_some(())
        })
        .await?;
        drop(self.edges);
        common::assert_graceful(self.relay.shutdown().await);
        Ok(highest)
    }
}

/// A connection that asks for a fleet run as SSE, reads the response
/// headers and then nothing more. Its receive buffer is kept small so the
/// kernel absorbs little of what the relay sends.
async fn stalled_reader(
    addr: SocketAddr,
    bearer: &str,
    body: &str,
) -> Result<tokio::net::TcpStream, BoxError> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut tcp = tokio::time::timeout(Duration::from_secs(5), socket.connect(addr)).await??;
    let request = format!(
        "POST /v1/edge/fleet/invoke HTTP/1.1\r\nhost: {addr}\r\nauthorization: {bearer}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 {
            return Err("response headers over 8 KiB".into());
        }
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte)).await??;
        if read == 0 {
            return Err("closed before the response headers".into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    if !head.starts_with("http/1.1 200") || !head.contains("text/event-stream") {
        return Err(format!("not an event stream: {head}").into());
    }
    Ok(tcp)
}

/// Samples the buffered-bytes gauge until `stop`; the highest value seen.
fn sample_buffered(metrics: Metrics, stop: CancellationToken) -> tokio::task::JoinHandle<f64> {
    tokio::spawn(async move {
        let mut highest: f64 = 0.0;
        loop {
            highest = highest.max(counter_value(&metrics.render(), FLEET_SSE_BUFFERED));
            tokio::select! {
                () = stop.cancelled() => return highest,
                () = tokio::time::sleep(Duration::from_millis(2)) => {}
            }
        }
    })
}

/// Sends a progress chunk of `bytes` for call `id` from `edge`.
async fn send_progress(
    edge: &RawStream,
    id: Uuid,
    sequence: u32,
    bytes: usize,
) -> Result<(), BoxError> {
    let chunk = vec![b'x'; bytes];
    let event = edge
        .signer
        .progress(now_ms(), &id.to_string(), sequence, false, chunk);
    edge.send(event).await
}

/// The command id of the InvokeTool `stream` receives.
async fn invoked(stream: &mut RawStream) -> Result<Uuid, BoxError> {
    match stream.next().await?? {
        EdgeCommand {
            command: Some(edge_command::Command::InvokeTool(invoke)),
        } => Ok(Uuid::parse_str(&invoke.command_id)?),
        other => Err(format!("expected an InvokeTool, got {other:?}").into()),
    }
}

/// GET `url` with `bearer`: (status, body).
async fn get(url: &str, bearer: &str) -> Result<(u16, String), BoxError> {
    common::http_request("GET", url, &[("authorization", bearer)], "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_loses_progress_past_the_bound_but_not_the_final_events() -> TestResult {
    let mut stalled = Stalled::start().await?;
    stalled.fill().await?;
    // The kernel can take a few more bytes from the buffer after `fill`
    // returns; only a buffer that stayed full shows what the bound keeps.
    stalled.settle().await?;
    // Whole chunks leave room for the (small) completions and `Done`: they
    // are buffered at once and the run ends without waiting.
    stalled.finish().await?;
    stalled.completed_run().await?;
    assert!(stalled.value(FLEET_SSE_BUFFERED) >= FULL);
    assert!(stalled.value(FLEET_SSE_PROGRESS_DROPPED) >= 1.0);
    assert_eq!(stalled.value(FLEET_SSE_GIVEN_UP), 0.0);
    let highest = stalled.leave().await?;
    assert!(highest <= BUFFER as f64, "{highest} bytes buffered");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_without_room_for_an_event_is_given_up_and_the_run_goes_on() -> TestResult
{
    let mut stalled = Stalled::start().await?;
    stalled.fill().await?;
    // Chunks sized to leave 40 bytes: no room for a NodeCompleted.
    stalled.settle().await?;
    let (node, id) = (Uuid::nil(), Uuid::nil());
    let mut attempts = 0;
    while stalled.value(FLEET_SSE_BUFFERED) != (BUFFER - 40) as f64 {
        attempts += 1;
        if attempts > 20 {
            return Err("the buffer never held exactly 40 bytes short of its bound".into());
        }
        let room = BUFFER - stalled.value(FLEET_SSE_BUFFERED) as usize;
        let overhead = serde_json::to_string(&FleetEvent::node_progress(
            node,
            id,
            stalled.sequence,
            false,
            b"",
        ))?
        .len();
        let Some(filler) = room.checked_sub(overhead + 41).map(|n| n + 1) else {
            stalled.progress(CHUNK).await?;
            stalled.settle().await?;
            continue;
        };
        stalled.progress_from(0, filler).await?;
        let metrics = stalled.metrics.clone();
        let _ = eventually(Duration::from_secs(2), "40 bytes of room left", || async {
            let held = counter_value(&metrics.render(), FLEET_SSE_BUFFERED);
            (held == (BUFFER - 40) as f64).then_some(())
        })
        .await;
    }
    stalled.finish().await?;
    // The first completion waits 5 s for room, then the reader is given up;
    // the run still records both outcomes.
    stalled.completed_run().await?;
    assert_eq!(stalled.value(FLEET_SSE_GIVEN_UP), 1.0);
    assert_eq!(stalled.value(FLEET_SSE_BUFFERED), (BUFFER - 40) as f64);
    let highest = stalled.leave().await?;
    assert!(highest <= BUFFER as f64, "{highest} bytes buffered");
    Ok(())
}

/// `relay.limits.write_stall_timeout` closes a reader that reads nothing,
/// so it holds neither the relay's buffer nor the connection; the run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_reads_nothing_is_closed_after_the_write_stall_timeout() -> TestResult {
    let stall_closed = format!("{CONNECTIONS_REFUSED}{{reason=\"write_stall_timeout\"}}");
    let mut stalled = Stalled::start_with(Duration::from_secs(2)).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while stalled.value(&stall_closed) < 1.0 {
        if tokio::time::Instant::now() > deadline {
            return Err("the stalled reader's connection was never closed".into());
        }
        stalled.progress(CHUNK).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Everything held for the reader is freed once its connection is gone.
    eventually(
        Duration::from_secs(10),
        "the buffer to be freed",
        || async { (stalled.value(FLEET_SSE_BUFFERED) == 0.0).then_some(()) },
    )
    .await?;
    stalled.finish().await?;
    stalled.completed_run().await?;
    // The reader sees its connection end after whatever was in flight.
    let mut sink = vec![0u8; 64 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stalled.reader.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the reader's connection stayed open");
    Ok(())
}

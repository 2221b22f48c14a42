//! Limits measured on the relay binary (`run --config`, SQLite): the RSS of
//! a relay flooded with AttestNode streams declaring 16 MiB, connections
//! that never finish their headers, and a config with a huge duration.

mod common;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::binary::{free_port, run_relay, sqlite_config, BIN};
use common::raw::{closed_within, grpc_call, grpc_outcome, h2, prefix, tcp};
use common::{http_get_url, TestResult};
use hyper::body::Frame;
use tokio::io::AsyncWriteExt;

/// Resident set size of `pid` in KiB, from /proc.
fn rss_kib(pid: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or_else(|| "no VmRSS in /proc status".into())
}

#[tokio::test]
async fn attest_streams_declaring_16_mib_are_refused_and_rss_stays_flat() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (relay, grpc, _http) = run_relay(dir.path(), "").await?;
    let before = rss_kib(relay.0.id())?;
    let mut calls = Vec::new();
    for _ in 0..10 {
        let sender = h2(grpc).await?;
        for _ in 0..20 {
            let mut sender = sender.clone();
            let (request, body) = grpc_call(grpc, "AttestNode")?;
            calls.push(tokio::spawn(async move {
                let feeder = tokio::spawn(async move {
                    // Declares 16 MiB, then trickles 16 KiB every 50 ms for 2 s.
                    if body
                        .send(Ok(Frame::data(prefix(16 * 1024 * 1024))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    for _ in 0..40 {
                        let chunk = Bytes::from(vec![7u8; 16 * 1024]);
                        if body.send(Ok(Frame::data(chunk))).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                });
                let outcome = match sender.send_request(request).await {
                    Ok(response) => grpc_outcome(response)
                        .await
                        .map(|(status, _)| status)
                        .unwrap_or_else(|_| "reset".to_owned()),
                    Err(_) => "reset".to_owned(),
                };
                feeder.abort();
                outcome
            }));
        }
    }
    let mut peak = before;
    let mut outcomes = Vec::new();
    for call in calls {
        let outcome = tokio::time::timeout(Duration::from_secs(30), call).await??;
        peak = peak.max(rss_kib(relay.0.id())?);
        outcomes.push(outcome);
    }
    assert_eq!(outcomes.len(), 200);
    assert!(
        outcomes
            .iter()
            .all(|status| status == "11" || status == "reset"),
        "every stream refused (OUT_OF_RANGE) or reset: {outcomes:?}"
    );
    let growth_mib = peak.saturating_sub(before) as f64 / 1024.0;
    eprintln!("relay RSS {before} KiB before, peak {peak} KiB: +{growth_mib:.1} MiB");
    assert!(growth_mib < 50.0, "RSS grew {growth_mib:.1} MiB");
    Ok(())
}

#[tokio::test]
async fn half_requests_and_slow_prefaces_are_closed_within_the_header_timeout() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (relay, grpc, http) =
        run_relay(dir.path(), "  limits:\n    header_read_timeout: 1s\n").await?;
    let started = tokio::time::Instant::now();
    let mut connections = Vec::new();
    for _ in 0..2_000 {
        let mut connection = tcp(http).await?;
        connection
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Half: ")
            .await?;
        connections.push(connection);
    }
    let mut slow_h2 = Vec::new();
    for addr in [grpc, http] {
        let mut connection = tcp(addr).await?;
        connection.write_all(b"PRI * HTTP/2.0\r\n").await?;
        slow_h2.push(connection);
    }
    let opened = started.elapsed();
    let waits = connections
        .into_iter()
        .chain(slow_h2)
        .map(|mut connection| {
            tokio::spawn(
                async move { closed_within(&mut connection, Duration::from_secs(6)).await },
            )
        })
        .collect::<Vec<_>>();
    let mut closed = 0;
    for wait in waits {
        if wait.await? {
            closed += 1;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(closed, 2_002, "every connection closed");
    assert!(
        elapsed < opened + Duration::from_secs(4),
        "closed {elapsed:?} after the first was opened ({opened:?} to open them all)"
    );
    // The relay still serves, and counted the refusals.
    let (status, metrics) = http_get_url(&format!("http://{http}/metrics")).await?;
    assert_eq!(status, 200);
    assert!(
        common::counter_value(
            &metrics,
            "aegis_relay_connections_refused_total{reason=\"header_read_timeout\"}"
        ) >= 2_002.0,
        "{metrics}"
    );
    drop(relay);
    Ok(())
}

#[tokio::test]
async fn a_connection_that_sent_its_headers_outlives_the_header_timeout() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (_relay, grpc, _http) =
        run_relay(dir.path(), "  limits:\n    header_read_timeout: 1s\n").await?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))?
        .connect()
        .await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let request = || tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    };
    health.check(request()).await?;
    // Past the deadline on the same connection.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    health.check(request()).await?;
    Ok(())
}

#[tokio::test]
async fn a_huge_duration_is_a_config_error_naming_the_key() -> TestResult {
    let dir = tempfile::tempdir()?;
    let huge = sqlite_config(
        dir.path(),
        free_port()?,
        free_port()?,
        "  drain_timeout: 9999999999s\n",
    )?;
    let output = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&huge)
        .env_remove("POSTGRES_DSN")
        .output()?;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("relay.drain_timeout"), "{stderr}");
    assert!(stderr.contains("365d"), "{stderr}");

    // An unreadable metrics token file is a config error naming the key.
    let unreadable = sqlite_config(
        dir.path(),
        free_port()?,
        free_port()?,
        "  metrics_token_file: /nonexistent/metrics.token\n",
    )?;
    let output = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&unreadable)
        .env_remove("POSTGRES_DSN")
        .output()?;
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("relay.metrics_token_file"), "{stderr}");
    Ok(())
}

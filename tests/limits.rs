//! Limits on unauthenticated peers against an in-process relay: per-message
//! decode limits, the unary and body deadlines, connection caps, and the
//! per-source rate limits of AttestNode, ChallengeNode and RotateEdgeKey
//! (driven through a trusted proxy's forwarded header, since loopback cannot
//! source many addresses).

mod common;

use std::time::Duration;

use aegis_relay::grpc::retry_info::retry_delay;
use bytes::Bytes;
use common::edges::{capabilities, enroll_edge, now_ms, open_with, signer};
use common::enroll::{client, Node};
use common::raw::{closed_within, grpc_call, grpc_outcome, h2, prefix, tcp};
use common::{counter_value, http_get, start_relay, start_relay_configured, TestResult};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn unary_requests_and_hellos_over_64_kib_are_out_of_range() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let mut grpc = client(&relay).await?;
    let mut attest = Node::new().attest_request();
    attest.grpc_address = "x".repeat(70 * 1024);
    let refused = grpc.attest_node(attest).await.err();
    assert_eq!(
        refused.as_ref().map(tonic::Status::code),
        Some(tonic::Code::OutOfRange)
    );
    assert!(refused
        .is_some_and(|s| s.message().contains("too large")
            && s.message().contains("the limit is: 65536 bytes")),);

    // A Hello over 64 KiB, from a real enrolled edge.
    let edge = enroll_edge(&relay, "t-limits").await?;
    let stream_signer = signer(
        &edge.state,
        &aegis_relay::runtime::OsEntropy.uuid().to_string(),
    );
    let mut big = capabilities();
    big.local_tools = vec!["t".repeat(70 * 1024)];
    let hello = stream_signer.hello(now_ms(), big);
    let refused = open_with(&relay, stream_signer, hello).await.err();
    assert_eq!(
        refused.as_ref().map(tonic::Status::code),
        Some(tonic::Code::OutOfRange),
        "{refused:?}"
    );
    assert!(refused.is_some_and(|s| s.message().contains("65536")));
    // A normal Hello still works.
    let stream_signer = signer(
        &edge.state,
        &aegis_relay::runtime::OsEntropy.uuid().to_string(),
    );
    let hello = stream_signer.hello(now_ms(), capabilities());
    assert!(open_with(&relay, stream_signer, hello).await.is_ok());
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn a_declared_16_mib_attest_is_refused_at_its_prefix() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let mut sender = h2(relay.grpc_addr()).await?;
    let (request, body) = grpc_call(relay.grpc_addr(), "AttestNode")?;
    body.send(Ok(Frame::data(prefix(16 * 1024 * 1024)))).await?;
    body.send(Ok(Frame::data(Bytes::from(vec![0u8; 1024]))))
        .await?;
    let response =
        tokio::time::timeout(Duration::from_secs(5), sender.send_request(request)).await??;
    let (status, message) = grpc_outcome(response).await?;
    assert_eq!(status, "11", "OUT_OF_RANGE: {message}");
    assert!(
        message.contains("found 16777216 bytes, the limit is: 65536 bytes"),
        "{message}"
    );
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn a_unary_call_that_never_finishes_its_request_ends_at_unary_timeout() -> TestResult {
    let relay = start_relay_configured(|settings| {
        settings.grpc.unary_timeout = Duration::from_secs(1);
    })
    .await?;
    let mut sender = h2(relay.grpc_addr()).await?;
    let (request, body) = grpc_call(relay.grpc_addr(), "ChallengeNode")?;
    body.send(Ok(Frame::data(prefix(100)))).await?;
    body.send(Ok(Frame::data(Bytes::from_static(b"0123456789"))))
        .await?;
    let started = tokio::time::Instant::now();
    let response =
        tokio::time::timeout(Duration::from_secs(10), sender.send_request(request)).await??;
    let (status, message) = grpc_outcome(response).await?;
    assert_eq!(status, "4", "DEADLINE_EXCEEDED: {message}");
    assert!(message.contains("relay.limits.unary_timeout"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(body);
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn a_rest_body_that_trickles_gets_408() -> TestResult {
    let relay = start_relay_configured(|settings| {
        settings.limits.request_body_timeout = Duration::from_secs(1);
    })
    .await?;
    let bearer = common::enroll::admin_bearer(&relay).await?;
    let mut connection = tcp(relay.http_addr()).await?;
    let head = format!(
        "POST /v1/edge/enrollment-tokens HTTP/1.1\r\nHost: relay\r\nAuthorization: {bearer}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
    );
    connection.write_all(head.as_bytes()).await?;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = connection.read(&mut buf).await?;
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok::<_, std::io::Error>(());
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer within 10 s");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn connections_past_the_caps_are_closed_at_once_and_counted() -> TestResult {
    let relay = start_relay_configured(|settings| {
        settings.limits.max_connections = 4;
        settings.limits.max_connections_per_source = 3;
        settings.limits.header_read_timeout = Duration::from_secs(30);
    })
    .await?;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut connection = tcp(relay.http_addr()).await?;
        connection
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
            .await?;
        let mut buf = [0u8; 512];
        let n = connection.read(&mut buf).await?;
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(connection);
    }
    // A fourth from the same source: over the per-source cap.
    let mut refused = tcp(relay.http_addr()).await?;
    assert!(
        closed_within(&mut refused, Duration::from_secs(2)).await,
        "per-source cap"
    );
    drop(held.pop());
    let exposition = common::eventually(Duration::from_secs(5), "the refusal counted", || async {
        let metrics = relay.metrics().render();
        (counter_value(
            &metrics,
            "aegis_relay_connections_refused_total{reason=\"max_connections_per_source\"}",
        ) >= 1.0)
            .then_some(metrics)
    })
    .await?;
    assert!(exposition.contains("aegis_relay_connections_open"));
    // A closed connection frees its place.
    let freed = common::eventually(Duration::from_secs(5), "a freed place", || async {
        http_get(&relay, "/healthz")
            .await
            .ok()
            .filter(|(status, _)| *status == 200)
    })
    .await;
    assert!(freed.is_ok());
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn attest_from_one_ipv6_64_behind_a_trusted_proxy_hits_the_limit_after_the_burst(
) -> TestResult {
    let relay = start_relay_configured(|settings| {
        settings.attest_rate_limit.per_second = 0.01;
        settings.attest_rate_limit.burst = 20;
        settings.attest_rate_limit.trusted_proxies =
            vec!["127.0.0.1".parse().unwrap_or([127, 0, 0, 1].into())];
    })
    .await?;
    let mut grpc = client(&relay).await?;
    let (mut passed, mut limited) = (0, 0);
    for i in 0..1_000u32 {
        let mut request = tonic::Request::new(Node::new().attest_request());
        request.metadata_mut().insert(
            "x-forwarded-for",
            format!("2001:db8:5:6:{:x}:{:x}::1", i >> 8, i & 0xff).parse()?,
        );
        match grpc.attest_node(request).await {
            Ok(_) => passed += 1,
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                assert!(
                    status.message().contains("2001:db8:5:6::"),
                    "{}",
                    status.message()
                );
                assert!(retry_delay(&status).is_some_and(|wait| wait > Duration::from_secs(1)));
                limited += 1;
            }
            Err(status) => return Err(status.into()),
        }
    }
    assert_eq!((passed, limited), (20, 980), "one bucket for the whole /64");
    // Another /64 has its own bucket.
    let mut request = tonic::Request::new(Node::new().attest_request());
    request
        .metadata_mut()
        .insert("x-forwarded-for", "2001:db8:5:7::1".parse()?);
    assert!(grpc.attest_node(request).await.is_ok());
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn challenge_and_rotate_have_their_own_buckets_with_retry_info() -> TestResult {
    let relay = start_relay_configured(|settings| {
        settings.attest_rate_limit.per_second = 0.01;
        settings.attest_rate_limit.burst = 3;
    })
    .await?;
    let mut grpc = client(&relay).await?;
    for rpc in ["ChallengeNode", "RotateEdgeKey"] {
        let mut codes = Vec::new();
        for _ in 0..5 {
            let outcome = if rpc == "ChallengeNode" {
                grpc.challenge_node(aegis_relay::proto::cluster::ChallengeNodeRequest::default())
                    .await
                    .map(drop)
            } else {
                grpc.rotate_edge_key(aegis_relay::proto::cluster::RotateEdgeKeyRequest::default())
                    .await
                    .map(drop)
            };
            let status = outcome.err().unwrap_or_else(|| tonic::Status::ok(""));
            if status.code() == tonic::Code::ResourceExhausted {
                assert!(status.message().contains(rpc), "{}", status.message());
                assert!(retry_delay(&status).is_some());
            }
            codes.push(status.code());
        }
        assert_eq!(
            codes
                .iter()
                .filter(|c| **c == tonic::Code::ResourceExhausted)
                .count(),
            2,
            "{rpc}: {codes:?}"
        );
    }
    // AttestNode's bucket is untouched by the other two.
    assert!(Node::new().attest(&mut grpc).await.is_ok());
    let metrics = relay.metrics().render();
    assert_eq!(
        counter_value(
            &metrics,
            "aegis_relay_rate_limited_total{rpc=\"RotateEdgeKey\"}"
        ),
        2.0
    );
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn metrics_can_require_a_bearer() -> TestResult {
    let token = "0123456789abcdef0123456789abcdef";
    let relay = start_relay_configured(|settings| {
        settings.metrics_token = Some(aegis_relay::config::Secret::new(token));
    })
    .await?;
    let url = format!("http://{}/metrics", relay.http_addr());
    let (status, body) = common::http_request("GET", &url, &[], "").await?;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("relay.metrics_token_file"), "{body}");
    let wrong = "Bearer 0123456789abcdef0123456789abcdeX";
    let (status, _) = common::http_request("GET", &url, &[("authorization", wrong)], "").await?;
    assert_eq!(status, 401);
    let right = format!("Bearer {token}");
    let (status, body) =
        common::http_request("GET", &url, &[("authorization", &right)], "").await?;
    assert_eq!(status, 200);
    assert!(body.contains("aegis_relay_build_info"));
    // Probes stay open.
    assert_eq!(http_get(&relay, "/readyz").await?.0, 200);
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

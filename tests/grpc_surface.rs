//! The cluster gRPC port as clients see it: health (liveness and readiness),
//! the NodeClusterService fallback for RPCs a relay does not serve, server
//! reflection v1 and v1alpha, and the per-method, per-code counters.

mod common;

use std::time::Duration;

use aegis_relay::grpc::NOT_SERVED_RPCS;
use aegis_relay::proto::cluster::node_cluster_service_client::NodeClusterServiceClient;
use aegis_relay::proto::cluster::EdgeEvent;
use common::{counter_value, eventually, grpc_channel, http_get, start_relay, TestResult};
use futures::StreamExt;
use tonic::codegen::http::uri::PathAndQuery;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const READINESS: &str = "aegis.cluster.v1.NodeClusterService";

async fn check(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Result<ServingStatus, tonic::Status> {
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(response.into_inner().status())
}

#[tokio::test]
async fn liveness_and_readiness_answer_serving() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let mut health = HealthClient::new(grpc_channel(&relay).await?);
    assert_eq!(check(&mut health, "").await?, ServingStatus::Serving);
    assert_eq!(
        check(&mut health, "grpc.health.v1.Health").await?,
        ServingStatus::Serving
    );
    assert_eq!(check(&mut health, READINESS).await?, ServingStatus::Serving);
    let unknown = check(&mut health, "no.such.Service").await;
    assert_eq!(
        unknown.err().map(|status| status.code()),
        Some(tonic::Code::NotFound)
    );
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn readiness_follows_conditions_on_grpc_and_http() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let mut health = HealthClient::new(grpc_channel(&relay).await?);
    relay
        .readiness()
        .set_failing("maintenance", "operator maintenance window");
    eventually(Duration::from_secs(5), "readiness NOT_SERVING", || {
        let mut health = health.clone();
        async move {
            matches!(
                check(&mut health, READINESS).await,
                Ok(ServingStatus::NotServing)
            )
            .then_some(())
        }
    })
    .await?;
    // Liveness is not affected by readiness.
    assert_eq!(check(&mut health, "").await?, ServingStatus::Serving);
    let (status, body) = http_get(&relay, "/readyz").await?;
    assert_eq!(status, 503);
    assert!(body.contains("operator maintenance window"), "{body}");
    let (status, _) = http_get(&relay, "/healthz").await?;
    assert_eq!(status, 200);

    relay.readiness().set_ok("maintenance");
    eventually(Duration::from_secs(5), "readiness SERVING again", || {
        let mut health = health.clone();
        async move {
            matches!(
                check(&mut health, READINESS).await,
                Ok(ServingStatus::Serving)
            )
            .then_some(())
        }
    })
    .await?;
    let (status, _) = http_get(&relay, "/readyz").await?;
    assert_eq!(status, 200);
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

/// Calls `/aegis.cluster.v1.NodeClusterService/<rpc>` with an empty message.
async fn call_raw(channel: tonic::transport::Channel, rpc: &str) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
    let path = PathAndQuery::try_from(format!("/aegis.cluster.v1.NodeClusterService/{rpc}"))
        .map_err(|err| tonic::Status::internal(err.to_string()))?;
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    grpc.unary(tonic::Request::new(()), path, codec)
        .await
        .map(|_| ())
}

#[tokio::test]
async fn rpcs_a_relay_does_not_serve_say_so_by_name() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let channel = grpc_channel(&relay).await?;
    for rpc in NOT_SERVED_RPCS {
        let status = call_raw(channel.clone(), rpc)
            .await
            .err()
            .ok_or(format!("{rpc} unexpectedly succeeded"))?;
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{rpc}");
        assert!(
            status.message().starts_with(rpc),
            "{rpc}: {}",
            status.message()
        );
        assert!(
            status.message().contains("relay-coordinator"),
            "{rpc}: {}",
            status.message()
        );
    }
    let status = call_raw(channel, "MadeUp")
        .await
        .err()
        .ok_or("MadeUp succeeded")?;
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    assert!(status.message().contains("MadeUp"), "{}", status.message());
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn connect_edge_without_a_hello_is_refused_before_headers() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let mut client = NodeClusterServiceClient::new(grpc_channel(&relay).await?);
    let status = client
        .connect_edge(futures::stream::empty::<EdgeEvent>())
        .await
        .err()
        .ok_or("ConnectEdge unexpectedly succeeded")?;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("Hello"), "{}", status.message());
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn grpc_counters_move_by_method_and_code() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let channel = grpc_channel(&relay).await?;
    let check_ok = r#"aegis_relay_grpc_requests_total{service="grpc.health.v1.Health",method="Check",code="OK"}"#;
    let check_not_found = r#"aegis_relay_grpc_requests_total{service="grpc.health.v1.Health",method="Check",code="NOT_FOUND"}"#;
    let list_peers = r#"aegis_relay_grpc_requests_total{service="aegis.cluster.v1.NodeClusterService",method="ListPeers",code="UNIMPLEMENTED"}"#;
    let before = http_get(&relay, "/metrics").await?.1;

    let mut health = HealthClient::new(channel.clone());
    check(&mut health, "").await?;
    check(&mut health, "").await?;
    let _ = check(&mut health, "unknown.Service").await;
    let _ = call_raw(channel, "ListPeers").await;

    let after = eventually(Duration::from_secs(5), "counters to move", || async {
        let text = http_get(&relay, "/metrics").await.ok()?.1;
        (counter_value(&text, list_peers) >= 1.0).then_some(text)
    })
    .await?;
    assert_eq!(
        counter_value(&after, check_ok) - counter_value(&before, check_ok),
        2.0,
        "{after}"
    );
    assert_eq!(counter_value(&after, check_not_found), 1.0, "{after}");
    assert_eq!(counter_value(&after, list_peers), 1.0, "{after}");
    assert!(after.contains("aegis_relay_build_info{"), "{after}");
    assert!(
        after.contains(r#"aegis_relay_http_requests_total{route="/metrics",status="200"}"#),
        "{after}"
    );
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_and_describe_services() -> TestResult {
    use tonic_reflection::pb::{v1, v1alpha};
    let relay = start_relay(Duration::from_secs(5)).await?;
    let channel = grpc_channel(&relay).await?;

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let requests = futures::stream::iter(vec![
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        },
        v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(
                v1::server_reflection_request::MessageRequest::FileContainingSymbol(
                    "grpc.health.v1.Health".into(),
                ),
            ),
        },
    ]);
    let mut responses = client.server_reflection_info(requests).await?.into_inner();
    let listed = responses.next().await.ok_or("no list response")??;
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        listed.message_response
    else {
        return Err("unexpected reflection answer to ListServices".into());
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [READINESS, "grpc.health.v1.Health"] {
        assert!(names.iter().any(|name| name == expected), "{names:?}");
    }
    let described = responses.next().await.ok_or("no file response")??;
    assert!(matches!(
        described.message_response,
        Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));

    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let requests = futures::stream::iter(vec![v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "aegis.cluster.v1.EdgeEvent".into(),
            ),
        ),
    }]);
    let mut responses = alpha.server_reflection_info(requests).await?.into_inner();
    let described = responses.next().await.ok_or("no v1alpha response")??;
    assert!(matches!(
        described.message_response,
        Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

/// grpcurl 1.8.6 speaks only reflection v1alpha: the deployment guide's smoke
/// test must work against us without a proto file.
#[tokio::test]
async fn grpcurl_health_check_without_proto_file() -> TestResult {
    let Some(grpcurl) = common::required_tool("GRPCURL")? else {
        return Ok(());
    };
    let relay = start_relay(Duration::from_secs(5)).await?;
    let addr = relay.grpc_addr().to_string();
    let output = tokio::process::Command::new(&grpcurl)
        .args(["-plaintext", &addr, "grpc.health.v1.Health/Check"])
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "grpcurl failed: {stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("\"SERVING\""), "{stdout}");

    let output = tokio::process::Command::new(&grpcurl)
        .args([
            "-plaintext",
            &addr,
            "describe",
            "aegis.cluster.v1.NodeClusterService",
        ])
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("rpc ConnectEdge"), "{stdout}");
    common::assert_graceful(relay.shutdown().await);
    Ok(())
}

#[tokio::test]
async fn shutdown_turns_readiness_off_and_is_bounded_by_the_drain_timeout() -> TestResult {
    use tonic_reflection::pb::v1;
    let drain = Duration::from_millis(600);
    let relay = start_relay(drain).await?;
    let channel = grpc_channel(&relay).await?;
    let mut health = HealthClient::new(channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: READINESS.to_owned(),
        })
        .await?
        .into_inner();
    let first = watch.next().await.ok_or("watch ended")??;
    assert_eq!(first.status(), ServingStatus::Serving);
    // A reflection stream whose client never closes its side holds the
    // graceful shutdown open, like an edge stream would.
    let (requests_tx, requests_rx) = tokio::sync::mpsc::channel(4);
    let mut reflection = v1::server_reflection_client::ServerReflectionClient::new(channel);
    let list = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    requests_tx.send(list).await?;
    let mut open_stream = reflection
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(requests_rx))
        .await?
        .into_inner();
    open_stream
        .next()
        .await
        .ok_or("reflection stream ended")??;

    let started = tokio::time::Instant::now();
    let shutdown = tokio::spawn(relay.shutdown());
    let next = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await?
        .ok_or("watch ended before NOT_SERVING")??;
    assert_eq!(next.status(), ServingStatus::NotServing);
    let outcome = tokio::time::timeout(Duration::from_secs(10), shutdown).await??;
    let took = started.elapsed();
    assert!(
        matches!(outcome, aegis_relay::app::ShutdownOutcome::Forced { .. }),
        "{outcome:?}"
    );
    assert!(
        took >= drain,
        "shutdown returned before the drain timeout: {took:?}"
    );
    assert!(
        took < drain + Duration::from_secs(3),
        "shutdown overran: {took:?}"
    );
    // The stream the drain waited for is severed, not left running.
    let after = tokio::time::timeout(Duration::from_secs(5), open_stream.next()).await?;
    assert!(
        !matches!(after, Some(Ok(_))),
        "stream still open after a forced shutdown: {after:?}"
    );
    drop(requests_tx);
    Ok(())
}

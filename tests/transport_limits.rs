//! Today's gRPC transport limits (README "Transport"): the message size
//! limit (`relay.edges.max_message_bytes`) and the streams allowed on one
//! HTTP/2 connection, set low here so a test reaches them.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aegis_relay::proto::cluster::node_cluster_service_client::NodeClusterServiceClient;
use aegis_relay::proto::cluster::{EdgeCommand, EdgeEvent};
use common::edges::{capabilities, edge_channel, enroll_edge, now_ms, open_stream, signer};
use common::{
    assert_graceful, counter_value, eventually, start_relay_configured, TestRelay, TestResult,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

async fn relay() -> Result<TestRelay, Box<dyn std::error::Error>> {
    start_relay_configured(|settings| {
        settings.grpc.max_message_bytes = 64 * 1024;
        settings.grpc.max_streams_per_connection = 2;
    })
    .await
}

#[tokio::test]
async fn a_message_over_the_limit_ends_the_stream_and_one_under_it_passes() -> TestResult {
    let relay = relay().await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    let mut stream = open_stream(&relay, &edge.state).await?;
    let progress = |size: usize| {
        stream.signer.progress(
            now_ms(),
            &aegis_relay::runtime::OsEntropy.uuid().to_string(),
            0,
            false,
            vec![b'x'; size],
        )
    };
    // The chunk travels twice (the event and its signed bytes): about 50
    // and 80 KiB on the wire.
    let (under, over) = (progress(25 * 1024), progress(40 * 1024));
    stream.send(under).await?;
    eventually(Duration::from_secs(10), "the 50 KiB event verified", || {
        let text = relay.metrics().render();
        async move {
            (counter_value(
                &text,
                "aegis_relay_edge_events_total{kind=\"command_progress\"}",
            ) >= 1.0)
                .then_some(())
        }
    })
    .await?;
    stream.send(over).await?;
    // Today the session ends without telling the edge why (the decode error
    // reads as a lost stream, so the status is OK): the stream must end and
    // the node be gone.
    let ended = stream.ended().await?;
    assert_eq!(ended.code(), tonic::Code::Ok, "{ended:?}");
    let owner = Arc::clone(relay.owner());
    let node_id = edge.state.node_id;
    eventually(Duration::from_secs(10), "the session to end", || {
        let owner = Arc::clone(&owner);
        async move { (!owner.is_connected(node_id)).then_some(()) }
    })
    .await?;
    assert_graceful(relay.shutdown().await);
    Ok(())
}

/// A ConnectEdge stream of `state` on `channel` (shared by the caller).
async fn open_on(
    channel: Channel,
    state: &aegis_relay::edge_client::EdgeState,
) -> Result<(mpsc::Sender<EdgeEvent>, tonic::Streaming<EdgeCommand>), tonic::Status> {
    let signer = signer(state, &aegis_relay::runtime::OsEntropy.uuid().to_string());
    let (events, rx) = mpsc::channel(8);
    events
        .send(signer.hello(now_ms(), capabilities()))
        .await
        .map_err(|_| tonic::Status::internal("queue closed"))?;
    let commands = NodeClusterServiceClient::new(channel)
        .connect_edge(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((events, commands))
}

#[tokio::test]
async fn a_connection_carries_at_most_the_configured_streams() -> TestResult {
    let relay = relay().await?;
    let channel = edge_channel(&relay).await?;
    let mut edges = Vec::new();
    for _ in 0..3 {
        edges.push(enroll_edge(&relay, "t-a").await?);
    }
    let first = open_on(channel.clone(), &edges[0].state).await?;
    let _second = open_on(channel.clone(), &edges[1].state).await?;
    let third_state = edges[2].state.clone();
    let third = tokio::spawn({
        let channel = channel.clone();
        async move { open_on(channel, &third_state).await }
    });
    // Nothing may happen here, so this is a window, not an event: a third
    // stream the server allowed would be registered within milliseconds (the
    // first two were, before `open_on` returned); half a second is a
    // hundredfold margin.
    let third_node = edges[2].state.node_id;
    let watch_until = tokio::time::Instant::now() + Duration::from_millis(500);
    while tokio::time::Instant::now() < watch_until {
        assert!(
            !relay.owner().is_connected(third_node),
            "a third stream ran on a connection limited to two"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(relay.owner().registry().len(), 2);
    // Closing one stream frees its slot: the waiting stream opens.
    drop(first);
    let owner = Arc::clone(relay.owner());
    eventually(Duration::from_secs(10), "the third stream to open", || {
        let owner = Arc::clone(&owner);
        async move { owner.is_connected(third_node).then_some(()) }
    })
    .await?;
    let _third = third.await??;
    Ok(())
}

//! A diagnostic edge for `invoke`: the same signed Hello, progress and
//! result events as our edge client, answered the moment a command
//! arrives. Our edge client waits `tokio::time::sleep(run.duration)` even
//! for a zero-length echo, which costs up to a timer tick (1 ms); this edge
//! shows the relay's own time without it.

use std::sync::Arc;

use aegis_relay::edge_client::{run_tool, EdgeState, EventSigner};
use aegis_relay::proto::cluster::edge_command::Command;
use aegis_relay::proto::cluster::node_cluster_service_client::NodeClusterServiceClient;
use aegis_relay::proto::cluster::{EdgeCapabilities, EdgeEvent};
use aegis_relay::runtime::Runtime;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::BoxError;

fn now_ms() -> i64 {
    aegis_relay::runtime::SystemClock
        .utc_now()
        .timestamp_millis()
}

/// Holds one ConnectEdge stream for `state` until `stop`.
pub async fn run(
    relay_grpc: String,
    state: EdgeState,
    stop: CancellationToken,
) -> Result<(), BoxError> {
    let channel =
        aegis_relay::edge_client::channel(Arc::clone(&Runtime::real().net), &relay_grpc).await?;
    let signer = EventSigner::new(
        state.key.clone(),
        state.token.clone(),
        state.node_id.hyphenated().to_string(),
        aegis_relay::runtime::OsEntropy.uuid().to_string(),
    );
    let (events, outbound) = mpsc::channel::<EdgeEvent>(64);
    let capabilities = EdgeCapabilities {
        os: std::env::consts::OS.to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        local_tools: vec!["shell".to_owned()],
        ..EdgeCapabilities::default()
    };
    events.send(signer.hello(now_ms(), capabilities)).await?;
    let mut commands = NodeClusterServiceClient::new(channel)
        .connect_edge(ReceiverStream::new(outbound))
        .await?
        .into_inner();
    let contexts = vec!["zaru-free".to_owned()];
    loop {
        let command = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            command = commands.message() => command?,
        };
        let Some(command) = command else {
            return Ok(());
        };
        let Some(Command::InvokeTool(invoke)) = command.command else {
            continue;
        };
        let run = run_tool(&invoke, &contexts);
        let id = invoke.command_id;
        let (mut out_seq, mut err_seq) = (0u32, 0u32);
        for (stderr, line) in run.lines {
            let sequence = if stderr { &mut err_seq } else { &mut out_seq };
            events
                .send(signer.progress(now_ms(), &id, *sequence, stderr, line))
                .await?;
            *sequence += 1;
        }
        events
            .send(signer.result(now_ms(), &id, run.result))
            .await?;
    }
}

//! Edge fixtures: enrolled edges run by our edge client, raw ConnectEdge
//! streams for forging events, and caller tokens per tenant.

use std::sync::Arc;
use std::time::Duration;

use aegis_relay::app::RunningRelay;
use aegis_relay::edge::EventKind;
use aegis_relay::edge_client::{self, EdgeOptions, EdgeState, EnrollOptions, EventSigner};
use aegis_relay::enroll::rotation_challenge;
use aegis_relay::proto::cluster::node_cluster_service_client::NodeClusterServiceClient;
use aegis_relay::proto::cluster::{
    edge_command, EdgeCapabilities, EdgeCommand, EdgeEvent, RotateEdgeKeyInner,
    RotateEdgeKeyRequest, SealNodeEnvelope,
};
use aegis_relay::runtime::Runtime;
use ed25519_dalek::{Signer as _, SigningKey};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use uuid::Uuid;

use super::enroll::BoxError;
use super::eventually;

/// An enrolled edge's state and the directory holding it.
pub struct Enrolled {
    pub state: EdgeState,
    _dir: tempfile::TempDir,
}

/// Enrolls a new edge into `tenant`.
pub async fn enroll_edge(relay: &RunningRelay, tenant: &str) -> Result<Enrolled, BoxError> {
    let minted = relay
        .tokens()
        .mint_enrollment(
            tenant,
            "test-edge",
            aegis_relay::runtime::OsEntropy.uuid(),
            aegis_relay::runtime::SystemClock.utc_now(),
        )
        .await?;
    let dir = tempfile::tempdir()?;
    let enrolled = edge_client::enroll(
        &Runtime::real(),
        &minted.token,
        &dir.path().join("edge"),
        &EnrollOptions::default(),
    )
    .await?;
    Ok(Enrolled {
        state: enrolled.state,
        _dir: dir,
    })
}

/// A channel to the relay's gRPC port.
pub async fn edge_channel(relay: &RunningRelay) -> Result<Channel, BoxError> {
    Ok(edge_client::channel(
        Arc::clone(&Runtime::real().net),
        &format!("http://{}", relay.grpc_addr()),
    )
    .await?)
}

/// An edge run by our client until dropped.
pub struct RunningEdge {
    pub node_id: Uuid,
    pub commands: mpsc::Receiver<EdgeCommand>,
    stop: CancellationToken,
}

impl Drop for RunningEdge {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts `state` with `options` (commands it receives are copied to
/// `RunningEdge::commands`) and waits until the relay has it connected.
pub async fn run_edge(
    relay: &RunningRelay,
    state: &EdgeState,
    options: EdgeOptions,
) -> Result<RunningEdge, BoxError> {
    let edge = spawn_edge(&format!("http://{}", relay.grpc_addr()), state, options).await?;
    let node_id = state.node_id;
    let owner = Arc::clone(relay.owner());
    eventually(Duration::from_secs(10), "the edge to connect", || {
        let owner = Arc::clone(&owner);
        async move { owner.is_connected(node_id).then_some(()) }
    })
    .await?;
    Ok(edge)
}

/// Starts `state` with `options` against the relay at `grpc_url` (e.g. a
/// `run` process), without waiting for it to connect.
pub async fn spawn_edge(
    grpc_url: &str,
    state: &EdgeState,
    mut options: EdgeOptions,
) -> Result<RunningEdge, BoxError> {
    let (observer, commands) = mpsc::channel(256);
    options.observer = Some(observer);
    let channel = edge_client::channel(Arc::clone(&Runtime::real().net), grpc_url).await?;
    let stop = CancellationToken::new();
    tokio::spawn(edge_client::run_edge(
        Arc::new(Runtime::real()),
        move || channel.clone(),
        state.clone(),
        options,
        stop.clone(),
    ));
    Ok(RunningEdge {
        node_id: state.node_id,
        commands,
        stop,
    })
}

/// Now in Unix milliseconds.
pub fn now_ms() -> i64 {
    aegis_relay::runtime::SystemClock
        .utc_now()
        .timestamp_millis()
}

/// A hand-driven ConnectEdge stream.
pub struct RawStream {
    pub signer: EventSigner,
    pub events: mpsc::Sender<EdgeEvent>,
    pub commands: tonic::Streaming<EdgeCommand>,
}

/// Opens a stream for `state` with a fresh stream id and a valid Hello;
/// the relay's refusal comes back as the error.
pub async fn open_stream(
    relay: &RunningRelay,
    state: &EdgeState,
) -> Result<RawStream, tonic::Status> {
    let signer = signer(state, &aegis_relay::runtime::OsEntropy.uuid().to_string());
    let hello = signer.hello(now_ms(), capabilities());
    open_with(relay, signer, hello).await
}

/// The signer of `state`'s stream `stream_id`.
pub fn signer(state: &EdgeState, stream_id: &str) -> EventSigner {
    EventSigner::new(
        state.key.clone(),
        state.token.clone(),
        state.node_id.hyphenated().to_string(),
        stream_id.to_owned(),
    )
}

/// Opens a stream whose first event is `first`.
pub async fn open_with(
    relay: &RunningRelay,
    signer: EventSigner,
    first: EdgeEvent,
) -> Result<RawStream, tonic::Status> {
    let channel = edge_channel(relay)
        .await
        .map_err(|err| tonic::Status::unavailable(err.to_string()))?;
    open_on(channel, signer, first).await
}

/// Like [`open_with`], over `channel` (to any edge port).
pub async fn open_on(
    channel: Channel,
    signer: EventSigner,
    first: EdgeEvent,
) -> Result<RawStream, tonic::Status> {
    let (events, rx) = mpsc::channel(64);
    events
        .send(first)
        .await
        .map_err(|_| tonic::Status::internal("queue closed"))?;
    let mut client = NodeClusterServiceClient::new(channel);
    let commands = client
        .connect_edge(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(RawStream {
        signer,
        events,
        commands,
    })
}

impl RawStream {
    /// Sends `event`.
    pub async fn send(&self, event: EdgeEvent) -> Result<(), BoxError> {
        self.events.send(event).await.map_err(|_| "stream closed")?;
        Ok(())
    }

    /// The next command, or the status that ended the stream (`Ok` when it
    /// ended cleanly), within 10 s.
    pub async fn next(&mut self) -> Result<Result<EdgeCommand, tonic::Status>, BoxError> {
        match tokio::time::timeout(Duration::from_secs(10), self.commands.message()).await? {
            Ok(Some(command)) => Ok(Ok(command)),
            Ok(None) => Ok(Err(tonic::Status::ok("stream ended"))),
            Err(status) => Ok(Err(status)),
        }
    }

    /// Waits for the stream to end; its status.
    pub async fn ended(&mut self) -> Result<tonic::Status, BoxError> {
        loop {
            if let Err(status) = self.next().await? {
                return Ok(status);
            }
        }
    }
}

/// Capabilities a test edge reports.
pub fn capabilities() -> EdgeCapabilities {
    EdgeCapabilities {
        os: "linux".to_owned(),
        arch: "x86_64".to_owned(),
        local_tools: vec!["shell".to_owned(), "git".to_owned()],
        custom_labels: [("zone".to_owned(), "eu".to_owned())].into(),
        ..EdgeCapabilities::default()
    }
}

/// `Bearer` token of a caller of `tenant` who may manage its fleet
/// (realm role `aegis.edge.fleet.manage`).
pub async fn tenant_bearer(relay: &RunningRelay, tenant: &str) -> Result<String, BoxError> {
    let token = relay
        .tokens()
        .mint_tenant_token(
            "user",
            tenant,
            &[aegis_relay::auth::FLEET_MANAGE_ROLE],
            aegis_relay::runtime::SystemClock.utc_now(),
            Duration::from_secs(600),
        )
        .await?;
    Ok(format!("Bearer {}", token.token))
}

/// A heartbeat signed with a chosen kind byte (for kind-mismatch tests).
pub fn forged_kind(signer: &EventSigner, kind: EventKind) -> EdgeEvent {
    use aegis_relay::proto::cluster::{edge_event, HeartbeatEvent};
    EdgeEvent {
        event: Some(edge_event::Event::Heartbeat(HeartbeatEvent {
            envelope: Some(signer.envelope(kind, now_ms(), b"")),
            active_invocations: 0,
        })),
    }
}

/// Every command `commands` (a running edge's copy) received before a fresh
/// marker: posts a push-config carrying the marker to `node_id` as
/// `bearer` (a manager of the edge's tenant) and collects until it arrives.
/// The relay sends an edge its commands in order, so whatever an earlier
/// request queued for the edge is in the answer: a barrier, not a sleep.
pub async fn commands_before_marker(
    relay: &RunningRelay,
    node_id: Uuid,
    bearer: &str,
    commands: &mut mpsc::Receiver<EdgeCommand>,
) -> Result<Vec<edge_command::Command>, BoxError> {
    let marker = aegis_relay::runtime::OsEntropy.uuid().to_string();
    let url = format!(
        "http://{}/v1/edge/hosts/{node_id}/push-config",
        relay.http_addr()
    );
    let body = serde_json::json!({ "test_marker": marker }).to_string();
    let (status, answer) =
        super::http_request("POST", &url, &[("authorization", bearer)], &body).await?;
    if status != 202 {
        return Err(format!("the marker push-config got {status}: {answer}").into());
    }
    let mut before = Vec::new();
    loop {
        let command = tokio::time::timeout(Duration::from_secs(10), commands.recv())
            .await
            .map_err(|_| "the marker push-config never reached the edge")?
            .ok_or("the edge stopped before the marker")?;
        match command.command {
            Some(edge_command::Command::PushConfig(push))
                if format!("{push:?}").contains(&marker) =>
            {
                return Ok(before);
            }
            Some(other) => before.push(other),
            None => {}
        }
    }
}

/// A RotateEdgeKey request as the daemon builds it: the inner message signed
/// by `old`, the digest signed by `new`.
pub fn rotate_request(
    node: Uuid,
    old: &SigningKey,
    new: &SigningKey,
    nonce: [u8; 32],
) -> RotateEdgeKeyRequest {
    let new_pub = new.verifying_key().to_bytes().to_vec();
    let inner = RotateEdgeKeyInner {
        node_id: node.to_string(),
        new_public_key: new_pub.clone(),
        nonce: nonce.to_vec(),
    }
    .encode_to_vec();
    RotateEdgeKeyRequest {
        current_envelope: Some(SealNodeEnvelope {
            node_security_token: String::new(),
            signature: old.sign(&inner).to_bytes().to_vec(),
            payload: inner,
        }),
        new_public_key: new_pub,
        signature_with_new_key: new
            .sign(&rotation_challenge(
                node,
                &new.verifying_key().to_bytes(),
                &nonce,
            ))
            .to_bytes()
            .to_vec(),
    }
}

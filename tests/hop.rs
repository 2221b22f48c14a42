//! The hop between an edge session's two halves, still in one process:
//! two ingress halves on one owner (a retry after the edge moved to the
//! other ingress gets the first outcome, and the edge runs nothing twice),
//! a session moving to another owner with a command in flight (the result
//! reaches the owner that sent it), and an owner ending every session of
//! one ingress (name and generation) and no other.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aegis_relay::app::RunningRelay;
use aegis_relay::edge_client::{self, EdgeOptions, EdgeState};
use aegis_relay::grpc::{self, GrpcServerSettings};
use aegis_relay::hop::{IngressId, Owners};
use aegis_relay::owner::{Control, Owner, ToolCall};
use aegis_relay::proto::cluster::{edge_command, EdgeCommand};
use aegis_relay::readiness::Readiness;
use aegis_relay::runtime::{OsEntropy, Runtime, SystemClock};
use aegis_relay::session::{HelloChecker, Ingress, IngressParts, SessionSettings};
use common::edges::{
    capabilities, commands_before_marker, edge_channel, enroll_edge, now_ms, open_on, signer,
    tenant_bearer, RawStream,
};
use common::{eventually, registered_session, start_relay, TestResult};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use uuid::Uuid;

type BoxError = Box<dyn std::error::Error>;

/// A second ingress half in the test's process, served on its own port.
struct ExtraIngress {
    ingress: Arc<Ingress>,
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for ExtraIngress {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl ExtraIngress {
    /// Starts ingress `id` of `relay`'s store and tokens, reaching `owners`.
    async fn start(relay: &RunningRelay, owners: Owners, id: IngressId) -> Result<Self, BoxError> {
        let stop = CancellationToken::new();
        let settings = SessionSettings::default();
        let ingress = Ingress::new(IngressParts {
            hello: HelloChecker {
                store: Arc::clone(relay.store()),
                tokens: Arc::clone(relay.tokens()),
                skew: settings.clock_skew,
            },
            owners,
            clock: Arc::new(SystemClock),
            metrics: relay.metrics().clone(),
            settings,
            id,
            finish_in_flight: stop.clone(),
            end_streams: stop.clone(),
        });
        let mut api = relay.api().clone();
        api.ingress = Arc::clone(&ingress);
        let listener = Runtime::real()
            .net
            .bind_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await?;
        let addr = listener.local_addr();
        let serve = grpc::serve(
            listener,
            GrpcServerSettings::default(),
            api,
            Readiness::new(),
            relay.metrics().clone(),
            stop.clone(),
        );
        tokio::spawn(serve);
        Ok(Self {
            ingress,
            addr,
            stop,
        })
    }

    async fn channel(&self) -> Result<Channel, BoxError> {
        Ok(edge_client::channel(
            Arc::clone(&Runtime::real().net),
            &format!("http://{}", self.addr),
        )
        .await?)
    }
}

/// The ingress id of `relay`'s own ingress half.
fn own_ingress(relay: &RunningRelay) -> IngressId {
    IngressId::new(relay.membership().name(), relay.membership().generation())
}

/// The InvokeTool commands among `commands` with id `command_id`.
fn runs_of(commands: &[edge_command::Command], command_id: Uuid) -> usize {
    commands
        .iter()
        .filter(|command| {
            matches!(command, edge_command::Command::InvokeTool(invoke)
                if invoke.command_id == command_id.to_string())
        })
        .count()
}

fn call(command: &str, args: &[&str]) -> ToolCall {
    let mut object = serde_json::Map::new();
    object.insert("command".into(), command.into());
    object.insert("args".into(), serde_json::json!(args));
    ToolCall {
        tool_name: "cmd.run".into(),
        args: object,
        security_context_name: "zaru-free".into(),
        user_security_token: Some("a.b.c".into()),
        caller_subject: "test".into(),
        deadline: Duration::from_secs(10),
    }
}

/// Runs `state` with our edge client, dialing each channel of `channels`
/// in turn (the last one for every later reconnect), until the token's
/// guard drops; its commands are copied to the receiver.
fn run_edge_over(
    channels: Vec<Channel>,
    state: &EdgeState,
) -> (mpsc::Receiver<EdgeCommand>, tokio_util::sync::DropGuard) {
    let (observer, commands) = mpsc::channel(256);
    let stop = CancellationToken::new();
    let dialed = AtomicUsize::new(0);
    let pick = move || {
        let at = dialed.fetch_add(1, Ordering::SeqCst);
        channels
            .get(at.min(channels.len().saturating_sub(1)))
            .cloned()
            .unwrap_or_else(|| Channel::from_static("http://127.0.0.1:9").connect_lazy())
    };
    tokio::spawn(edge_client::run_edge(
        Arc::new(Runtime::real()),
        pick,
        state.clone(),
        EdgeOptions {
            observer: Some(observer),
            ..EdgeOptions::default()
        },
        stop.clone(),
    ));
    (commands, stop.drop_guard())
}

/// Waits until `owner` holds `node` through ingress `id`.
async fn held_through(owner: &Arc<Owner>, node: Uuid, id: &IngressId) -> TestResult {
    registered_session(owner, node, "the node held through the ingress", |entry| {
        entry.key.ingress == *id
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_retry_after_the_edge_moved_to_another_ingress_gets_the_first_outcome() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let owner = Arc::clone(relay.owner());
    let other = ExtraIngress::start(
        &relay,
        Owners::InProcess(Arc::clone(&owner)),
        IngressId::new("ingress-b", 2),
    )
    .await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    let node = edge.state.node_id;
    let channels = vec![edge_channel(&relay).await?, other.channel().await?];
    let (mut commands, _edge) = run_edge_over(channels, &edge.state);
    held_through(&owner, node, &own_ingress(&relay)).await?;

    let command_id = OsEntropy.uuid();
    let first = owner
        .invoke(Some("t-a"), node, command_id, &call("echo", &["once"]))
        .await?
        .outcome()
        .await;
    assert!(first.result.ok, "{first:?}");
    // Shutdown ends the stream; the edge reconnects, to the other ingress,
    // whose ledger never saw the command.
    owner.control(None, node, &Control::Shutdown).await?;
    held_through(&owner, node, other.ingress.id()).await?;

    let retried = owner
        .invoke(Some("t-a"), node, command_id, &call("echo", &["once"]))
        .await?
        .outcome()
        .await;
    assert_eq!(retried, first, "the retry gets the first outcome");
    let bearer = tenant_bearer(&relay, "t-a").await?;
    let received = commands_before_marker(&relay, node, &bearer, &mut commands).await?;
    assert_eq!(runs_of(&received, command_id), 1, "{received:?}");
    Ok(())
}

#[tokio::test]
async fn a_result_of_a_command_in_flight_when_its_session_moved_reaches_the_owner_that_sent_it(
) -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let old_owner = Arc::clone(relay.owner());
    let new_owner = Owner::new(
        Arc::new(SystemClock),
        relay.metrics().clone(),
        aegis_relay::auth::CommandTokens::from_entropy(&OsEntropy, "test"),
        SessionSettings::default().outcome_limits(),
    );
    let ingress = ExtraIngress::start(
        &relay,
        Owners::InProcess(Arc::clone(&old_owner)),
        IngressId::new("ingress-b", 2),
    )
    .await?;
    let edge = enroll_edge(&relay, "t-a").await?;
    let node = edge.state.node_id;
    let (mut commands, _edge) = run_edge_over(vec![ingress.channel().await?], &edge.state);
    held_through(&old_owner, node, ingress.ingress.id()).await?;

    let sent_first = OsEntropy.uuid();
    let in_flight = old_owner
        .invoke(Some("t-a"), node, sent_first, &call("sleep", &["1"]))
        .await?;
    loop {
        let command = tokio::time::timeout(Duration::from_secs(10), commands.recv())
            .await?
            .ok_or("the edge stopped")?;
        if matches!(command.command, Some(edge_command::Command::InvokeTool(_))) {
            break;
        }
    }
    ingress
        .ingress
        .route_to(Owners::InProcess(Arc::clone(&new_owner)));
    held_through(&new_owner, node, ingress.ingress.id()).await?;
    // New commands come from the new owner, and are answered to it.
    let fresh = new_owner
        .invoke(Some("t-a"), node, OsEntropy.uuid(), &call("echo", &["new"]))
        .await?;
    let outcome = in_flight.outcome().await;
    assert!(outcome.result.ok, "the old owner's call: {outcome:?}");
    let fresh = fresh.outcome().await;
    assert!(fresh.result.ok, "the new owner's call: {fresh:?}");
    // Its commands answered, the old owner lets the session go.
    eventually(Duration::from_secs(10), "the old owner let go", || {
        let owner = Arc::clone(&old_owner);
        async move { (!owner.is_connected(node)).then_some(()) }
    })
    .await?;
    assert!(new_owner.is_connected(node));
    Ok(())
}

/// Opens a raw stream for `state` over `channel`.
async fn open_over(channel: Channel, state: &EdgeState) -> Result<RawStream, BoxError> {
    let signer = signer(state, &OsEntropy.uuid().to_string());
    let hello = signer.hello(now_ms(), capabilities());
    Ok(open_on(channel, signer, hello).await?)
}

#[tokio::test]
async fn failing_the_sessions_of_an_ingress_ends_exactly_those() -> TestResult {
    let relay = start_relay(Duration::from_secs(5)).await?;
    let owner = Arc::clone(relay.owner());
    let gone = ExtraIngress::start(
        &relay,
        Owners::InProcess(Arc::clone(&owner)),
        IngressId::new("ingress-b", 2),
    )
    .await?;
    let restarted = ExtraIngress::start(
        &relay,
        Owners::InProcess(Arc::clone(&owner)),
        IngressId::new("ingress-b", 3),
    )
    .await?;
    let (a, b, c) = (
        enroll_edge(&relay, "t-a").await?,
        enroll_edge(&relay, "t-a").await?,
        enroll_edge(&relay, "t-a").await?,
    );
    let own = open_over(edge_channel(&relay).await?, &a.state).await?;
    let mut on_gone = open_over(gone.channel().await?, &b.state).await?;
    let on_restarted = open_over(restarted.channel().await?, &c.state).await?;
    held_through(&owner, a.state.node_id, &own_ingress(&relay)).await?;
    held_through(&owner, b.state.node_id, gone.ingress.id()).await?;
    held_through(&owner, c.state.node_id, restarted.ingress.id()).await?;
    let in_flight = owner
        .invoke(
            Some("t-a"),
            b.state.node_id,
            OsEntropy.uuid(),
            &call("sleep", &["5"]),
        )
        .await?;

    assert_eq!(owner.fail_ingress(&IngressId::new("ingress-b", 2)).await, 1);
    let outcome = in_flight.outcome().await;
    assert_eq!(
        outcome.result.error_kind, "edge_disconnected",
        "{outcome:?}"
    );
    let status = on_gone.ended().await?;
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    for (stream, node) in [(&own, a.state.node_id), (&on_restarted, c.state.node_id)] {
        stream.send(stream.signer.heartbeat(now_ms())).await?;
        assert!(
            owner.is_connected(node),
            "a session of another ingress ended"
        );
    }
    assert!(!owner.is_connected(b.state.node_id));
    Ok(())
}

//! Simulated edge daemons: the project's edge client (protocol.md §7.1:
//! Hello first, heartbeats, one command at a time, reconnect 1 s after a
//! server close, escalating backoff after a refusal) behind a load
//! balancer that the seed steers: the first dial goes where the plan says,
//! each reconnect to a replica drawn from the edge's own random stream.
//! Every edge records the commands it runs. Edges share hosts
//! (`Scenario::edges_per_host`; one TCP connection per edge still) because
//! turmoil's cost grows with hosts times ticks.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aegis_relay::edge_client::{run_edge, EdgeOptions};
use aegis_relay::proto::cluster::{edge_command, EdgeCommand};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::fixture::EdgeFixture;
use crate::replica::{self, GRPC_PORT};
use crate::scenario::mix;
use crate::world::{at, now, Generation, Run, World};
use crate::{grpc_channel, sim_runtime};

const DIAL_STREAM: u64 = 0x6469_616c;
const EDGE_ENTROPY: u64 = 0x6564_6765;

/// What the edge hosts are built from.
#[derive(Clone)]
pub struct EdgeParts {
    /// Scenario seed.
    pub seed: u64,
    /// Replicas to dial.
    pub replicas: usize,
    /// Every edge, by index.
    pub edges: Arc<Vec<EdgeFixture>>,
    /// Where each edge dials first.
    pub first_dial: Arc<Vec<usize>>,
    /// When each edge's daemon restarts, if it does.
    pub restarts: Arc<Vec<Option<Duration>>>,
    /// Edges per host.
    pub per_host: usize,
    /// Test hook: this edge records each command twice.
    pub double_run_edge: Option<usize>,
    /// Where runs and dials are recorded.
    pub world: World,
}

/// Adds the hosts running every edge.
pub fn add(sim: &mut turmoil::Sim<'_>, parts: &EdgeParts) {
    let count = parts.edges.len();
    let per_host = parts.per_host.max(1);
    for group in 0..count.div_ceil(per_host) {
        let parts = parts.clone();
        sim.host(format!("edges{group}"), move || {
            let parts = parts.clone();
            async move {
                let stop = CancellationToken::new();
                let _stop_on_crash = stop.clone().drop_guard();
                let mut edges = JoinSet::new();
                let first = group * per_host;
                for index in first..(first + per_host).min(parts.edges.len()) {
                    edges.spawn(edge(parts.clone(), index, stop.clone()));
                }
                while let Some(ended) = edges.join_next().await {
                    ended?;
                }
                Ok(())
            }
        });
    }
}

/// The replica generation of the edge's latest connection attempt.
type Dialed = Mutex<Option<Generation>>;

/// Chooses the replica of each connection attempt.
struct Dialer {
    rng: Mutex<(StdRng, Option<usize>)>,
    channels: Vec<Channel>,
    index: usize,
    /// The replica generation of the latest attempt, fixed when it dials:
    /// the stream that brings a command (the edge reconnects at least 1 s
    /// after a stream ends, so a command is recorded before the next dial;
    /// one buffered before a crash may run well after it, and is still that
    /// generation's).
    dialed: Arc<Dialed>,
    world: World,
}

impl Dialer {
    fn dial(&self) -> Channel {
        let mut guard = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        let (rng, first) = &mut *guard;
        let replica = first
            .take()
            .unwrap_or_else(|| rng.random_range(0..self.channels.len()));
        drop(guard);
        let generation = self.world.lock().dialing(replica);
        *self.dialed.lock().unwrap_or_else(PoisonError::into_inner) = Some(generation);
        self.world
            .note(format!("e{} dials {}", self.index, replica::name(replica)));
        self.channels[replica].clone()
    }
}

async fn edge(parts: EdgeParts, index: usize, stop: CancellationToken) {
    let fixture = &parts.edges[index];
    let mut channels = Vec::with_capacity(parts.replicas);
    for replica in 0..parts.replicas {
        match grpc_channel(&replica::name(replica), GRPC_PORT) {
            Ok(channel) => channels.push(channel),
            Err(err) => {
                parts.world.note(format!("e{index} has no channel: {err}"));
                return;
            }
        }
    }
    let dialed = Arc::new(Dialed::default());
    let dialer = Dialer {
        rng: Mutex::new((
            StdRng::seed_from_u64(mix(parts.seed, DIAL_STREAM, index as u64)),
            parts.first_dial.get(index).copied(),
        )),
        channels,
        index,
        dialed: Arc::clone(&dialed),
        world: parts.world.clone(),
    };
    let (observer, commands) = mpsc::channel(64);
    let options = EdgeOptions {
        observer: Some(observer),
        ..EdgeOptions::default()
    };
    let runtime = Arc::new(sim_runtime(mix(parts.seed, EDGE_ENTROPY, index as u64)));
    let arrived = Arc::new(Notify::new());
    let recorder = record(&parts, index, &dialed, commands, &arrived);
    let dialer = Arc::new(dialer);
    let mut restart = parts.restarts.get(index).copied().flatten();
    let world = parts.world.clone();
    let state = fixture.state.clone();
    let next_command = Arc::clone(&arrived);
    let daemon = async move {
        loop {
            let dialer = Arc::clone(&dialer);
            let running = run_edge(
                Arc::clone(&runtime),
                move || dialer.dial(),
                state.clone(),
                options.clone(),
                stop.child_token(),
            );
            let Some(at) = restart.take() else {
                running.await;
                return;
            };
            // From `at`, the daemon dies as its next command arrives (the
            // command ends unanswered: outcome unknown) and starts again.
            tokio::pin!(running);
            tokio::select! {
                () = &mut running => return,
                () = tokio::time::sleep(at.saturating_sub(now())) => {}
            }
            tokio::select! {
                () = &mut running => return,
                () = next_command.notified() => {}
            }
            world.note(format!(
                "e{index} daemon dies running its command and restarts"
            ));
        }
    };
    tokio::join!(daemon, recorder);
}

/// Records every command the edge gets, with the replica generation that
/// sent it (twice under the test hook).
async fn record(
    parts: &EdgeParts,
    index: usize,
    dialed: &Dialed,
    mut commands: mpsc::Receiver<EdgeCommand>,
    arrived: &Notify,
) {
    let copies = if parts.double_run_edge == Some(index) {
        2
    } else {
        1
    };
    while let Some(command) = commands.recv().await {
        let Some(edge_command::Command::InvokeTool(invoke)) = command.command else {
            continue;
        };
        let envelope_tenant = invoke
            .seal_envelope
            .as_ref()
            .map(|envelope| envelope.tenant_id.clone())
            .unwrap_or_default();
        let id = invoke.command_id;
        let time = now();
        let mut state = parts.world.lock();
        let ingress = *dialed.lock().unwrap_or_else(PoisonError::into_inner);
        let via = ingress.map_or_else(|| "no dial".to_owned(), |g| g.to_string());
        state.trace.push(format!(
            "[{}] e{index} runs {} for {envelope_tenant} (via {via})",
            at(time),
            short(&id)
        ));
        for _ in 0..copies {
            state.runs.push(Run {
                edge: index,
                command_id: id.clone(),
                envelope_tenant: envelope_tenant.clone(),
                at: time,
                ingress,
            });
        }
        drop(state);
        arrived.notify_waiters();
    }
}

/// The first 8 characters of an id, for the trace.
pub fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

//! The chitchat wrapper: the only code that talks to chitchat. It starts
//! gossip for a clustered replica, publishes this replica's keys and phase,
//! and turns chitchat's state into [`View`]s every [`REFRESH`] (or at once
//! when the phase is changed), applying the duplicate-name rule on the way.
//! An unclustered replica runs the same loop without a socket: its view is
//! itself.
//!
//! Invariant: chitchat's tasks end when the [`GossipTask`] is stopped or
//! dropped (the handle aborts them), and only after the servers have
//! drained (`app::RunningRelay::shutdown` stops gossip last).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, Heartbeat};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::change::{diff, MembershipChange};
use super::frame::FrameKeys;
use super::member::{
    older_namesake, Member, Phase, Snapshot, KEY_PEER, KEY_PHASE, KEY_PHASE_REASON, KEY_PROTOCOL,
    KEY_VERSION, PROTOCOL_VERSION,
};
use super::ring::Ring;
use super::settings::{GossipSettings, MembershipError, MembershipSettings};
use super::transport::AuthTransport;
use crate::runtime::Runtime;
use crate::telemetry::Metrics;

/// How often the view is rebuilt from chitchat's state (and how precise
/// `last_heard` is).
pub const REFRESH: Duration = Duration::from_millis(100);
/// Longest a phase change waits to show in the view.
const PHASE_WAIT: Duration = Duration::from_secs(5);
/// Longest chitchat gets to stop.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// One replica's view of the cluster.
#[derive(Clone)]
pub struct View {
    /// Live members, this replica included.
    pub snapshot: Snapshot,
    /// The ownership ring over the serving members.
    pub ring: Arc<Ring>,
    /// This replica's phase as published.
    pub phase: Phase,
    /// Why this replica is not in the phase it was asked for, if so.
    pub phase_reason: Option<String>,
    /// The phase this replica was asked for.
    pub desired: Phase,
}

impl PartialEq for View {
    fn eq(&self, other: &Self) -> bool {
        self.snapshot == other.snapshot
            && self.ring.epoch() == other.ring.epoch()
            && self.phase == other.phase
            && self.phase_reason == other.phase_reason
            && self.desired == other.desired
    }
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("snapshot", &self.snapshot)
            .field("epoch", &self.ring.epoch().as_str())
            .field("phase", &self.phase)
            .field("phase_reason", &self.phase_reason)
            .field("desired", &self.desired)
            .finish()
    }
}

/// Handle to this replica's membership; cheap to clone.
#[derive(Clone)]
pub struct Membership {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    generation: u64,
    gossip_addr: Option<SocketAddr>,
    desired: watch::Sender<Phase>,
    view: watch::Receiver<Arc<View>>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("name", &self.inner.name)
            .field("generation", &self.inner.generation)
            .finish_non_exhaustive()
    }
}

/// The task keeping the view current (and, clustered, chitchat's tasks).
pub struct GossipTask {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl GossipTask {
    /// Leaves gossip and waits (bounded) for chitchat to stop.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if tokio::time::timeout(STOP_WAIT, &mut self.task)
            .await
            .is_err()
        {
            tracing::warn!("gossip did not stop in time; aborted");
        }
        // Drop aborts whatever is left.
    }
}

impl Drop for GossipTask {
    fn drop(&mut self) {
        self.stop.cancel();
        self.task.abort();
    }
}

/// Aborts chitchat's server task when dropped without a shutdown.
struct ChitchatGuard(Option<ChitchatHandle>);

impl Drop for ChitchatGuard {
    fn drop(&mut self) {
        if let Some(handle) = &self.0 {
            handle.abort();
        }
    }
}

impl Membership {
    /// Starts membership: gossip when `settings.gossip` is set. The replica
    /// starts `joining`.
    pub async fn start(
        settings: MembershipSettings,
        runtime: &Runtime,
        metrics: Metrics,
    ) -> Result<(Self, GossipTask), MembershipError> {
        let generation = generation(runtime);
        let mut settings = settings;
        // Bound before chitchat starts, so that port 0 advertises the real port.
        let udp = match &mut settings.gossip {
            Some(gossip) => {
                let udp = runtime.net.bind_udp(gossip.listen).await.map_err(|err| {
                    MembershipError::Start {
                        listen: gossip.listen,
                        reason: err.to_string(),
                    }
                })?;
                if gossip.advertise.port() == 0 {
                    gossip.advertise.set_port(udp.local_addr().port());
                }
                gossip.listen = udp.local_addr();
                Some(udp)
            }
            None => None,
        };
        let local = LocalState {
            name: settings.name.clone(),
            generation,
            peer_url: settings.peer_url.clone(),
            gossip_addr: settings
                .gossip
                .as_ref()
                .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |g| g.advertise),
        };
        let chitchat = match (&settings.gossip, udp) {
            (Some(gossip), udp) => {
                Some(spawn(&local, gossip, runtime, metrics.clone(), udp).await?)
            }
            (None, _) => None,
        };
        let (desired, desired_rx) = watch::channel(Phase::Joining);
        let first = View {
            snapshot: Snapshot::new(vec![local.member(&Phase::Joining, None)]),
            ring: Arc::new(Ring::new(Vec::<String>::new())),
            phase: Phase::Joining,
            phase_reason: None,
            desired: Phase::Joining,
        };
        let (view_tx, view) = watch::channel(Arc::new(first));
        let stop = CancellationToken::new();
        let refresher = Refresher {
            local: local.clone(),
            chitchat: ChitchatGuard(chitchat),
            desired: desired_rx,
            view: view_tx,
            metrics,
            heard: BTreeMap::new(),
            published: (Phase::Joining, None),
        };
        let task = tokio::spawn(refresher.run(stop.clone()));
        if let Some(gossip) = &settings.gossip {
            tracing::info!(
                replica = %local.name,
                generation,
                listen = %gossip.listen,
                advertise = %gossip.advertise,
                seeds = ?gossip.seeds,
                cluster_id = %gossip.cluster_id,
                "gossip started"
            );
        }
        Ok((
            Self {
                inner: Arc::new(Inner {
                    name: settings.name,
                    generation,
                    gossip_addr: settings.gossip.map(|g| g.advertise),
                    desired,
                    view,
                }),
            },
            GossipTask { stop, task },
        ))
    }

    /// This replica's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// This start's generation (start time in ms).
    pub fn generation(&self) -> u64 {
        self.inner.generation
    }

    /// Where this replica gossips, when clustered.
    pub fn gossip_addr(&self) -> Option<SocketAddr> {
        self.inner.gossip_addr
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        Arc::clone(&self.inner.view.borrow())
    }

    /// Views as they change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<View>> {
        self.inner.view.clone()
    }

    /// Asks for `phase` and waits (bounded) until the view reflects the
    /// request; the duplicate-name rule may hold `serving` back.
    pub async fn set_phase(&self, phase: Phase) {
        self.inner.desired.send_replace(phase.clone());
        let mut view = self.inner.view.clone();
        let reflected =
            tokio::time::timeout(PHASE_WAIT, view.wait_for(|view| view.desired == phase)).await;
        if !matches!(reflected, Ok(Ok(_))) {
            tracing::warn!(phase = %phase, "membership did not take the new phase in time");
        }
    }
}

/// This start's generation: its start time in ms from the runtime's clock.
fn generation(runtime: &Runtime) -> u64 {
    let since_epoch = runtime
        .clock
        .now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone)]
struct LocalState {
    name: String,
    generation: u64,
    peer_url: String,
    gossip_addr: SocketAddr,
}

impl LocalState {
    fn keys(&self, phase: &Phase, reason: Option<&str>) -> Vec<(String, String)> {
        vec![
            (KEY_PEER.to_owned(), self.peer_url.clone()),
            (KEY_VERSION.to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
            (KEY_PROTOCOL.to_owned(), PROTOCOL_VERSION.to_string()),
            (KEY_PHASE.to_owned(), phase.as_str().to_owned()),
            (KEY_PHASE_REASON.to_owned(), reason.unwrap_or("").to_owned()),
        ]
    }

    fn member(&self, phase: &Phase, reason: Option<&str>) -> Member {
        let keys = self.keys(phase, reason);
        Member::from_keys(
            &self.name,
            self.generation,
            self.gossip_addr,
            keys.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }
}

async fn spawn(
    local: &LocalState,
    gossip: &GossipSettings,
    runtime: &Runtime,
    metrics: Metrics,
    udp: Option<Box<dyn crate::net::UdpSocket>>,
) -> Result<ChitchatHandle, MembershipError> {
    let detector = gossip.failure_detector;
    let config = ChitchatConfig {
        chitchat_id: ChitchatId::new(local.name.as_str(), local.generation, gossip.advertise),
        cluster_id: gossip.cluster_id.clone(),
        gossip_interval: gossip.interval,
        listen_addr: gossip.listen,
        seed_nodes: gossip.seeds.clone(),
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: detector.phi_threshold,
            sampling_window_size: detector.sampling_window_size,
            max_interval: detector.max_interval,
            initial_interval: detector.initial_interval,
            dead_node_grace_period: detector.dead_node_grace_period,
        },
        marked_for_deletion_grace_period: detector.dead_node_grace_period,
        catchup_callback: None,
        extra_liveness_predicate: None,
    };
    let transport = AuthTransport::new(
        Arc::clone(&runtime.net),
        FrameKeys::new(&gossip.cluster_id, &gossip.secrets),
        metrics,
        udp,
    );
    chitchat::spawn_chitchat(config, local.keys(&Phase::Joining, None), &transport)
        .await
        .map_err(|err| MembershipError::Start {
            listen: gossip.listen,
            reason: format!("{err:#}"),
        })
}

struct Refresher {
    local: LocalState,
    chitchat: ChitchatGuard,
    desired: watch::Receiver<Phase>,
    view: watch::Sender<Arc<View>>,
    metrics: Metrics,
    /// Per member: the last heartbeat seen and when it last advanced.
    heard: BTreeMap<(String, u64), (Heartbeat, Instant)>,
    /// Phase and reason last written to gossip.
    published: (Phase, Option<String>),
}

impl Refresher {
    async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
                changed = self.desired.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
            self.refresh().await;
        }
        if let Some(handle) = self.chitchat.0.take() {
            let name = self.local.name.clone();
            if let Err(err) = handle.shutdown().await {
                tracing::warn!(replica = %name, error = %format!("{err:#}"), "gossip stopped with an error");
            } else {
                tracing::info!(replica = %name, "gossip stopped");
            }
        }
    }

    async fn refresh(&mut self) {
        let desired = self.desired.borrow_and_update().clone();
        let mut members = self.read_members().await;
        let snapshot = Snapshot::new(members.clone());
        let (phase, reason) = match (
            &desired,
            older_namesake(
                &snapshot,
                &self.local.name,
                self.local.generation,
                self.local.gossip_addr,
            ),
        ) {
            (Phase::Serving, Some(older)) => (
                Phase::Joining,
                Some(format!(
                    "replica {} of generation {} (gossip {}) is live and older; this start of \
                     the same name stays joining until it leaves",
                    older.name, older.generation, older.gossip_addr
                )),
            ),
            (phase, _) => (phase.clone(), None),
        };
        if (phase.clone(), reason.clone()) != self.published {
            self.publish(&phase, reason.as_deref()).await;
        }
        // This replica as just published, whatever gossip has caught up on.
        members.retain(|m| m.key() != (self.local.name.as_str(), self.local.generation));
        members.push(self.local.member(&phase, reason.as_deref()));
        let snapshot = Snapshot::new(members);
        let previous = Arc::clone(&self.view.borrow());
        self.record(&previous.snapshot, &snapshot);
        let serving = snapshot.serving_names();
        let ring = if serving.iter().eq(previous.ring.members().iter()) {
            Arc::clone(&previous.ring)
        } else {
            Arc::new(Ring::new(serving))
        };
        let view = View {
            snapshot,
            ring,
            phase,
            phase_reason: reason,
            desired,
        };
        if *previous != view {
            self.view.send_replace(Arc::new(view));
        }
    }

    /// Live members from chitchat (this replica only when unclustered).
    async fn read_members(&mut self) -> Vec<Member> {
        let Some(handle) = &self.chitchat.0 else {
            return Vec::new();
        };
        let chitchat = handle.chitchat();
        let read: Vec<(Member, Heartbeat)> = {
            let chitchat = chitchat.lock().await;
            chitchat
                .live_nodes()
                .filter_map(|id| {
                    let state = chitchat.node_state(id)?;
                    let member = Member::from_keys(
                        &id.node_id,
                        id.generation_id,
                        id.gossip_advertise_addr,
                        state.key_values(),
                    );
                    Some((member, state.heartbeat()))
                })
                .collect()
        };
        let now = Instant::now();
        let mut heard = BTreeMap::new();
        let members = read
            .into_iter()
            .map(|(mut member, heartbeat)| {
                let key = (member.name.clone(), member.generation);
                let since = match self.heard.get(&key) {
                    Some((seen, at)) if *seen == heartbeat => *at,
                    _ => now,
                };
                heard.insert(key, (heartbeat, since));
                member.last_heard = now.saturating_duration_since(since);
                member
            })
            .collect();
        self.heard = heard;
        members
    }

    async fn publish(&mut self, phase: &Phase, reason: Option<&str>) {
        if let Some(handle) = &self.chitchat.0 {
            let chitchat = handle.chitchat();
            let mut chitchat = chitchat.lock().await;
            let state = chitchat.self_node_state();
            state.set(KEY_PHASE, phase.as_str());
            state.set(KEY_PHASE_REASON, reason.unwrap_or(""));
        }
        match reason {
            Some(reason) => {
                tracing::warn!(replica = %self.local.name, phase = %phase, reason, "not serving")
            }
            None => tracing::info!(replica = %self.local.name, phase = %phase, "phase published"),
        }
        self.published = (phase.clone(), reason.map(str::to_owned));
    }

    fn record(&self, before: &Snapshot, after: &Snapshot) {
        let changes = diff(before, after);
        for change in &changes {
            match change {
                MembershipChange::Added(m) => {
                    tracing::info!(member = %m.name, generation = m.generation, phase = %m.phase, "member joined")
                }
                MembershipChange::Removed(m) => {
                    tracing::info!(member = %m.name, generation = m.generation, "member left")
                }
                MembershipChange::Updated { before, after } => {
                    tracing::info!(member = %after.name, generation = after.generation, from = %before.phase, to = %after.phase, "member changed")
                }
            }
            self.metrics.membership_change(change.kind());
        }
        if before.serving_names() != after.serving_names() {
            self.metrics.ring_epoch_changed();
        }
        self.metrics.members_by_phase(&after.count_by_phase());
    }
}

#[cfg(test)]
#[path = "gossip_tests.rs"]
mod tests;

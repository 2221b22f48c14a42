//! What the hosts of a run publish for the harness and the checks to read:
//! the running replicas' owners and membership, the calls callers made and
//! how they ended, the commands edges ran, and the event trace. turmoil
//! runs every host on the harness's thread; the lock is never contended.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use aegis_relay::membership::Membership;
use aegis_relay::owner::Owner;
use uuid::Uuid;

/// A running replica's parts the checks read.
#[derive(Clone)]
pub struct Live {
    /// Its sessions.
    pub owner: Arc<Owner>,
    /// Its view of the cluster.
    pub membership: Membership,
}

/// One call a caller made.
#[derive(Debug, Clone)]
pub struct Call {
    /// Caller's tenant index.
    pub tenant: usize,
    /// Target edge index.
    pub edge: usize,
    /// Replica it was sent to (and retried at).
    pub replica: usize,
    /// When it started.
    pub started: Duration,
    /// Its deadline.
    pub deadline: Duration,
    /// When each attempt (the first and every retry with the same
    /// idempotency key) was sent.
    pub attempts: Vec<Duration>,
    /// How and when it ended.
    pub outcome: Option<(Duration, Outcome)>,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// HTTP 200: the edge's result.
    Result {
        /// The tool succeeded.
        ok: bool,
        /// The error kind, if not.
        error_kind: String,
    },
    /// Another status, final or after retries until the deadline.
    Status(u16, String),
    /// The replica could not be reached (crashed), retried until the
    /// deadline.
    Unreachable(String),
    /// No answer by deadline + 5 s.
    NoAnswer,
}

/// One start of one replica: replica index and start number (1 = first).
/// A restart is a new generation, with a fresh dedup ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Generation {
    /// Replica index.
    pub replica: usize,
    /// Its start number.
    pub start: u64,
}

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "r{} start {}", self.replica, self.start)
    }
}

impl Outcome {
    /// Whether the tool may or may not have run: the edge's stream broke
    /// (`edge_disconnected`) or the connection to the replica did.
    pub fn is_unknown(&self) -> bool {
        match self {
            Self::Result { error_kind, .. } => error_kind == "edge_disconnected",
            Self::Unreachable(_) => true,
            Self::Status(..) | Self::NoAnswer => false,
        }
    }
}

/// A command an edge ran.
#[derive(Debug, Clone)]
pub struct Run {
    /// Edge index.
    pub edge: usize,
    /// Command id.
    pub command_id: String,
    /// Tenant in the command's envelope.
    pub envelope_tenant: String,
    /// When it arrived.
    pub at: Duration,
    /// The replica generation whose stream brought it (the edge's ingress,
    /// where its dedup lives); `None` if the edge had not dialed yet.
    pub ingress: Option<Generation>,
}

/// Everything published.
#[derive(Default)]
pub struct State {
    /// Running replicas by index.
    pub live: BTreeMap<usize, Live>,
    /// Starts per replica index.
    pub starts: BTreeMap<usize, u64>,
    /// When a replica last started or stopped.
    pub membership_changed: Duration,
    /// When each replica generation that has ended died.
    pub ended: BTreeMap<Generation, Duration>,
    /// Calls by command id.
    pub calls: BTreeMap<Uuid, Call>,
    /// Commands run, in order.
    pub runs: Vec<Run>,
    /// The event trace.
    pub trace: Vec<String>,
}

impl State {
    /// The latest generation of replica `index` (running or crashed), if it
    /// ever started.
    pub fn generation(&self, index: usize) -> Option<Generation> {
        self.starts.get(&index).map(|&start| Generation {
            replica: index,
            start,
        })
    }
}

impl State {
    /// The generation a connection to replica `index` made now reaches: the
    /// running one, or the next if the latest has died (a dial to a down
    /// replica is refused, or lands on its restart).
    pub fn dialing(&self, index: usize) -> Generation {
        match self.generation(index) {
            Some(latest) if !self.ended.contains_key(&latest) => latest,
            latest => Generation {
                replica: index,
                start: latest.map_or(1, |g| g.start + 1),
            },
        }
    }
}

/// Shared by every host and the harness.
#[derive(Default, Clone)]
pub struct World(Arc<Mutex<State>>);

/// Simulated time of the host running now.
pub fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// `12.345s`, fixed width.
pub fn at(time: Duration) -> String {
    format!("{:>4}.{:03}s", time.as_secs(), time.subsec_millis())
}

impl World {
    /// The state, locked.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a trace line at `time`.
    pub fn note_at(&self, time: Duration, text: impl AsRef<str>) {
        let line = format!("[{}] {}", at(time), text.as_ref());
        self.lock().trace.push(line);
    }

    /// Adds a trace line at the current host's time.
    pub fn note(&self, text: impl AsRef<str>) {
        self.note_at(now(), text);
    }

    /// Counts a start of replica `index`; returns its number (1 = first).
    pub fn starting(&self, index: usize) -> u64 {
        let mut state = self.lock();
        let count = state.starts.entry(index).or_default();
        *count += 1;
        *count
    }

    /// Replica `index` serves.
    pub fn replica_up(&self, index: usize, live: Live) {
        let time = now();
        let mut state = self.lock();
        state.live.insert(index, live);
        state.membership_changed = time;
    }

    /// Replica `index` crashed: its current generation ended at `time`.
    pub fn replica_down(&self, index: usize, time: Duration) {
        let mut state = self.lock();
        state.live.remove(&index);
        state.membership_changed = time;
        if let Some(generation) = state.generation(index) {
            state.ended.entry(generation).or_insert(time);
        }
    }

    /// The replica whose registry holds `node_id`, if one does (the lowest
    /// index if several).
    pub fn holder(&self, node_id: Uuid) -> Option<usize> {
        self.lock()
            .live
            .iter()
            .find(|(_, live)| live.owner.is_connected(node_id))
            .map(|(index, _)| *index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dial_reaches_the_running_generation_or_the_next() {
        let mut state = State::default();
        let r1 = |start| Generation { replica: 1, start };
        assert_eq!(state.dialing(1), r1(1), "before its first start");
        state.starts.insert(1, 1);
        assert_eq!(state.dialing(1), r1(1), "while it runs");
        state.ended.insert(r1(1), Duration::from_secs(5));
        assert_eq!(state.dialing(1), r1(2), "after it crashed");
        state.starts.insert(1, 2);
        assert_eq!(state.dialing(1), r1(2), "after its restart");
    }
}

//! The vocabulary of the hop between the two halves of an edge session
//! (ARCHITECTURE.md "The hop"): `Up` from the ingress (which holds the
//! edge's stream) to the owner (which holds the tenant's registry and
//! dispatch), `Down` the other way, and the `SessionKey` both use. Today
//! both halves live in one process and the messages are passed in memory;
//! a replica-to-replica hop will carry the same messages, so nothing here
//! holds a reference into either side except the [`DownLink`] in [`Opened`].
//!
//! Large payloads are boxed: a bounded tokio channel allocates its slots
//! 32 at a time, and sessions are many.

use std::sync::Arc;

use uuid::Uuid;

use super::DownLink;
use crate::proto::cluster::{EdgeCommand, EdgeResult};
use crate::store::EdgeCapabilities;

/// One start of the replica an edge's stream landed on (its ingress): its
/// stable name and the generation of this start (membership's identity),
/// so an owner can end every session of an ingress that is gone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IngressId {
    /// Replica name (`relay.name`).
    pub name: Arc<str>,
    /// Start time in ms; grows on every start.
    pub generation: u64,
}

impl IngressId {
    /// The ingress `name` of `generation`.
    pub fn new(name: &str, generation: u64) -> Self {
        Self {
            name: name.into(),
            generation,
        }
    }
}

impl std::fmt::Display for IngressId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.name, self.generation)
    }
}

/// Identifies one stream of one node: a newer stream of the same node is a
/// different session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// The edge.
    pub node_id: Uuid,
    /// The edge's tenant, so an owner keeps what a session sends by tenant
    /// even when its registry no longer holds the node.
    pub tenant: Arc<str>,
    /// The Hello's stream id.
    pub stream_id: Arc<str>,
    /// The ingress holding the stream.
    pub ingress: IngressId,
    /// A random number the ingress gives each accepted stream, so that a
    /// Hello replaying a live stream's id still opens a session of its own
    /// (and cannot unregister or fail the live one's calls).
    pub connection: u64,
}

/// Ingress to owner.
#[derive(Debug)]
pub enum Up {
    /// A Hello was authenticated: register the session.
    Opened(Box<Opened>),
    /// Capabilities reported mid-stream.
    Capabilities(Arc<EdgeCapabilities>),
    /// The session reloaded the node's keys and tags from the store.
    Reloaded(Box<Reloaded>),
    /// One chunk of a command's output.
    Progress(Box<Progress>),
    /// A command's final outcome (from the edge, made by the ingress when
    /// the stream ended with the command in flight, or kept by its ledger):
    /// the owner keeps it for retries.
    Result(Box<CommandOutcome>),
    /// An answer to a command the ingress did not send because its ledger
    /// knows it (in flight on an older stream, or its outcome expired): the
    /// owner hands it to the waiters but does not keep it.
    Answer(Box<CommandOutcome>),
    /// The stream ended.
    Closed(CloseReason),
}

/// A newly authenticated session.
#[derive(Debug)]
pub struct Opened {
    /// The edge's tenant (from the store, checked against its token).
    pub tenant_id: Arc<str>,
    /// What the edge reported (in its Hello, or since).
    pub capabilities: Arc<EdgeCapabilities>,
    /// Server-side tags as the session read them.
    pub tags: Arc<[String]>,
    /// Where the owner sends this session's commands.
    pub commands: DownLink,
    /// `seq` of the node's latest change in what the Hello read.
    pub seq: i64,
    /// The node's key the session holds.
    pub public_key: Arc<[u8]>,
    /// The owner's count of applied changes taken before the Hello read the
    /// store: if it moved by registration, the session reloads first;
    /// `None` (a session moving to this owner) always reloads.
    pub epoch: Option<u64>,
    /// The Hello's signed timestamp (Unix ms): an older Hello never takes
    /// over from a newer one.
    pub hello_ms: i64,
    /// How long this stream id stays refused for the node once registered:
    /// as long as a copy of its Hello could still pass the clock-skew check.
    pub replay_window: std::time::Duration,
}

/// What a session read when it reloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The node's server-side tags.
    pub tags: Arc<[String]>,
    /// Its current key.
    pub public_key: Arc<[u8]>,
    /// `seq` of its latest change at that read.
    pub seq: i64,
}

/// A CommandProgress chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The command.
    pub command_id: Uuid,
    /// Per-stream (stdout / stderr) sequence.
    pub sequence: u32,
    /// Whether this is stderr.
    pub stderr: bool,
    /// The bytes.
    pub chunk: Vec<u8>,
}

/// A command's final outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome {
    /// The command.
    pub command_id: Uuid,
    /// What the edge answered (or a synthesized failure), shared by the
    /// ledger, the owner's record and every waiter: never copied.
    pub result: Arc<EdgeResult>,
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The edge closed it or the connection broke.
    Disconnected,
    /// No event within the heartbeat timeout.
    HeartbeatTimeout,
    /// An event failed verification.
    Rejected,
    /// A newer Hello of the same node took over.
    Superseded,
    /// The node was revoked.
    Revoked,
    /// The relay is shutting down.
    ShuttingDown,
    /// The session moved to another owner and this owner's commands are
    /// all answered: the stream lives on, this owner no longer holds it.
    Moved,
    /// The owner ended every session of the session's ingress (it is gone).
    IngressGone,
}

/// Owner to ingress.
#[derive(Debug)]
pub enum Down {
    /// Send this command to the edge (InvokeTool is deduplicated by command id).
    Command(Box<EdgeCommand>),
    /// End the stream with this status.
    Close {
        /// Why.
        reason: CloseReason,
        /// gRPC status code sent to the edge.
        code: tonic::Code,
        /// Message sent to the edge.
        message: String,
    },
    /// The node changed (key rotation, tags, or a change landed while the
    /// Hello was checked): reload its keys and tags from the store; a node
    /// whose row is gone ends the stream as revoked.
    Reload,
}

/// Builds a failure outcome the relay decides on its own.
pub fn failure(command_id: Uuid, kind: &str, message: impl Into<String>) -> CommandOutcome {
    CommandOutcome {
        command_id,
        result: Arc::new(EdgeResult {
            ok: false,
            exit_code: -1,
            error_kind: kind.to_owned(),
            error_message: message.into(),
            ..EdgeResult::default()
        }),
    }
}

//! Our own edge client: what the real AEGIS edge daemon does, as a library
//! (for tests, the simulator and load generation) and as `aegis-relay
//! edge-sim`. This is the enrollment half: take a token, generate a key, run
//! AttestNode and ChallengeNode, and write the same state files as the real
//! daemon (protocol.md §11.1); and the session half: hold a ConnectEdge
//! stream, heartbeat, and answer commands as the daemon does (§7.1).
//! `load` enrolls and holds many such edges at once (`edge-sim run`).

mod endpoint;
mod enroll;
mod load;
mod session;
mod signer;
mod state;
mod tools;

pub use endpoint::promote_endpoint;
pub use enroll::{channel, enroll, read_unverified_claims, EnrollError, EnrollOptions, Enrolled};
pub use load::{
    edge_dir, hold, load_tenants, prepare, HoldStatus, Holding, LoadError, LoadOptions, MintError,
    Minter, PrepareProgress, Prepared, LOAD_TENANT_PREFIX,
};
pub use session::{
    connect_once, random_command_id, run_edge, ConnectError, EdgeOptions, SessionCounters,
    StreamEnd,
};
pub use signer::EventSigner;
pub use state::{EdgeState, NODE_KEY, NODE_PUB, NODE_TOKEN};
pub use tools::{run_tool, ToolRun};

//! Our own edge client: what the real AEGIS edge daemon does, as a library
//! (for tests, the simulator and load generation) and as `aegis-relay
//! edge-sim`. This is the enrollment half: take a token, generate a key, run
//! AttestNode and ChallengeNode, and write the same state files as the real
//! daemon (protocol.md §11.1). The session half comes with ConnectEdge.

mod endpoint;
mod enroll;
mod state;

pub use endpoint::promote_endpoint;
pub use enroll::{enroll, read_unverified_claims, EnrollError, EnrollOptions, Enrolled};
pub use state::{EdgeState, NODE_KEY, NODE_PUB, NODE_TOKEN};

//! The edge side of the wire, as the relay checks it: the canonical bytes
//! an edge signs for each ConnectEdge event and the per-stream verification
//! of every event against the key on file (protocol.md §6). Kept apart from
//! sessions so the simulator and our edge client share the same encoding.

pub mod canonical;
mod verify;

pub use canonical::EventKind;
pub use verify::{AcceptedKey, EventError, Inner, StreamAuth};

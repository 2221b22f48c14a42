//! The ingress half of edge sessions (ARCHITECTURE.md): where an edge's
//! ConnectEdge stream terminates. It authenticates the Hello and every
//! later event, owns the stream in one task, runs the heartbeat timeout,
//! deduplicates commands by id, and talks to the owner half only through
//! the hop ([`crate::hop`]): an `OwnerLink` per session up, `Down`
//! messages on its queue down.

mod edge_facts;
mod hello;
mod ingress;
mod ledger;
mod outbound;
mod settings;

pub use edge_facts::UpdateBuffer;
pub use hello::{accepted_keys, from_wire, HelloChecker, HelloError};
pub use ingress::{Ingress, IngressParts, SessionSettings};
pub use ledger::{Admission, Ledger};
pub use outbound::OutboundCommands;

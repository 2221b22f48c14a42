//! The hop between the two halves of an edge session (ARCHITECTURE.md "The
//! hop"). The ingress (where the edge's stream lands) and the owner (of the
//! edge's tenant) import only this module of each other's world:
//! [`messages`] is what crosses, [`OwnerLink`] is the ingress's way up to
//! the owner and [`DownLink`] the owner's way down to a session. Both links
//! are in-process today; a forwarded stream between replicas becomes one
//! more variant of each, and neither half changes.

mod down_link;
pub mod messages;
mod owner_link;

pub use down_link::{DownLink, DownQueue, LinkId, SessionGone, Tagged};
pub use messages::{
    failure, CloseReason, CommandOutcome, Down, IngressId, Opened, Progress, Reloaded, SessionKey,
    Up,
};
pub use owner_link::{OwnerLink, Owners};

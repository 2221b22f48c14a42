//! Cluster membership: which replicas are alive, in which phase, and how to
//! reach them, learnt over authenticated chitchat gossip, and the ownership
//! ring every replica computes from that view to agree on the owner of each
//! tenant. `gossip.rs` is the only code that touches chitchat (style rule
//! 8); other modules see [`Membership`], its [`View`]s, the typed
//! [`Member`]s and the [`Ring`], never chitchat.

mod change;
mod frame;
mod gossip;
mod member;
pub mod ring;
mod secret;
mod settings;
mod transport;

pub use change::{diff, MembershipChange};
pub use frame::{DropReason, FrameKeys, MAX_CLUSTER_ID_BYTES, TAG_BYTES};
pub use gossip::{GossipTask, Membership, View, REFRESH};
pub use member::{older_namesake, Member, Phase, Snapshot, PROTOCOL_VERSION};
pub use ring::{Ring, RingEpoch};
pub use secret::{ClusterSecrets, SecretError, MIN_SECRET_BYTES};
pub use settings::{
    resolve_advertise, FailureDetectorSettings, GossipSettings, MembershipError, MembershipSettings,
};

//! Cluster membership: which replicas exist and serve (gossip), and the
//! ownership ring that every replica computes from that view to agree on the
//! owner of each tenant. The only code that touches chitchat lives here.

pub mod ring;

pub use ring::{Ring, RingEpoch};

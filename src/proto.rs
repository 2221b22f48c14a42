//! Generated protobuf types and gRPC stubs.
//!
//! `cluster` is the AEGIS wire contract (`proto/aegis_cluster.proto`); its
//! field numbers are what the real edge daemon speaks, so the file is only
//! ever extended, never renumbered.

/// `aegis.cluster.v1`: the edge daemon's contract with a relay.
pub mod cluster {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("aegis.cluster.v1");
}

/// Encoded `FileDescriptorSet` of everything in `proto/` (with its imports),
/// served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("aegis_cluster_descriptor");

/// Full gRPC name of the edge-facing service.
pub const NODE_CLUSTER_SERVICE: &str = "aegis.cluster.v1.NodeClusterService";

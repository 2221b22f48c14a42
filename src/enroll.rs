//! Edge enrollment: AttestNode and ChallengeNode (proof of key possession
//! plus a single-use enrollment token), and issuing enrollment tokens to
//! authenticated callers over gRPC and REST.
//!
//! The challenge lives in the store, so AttestNode and ChallengeNode may land
//! on different replicas. Architecture invariant: an enrollment token's `jti`
//! is redeemed only after every other check passed and the NodeSecurityToken
//! is already signed, so a refused or failed handshake never burns a token.
//!
//! An enrolled node id is re-enrolled (new key) only with a token issued for
//! it (`replace_node`, bound to the token's `jti` in the store); any other
//! token is refused with FAILED_PRECONDITION, so a token cannot silently take
//! over a node.

mod error;
mod limits;
mod rate_limit;
mod rotate;
mod service;

pub use error::EnrollError;
pub use limits::{check_edge_capabilities, check_text};
pub use rate_limit::{LimitedRpc, RateLimiter, RpcRateLimits, MAX_SOURCES, PRUNE_INTERVAL};
pub use rotate::rotation_challenge;
pub use service::{
    Challenged, EnrollmentService, IssuedEnrollment, REPLACE_NODE_FIELD, REPLACE_NODE_METADATA,
};

//! Edge enrollment: AttestNode and ChallengeNode (proof of key possession
//! plus a single-use enrollment token), and issuing enrollment tokens to
//! authenticated callers over gRPC and REST.
//!
//! The challenge lives in the store, so AttestNode and ChallengeNode may land
//! on different replicas. Architecture invariant: an enrollment token's `jti`
//! is redeemed only after every other check passed and the NodeSecurityToken
//! is already signed, so a refused or failed handshake never burns a token.

mod error;
mod limits;
mod rate_limit;
mod rotate;
mod service;

pub use error::EnrollError;
pub use limits::check_text;
pub use rate_limit::RateLimiter;
pub use rotate::rotation_challenge;
pub use service::{EnrollmentService, IssuedEnrollment};

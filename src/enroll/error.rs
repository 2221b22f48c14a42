//! Enrollment errors and their gRPC status codes and HTTP statuses.

use crate::auth::{CallerError, EnrollmentTokenError, SignError};
use crate::store::StoreError;

/// Why an enrollment step was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// A field is missing, malformed or too large.
    #[error("{0}")]
    InvalidArgument(String),
    /// This relay admits only edges.
    #[error("this relay admits only edges (NODE_ROLE_EDGE); register {0} nodes with an AEGIS controller")]
    NotAnEdge(&'static str),
    /// The proof (signature, challenge or token) did not hold.
    #[error("{0}")]
    Unauthenticated(String),
    /// The enrollment token was refused.
    #[error(transparent)]
    Token(EnrollmentTokenError),
    /// The caller could not be authenticated or authorised.
    #[error(transparent)]
    Caller(#[from] CallerError),
    /// The edge was revoked.
    #[error("this edge was revoked; enroll it again with a new token")]
    Revoked,
    /// A revoked node id tried to enroll again.
    #[error("node {0} was revoked; enroll the host from a fresh state directory (a new node id)")]
    RevokedNode(uuid::Uuid),
    /// Something named in the request does not exist in the caller's scope.
    #[error("{0}")]
    NotFound(String),
    /// The system is not in the state the request needs; the message says
    /// what to do first.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A concurrent change won; the caller may retry.
    #[error("{0}")]
    Aborted(String),
    /// Too many attempts from one source.
    #[error("rate limited: {message}")]
    RateLimited {
        /// What was refused and why.
        message: String,
        /// When a retry may pass.
        retry_after: std::time::Duration,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The signer failed.
    #[error(transparent)]
    Signer(#[from] SignError),
}

impl From<EnrollmentTokenError> for EnrollError {
    fn from(err: EnrollmentTokenError) -> Self {
        match err {
            EnrollmentTokenError::Signer(signer) => Self::Signer(signer),
            other => Self::Token(other),
        }
    }
}

impl EnrollError {
    /// The gRPC status for this error.
    pub fn to_status(&self) -> tonic::Status {
        use tonic::Code;
        let code = match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotAnEdge(_) => Code::PermissionDenied,
            Self::Unauthenticated(_) | Self::Token(_) => Code::Unauthenticated,
            Self::Caller(CallerError::Missing | CallerError::Invalid(_)) => Code::Unauthenticated,
            Self::Caller(CallerError::Forbidden(_)) => Code::PermissionDenied,
            Self::Caller(CallerError::BadRequest(_)) => Code::InvalidArgument,
            Self::RateLimited { .. } => Code::ResourceExhausted,
            Self::Revoked | Self::RevokedNode(_) => Code::PermissionDenied,
            Self::NotFound(_) => Code::NotFound,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::Aborted(_) => Code::Aborted,
            Self::Store(err) if err.is_transient() => Code::Unavailable,
            Self::Signer(SignError::Unavailable(_)) => Code::Unavailable,
            Self::Store(_) | Self::Signer(_) => Code::Internal,
        };
        if let Self::RateLimited { retry_after, .. } = self {
            return crate::grpc::retry_info::resource_exhausted(
                self.client_message(),
                *retry_after,
            );
        }
        tonic::Status::new(code, self.client_message())
    }

    /// What a client is told: store and signer failures only by kind (their
    /// text may hold database or OpenBao details, which go to the log).
    fn client_message(&self) -> String {
        match self {
            Self::Store(err) if err.is_transient() => {
                tracing::warn!(error = %err, "store unavailable");
                "the relay's store is unavailable right now; retry shortly".to_owned()
            }
            Self::Store(err) => {
                tracing::error!(error = %err, "store failed");
                "a store operation failed inside the relay; its log has the details".to_owned()
            }
            Self::Signer(SignError::Unavailable(err)) => {
                tracing::warn!(error = %err, "signer unavailable");
                "the relay's token signer is unavailable right now; retry shortly".to_owned()
            }
            Self::Signer(err) => {
                tracing::error!(error = %err, "signing failed");
                "signing a token failed inside the relay; its log has the details".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// The HTTP status and AEGIS error code for this error.
    pub fn http_status(&self) -> (u16, &'static str) {
        match self.to_status().code() {
            tonic::Code::InvalidArgument => (400, "bad_request"),
            tonic::Code::Unauthenticated => (401, "unauthorized"),
            tonic::Code::PermissionDenied => (403, "forbidden"),
            tonic::Code::NotFound => (404, "not_found"),
            tonic::Code::ResourceExhausted => (429, "rate_limited"),
            tonic::Code::Aborted | tonic::Code::FailedPrecondition => (409, "conflict"),
            tonic::Code::Unavailable => (503, "unavailable"),
            _ => (500, "internal"),
        }
    }
}

//! Authentication of a stream's first event, the Hello: the token names an
//! enrolled, unrevoked node of the token's tenant and was signed by this
//! relay (its expiry is not enforced: real daemons never refresh it,
//! protocol.md §5.3); the Hello itself is signed by the node's key on file.
//! Any failure refuses the stream before response headers, so the real
//! daemon backs off instead of reconnecting every second.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use uuid::Uuid;

use crate::auth::{NodeTokenClaims, TokenIssuer};
use crate::edge::{AcceptedKey, EventError, EventKind, Inner, StreamAuth};
use crate::proto::cluster::{edge_event, EdgeEvent, HelloEvent};
use crate::store::{EdgeCapabilities, EdgeRecord, Store, StoreError};

/// Longest stream id accepted (the daemon sends a UUID).
const MAX_STREAM_ID: usize = 128;

/// Why a Hello was refused.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    /// The stream ended before its first event.
    #[error("the stream ended before a Hello")]
    NoHello,
    /// No first event in time.
    #[error("no Hello within {0:?} of opening the stream")]
    Timeout(Duration),
    /// The first event is something else.
    #[error("the first event of a ConnectEdge stream must be a Hello, got {0}")]
    NotHello(&'static str),
    /// Malformed Hello fields.
    #[error("Hello refused: {0}")]
    Invalid(String),
    /// The token is not ours or unreadable.
    #[error("Hello refused: node_security_token {0}; enroll the edge again")]
    Token(String),
    /// Never enrolled (or enrolled in a store this relay does not use).
    #[error("Hello refused: node {0} is not enrolled here; enroll it with a fresh token")]
    UnknownNode(Uuid),
    /// Revoked.
    #[error("Hello refused: node {0} was revoked; enroll a new node with a fresh token")]
    Revoked(Uuid),
    /// Token tenant differs from the enrolled one.
    #[error("Hello refused: the token's tenant does not match node {0}'s tenant")]
    TenantMismatch(Uuid),
    /// The signature or signed fields are wrong.
    #[error("Hello refused: {0}")]
    Event(#[from] EventError),
    /// The store failed.
    #[error("cannot check the edge right now (store: {0}); retry")]
    Store(#[from] StoreError),
    /// The stream failed while reading.
    #[error("stream failed before the Hello: {0}")]
    Stream(String),
    /// The Hello is over the limit of a stream's first message.
    #[error("Hello refused: {0}")]
    TooLarge(String),
}

impl HelloError {
    /// The gRPC status the edge gets.
    pub fn to_status(&self) -> tonic::Status {
        let message = self.to_string();
        match self {
            Self::NoHello | Self::NotHello(_) | Self::Invalid(_) => {
                tonic::Status::invalid_argument(message)
            }
            Self::Timeout(_) => tonic::Status::deadline_exceeded(message),
            Self::Token(_) | Self::UnknownNode(_) | Self::Event(_) => {
                tonic::Status::unauthenticated(message)
            }
            Self::Revoked(_) | Self::TenantMismatch(_) => tonic::Status::permission_denied(message),
            // Database text stays in the log: the edge learns only to retry.
            Self::Store(err) => {
                tracing::warn!(error = %err, "store failed while checking a Hello");
                tonic::Status::unavailable(
                    "the relay could not read its store to check this Hello; reconnect shortly",
                )
            }
            Self::Stream(_) => tonic::Status::cancelled(message),
            Self::TooLarge(_) => tonic::Status::out_of_range(message),
        }
    }

    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoHello | Self::NotHello(_) | Self::Invalid(_) => "invalid",
            Self::Timeout(_) => "timeout",
            Self::Token(_) => "token",
            Self::UnknownNode(_) => "unknown_node",
            Self::Revoked(_) => "revoked",
            Self::TenantMismatch(_) => "tenant",
            Self::Event(_) => "signature",
            Self::Store(_) => "store",
            Self::Stream(_) => "stream",
            Self::TooLarge(_) => "too_large",
        }
    }
}

/// A Hello that passed every check.
#[derive(Debug)]
pub struct Authenticated {
    /// The stored edge.
    pub edge: EdgeRecord,
    /// Verification state for the rest of the stream.
    pub auth: StreamAuth,
    /// The token the Hello carried (later envelopes usually repeat it).
    pub token: String,
    /// The Hello's capabilities (tags dropped: they are server-side).
    pub capabilities: EdgeCapabilities,
}

/// What Hello authentication reads.
#[derive(Clone)]
pub struct HelloChecker {
    /// Edges, keys and tombstones.
    pub store: Arc<dyn Store>,
    /// Verifies our own tokens.
    pub tokens: Arc<TokenIssuer>,
    /// Allowed clock difference.
    pub skew: Duration,
}

impl HelloChecker {
    /// Authenticates `event` as a stream's first event.
    pub async fn check(
        &self,
        event: EdgeEvent,
        now: DateTime<Utc>,
    ) -> Result<Authenticated, HelloError> {
        let hello = match event.event {
            Some(edge_event::Event::Hello(hello)) => hello,
            Some(other) => return Err(HelloError::NotHello(variant_name(&other))),
            None => return Err(HelloError::NotHello("an empty event")),
        };
        let HelloEvent {
            envelope,
            capabilities,
            stream_id,
            ..
        } = hello;
        let envelope = envelope.ok_or_else(|| HelloError::Invalid("envelope is missing".into()))?;
        if let Some(capabilities) = &capabilities {
            crate::enroll::check_edge_capabilities("hello.capabilities", capabilities)
                .map_err(|err| HelloError::Invalid(err.to_string()))?;
        }
        if stream_id.is_empty() || stream_id.len() > MAX_STREAM_ID {
            return Err(HelloError::Invalid(format!(
                "stream_id must be 1 to {MAX_STREAM_ID} bytes"
            )));
        }
        let token = envelope.node_security_token.trim().to_owned();
        let claims: NodeTokenClaims = self
            .tokens
            .verify_own(&token)
            .await
            .map_err(HelloError::Token)?;
        if claims.role != "edge" {
            return Err(HelloError::Token(format!(
                "has role {:?}, not edge",
                claims.role
            )));
        }
        let node_id = Uuid::parse_str(&claims.sub)
            .map_err(|_| HelloError::Token("has a sub that is not a UUID".into()))?;
        let Some(edge) = self.store.get_edge(node_id).await? else {
            if self.store.tombstone(node_id).await?.is_some() {
                return Err(HelloError::Revoked(node_id));
            }
            return Err(HelloError::UnknownNode(node_id));
        };
        if edge.tenant_id != claims.tid {
            return Err(HelloError::TenantMismatch(node_id));
        }
        let keys = accepted_keys(self.store.as_ref(), &edge, now).await?;
        let mut auth = StreamAuth::new(claims.sub, stream_id, keys, self.skew);
        auth.check(Some(&envelope), EventKind::Hello, Inner::Empty, now)?;
        let mut capabilities = capabilities.map(from_wire).unwrap_or_default();
        capabilities.tags.clear();
        Ok(Authenticated {
            edge,
            auth,
            token,
            capabilities,
        })
    }
}

/// The current key and every previous key still inside its overlap.
pub async fn accepted_keys(
    store: &dyn Store,
    edge: &EdgeRecord,
    now: DateTime<Utc>,
) -> Result<Vec<AcceptedKey>, StoreError> {
    let mut keys = Vec::with_capacity(2);
    if let Some(key) = verifying_key(&edge.public_key) {
        keys.push(AcceptedKey {
            key,
            valid_until: None,
        });
    }
    for previous in store.previous_keys(edge.node_id, now).await? {
        if previous.public_key == edge.public_key {
            continue;
        }
        if let Some(key) = verifying_key(&previous.public_key) {
            keys.push(AcceptedKey {
                key,
                valid_until: Some(previous.valid_until),
            });
        }
    }
    Ok(keys)
}

/// A usable key; small-order (weak) keys are dropped, so per-event
/// verification need not check for them.
fn verifying_key(bytes: &[u8]) -> Option<VerifyingKey> {
    let array: [u8; 32] = bytes.try_into().ok()?;
    VerifyingKey::from_bytes(&array)
        .ok()
        .filter(|key| !key.is_weak())
}

/// The store's form of the wire capabilities.
pub fn from_wire(caps: crate::proto::cluster::EdgeCapabilities) -> EdgeCapabilities {
    EdgeCapabilities {
        os: caps.os,
        arch: caps.arch,
        local_tools: caps.local_tools,
        mount_points: caps.mount_points,
        custom_labels: caps.custom_labels.into_iter().collect(),
        tags: caps.tags,
    }
}

/// The event variant's name.
pub fn variant_name(event: &edge_event::Event) -> &'static str {
    match event {
        edge_event::Event::Hello(_) => "hello",
        edge_event::Event::Heartbeat(_) => "heartbeat",
        edge_event::Event::CommandResult(_) => "command_result",
        edge_event::Event::CommandProgress(_) => "command_progress",
        edge_event::Event::CapabilityUpdate(_) => "capability_update",
    }
}

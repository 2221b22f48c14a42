//! Per-stream authentication of ConnectEdge events (protocol.md §6): every
//! event's envelope must be an Ed25519 signature, by a key the edge holds on
//! file, over canonical bytes that name this node, this stream, this event's
//! kind and fields, at a time inside the skew window and not earlier than
//! the previous event's.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};

use super::canonical::{self, CanonicalError, EventKind};
use crate::proto::cluster::SealNodeEnvelope;

/// How far an event's timestamp may fall behind the newest seen on its
/// stream: the daemon signs heartbeats on their own task, so a heartbeat
/// signed just before a result can arrive just after it.
pub const REORDER_MS: i64 = 5_000;

/// A key an edge may sign with, and until when (`None`: the current key).
#[derive(Debug, Clone)]
pub struct AcceptedKey {
    /// The Ed25519 public key.
    pub key: VerifyingKey,
    /// End of its rotation overlap; `None` for the current key.
    pub valid_until: Option<DateTime<Utc>>,
}

/// What an event's inner bytes must bind.
#[derive(Debug, Clone, Copy)]
pub enum Inner<'a> {
    /// Hello and Heartbeat: nothing.
    Empty,
    /// CommandResult: the command id.
    CommandId(&'a str),
    /// CommandProgress: id, sequence, stream and chunk.
    Progress {
        /// Command id.
        command_id: &'a str,
        /// Sequence number.
        sequence: u32,
        /// Whether the chunk is stderr.
        stderr: bool,
        /// The chunk.
        chunk: &'a [u8],
    },
}

/// Why an event was refused. Messages name the check, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// No envelope on the event.
    #[error("{0} event has no envelope")]
    MissingEnvelope(&'static str),
    /// The signature is not 64 bytes or does not verify with any accepted key.
    #[error("{0} event signature does not verify with the edge's key on file")]
    BadSignature(&'static str),
    /// The signed key was a rotated-out key past its overlap.
    #[error("{0} event is signed with a rotated-out key whose overlap ended at {1}; reconnect with the new key")]
    KeyExpired(&'static str, String),
    /// Canonical bytes malformed.
    #[error("{0}")]
    Canonical(#[from] CanonicalError),
    /// Signed kind differs from the event variant.
    #[error("{variant} event carries a payload signed for a {signed} event")]
    KindMismatch {
        /// The event variant.
        variant: &'static str,
        /// The signed kind.
        signed: &'static str,
    },
    /// Signed node id differs from the stream's node.
    #[error("{0} event is signed for another node")]
    NodeMismatch(&'static str),
    /// Signed stream id differs from the Hello's.
    #[error("{0} event is signed for another stream")]
    StreamMismatch(&'static str),
    /// Inner bytes do not match the event's fields.
    #[error("{0} event's fields differ from the signed ones")]
    InnerMismatch(&'static str),
    /// Timestamp outside the skew window.
    #[error("{kind} event timestamp {timestamp_ms} ms is {off_by_ms} ms away from the relay's clock (allowed: {skew_ms} ms); fix the edge's clock")]
    Skew {
        /// Event kind.
        kind: &'static str,
        /// Signed timestamp.
        timestamp_ms: i64,
        /// Distance from now.
        off_by_ms: i64,
        /// Allowed distance.
        skew_ms: i64,
    },
    /// Timestamp well before the newest event's on the stream.
    #[error("{kind} event timestamp {timestamp_ms} ms is more than 5 s before the stream's newest {previous_ms} ms (replayed?)")]
    Backwards {
        /// Event kind.
        kind: &'static str,
        /// Signed timestamp.
        timestamp_ms: i64,
        /// The previous event's.
        previous_ms: i64,
    },
}

/// The authentication state of one stream.
#[derive(Debug, Clone)]
pub struct StreamAuth {
    node_id: String,
    stream_id: String,
    keys: Vec<AcceptedKey>,
    skew_ms: i64,
    last_timestamp_ms: i64,
}

impl StreamAuth {
    /// State for `node_id`'s stream `stream_id`, accepting `keys`.
    pub fn new(node_id: String, stream_id: String, keys: Vec<AcceptedKey>, skew: Duration) -> Self {
        Self {
            node_id,
            stream_id,
            keys,
            skew_ms: i64::try_from(skew.as_millis()).unwrap_or(i64::MAX),
            last_timestamp_ms: i64::MIN,
        }
    }

    /// The stream id from the Hello.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// The newest signed timestamp accepted on this stream (after the Hello:
    /// the Hello's own).
    pub fn last_timestamp_ms(&self) -> i64 {
        self.last_timestamp_ms
    }

    /// Replaces the accepted keys (after a rotation).
    pub fn set_keys(&mut self, keys: Vec<AcceptedKey>) {
        self.keys = keys;
    }

    /// Checks one event; on success the stream's clock advances.
    pub fn check(
        &mut self,
        envelope: Option<&SealNodeEnvelope>,
        kind: EventKind,
        inner: Inner<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), EventError> {
        let name = kind.name();
        let envelope = envelope.ok_or(EventError::MissingEnvelope(name))?;
        self.verify_signature(name, &envelope.signature, &envelope.payload, now)?;
        let signed = canonical::parse(&envelope.payload)?;
        if signed.kind != kind {
            return Err(EventError::KindMismatch {
                variant: name,
                signed: signed.kind.name(),
            });
        }
        if signed.node_id != self.node_id {
            return Err(EventError::NodeMismatch(name));
        }
        if signed.stream_id != self.stream_id {
            return Err(EventError::StreamMismatch(name));
        }
        let inner_ok = match inner {
            Inner::Empty => signed.inner.is_empty(),
            Inner::CommandId(id) => signed.inner == id.as_bytes(),
            Inner::Progress {
                command_id,
                sequence,
                stderr,
                chunk,
            } => {
                canonical::progress_inner_matches(signed.inner, command_id, sequence, stderr, chunk)
            }
        };
        if !inner_ok {
            return Err(EventError::InnerMismatch(name));
        }
        let off_by_ms = signed.timestamp_ms.saturating_sub(now.timestamp_millis());
        if off_by_ms.saturating_abs() > self.skew_ms {
            return Err(EventError::Skew {
                kind: name,
                timestamp_ms: signed.timestamp_ms,
                off_by_ms,
                skew_ms: self.skew_ms,
            });
        }
        if signed.timestamp_ms < self.last_timestamp_ms.saturating_sub(REORDER_MS) {
            return Err(EventError::Backwards {
                kind: name,
                timestamp_ms: signed.timestamp_ms,
                previous_ms: self.last_timestamp_ms,
            });
        }
        self.last_timestamp_ms = self.last_timestamp_ms.max(signed.timestamp_ms);
        Ok(())
    }

    fn verify_signature(
        &mut self,
        name: &'static str,
        signature: &[u8],
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), EventError> {
        let signature =
            Signature::from_slice(signature).map_err(|_| EventError::BadSignature(name))?;
        let position = self
            .keys
            .iter()
            // Plain (cofactorless, non-strict) verification: strict mode
            // decompresses R a second time, a sixth of a verify on every
            // event. Weak keys are refused when the keys are loaded, and
            // malleated signatures gain nothing: events are deduplicated by
            // stream and time, never by signature bytes.
            .position(|accepted| accepted.key.verify(payload, &signature).is_ok())
            .ok_or(EventError::BadSignature(name))?;
        let accepted = &self.keys[position];
        if let Some(until) = accepted.valid_until {
            if now > until {
                return Err(EventError::KeyExpired(name, until.to_rfc3339()));
            }
        }
        // The key that verified is the likeliest for the next event.
        if position != 0 {
            self.keys.swap(0, position);
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;

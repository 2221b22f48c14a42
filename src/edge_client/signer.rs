//! Building signed ConnectEdge events as the real daemon does (protocol.md
//! §6): each envelope carries the node token and an Ed25519 signature over
//! the canonical bytes. Timestamps are the caller's, so tests can forge
//! stale or replayed events.

use ed25519_dalek::{Signer as _, SigningKey};

use crate::edge::canonical::{self, EventKind};
use crate::proto::cluster::{
    edge_event, CommandProgressEvent, CommandResultEvent, EdgeCapabilities, EdgeEvent, EdgeResult,
    HeartbeatEvent, HelloEvent, SealNodeEnvelope,
};

/// Signs the events of one stream.
#[derive(Debug, Clone)]
pub struct EventSigner {
    key: SigningKey,
    token: String,
    node_id: String,
    stream_id: String,
}

impl EventSigner {
    /// A signer for `node_id`'s stream `stream_id`.
    pub fn new(key: SigningKey, token: String, node_id: String, stream_id: String) -> Self {
        Self {
            key,
            token,
            node_id,
            stream_id,
        }
    }

    /// The stream id.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// An envelope over the canonical bytes of these fields.
    pub fn envelope(&self, kind: EventKind, timestamp_ms: i64, inner: &[u8]) -> SealNodeEnvelope {
        let payload = canonical::encode(kind, timestamp_ms, &self.node_id, &self.stream_id, inner);
        SealNodeEnvelope {
            node_security_token: self.token.clone(),
            signature: self.key.sign(&payload).to_bytes().to_vec(),
            payload,
        }
    }

    /// The Hello.
    pub fn hello(&self, timestamp_ms: i64, capabilities: EdgeCapabilities) -> EdgeEvent {
        event(edge_event::Event::Hello(HelloEvent {
            envelope: Some(self.envelope(EventKind::Hello, timestamp_ms, b"")),
            capabilities: Some(capabilities),
            stream_id: self.stream_id.clone(),
            last_seen_command_id: None,
        }))
    }

    /// A heartbeat.
    pub fn heartbeat(&self, timestamp_ms: i64) -> EdgeEvent {
        event(edge_event::Event::Heartbeat(HeartbeatEvent {
            envelope: Some(self.envelope(EventKind::Heartbeat, timestamp_ms, b"")),
            active_invocations: 0,
        }))
    }

    /// A command's result.
    pub fn result(&self, timestamp_ms: i64, command_id: &str, result: EdgeResult) -> EdgeEvent {
        event(edge_event::Event::CommandResult(CommandResultEvent {
            envelope: Some(self.envelope(
                EventKind::CommandResult,
                timestamp_ms,
                command_id.as_bytes(),
            )),
            command_id: command_id.to_owned(),
            result: Some(result),
        }))
    }

    /// A chunk of a command's output.
    pub fn progress(
        &self,
        timestamp_ms: i64,
        command_id: &str,
        sequence: u32,
        stderr: bool,
        chunk: Vec<u8>,
    ) -> EdgeEvent {
        let inner = canonical::progress_inner(command_id, sequence, stderr, &chunk);
        event(edge_event::Event::CommandProgress(CommandProgressEvent {
            envelope: Some(self.envelope(EventKind::CommandProgress, timestamp_ms, &inner)),
            command_id: command_id.to_owned(),
            chunk,
            sequence,
            stderr,
        }))
    }
}

fn event(event: edge_event::Event) -> EdgeEvent {
    EdgeEvent { event: Some(event) }
}

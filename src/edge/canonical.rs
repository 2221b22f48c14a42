//! The canonical bytes an edge signs for every ConnectEdge event
//! (protocol.md §6): kind, timestamp, node id, stream id and an inner part
//! that binds the event's own fields. Encoding is for our edge client;
//! parsing is what the relay checks each event against.

/// Which event the bytes were signed for (the first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// Opens the stream.
    Hello = 1,
    /// Liveness.
    Heartbeat = 2,
    /// A command's final result.
    CommandResult = 3,
    /// One chunk of a command's output.
    CommandProgress = 4,
}

impl EventKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::Hello),
            2 => Some(Self::Heartbeat),
            3 => Some(Self::CommandResult),
            4 => Some(Self::CommandProgress),
            _ => None,
        }
    }

    /// Lowercase name for messages and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hello => "hello",
            Self::Heartbeat => "heartbeat",
            Self::CommandResult => "command_result",
            Self::CommandProgress => "command_progress",
        }
    }
}

/// The parsed canonical bytes of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedFields<'a> {
    /// Event kind.
    pub kind: EventKind,
    /// The edge's clock, Unix milliseconds.
    pub timestamp_ms: i64,
    /// The node id as signed.
    pub node_id: &'a str,
    /// The stream id as signed.
    pub stream_id: &'a str,
    /// The kind-specific inner bytes.
    pub inner: &'a [u8],
}

/// Why canonical bytes could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    /// The bytes end before a field does.
    #[error("signed payload is truncated at the {0}")]
    Truncated(&'static str),
    /// Unknown kind byte.
    #[error("signed payload has unknown event kind {0}")]
    UnknownKind(u8),
    /// A string field is not UTF-8.
    #[error("signed payload's {0} is not UTF-8")]
    NotUtf8(&'static str),
    /// Bytes follow the inner part.
    #[error("signed payload has {0} bytes after the inner part")]
    TrailingBytes(usize),
}

/// Encodes the canonical bytes (what an edge signs).
pub fn encode(
    kind: EventKind,
    timestamp_ms: i64,
    node_id: &str,
    stream_id: &str,
    inner: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(21 + node_id.len() + stream_id.len() + inner.len());
    out.push(kind as u8);
    out.extend_from_slice(&(timestamp_ms as u64).to_le_bytes());
    for part in [node_id.as_bytes(), stream_id.as_bytes(), inner] {
        out.extend_from_slice(&(part.len() as u32).to_le_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// The inner bytes of a CommandProgress event.
pub fn progress_inner(command_id: &str, sequence: u32, stderr: bool, chunk: &[u8]) -> Vec<u8> {
    let mut inner = Vec::with_capacity(command_id.len() + 5 + chunk.len());
    inner.extend_from_slice(command_id.as_bytes());
    inner.extend_from_slice(&sequence.to_le_bytes());
    inner.push(u8::from(stderr));
    inner.extend_from_slice(chunk);
    inner
}

/// Whether `inner` is the CommandProgress inner part of these fields,
/// compared in place (progress chunks can be large).
pub fn progress_inner_matches(
    inner: &[u8],
    command_id: &str,
    sequence: u32,
    stderr: bool,
    chunk: &[u8],
) -> bool {
    let id = command_id.as_bytes();
    inner.len() == id.len() + 5 + chunk.len()
        && inner.starts_with(id)
        && inner[id.len()..id.len() + 4] == sequence.to_le_bytes()
        && inner[id.len() + 4] == u8::from(stderr)
        && &inner[id.len() + 5..] == chunk
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], CanonicalError> {
        if self.bytes.len() < n {
            return Err(CanonicalError::Truncated(field));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u32(&mut self, field: &'static str) -> Result<usize, CanonicalError> {
        let raw = self.take(4, field)?;
        Ok(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize)
    }

    fn prefixed(&mut self, field: &'static str) -> Result<&'a [u8], CanonicalError> {
        let len = self.u32(field)?;
        self.take(len, field)
    }

    fn text(&mut self, field: &'static str) -> Result<&'a str, CanonicalError> {
        std::str::from_utf8(self.prefixed(field)?).map_err(|_| CanonicalError::NotUtf8(field))
    }
}

/// Parses canonical bytes.
pub fn parse(bytes: &[u8]) -> Result<SignedFields<'_>, CanonicalError> {
    let mut reader = Reader { bytes };
    let kind_byte = reader.take(1, "kind")?[0];
    let kind = EventKind::from_byte(kind_byte).ok_or(CanonicalError::UnknownKind(kind_byte))?;
    let ts = reader.take(8, "timestamp")?;
    let mut ts_bytes = [0u8; 8];
    ts_bytes.copy_from_slice(ts);
    let timestamp_ms = u64::from_le_bytes(ts_bytes) as i64;
    let node_id = reader.text("node id")?;
    let stream_id = reader.text("stream id")?;
    let inner = reader.prefixed("inner part")?;
    if !reader.bytes.is_empty() {
        return Err(CanonicalError::TrailingBytes(reader.bytes.len()));
    }
    Ok(SignedFields {
        kind,
        timestamp_ms,
        node_id,
        stream_id,
        inner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_pinned_byte_by_byte() -> Result<(), CanonicalError> {
        let bytes = encode(EventKind::CommandResult, 0x0102, "n", "st", b"c1");
        assert_eq!(
            bytes,
            [
                3, 0x02, 0x01, 0, 0, 0, 0, 0, 0, // kind, timestamp LE
                1, 0, 0, 0, b'n', // node id
                2, 0, 0, 0, b's', b't', // stream id
                2, 0, 0, 0, b'c', b'1', // inner
            ]
        );
        let parsed = parse(&bytes)?;
        assert_eq!(parsed.kind, EventKind::CommandResult);
        assert_eq!(parsed.timestamp_ms, 0x0102);
        assert_eq!((parsed.node_id, parsed.stream_id), ("n", "st"));
        assert_eq!(parsed.inner, b"c1");
        Ok(())
    }

    #[test]
    fn progress_inner_is_id_sequence_stream_chunk() {
        let inner = progress_inner("id", 7, true, b"line\n");
        assert_eq!(
            inner,
            [b'i', b'd', 7, 0, 0, 0, 1, b'l', b'i', b'n', b'e', b'\n']
        );
        assert!(progress_inner_matches(&inner, "id", 7, true, b"line\n"));
        assert!(!progress_inner_matches(&inner, "id", 7, false, b"line\n"));
        assert!(!progress_inner_matches(&inner, "id", 8, true, b"line\n"));
        assert!(!progress_inner_matches(&inner, "id", 7, true, b"lime\n"));
        assert!(!progress_inner_matches(&inner, "i", 7, true, b"line\n"));
    }

    #[test]
    fn malformed_bytes_are_refused_with_the_field() {
        let bytes = encode(EventKind::Hello, 5, "node", "stream", b"");
        for cut in 0..bytes.len() {
            assert!(
                matches!(parse(&bytes[..cut]), Err(CanonicalError::Truncated(_))),
                "cut at {cut}"
            );
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(parse(&extra), Err(CanonicalError::TrailingBytes(1)));
        let mut kind = bytes;
        kind[0] = 9;
        assert_eq!(parse(&kind), Err(CanonicalError::UnknownKind(9)));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        fn kind() -> impl Strategy<Value = EventKind> {
            prop_oneof![
                Just(EventKind::Hello),
                Just(EventKind::Heartbeat),
                Just(EventKind::CommandResult),
                Just(EventKind::CommandProgress),
            ]
        }

        type Fields = (EventKind, i64, String, String, Vec<u8>);

        fn fields() -> impl Strategy<Value = Fields> {
            (
                kind(),
                any::<i64>(),
                ".{0,12}",
                ".{0,12}",
                proptest::collection::vec(any::<u8>(), 0..32),
            )
        }

        fn encoded(f: &Fields) -> Vec<u8> {
            encode(f.0, f.1, &f.2, &f.3, &f.4)
        }

        proptest! {
            #[test]
            fn parse_inverts_encode(f in fields()) {
                let bytes = encoded(&f);
                let parsed = parse(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(parsed.kind, f.0);
                prop_assert_eq!(parsed.timestamp_ms, f.1);
                prop_assert_eq!(parsed.node_id, f.2.as_str());
                prop_assert_eq!(parsed.stream_id, f.3.as_str());
                prop_assert_eq!(parsed.inner, f.4.as_slice());
            }

            #[test]
            fn distinct_fields_never_share_bytes(a in fields(), b in fields()) {
                prop_assume!(a != b);
                prop_assert_ne!(encoded(&a), encoded(&b));
            }

            /// The attack a length prefix prevents: the same characters
            /// split differently between node id, stream id and inner part.
            #[test]
            fn moving_a_boundary_changes_the_bytes(
                text in "[a-z0-9-]{1,24}",
                cut1 in any::<prop::sample::Index>(),
                cut2 in any::<prop::sample::Index>(),
            ) {
                let (x, y) = (cut1.index(text.len() + 1), cut2.index(text.len() + 1));
                prop_assume!(x != y);
                let split = |at: usize| {
                    let (node, rest) = text.split_at(at.min(text.len()));
                    encode(EventKind::Heartbeat, 1, node, rest, b"")
                };
                prop_assert_ne!(split(x), split(y));
            }

            /// Any bytes: parsing never panics, and what parses is the one
            /// encoding of its fields (no two byte strings verify as one event).
            #[test]
            fn parsed_bytes_are_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
                if let Ok(parsed) = parse(&bytes) {
                    let again = encode(
                        parsed.kind,
                        parsed.timestamp_ms,
                        parsed.node_id,
                        parsed.stream_id,
                        parsed.inner,
                    );
                    prop_assert_eq!(again, bytes);
                }
            }
        }
    }
}

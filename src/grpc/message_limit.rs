//! Per-message decode limits of NodeClusterService, applied to the request
//! body as its gRPC frames pass, before tonic buffers a message.
//!
//! tonic's own limit is one number per service; the relay needs two: 64 KiB
//! for everything an unauthenticated peer sends (the unary RPCs and a
//! ConnectEdge stream's Hello), and `relay.edges.max_message_bytes` for the
//! events of a stream whose Hello passed. A frame over its limit fails the
//! body at its 5-byte prefix, before its payload is read, with the status
//! tonic's limit gives (OUT_OF_RANGE, the size and the limit).

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tonic::Status;

/// Limit of every unary request and of a stream's first message.
pub const UNAUTHENTICATED_MESSAGE_BYTES: usize = 64 * 1024;

/// gRPC length prefix: compressed flag and a big-endian u32 length.
const PREFIX: usize = 5;

/// The limits of one call's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// Limit of the first message.
    pub first: usize,
    /// Limit of every later one.
    pub rest: usize,
}

impl MessageLimits {
    /// The status of a message of `len` bytes over `limit`.
    pub fn too_large(len: u64, limit: usize) -> Status {
        Status::out_of_range(format!(
            "Error, decoded message length too large: found {len} bytes, the limit is: {limit} bytes"
        ))
    }
}

pin_project! {
    /// A request body whose gRPC messages are checked against [`MessageLimits`].
    pub struct LimitedBody<B> {
        #[pin]
        inner: B,
        limits: MessageLimits,
        messages: u64,
        prefix: [u8; PREFIX],
        prefix_have: usize,
        payload_left: u64,
        failed: bool,
    }
}

impl<B> LimitedBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, limits: MessageLimits) -> Self {
        Self {
            inner,
            limits,
            messages: 0,
            prefix: [0; PREFIX],
            prefix_have: 0,
            payload_left: 0,
            failed: false,
        }
    }
}

/// Walks `data` through the framing state; `Err` at the first prefix over
/// its limit.
fn scan(
    mut data: &[u8],
    limits: MessageLimits,
    messages: &mut u64,
    prefix: &mut [u8; PREFIX],
    prefix_have: &mut usize,
    payload_left: &mut u64,
) -> Result<(), Status> {
    while !data.is_empty() {
        if *payload_left > 0 {
            let skip = usize::try_from(*payload_left)
                .unwrap_or(usize::MAX)
                .min(data.len());
            data = &data[skip..];
            *payload_left -= skip as u64;
            continue;
        }
        let take = (PREFIX - *prefix_have).min(data.len());
        prefix[*prefix_have..*prefix_have + take].copy_from_slice(&data[..take]);
        *prefix_have += take;
        data = &data[take..];
        if *prefix_have == PREFIX {
            let len = u64::from(u32::from_be_bytes([
                prefix[1], prefix[2], prefix[3], prefix[4],
            ]));
            let limit = if *messages == 0 {
                limits.first
            } else {
                limits.rest
            };
            if len > limit as u64 {
                return Err(MessageLimits::too_large(len, limit));
            }
            *messages += 1;
            *prefix_have = 0;
            *payload_left = len;
        }
    }
    Ok(())
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        match this.inner.poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(err.into()))),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if let Err(status) = scan(
                        &data[..],
                        *this.limits,
                        this.messages,
                        this.prefix,
                        this.prefix_have,
                        this.payload_left,
                    ) {
                        *this.failed = true;
                        return Poll::Ready(Some(Err(Box::new(status))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]], limits: MessageLimits) -> Result<u64, Status> {
        let (mut messages, mut prefix, mut have, mut left) = (0, [0; PREFIX], 0, 0);
        for chunk in chunks {
            scan(
                chunk,
                limits,
                &mut messages,
                &mut prefix,
                &mut have,
                &mut left,
            )?;
        }
        Ok(messages)
    }

    fn message(len: u32) -> Vec<u8> {
        let mut bytes = vec![0];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend(std::iter::repeat_n(7, len as usize));
        bytes
    }

    const LIMITS: MessageLimits = MessageLimits {
        first: 10,
        rest: 100,
    };

    #[test]
    fn first_message_has_its_own_limit() {
        let mut stream = message(10);
        stream.extend(message(100));
        stream.extend(message(0));
        assert_eq!(run(&[&stream], LIMITS).ok(), Some(3));
        let over = run(&[&message(11)], LIMITS).err();
        assert_eq!(
            over.as_ref().map(Status::code),
            Some(tonic::Code::OutOfRange)
        );
        assert!(over.is_some_and(|s| s
            .message()
            .contains("found 11 bytes, the limit is: 10 bytes")));
    }

    #[test]
    fn prefix_split_across_chunks_is_checked_before_the_payload() {
        let mut stream = message(3);
        stream.extend_from_slice(&[0, 0, 0, 1, 0]); // declares 256 bytes
        let (head, tail) = stream.split_at(10);
        assert!(run(&[head], LIMITS).is_ok());
        let refused = run(&[head, tail], LIMITS).err();
        assert!(refused.is_some_and(|s| s.message().contains("found 256 bytes")));
        let bytewise = message(101);
        let bytewise: Vec<&[u8]> = bytewise.chunks(1).collect();
        assert_eq!(
            run(
                &bytewise,
                MessageLimits {
                    first: 200,
                    rest: 1
                }
            )
            .ok(),
            Some(1)
        );
    }

    #[test]
    fn declared_sixteen_mebibytes_is_refused_at_the_prefix() {
        let prefix = [0, 1, 0, 0, 0];
        let refused = run(
            &[&prefix],
            MessageLimits {
                first: UNAUTHENTICATED_MESSAGE_BYTES,
                rest: 1 << 24,
            },
        )
        .err();
        assert!(refused.is_some_and(|s| s.message().contains("16777216")));
    }
}

//! Baseline (a): raw tonic bidi echo. One long-lived stream; the server
//! answers each message with itself (its response stream is the request
//! stream), so a round trip is the gRPC floor with no application work.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::wire::{self, Frame, RawServer, ECHO};
use crate::{BoxError, CALL_TIMEOUT};

/// A connected echo stream.
pub struct EchoBaseline {
    _server: RawServer,
    requests: mpsc::Sender<Frame>,
    replies: Streaming<Frame>,
    next: u64,
}

impl EchoBaseline {
    /// Starts the server and opens the stream.
    pub async fn start() -> Result<Self, BoxError> {
        let server = RawServer::start(|request| {
            Box::pin(async move {
                if request.uri().path() != ECHO {
                    return wire::unimplemented(request.uri().path());
                }
                let echo = tower::service_fn(|call: tonic::Request<Streaming<Frame>>| async move {
                    Ok::<_, tonic::Status>(tonic::Response::new(call.into_inner()))
                });
                tonic::server::Grpc::new(wire::codec())
                    .streaming(echo, request)
                    .await
            })
        })
        .await?;
        let mut client = tonic::client::Grpc::new(server.channel().await?);
        client.ready().await?;
        let (requests, outbound) = mpsc::channel(16);
        let replies = client
            .streaming(
                tonic::Request::new(ReceiverStream::new(outbound)),
                wire::path(ECHO),
                wire::codec(),
            )
            .await?
            .into_inner();
        Ok(Self {
            _server: server,
            requests,
            replies,
            next: 0,
        })
    }

    /// One message there and back.
    pub async fn round_trip(&mut self) -> Result<Duration, BoxError> {
        self.next += 1;
        let started = Instant::now();
        self.requests
            .send(wire::request(self.next))
            .await
            .map_err(|_| "echo stream closed")?;
        let reply = tokio::time::timeout(CALL_TIMEOUT, self.replies.message())
            .await??
            .ok_or("echo stream ended")?;
        let elapsed = started.elapsed();
        if reply.id != self.next {
            return Err(format!("echo answered {} for {}", reply.id, self.next).into());
        }
        Ok(elapsed)
    }
}

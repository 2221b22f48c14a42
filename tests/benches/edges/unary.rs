//! Baseline for throughput: raw tonic unary echo, the same concurrency
//! spread over a few HTTP/2 connections.

use tonic::client::Grpc;
use tonic::transport::Channel;

use crate::wire::{self, Frame, RawServer, UNARY};
use crate::{BoxError, CALL_TIMEOUT};

/// A unary echo server and clients on `connections` connections.
pub struct UnaryBaseline {
    _server: RawServer,
    clients: Vec<Grpc<Channel>>,
}

impl UnaryBaseline {
    /// Starts the server and dials it `connections` times.
    pub async fn start(connections: usize) -> Result<Self, BoxError> {
        let server = RawServer::start(|request| {
            Box::pin(async move {
                if request.uri().path() != UNARY {
                    return wire::unimplemented(request.uri().path());
                }
                let echo = tower::service_fn(|call: tonic::Request<Frame>| async move {
                    Ok::<_, tonic::Status>(tonic::Response::new(call.into_inner()))
                });
                tonic::server::Grpc::new(wire::codec())
                    .unary(echo, request)
                    .await
            })
        })
        .await?;
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            clients.push(Grpc::new(server.channel().await?));
        }
        Ok(Self {
            _server: server,
            clients,
        })
    }

    /// The client worker `worker` uses.
    pub fn client(&self, worker: usize) -> Grpc<Channel> {
        self.clients[worker % self.clients.len()].clone()
    }
}

/// One unary echo on `client`.
pub async fn call(mut client: Grpc<Channel>, id: u64) -> Result<(), BoxError> {
    client.ready().await?;
    let reply = tokio::time::timeout(
        CALL_TIMEOUT,
        client.unary(
            tonic::Request::new(wire::request(id)),
            wire::path(UNARY),
            wire::codec(),
        ),
    )
    .await??
    .into_inner();
    if reply.id != id {
        return Err(format!("unary echo answered {} for {id}", reply.id).into());
    }
    Ok(())
}

//! The raw tonic plumbing the baselines share: one prost message, a server
//! that routes by path to a handler closure (no generated code), and client
//! calls through `tonic::client::Grpc` with `tonic_prost::ProstCodec`.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use aegis_relay::runtime::Runtime;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

use crate::BoxError;

/// The gRPC service name of every baseline server.
const SERVICE: &str = "bench.Raw";

/// Bytes of payload in each baseline request (about a relay command's size).
pub const BODY_BYTES: usize = 200;

/// The one message every baseline sends.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Frame {
    /// Routes a reply to its waiting caller.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Opaque request or echo bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub body: Vec<u8>,
    /// Canonical bytes an edge signed.
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
    /// Ed25519 signature over `payload`.
    #[prost(bytes = "vec", tag = "4")]
    pub signature: Vec<u8>,
    /// Edge identity (hello only).
    #[prost(string, tag = "5")]
    pub node_id: String,
    /// Stream identity (hello only).
    #[prost(string, tag = "6")]
    pub stream_id: String,
    /// Edge public key (hello only).
    #[prost(bytes = "vec", tag = "7")]
    pub key: Vec<u8>,
}

/// A request frame carrying [`BODY_BYTES`] bytes.
pub fn request(id: u64) -> Frame {
    Frame {
        id,
        body: vec![b'x'; BODY_BYTES],
        ..Frame::default()
    }
}

/// The codec both sides use.
pub fn codec() -> ProstCodec<Frame, Frame> {
    ProstCodec::default()
}

/// `/bench.Raw/{method}`.
pub fn path(method: &'static str) -> http::uri::PathAndQuery {
    http::uri::PathAndQuery::from_static(method)
}

/// Paths of the methods (static strings, as `PathAndQuery` wants).
pub const ECHO: &str = "/bench.Raw/Echo";
pub const UNARY: &str = "/bench.Raw/Unary";
pub const CONNECT: &str = "/bench.Raw/Connect";
pub const CALL: &str = "/bench.Raw/Call";
pub const FANOUT: &str = "/bench.Raw/Fanout";

type Handler =
    Arc<dyn Fn(http::Request<Body>) -> BoxFuture<'static, http::Response<Body>> + Send + Sync>;

/// A tonic service whose every request goes to one handler.
#[derive(Clone)]
struct RawService(Handler);

impl tonic::server::NamedService for RawService {
    const NAME: &'static str = SERVICE;
}

impl tower::Service<http::Request<Body>> for RawService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let response = (self.0)(request);
        Box::pin(async move { Ok(response.await) })
    }
}

/// The answer to a path no baseline serves.
pub fn unimplemented(path: &str) -> http::Response<Body> {
    tonic::Status::unimplemented(format!("no method {path}")).into_http()
}

/// A baseline server on 127.0.0.1 (ephemeral port, accepted through the
/// relay's own network seam, so TCP_NODELAY as the relay) until the token is cancelled.
pub struct RawServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl RawServer {
    /// Serves `handler`.
    pub async fn start<F>(handler: F) -> Result<Self, BoxError>
    where
        F: Fn(http::Request<Body>) -> BoxFuture<'static, http::Response<Body>>
            + Send
            + Sync
            + 'static,
    {
        let listener = Runtime::real()
            .net
            .bind_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await?;
        let addr = listener.local_addr();
        let stop = CancellationToken::new();
        let router = tonic::transport::Server::builder()
            .max_concurrent_streams(Some(10_000))
            .add_service(RawService(Arc::new(handler)));
        tokio::spawn(router.serve_with_incoming_shutdown(
            aegis_relay::net::incoming(listener),
            stop.clone().cancelled_owned(),
        ));
        Ok(Self { addr, stop })
    }

    /// A fresh connection to the server.
    pub async fn channel(&self) -> Result<Channel, BoxError> {
        Ok(Endpoint::from_shared(format!("http://{}", self.addr))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

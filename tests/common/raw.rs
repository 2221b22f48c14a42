//! Raw clients for limit tests: HTTP/2 gRPC calls whose body the test feeds
//! by hand (declared sizes, slow bytes), and plain TCP connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use aegis_relay::net::{Connection, Network, TokioNetwork};
use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::enroll::BoxError;

/// A request body fed through a channel.
pub type FedBody = StreamBody<ReceiverStream<Result<Frame<Bytes>, Infallible>>>;
/// What feeds a [`FedBody`].
pub type Feeder = mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

/// An HTTP/2 connection to `addr`.
pub async fn h2(
    addr: SocketAddr,
) -> Result<hyper::client::conn::http2::SendRequest<FedBody>, BoxError> {
    let tcp = TokioNetwork.connect_tcp(addr).await?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// A gRPC call of `method` whose body the returned sender feeds.
pub fn grpc_call(
    addr: SocketAddr,
    method: &str,
) -> Result<(hyper::Request<FedBody>, Feeder), BoxError> {
    let (tx, rx) = mpsc::channel(16);
    let request = hyper::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{addr}/aegis.cluster.v1.NodeClusterService/{method}"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(StreamBody::new(ReceiverStream::new(rx)))?;
    Ok((request, tx))
}

/// The gRPC length prefix declaring a message of `len` bytes.
pub fn prefix(len: u32) -> Bytes {
    let mut bytes = vec![0u8];
    bytes.extend_from_slice(&len.to_be_bytes());
    Bytes::from(bytes)
}

/// The grpc-status and grpc-message of a response, from its headers
/// (trailers-only) or its trailers.
pub async fn grpc_outcome(
    response: hyper::Response<hyper::body::Incoming>,
) -> Result<(String, String), BoxError> {
    use http_body_util::BodyExt;
    let header = |map: &http::HeaderMap, name: &str| {
        map.get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(status) = header(response.headers(), "grpc-status") {
        let message = header(response.headers(), "grpc-message").unwrap_or_default();
        return Ok((status, decode(&message)));
    }
    let collected =
        tokio::time::timeout(Duration::from_secs(30), response.into_body().collect()).await??;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    Ok((
        header(&trailers, "grpc-status").unwrap_or_default(),
        decode(&header(&trailers, "grpc-message").unwrap_or_default()),
    ))
}

fn decode(message: &str) -> String {
    percent_decode(message)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(value) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(value);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A plain TCP connection to `addr`.
pub async fn tcp(addr: SocketAddr) -> Result<Connection, BoxError> {
    Ok(TokioNetwork.connect_tcp(addr).await?)
}

/// Waits until the peer closes `connection` (EOF or reset), up to
/// `deadline`; true if it did.
pub async fn closed_within(connection: &mut Connection, deadline: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let until = tokio::time::Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(until, connection.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

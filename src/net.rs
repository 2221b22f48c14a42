//! The network seam: every listener and outbound connection of the relay is
//! made through a [`Network`], so the deterministic simulator can run the
//! same servers on simulated TCP (turmoil) that production runs on tokio.
//!
//! Architecture invariant: no module outside this one calls
//! `tokio::net::TcpListener::bind`, `TcpStream::connect` or
//! `UdpSocket::bind` directly; outbound gRPC channels dial through
//! [`grpc_channel`], so peer calls run on the same seam.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A boxed, sendable future (object-safe async in the seam traits).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Byte stream of one connection.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Binds listeners and opens connections.
pub trait Network: Send + Sync + 'static {
    /// Binds a TCP listener.
    fn bind_tcp(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>>;
    /// Opens a TCP connection.
    fn connect_tcp(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Connection>>;
    /// Binds a UDP socket (gossip).
    fn bind_udp(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn UdpSocket>>>;
}

/// A bound UDP socket. Both directions take `&self`, so one task may send
/// while another receives.
pub trait UdpSocket: Send + Sync + 'static {
    /// Sends one datagram to `to`.
    fn send_to<'a>(&'a self, buf: &'a [u8], to: SocketAddr) -> BoxFuture<'a, io::Result<usize>>;
    /// Waits for one datagram; returns its length and sender.
    fn recv_from<'a>(&'a self, buf: &'a mut [u8])
        -> BoxFuture<'a, io::Result<(usize, SocketAddr)>>;
    /// The address actually bound.
    fn local_addr(&self) -> SocketAddr;
}

/// A bound TCP listener.
pub trait Listener: Send + 'static {
    /// Waits for the next connection.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>>;
    /// The address actually bound (the real port when asked for port 0).
    fn local_addr(&self) -> SocketAddr;
}

/// One accepted or opened connection with its addresses.
pub struct Connection {
    io: Box<dyn Io>,
    local: SocketAddr,
    remote: SocketAddr,
    kill: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl Connection {
    /// Wraps a byte stream.
    pub fn new(io: impl Io, local: SocketAddr, remote: SocketAddr) -> Self {
        Self {
            io: Box::new(io),
            local,
            remote,
            kill: None,
        }
    }

    /// Makes every read and write fail once `token` is cancelled, which ends
    /// the server's per-connection task even if a stream on it never finishes.
    pub fn with_kill_switch(mut self, token: CancellationToken) -> Self {
        self.kill = Some(Box::pin(token.cancelled_owned()));
        self
    }

    fn poll_killed(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let kill = self.kill.as_mut()?;
        kill.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the replica stopped this connection",
            )
        })
    }

    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// This side's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(err) = self.poll_killed(cx) {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut *self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(err) = self.poll_killed(cx) {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut *self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(err) = self.poll_killed(cx) {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut *self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(err) = self.poll_killed(cx) {
            return Poll::Ready(Err(err));
        }
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: Some(self.local),
            remote_addr: Some(self.remote),
        }
    }
}

/// Real sockets. Sets TCP_NODELAY on every connection: edge commands and
/// results are small and latency-bound.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioNetwork;

struct TokioListener {
    inner: tokio::net::TcpListener,
    local: SocketAddr,
}

struct TokioUdp {
    inner: tokio::net::UdpSocket,
    local: SocketAddr,
}

impl UdpSocket for TokioUdp {
    fn send_to<'a>(&'a self, buf: &'a [u8], to: SocketAddr) -> BoxFuture<'a, io::Result<usize>> {
        Box::pin(self.inner.send_to(buf, to))
    }

    fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> BoxFuture<'a, io::Result<(usize, SocketAddr)>> {
        Box::pin(self.inner.recv_from(buf))
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

// The one place real sockets are made.
#[allow(clippy::disallowed_methods)]
impl Network for TokioNetwork {
    fn bind_tcp(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let inner = tokio::net::TcpListener::bind(addr).await?;
            let local = inner.local_addr()?;
            Ok(Box::new(TokioListener { inner, local }) as Box<dyn Listener>)
        })
    }

    fn connect_tcp(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let local = stream.local_addr()?;
            Ok(Connection::new(stream, local, addr))
        })
    }

    fn bind_udp(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn UdpSocket>>> {
        Box::pin(async move {
            let inner = tokio::net::UdpSocket::bind(addr).await?;
            let local = inner.local_addr()?;
            Ok(Box::new(TokioUdp { inner, local }) as Box<dyn UdpSocket>)
        })
    }
}

/// A lazily connecting gRPC channel to `addr` whose connections are opened
/// through `net` (so peer calls run on simulated TCP under the simulator).
/// Each connection attempt is bounded by `connect_timeout`.
pub fn grpc_channel(
    net: Arc<dyn Network>,
    addr: SocketAddr,
    connect_timeout: Duration,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(connect_timeout);
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_uri: http::Uri| {
            let net = Arc::clone(&net);
            async move {
                let connection = tokio::time::timeout(connect_timeout, net.connect_tcp(addr))
                    .await
                    .map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("connecting to {addr} timed out after {connect_timeout:?}"),
                        )
                    })??;
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(connection))
            }
        })),
    )
}

impl Listener for TokioListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            let (stream, remote) = self.inner.accept().await?;
            stream.set_nodelay(true)?;
            Ok(Connection::new(stream, self.local, remote))
        })
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// A listener whose connections all fail once `kill` is cancelled (see
/// [`Connection::with_kill_switch`]).
pub fn with_kill_switch(listener: Box<dyn Listener>, kill: CancellationToken) -> Box<dyn Listener> {
    Box::new(KillSwitchListener {
        inner: listener,
        kill,
    })
}

struct KillSwitchListener {
    inner: Box<dyn Listener>,
    kill: CancellationToken,
}

impl Listener for KillSwitchListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            let connection = self.inner.accept().await?;
            Ok(connection.with_kill_switch(self.kill.clone()))
        })
    }

    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }
}

/// Pause after a failed accept (e.g. out of file descriptors) so a persistent
/// error does not spin a core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections forever, logging and riding out accept errors, as the
/// stream of connections a server consumes.
pub fn incoming(listener: Box<dyn Listener>) -> impl Stream<Item = io::Result<Connection>> {
    futures::stream::unfold(listener, |mut listener| async move {
        loop {
            match listener.accept().await {
                Ok(connection) => return Some((Ok(connection), listener)),
                Err(err) => {
                    tracing::warn!(local = %listener.local_addr(), error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
    })
}

/// Adapts a seam listener to `axum::serve`.
pub struct AxumListener(pub Box<dyn Listener>);

impl axum::serve::Listener for AxumListener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Connection, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok(connection) => {
                    let remote = connection.remote_addr();
                    return (connection, remote);
                }
                Err(err) => {
                    tracing::warn!(local = %self.0.local_addr(), error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.0.local_addr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn udp_sockets_of_the_seam_exchange_datagrams() -> io::Result<()> {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let a = TokioNetwork.bind_udp(loopback).await?;
        let b = TokioNetwork.bind_udp(loopback).await?;
        assert_ne!(a.local_addr().port(), 0);
        a.send_to(b"ping", b.local_addr()).await?;
        let mut buf = [0u8; 16];
        let (len, from) =
            tokio::time::timeout(Duration::from_secs(5), b.recv_from(&mut buf)).await??;
        assert_eq!(&buf[..len], b"ping");
        assert_eq!(from, a.local_addr());
        Ok(())
    }

    /// A network whose connections never complete.
    struct Blackhole;

    impl Network for Blackhole {
        fn bind_tcp(&self, _: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
            Box::pin(std::future::pending())
        }
        fn connect_tcp(&self, _: SocketAddr) -> BoxFuture<'_, io::Result<Connection>> {
            Box::pin(std::future::pending())
        }
        fn bind_udp(&self, _: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn UdpSocket>>> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test]
    async fn grpc_channel_dials_through_the_seam_with_a_connect_timeout(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        let channel = grpc_channel(Arc::new(Blackhole), addr, Duration::from_millis(200))?;
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let started = tokio::time::Instant::now();
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            client.check(tonic_health::pb::HealthCheckRequest::default()),
        )
        .await?;
        assert!(result.is_err(), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        Ok(())
    }
}

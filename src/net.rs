//! The network seam: every listener and outbound connection of the relay is
//! made through a [`Network`], so the deterministic simulator can run the
//! same servers on simulated TCP (turmoil) that production runs on tokio.
//!
//! Architecture invariant: no module outside this one calls
//! `tokio::net::TcpListener::bind` or `TcpStream::connect` directly.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
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

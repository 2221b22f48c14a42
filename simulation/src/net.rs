//! turmoil's simulated TCP and UDP behind the relay's network seam, and a
//! gRPC channel that dials through it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aegis_relay::net::{BoxFuture, Connection, Listener, Network, UdpSocket};
use tonic::transport::Channel;

/// Simulated sockets of the current turmoil host.
#[derive(Debug, Clone, Copy, Default)]
pub struct TurmoilNetwork;

struct TurmoilListener {
    inner: turmoil::net::TcpListener,
    local: SocketAddr,
}

impl Network for TurmoilNetwork {
    fn bind_tcp(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let inner = turmoil::net::TcpListener::bind(addr).await?;
            let local = inner.local_addr()?;
            Ok(Box::new(TurmoilListener { inner, local }) as Box<dyn Listener>)
        })
    }

    fn connect_tcp(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(addr).await?;
            let local = stream.local_addr()?;
            Ok(Connection::new(stream, local, addr))
        })
    }

    fn bind_udp(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Box<dyn UdpSocket>>> {
        Box::pin(async move {
            let inner = turmoil::net::UdpSocket::bind(addr).await?;
            let local = inner.local_addr()?;
            Ok(Box::new(TurmoilUdp { inner, local }) as Box<dyn UdpSocket>)
        })
    }
}

struct TurmoilUdp {
    inner: turmoil::net::UdpSocket,
    local: SocketAddr,
}

impl UdpSocket for TurmoilUdp {
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

impl Listener for TurmoilListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            let (stream, remote) = self.inner.accept().await?;
            Ok(Connection::new(stream, self.local, remote))
        })
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// How long a simulated gRPC connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A lazily connecting gRPC channel to `host:port` over simulated TCP: the
/// relay's own [`aegis_relay::net::grpc_channel`] on the turmoil seam.
pub fn grpc_channel(host: &str, port: u16) -> Result<Channel, tonic::transport::Error> {
    let addr = SocketAddr::new(turmoil::lookup(host), port);
    aegis_relay::net::grpc_channel(Arc::new(TurmoilNetwork), addr, CONNECT_TIMEOUT)
}

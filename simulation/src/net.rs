//! turmoil's simulated TCP behind the relay's network seam, and a gRPC
//! channel that dials through it.

use std::io;
use std::net::SocketAddr;

use aegis_relay::net::{BoxFuture, Connection, Listener, Network};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

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

/// A lazily connecting gRPC channel to `host:port` over simulated TCP.
pub fn grpc_channel(host: &str, port: u16) -> Result<Channel, tonic::transport::Error> {
    let endpoint = Endpoint::try_from(format!("http://{host}:{port}"))?;
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(|uri: Uri| async move {
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URI without host"))?
                .to_owned();
            let port = uri.port_u16().unwrap_or(80);
            let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
            Ok::<_, io::Error>(TokioIo::new(stream))
        })),
    )
}

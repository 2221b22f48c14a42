//! Admission of connections on both ports, before any request is read: a
//! cap on connections held by the replica and per source, and a deadline
//! for a new connection's first headers (HTTP/1) or preface (HTTP/2), so an
//! unauthenticated peer cannot pin sockets, memory or tasks by connecting
//! and then trickling bytes.
//!
//! A refused connection is closed at once and counted
//! (`aegis_relay_connections_refused_total{reason}`).

mod header_scan;

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use header_scan::HeaderScan;

use crate::net::{BoxFuture, Connection, Listener};
use crate::telemetry::Metrics;

/// The unit a per-source rule counts: an IPv4 address, or the /64 of an IPv6
/// address (one subscriber usually holds a whole /64). IPv4-mapped IPv6
/// addresses count as their IPv4 address.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & (u128::MAX << 64);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// The caps, from `relay.limits` and `relay.attest_rate_limit.trusted_proxies`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// Connections held across both ports.
    pub max_connections: usize,
    /// Connections per source; 0 = no cap.
    pub max_connections_per_source: usize,
    /// Peers never capped per source (they carry many clients).
    pub trusted_proxies: Vec<IpAddr>,
    /// Deadline of a new connection's first request head.
    pub header_read_timeout: Duration,
    /// Longest a write may wait for the peer to read.
    pub write_stall_timeout: Duration,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// Counts connections held by one replica (both ports share one gate).
#[derive(Debug)]
pub struct ConnectionGate {
    settings: AdmissionSettings,
    held: Mutex<Held>,
    metrics: Metrics,
}

/// Why a connection was refused (the metric's `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The replica holds `max_connections`.
    Total,
    /// The source holds `max_connections_per_source`.
    PerSource,
}

impl Refusal {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Total => "max_connections",
            Self::PerSource => "max_connections_per_source",
        }
    }
}

/// One admitted connection's place; dropping it frees the place.
#[derive(Debug)]
pub struct Admission {
    gate: Arc<ConnectionGate>,
    source: Option<IpAddr>,
}

impl ConnectionGate {
    /// A gate with nothing held.
    pub fn new(settings: AdmissionSettings, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            settings,
            held: Mutex::new(Held::default()),
            metrics,
        })
    }

    /// The settings in force.
    pub fn settings(&self) -> &AdmissionSettings {
        &self.settings
    }

    /// Takes a place for a connection from `peer`.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Admission, Refusal> {
        let per_source_cap = self.settings.max_connections_per_source;
        let source = (per_source_cap > 0 && !self.settings.trusted_proxies.contains(&peer))
            .then(|| source_key(peer));
        let total = {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            if held.total >= self.settings.max_connections {
                return Err(Refusal::Total);
            }
            if let Some(source) = source {
                let count = held.per_source.entry(source).or_default();
                if *count >= per_source_cap {
                    return Err(Refusal::PerSource);
                }
                *count += 1;
            }
            held.total += 1;
            held.total
        };
        self.metrics.connections_open(total);
        Ok(Admission {
            gate: Arc::clone(self),
            source,
        })
    }

    /// Connections held now.
    pub fn held(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let total = {
            let mut held = self
                .gate
                .held
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            held.total = held.total.saturating_sub(1);
            if let Some(source) = self.source {
                if let Some(count) = held.per_source.get_mut(&source) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        held.per_source.remove(&source);
                    }
                }
            }
            held.total
        };
        self.gate.metrics.connections_open(total);
    }
}

/// A listener whose connections pass the gate (refused ones are closed
/// before they reach the server) and carry a header deadline.
pub fn gated(listener: Box<dyn Listener>, gate: Arc<ConnectionGate>) -> Box<dyn Listener> {
    Box::new(GatedListener {
        inner: listener,
        gate,
    })
}

struct GatedListener {
    inner: Box<dyn Listener>,
    gate: Arc<ConnectionGate>,
}

impl Listener for GatedListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<Connection>> {
        Box::pin(async move {
            loop {
                let connection = self.inner.accept().await?;
                let (local, remote) = (connection.local_addr(), connection.remote_addr());
                match self.gate.admit(remote.ip()) {
                    Ok(admission) => {
                        let settings = &self.gate.settings;
                        let guarded = Guarded::new(
                            connection,
                            admission,
                            settings.header_read_timeout,
                            settings.write_stall_timeout,
                        );
                        return Ok(Connection::new(guarded, local, remote));
                    }
                    Err(refusal) => {
                        self.gate.metrics.connection_refused(refusal.reason());
                        tracing::debug!(peer = %remote, reason = refusal.reason(), "connection refused");
                        drop(connection);
                    }
                }
            }
        })
    }

    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }
}

/// The deadline of a connection's first request head.
struct HeadDeadline {
    scan: HeaderScan,
    sleep: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

/// An admitted connection: holds its place in the gate, fails its reads
/// once the header deadline passes without a complete first head, and
/// fails its writes once one has waited `write_stall` for the peer to read
/// (a peer that stopped reading would otherwise hold the connection, its
/// buffers and its task for as long as it likes).
pub struct Guarded {
    inner: Connection,
    admission: Admission,
    head: Option<HeadDeadline>,
    timed_out: bool,
    write_stall: Duration,
    /// Running while a write waits for room.
    write_wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Guarded {
    fn new(
        inner: Connection,
        admission: Admission,
        timeout: Duration,
        write_stall: Duration,
    ) -> Self {
        Self {
            inner,
            admission,
            head: Some(HeadDeadline {
                scan: HeaderScan::default(),
                sleep: Box::pin(tokio::time::sleep(timeout)),
                timeout,
            }),
            timed_out: false,
            write_stall,
            write_wait: None,
        }
    }

    /// Passes `polled` through, starting the stall timer on `Pending` and
    /// failing the write once it ran out.
    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.write_wait = None;
            return polled;
        }
        let stall = self.write_stall;
        let wait = self
            .write_wait
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        if wait.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.write_wait = None;
        self.admission
            .gate
            .metrics
            .connection_refused("write_stall_timeout");
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the peer read nothing for {} (relay.limits.write_stall_timeout)",
                humantime::format_duration(stall)
            ),
        )))
    }

    fn timeout_error(timeout: Duration) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no complete request headers within {} (relay.limits.header_read_timeout)",
                humantime::format_duration(timeout)
            ),
        )
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.timed_out {
            return Poll::Ready(Err(io::Error::from(io::ErrorKind::TimedOut)));
        }
        if let Some(head) = this.head.as_mut() {
            if head.sleep.as_mut().poll(cx).is_ready() {
                let timeout = head.timeout;
                this.head = None;
                this.timed_out = true;
                this.admission
                    .gate
                    .metrics
                    .connection_refused("header_read_timeout");
                return Poll::Ready(Err(Self::timeout_error(timeout)));
            }
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(head)) = (&polled, this.head.as_mut()) {
            if head.scan.feed(&buf.filled()[before..]) {
                this.head = None;
            }
        }
        polled
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch_write(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch_write(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(total: usize, per_source: usize, proxies: &[IpAddr]) -> Arc<ConnectionGate> {
        ConnectionGate::new(
            AdmissionSettings {
                max_connections: total,
                max_connections_per_source: per_source,
                trusted_proxies: proxies.to_vec(),
                header_read_timeout: Duration::from_secs(10),
                write_stall_timeout: Duration::from_secs(60),
            },
            Metrics::new("test"),
        )
    }

    #[test]
    fn caps_total_and_per_source_and_frees_on_drop() {
        let gate = gate(3, 2, &[]);
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        let first = gate.admit(a);
        let second = gate.admit(a);
        assert!(first.is_ok() && second.is_ok());
        assert_eq!(gate.admit(a).err(), Some(Refusal::PerSource));
        let third = gate.admit(b);
        assert!(third.is_ok());
        assert_eq!(gate.admit(b).err(), Some(Refusal::Total));
        drop(first);
        assert_eq!(gate.held(), 2);
        assert!(
            gate.admit(a).is_ok(),
            "a place freed by a closed connection"
        );
    }

    #[test]
    fn trusted_proxies_are_not_capped_per_source() {
        let proxy: IpAddr = [10, 0, 0, 9].into();
        let gate = gate(10, 1, &[proxy]);
        let held: Vec<_> = (0..5).map(|_| gate.admit(proxy)).collect();
        assert!(held.iter().all(Result::is_ok));
    }

    #[test]
    fn ipv6_sources_are_their_64() {
        let gate = gate(10, 1, &[]);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap_or(IpAddr::from([0u8; 16]));
        let same_64: IpAddr = "2001:db8:1:2:ffff::9"
            .parse()
            .unwrap_or(IpAddr::from([0u8; 16]));
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(IpAddr::from([0u8; 16]));
        let _held = gate.admit(one);
        assert_eq!(gate.admit(same_64).err(), Some(Refusal::PerSource));
        assert!(gate.admit(other_64).is_ok());
        assert_eq!(
            source_key(
                "::ffff:192.0.2.7"
                    .parse()
                    .unwrap_or(IpAddr::from([0u8; 16]))
            ),
            IpAddr::from([192, 0, 2, 7])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_reads_fails_after_the_stall_timeout() -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let gate = gate(10, 0, &[]);
        let peer: SocketAddr = ([192, 0, 2, 1], 4000).into();
        let admission = gate
            .admit(peer.ip())
            .map_err(|_| io::Error::other("not admitted"))?;
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let local: SocketAddr = ([127, 0, 0, 1], 8080).into();
        let mut guarded = Guarded::new(
            Connection::new(ours, local, peer),
            admission,
            Duration::from_secs(10),
            Duration::from_secs(60),
        );
        // A reading peer: writes pass, however long the connection lives.
        guarded.write_all(&[1; 1024]).await?;
        tokio::time::advance(Duration::from_secs(120)).await;
        let mut read = vec![0; 1024];
        tokio::io::AsyncReadExt::read_exact(&mut theirs, &mut read).await?;
        guarded.write_all(&[2; 1024]).await?;
        // Now the peer stops reading: the next write waits, then fails.
        let started = tokio::time::Instant::now();
        let stalled = guarded.write_all(&[3; 1024]).await;
        let err = stalled
            .err()
            .ok_or_else(|| io::Error::other("the write never failed"))?;
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("relay.limits.write_stall_timeout"));
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        drop(theirs);
        Ok(())
    }
}

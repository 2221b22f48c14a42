//! The chitchat `Transport` of a replica: datagrams on the network seam
//! (real UDP, or turmoil's), each one sealed with the cluster id and secret
//! (`frame`) and encoded in chitchat's own format (`codec`).
//!
//! Incoming datagrams are read by a task the socket owns (aborted when
//! chitchat drops the socket), so chitchat's `recv`, which it cancels every
//! gossip round, only ever waits on a channel.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use chitchat::ChitchatEnvelope;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::codec::{Decoder, Encoder, MAX_DATAGRAM};
use super::frame::{DropReason, FrameKeys};
use crate::net::{Network, UdpSocket};
use crate::telemetry::Metrics;

/// Decoded datagrams waiting for chitchat.
const INBOX: usize = 64;

/// Authenticated gossip over the network seam.
pub struct AuthTransport {
    net: Arc<dyn Network>,
    keys: Arc<FrameKeys>,
    metrics: Metrics,
    /// A socket bound before chitchat asked (so that port 0 can be
    /// advertised as the port actually bound).
    bound: std::sync::Mutex<Option<Arc<dyn UdpSocket>>>,
}

impl AuthTransport {
    /// A transport sealing with `keys`, counting into `metrics`; `bound`,
    /// when given, is the socket the first `open` returns.
    pub fn new(
        net: Arc<dyn Network>,
        keys: FrameKeys,
        metrics: Metrics,
        bound: Option<Box<dyn UdpSocket>>,
    ) -> Self {
        Self {
            net,
            keys: Arc::new(keys),
            metrics,
            bound: std::sync::Mutex::new(bound.map(Arc::from)),
        }
    }
}

#[async_trait]
impl Transport for AuthTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let bound = self
            .bound
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let udp: Arc<dyn UdpSocket> = match bound {
            Some(udp) => udp,
            None => Arc::from(self.net.bind_udp(listen_addr).await.map_err(|err| {
                anyhow::anyhow!("cannot bind the gossip socket on {listen_addr}/udp: {err}")
            })?),
        };
        let encoder = Encoder::new().await?;
        let decoder = Decoder::new().await?;
        let (inbox_tx, inbox) = mpsc::channel(INBOX);
        let reader = tokio::spawn(read_datagrams(
            Arc::clone(&udp),
            Arc::clone(&self.keys),
            decoder,
            self.metrics.clone(),
            inbox_tx,
        ));
        Ok(Box::new(AuthSocket {
            udp,
            keys: Arc::clone(&self.keys),
            encoder,
            metrics: self.metrics.clone(),
            inbox,
            reader,
        }))
    }
}

struct AuthSocket {
    udp: Arc<dyn UdpSocket>,
    keys: Arc<FrameKeys>,
    encoder: Encoder,
    metrics: Metrics,
    inbox: mpsc::Receiver<RecvOutcome>,
    reader: JoinHandle<()>,
}

impl Drop for AuthSocket {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[async_trait]
impl Socket for AuthSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.udp.local_addr())
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let sealed = self.keys.seal(self.encoder.encode(envelope).await?);
        // A lost or refused datagram is gossip's normal weather: chitchat
        // only wants an error when the socket is broken for good.
        match self.udp.send_to(&sealed, to).await {
            Ok(sent) => self.metrics.gossip_bytes_out(sent),
            Err(err) => tracing::debug!(to = %to, error = %err, "gossip datagram not sent"),
        }
        Ok(SendOutcome {
            num_bytes_sent: sealed.len(),
        })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        self.inbox
            .recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("the gossip socket stopped receiving"))
    }
}

/// Reads, authenticates and decodes datagrams until the socket fails or
/// chitchat goes away.
async fn read_datagrams(
    udp: Arc<dyn UdpSocket>,
    keys: Arc<FrameKeys>,
    mut decoder: Decoder,
    metrics: Metrics,
    inbox: mpsc::Sender<RecvOutcome>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM + keys.overhead()];
    loop {
        let (len, from) = match udp.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(err) if is_transient(&err) => continue,
            Err(err) => {
                tracing::error!(error = %err, "gossip socket failed; gossip stops");
                return;
            }
        };
        metrics.gossip_bytes_in(len);
        let payload = match keys.open(&buf[..len]) {
            Ok(payload) => payload,
            Err(reason) => {
                dropped(&metrics, reason, from);
                continue;
            }
        };
        let envelope = match decoder.decode(payload).await {
            Ok(Some(envelope)) => envelope,
            Ok(None) => {
                dropped(&metrics, DropReason::Malformed, from);
                continue;
            }
            Err(err) => {
                tracing::warn!(error = %err, "gossip codec failed; datagram dropped");
                metrics.gossip_dropped(DropReason::Malformed.as_str());
                continue;
            }
        };
        let outcome = RecvOutcome {
            from_addr: from,
            envelope,
            num_bytes_received: len,
        };
        if inbox.send(outcome).await.is_err() {
            return;
        }
    }
}

fn dropped(metrics: &Metrics, reason: DropReason, from: SocketAddr) {
    tracing::debug!(from = %from, reason = reason.as_str(), "gossip datagram dropped");
    metrics.gossip_dropped(reason.as_str());
}

fn is_transient(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::OutOfMemory
            | std::io::ErrorKind::Interrupted
    )
}

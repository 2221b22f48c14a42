//! The chitchat `Transport` of a replica: datagrams on the network seam
//! (real UDP, or turmoil's), each one chitchat's own encoding of a message
//! sealed with the cluster id and secret (`frame`).
//!
//! Incoming datagrams are read by a task the socket owns (aborted when
//! chitchat drops the socket), so chitchat's `recv`, which it cancels every
//! gossip round, only ever waits on a channel.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::frame::{DropReason, FrameKeys};
use crate::net::{Network, UdpSocket};
use crate::telemetry::Metrics;

/// Decoded datagrams waiting for chitchat.
const INBOX: usize = 64;

/// Largest UDP payload (chitchat sizes its deltas to fit it).
const MAX_DATAGRAM: usize = 65_507;

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
        let (inbox_tx, inbox) = mpsc::channel(INBOX);
        let reader = tokio::spawn(read_datagrams(
            Arc::clone(&udp),
            Arc::clone(&self.keys),
            self.metrics.clone(),
            inbox_tx,
        ));
        Ok(Box::new(AuthSocket {
            udp,
            keys: Arc::clone(&self.keys),
            metrics: self.metrics.clone(),
            inbox,
            reader,
        }))
    }
}

struct AuthSocket {
    udp: Arc<dyn UdpSocket>,
    keys: Arc<FrameKeys>,
    metrics: Metrics,
    inbox: mpsc::Receiver<(SocketAddr, ChitchatMessage)>,
    reader: JoinHandle<()>,
}

impl Drop for AuthSocket {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[async_trait]
impl Socket for AuthSocket {
    async fn send(&mut self, to: SocketAddr, message: ChitchatMessage) -> anyhow::Result<()> {
        let sealed = self.keys.seal(&message.serialize_to_vec());
        if sealed.len() > MAX_DATAGRAM {
            tracing::warn!(to = %to, bytes = sealed.len(), "gossip message too large for one datagram; not sent");
            self.metrics.gossip_dropped("oversized");
            return Ok(());
        }
        // A lost or refused datagram is gossip's normal weather: chitchat
        // only wants an error when the socket is broken for good.
        match self.udp.send_to(&sealed, to).await {
            Ok(sent) => self.metrics.gossip_bytes_out(sent),
            Err(err) => tracing::debug!(to = %to, error = %err, "gossip datagram not sent"),
        }
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
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
    metrics: Metrics,
    inbox: mpsc::Sender<(SocketAddr, ChitchatMessage)>,
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
        let mut bytes = payload;
        let message = match ChitchatMessage::deserialize(&mut bytes) {
            Ok(message) if bytes.is_empty() => message,
            _ => {
                dropped(&metrics, DropReason::Malformed, from);
                continue;
            }
        };
        let outcome = (from, message);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_decodes_from_exactly_its_own_bytes() -> anyhow::Result<()> {
        let messages = [
            ChitchatMessage::Syn {
                cluster_id: "prod".to_owned(),
                digest: Default::default(),
            },
            ChitchatMessage::BadCluster,
        ];
        for message in messages {
            let bytes = message.serialize_to_vec();
            let mut rest = bytes.as_slice();
            let decoded = ChitchatMessage::deserialize(&mut rest)?;
            assert!(rest.is_empty(), "{message:?} left {} bytes", rest.len());
            assert_eq!(format!("{decoded:?}"), format!("{message:?}"));
            let mut truncated = &bytes[..bytes.len() - 1];
            assert!(ChitchatMessage::deserialize(&mut truncated).is_err());
        }
        Ok(())
    }
}

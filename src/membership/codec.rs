//! chitchat's own wire format, borrowed through loopback sockets.
//!
//! chitchat 0.13 keeps `ChitchatEnvelope`'s (de)serialization crate-private:
//! the only public code that turns an envelope into bytes and back is its
//! `UdpSocket`. A transport that authenticates datagrams needs the bytes, so
//! this module lets chitchat's `UdpSocket`s on 127.0.0.1 do the encoding:
//! the encoder has chitchat send the envelope to a plain socket and reads
//! the bytes; the decoder sends bytes to a chitchat socket and reads the
//! envelope. Nothing here leaves the process, and only bytes that already
//! passed authentication are ever decoded.
//!
//! A payload chitchat cannot decode is skipped by its socket without a
//! word, so the decoder follows each payload with a sentinel from a third
//! socket: the sentinel arriving first means the payload was malformed.
//! Loopback datagrams from one process arrive in send order.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use chitchat::transport::{Socket, UdpSocket as ChitchatUdpSocket};
use chitchat::{ChitchatEnvelope, ChitchatMessage, ProtocolVersion};

/// Largest datagram chitchat produces (its UDP payload limit).
pub const MAX_DATAGRAM: usize = 65_507;
/// A loopback round trip is immediate; this bounds a lost one.
const LOOPBACK_TIMEOUT: Duration = Duration::from_secs(1);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn open_chitchat_socket() -> io::Result<ChitchatUdpSocket> {
    ChitchatUdpSocket::open(loopback())
        .await
        .map_err(|err| io::Error::other(format!("gossip codec socket: {err:#}")))
}

fn local_addr(socket: &ChitchatUdpSocket) -> io::Result<SocketAddr> {
    socket
        .local_addr()
        .map_err(|err| io::Error::other(format!("gossip codec socket: {err:#}")))
}

/// Turns envelopes into chitchat's bytes.
pub struct Encoder {
    chitchat: ChitchatUdpSocket,
    chitchat_addr: SocketAddr,
    sink: tokio::net::UdpSocket,
    sink_addr: SocketAddr,
    buf: Vec<u8>,
}

impl Encoder {
    /// Binds the encoder's two loopback sockets.
    pub async fn new() -> io::Result<Self> {
        let chitchat = open_chitchat_socket().await?;
        let chitchat_addr = local_addr(&chitchat)?;
        let sink = crate::net::loopback_udp().await?;
        let sink_addr = sink.local_addr()?;
        Ok(Self {
            chitchat,
            chitchat_addr,
            sink,
            sink_addr,
            buf: vec![0; MAX_DATAGRAM],
        })
    }

    /// The bytes chitchat sends for `envelope`.
    pub async fn encode(&mut self, envelope: ChitchatEnvelope) -> io::Result<&[u8]> {
        self.chitchat
            .send(self.sink_addr, envelope)
            .await
            .map_err(|err| io::Error::other(format!("gossip codec: {err:#}")))?;
        let len = tokio::time::timeout(LOOPBACK_TIMEOUT, async {
            loop {
                let (len, from) = self.sink.recv_from(&mut self.buf).await?;
                // Anything else on 127.0.0.1 writing here is ignored.
                if from == self.chitchat_addr {
                    return Ok::<_, io::Error>(len);
                }
            }
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "gossip codec: encoding lost"))??;
        Ok(&self.buf[..len])
    }
}

/// Turns chitchat's bytes back into envelopes.
pub struct Decoder {
    chitchat: ChitchatUdpSocket,
    chitchat_addr: SocketAddr,
    source: tokio::net::UdpSocket,
    source_addr: SocketAddr,
    sentinel: ChitchatUdpSocket,
    sentinel_addr: SocketAddr,
}

impl Decoder {
    /// Binds the decoder's three loopback sockets.
    pub async fn new() -> io::Result<Self> {
        let chitchat = open_chitchat_socket().await?;
        let chitchat_addr = local_addr(&chitchat)?;
        let source = crate::net::loopback_udp().await?;
        let source_addr = source.local_addr()?;
        let sentinel = open_chitchat_socket().await?;
        let sentinel_addr = local_addr(&sentinel)?;
        Ok(Self {
            chitchat,
            chitchat_addr,
            source,
            source_addr,
            sentinel,
            sentinel_addr,
        })
    }

    /// The envelope `bytes` encode, or `None` when chitchat cannot decode
    /// them. Not cancellation safe: run it to completion.
    pub async fn decode(&mut self, bytes: &[u8]) -> io::Result<Option<ChitchatEnvelope>> {
        self.source.send_to(bytes, self.chitchat_addr).await?;
        let sentinel = ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: ChitchatMessage::BadCluster,
        };
        self.sentinel
            .send(self.chitchat_addr, sentinel)
            .await
            .map_err(|err| io::Error::other(format!("gossip codec: {err:#}")))?;
        let mut decoded = None;
        tokio::time::timeout(LOOPBACK_TIMEOUT, async {
            loop {
                let outcome = self
                    .chitchat
                    .recv()
                    .await
                    .map_err(|err| io::Error::other(format!("gossip codec: {err:#}")))?;
                if outcome.from_addr == self.source_addr {
                    decoded = Some(outcome.envelope);
                } else if outcome.from_addr == self.sentinel_addr {
                    return Ok::<_, io::Error>(());
                }
            }
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "gossip codec: decoding lost"))??;
        Ok(decoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(message: ChitchatMessage) -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message,
        }
    }

    #[tokio::test]
    async fn envelopes_survive_a_round_trip() -> io::Result<()> {
        let mut encoder = Encoder::new().await?;
        let mut decoder = Decoder::new().await?;
        let syn = || ChitchatMessage::Syn {
            cluster_id: "prod".to_owned(),
            digest: Default::default(),
        };
        for message in [syn(), ChitchatMessage::BadCluster, syn()] {
            let expected = format!("{message:?}");
            let bytes = encoder.encode(envelope(message)).await?.to_vec();
            assert!(!bytes.is_empty());
            let decoded = decoder.decode(&bytes).await?;
            assert_eq!(
                decoded.map(|envelope| format!("{:?}", envelope.message)),
                Some(expected)
            );
        }
        Ok(())
    }

    #[tokio::test]
    async fn undecodable_bytes_yield_none_and_the_decoder_stays_in_step() -> io::Result<()> {
        let mut encoder = Encoder::new().await?;
        let mut decoder = Decoder::new().await?;
        assert!(decoder.decode(b"junk").await?.is_none());
        assert!(decoder.decode(b"").await?.is_none());
        let bytes = encoder
            .encode(envelope(ChitchatMessage::BadCluster))
            .await?
            .to_vec();
        let mut truncated = bytes.clone();
        truncated.pop();
        assert!(decoder.decode(&truncated).await?.is_none());
        assert!(decoder.decode(&bytes).await?.is_some());
        Ok(())
    }
}

//! Baseline (b): a raw two-hop forwarder doing the relay's signature work
//! and nothing else. A caller's unary `Call` goes down a long-lived bidi
//! `Connect` stream that an "edge" task opened; the edge answers with an
//! Ed25519 signature over the same canonical bytes our edges sign for a
//! CommandResult; the forwarder checks them (`verify_strict`) and answers.
//! `Fanout` does the same to every connected edge at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aegis_relay::edge::canonical::{self, EventKind};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::client::Grpc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::wire::{self, Frame, RawServer, CALL, CONNECT, FANOUT};
use crate::{BoxError, CALL_TIMEOUT};

type Down = mpsc::Sender<Result<Frame, Status>>;

/// One connected edge as the forwarder sees it.
struct Link {
    node_id: String,
    stream_id: String,
    key: VerifyingKey,
    down: Down,
}

/// The forwarder's state: connected edges and calls awaiting a reply.
#[derive(Default)]
struct Forwarder {
    links: Mutex<Vec<Arc<Link>>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Frame>>>,
    next_id: AtomicU64,
}

impl Forwarder {
    fn links(&self) -> Vec<Arc<Link>> {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes an edge's stream: its first frame is the hello.
    async fn connect(
        self: Arc<Self>,
        mut events: Streaming<Frame>,
    ) -> Result<Response<ReceiverStream<Result<Frame, Status>>>, Status> {
        let hello = events
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("no hello"))?;
        let key = VerifyingKey::try_from(hello.key.as_slice())
            .map_err(|_| Status::invalid_argument("bad public key"))?;
        let (down, commands) = mpsc::channel(64);
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::new(Link {
                node_id: hello.node_id,
                stream_id: hello.stream_id,
                key,
                down,
            }));
        tokio::spawn(async move {
            while let Ok(Some(reply)) = events.message().await {
                let waiter = self
                    .pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&reply.id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(reply);
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(commands)))
    }

    /// Sends `frame` to `link`; the verified reply.
    async fn dispatch(&self, link: &Link, mut frame: Frame) -> Result<Frame, Status> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        frame.id = id;
        let (reply_tx, reply_rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, reply_tx);
        if link.down.send(Ok(frame)).await.is_err() {
            self.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            return Err(Status::unavailable("edge stream closed"));
        }
        let reply = tokio::time::timeout(CALL_TIMEOUT, reply_rx)
            .await
            .map_err(|_| Status::deadline_exceeded("edge did not answer"))?
            .map_err(|_| Status::unavailable("edge stream closed"))?;
        verify(link, id, &reply)?;
        Ok(reply)
    }

    async fn call(&self, request: Frame) -> Result<Frame, Status> {
        let link = self
            .links()
            .first()
            .cloned()
            .ok_or_else(|| Status::unavailable("no edge"))?;
        self.dispatch(&link, request).await
    }

    /// Every edge at once; answers with the number of verified replies.
    async fn fanout(&self, request: Frame) -> Result<Frame, Status> {
        let links = self.links();
        let mut calls: FuturesUnordered<_> = links
            .iter()
            .map(|link| self.dispatch(link, request.clone()))
            .collect();
        let mut verified = 0;
        while let Some(reply) = calls.next().await {
            reply?;
            verified += 1;
        }
        Ok(Frame {
            id: verified,
            ..Frame::default()
        })
    }
}

/// What the relay checks on a CommandResult: the canonical fields match
/// the stream and call, and the signature verifies strictly.
fn verify(link: &Link, id: u64, reply: &Frame) -> Result<(), Status> {
    let fields = canonical::parse(&reply.payload)
        .map_err(|err| Status::invalid_argument(err.to_string()))?;
    let command_id = id.to_string();
    if fields.kind != EventKind::CommandResult
        || fields.node_id != link.node_id
        || fields.stream_id != link.stream_id
        || fields.inner != command_id.as_bytes()
    {
        return Err(Status::invalid_argument("signed fields do not match"));
    }
    let signature = Signature::from_slice(&reply.signature)
        .map_err(|_| Status::invalid_argument("malformed signature"))?;
    link.key
        .verify_strict(&reply.payload, &signature)
        .map_err(|_| Status::unauthenticated("bad signature"))
}

/// The edge task: hello, then each command answered in turn with a signed reply.
async fn run_edge(channel: Channel, stop: CancellationToken) -> Result<(), BoxError> {
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let node_id = aegis_relay::runtime::OsEntropy.uuid().to_string();
    let stream_id = aegis_relay::runtime::OsEntropy.uuid().to_string();
    let (events, outbound) = mpsc::channel(64);
    events
        .send(Frame {
            node_id: node_id.clone(),
            stream_id: stream_id.clone(),
            key: key.verifying_key().to_bytes().to_vec(),
            ..Frame::default()
        })
        .await?;
    let mut client = Grpc::new(channel);
    client.ready().await?;
    let mut commands = client
        .streaming(
            Request::new(ReceiverStream::new(outbound)),
            wire::path(CONNECT),
            wire::codec(),
        )
        .await?
        .into_inner();
    loop {
        let command = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            command = commands.message() => command?,
        };
        let Some(command) = command else {
            return Ok(());
        };
        let payload = canonical::encode(
            EventKind::CommandResult,
            aegis_relay::runtime::SystemClock
                .utc_now()
                .timestamp_millis(),
            &node_id,
            &stream_id,
            command.id.to_string().as_bytes(),
        );
        let signature = key.sign(&payload).to_bytes().to_vec();
        events
            .send(Frame {
                id: command.id,
                body: command.body,
                payload,
                signature,
                ..Frame::default()
            })
            .await?;
    }
}

/// A forwarder, its edges and one caller connection.
pub struct TwoHop {
    _server: RawServer,
    stop: CancellationToken,
    client: Grpc<Channel>,
}

impl Drop for TwoHop {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TwoHop {
    /// Starts the forwarder and `edges` edges, `per_connection` streams to a
    /// connection, and waits until all are connected.
    pub async fn start(edges: usize, per_connection: usize) -> Result<Self, BoxError> {
        let forwarder = Arc::new(Forwarder::default());
        let state = Arc::clone(&forwarder);
        let server = RawServer::start(move |request| {
            let forwarder = Arc::clone(&state);
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(wire::codec());
                match request.uri().path() {
                    CONNECT => {
                        let service = tower::service_fn(move |r: Request<Streaming<Frame>>| {
                            Arc::clone(&forwarder).connect(r.into_inner())
                        });
                        grpc.streaming(service, request).await
                    }
                    CALL => {
                        let service = tower::service_fn(move |r: Request<Frame>| {
                            let forwarder = Arc::clone(&forwarder);
                            async move { forwarder.call(r.into_inner()).await.map(Response::new) }
                        });
                        grpc.unary(service, request).await
                    }
                    FANOUT => {
                        let service = tower::service_fn(move |r: Request<Frame>| {
                            let forwarder = Arc::clone(&forwarder);
                            async move { forwarder.fanout(r.into_inner()).await.map(Response::new) }
                        });
                        grpc.unary(service, request).await
                    }
                    other => wire::unimplemented(other),
                }
            })
        })
        .await?;
        let stop = CancellationToken::new();
        let mut channel = server.channel().await?;
        for index in 0..edges {
            if index > 0 && index % per_connection.max(1) == 0 {
                channel = server.channel().await?;
            }
            let (channel, stop) = (channel.clone(), stop.clone());
            tokio::spawn(async move {
                if let Err(err) = run_edge(channel, stop.clone()).await {
                    if !stop.is_cancelled() {
                        eprintln!("two-hop edge ended: {err}");
                    }
                }
            });
        }
        let until = Instant::now() + Duration::from_secs(30);
        while forwarder.links().len() < edges {
            if Instant::now() >= until {
                return Err(format!(
                    "only {} of {edges} two-hop edges connected",
                    forwarder.links().len()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let client = Grpc::new(server.channel().await?);
        Ok(Self {
            _server: server,
            stop,
            client,
        })
    }

    /// One call through the forwarder to the first edge and back.
    pub async fn round_trip(&mut self) -> Result<Duration, BoxError> {
        let started = Instant::now();
        self.client.ready().await?;
        let call = self.client.unary(
            Request::new(wire::request(0)),
            wire::path(CALL),
            wire::codec(),
        );
        let reply = tokio::time::timeout(CALL_TIMEOUT, call)
            .await??
            .into_inner();
        let elapsed = started.elapsed();
        if reply.body.len() != wire::BODY_BYTES {
            return Err("two-hop reply lost its body".into());
        }
        Ok(elapsed)
    }

    /// One fan-out to every edge; (time, verified replies).
    pub async fn fanout(&mut self) -> Result<(Duration, u64), BoxError> {
        let started = Instant::now();
        self.client.ready().await?;
        let call = self.client.unary(
            Request::new(wire::request(0)),
            wire::path(FANOUT),
            wire::codec(),
        );
        let reply = tokio::time::timeout(CALL_TIMEOUT, call)
            .await??
            .into_inner();
        Ok((started.elapsed(), reply.id))
    }
}

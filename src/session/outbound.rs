//! The response half of a ConnectEdge stream: commands the session task
//! queues, boxed so an idle session's queue costs one small block.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc;

use crate::proto::cluster::EdgeCommand;

/// One queued item: a command, or the status that ends the stream.
pub type Outbound = Box<Result<EdgeCommand, tonic::Status>>;

/// The stream tonic sends to the edge; it ends when the session task drops
/// its sender.
#[derive(Debug)]
pub struct OutboundCommands {
    rx: mpsc::Receiver<Outbound>,
}

impl OutboundCommands {
    /// A stream over `rx`.
    pub fn new(rx: mpsc::Receiver<Outbound>) -> Self {
        Self { rx }
    }
}

impl Stream for OutboundCommands {
    type Item = Result<EdgeCommand, tonic::Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|item| item.map(|boxed| *boxed))
    }
}

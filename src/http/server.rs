//! The HTTP accept loop: hyper with a timer, so a peer cannot hold a
//! connection by trickling a request. Each request's headers must arrive
//! within `relay.limits.header_read_timeout` (HTTP/1; the first request's,
//! and an HTTP/2 preface, are bounded by `admission`), and its body within
//! `relay.limits.request_body_timeout` (408 past it).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::Router;
use futures::StreamExt;
use http_body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use pin_project_lite::pin_project;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::net::{incoming, Listener};

/// Text every body-timeout error carries (the REST error maps it to 408).
pub const BODY_TIMEOUT_KEY: &str = "relay.limits.request_body_timeout";

/// Time limits of the HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// Headers of each HTTP/1 request.
    pub header_read: Duration,
    /// A request body, from its headers to its end.
    pub request_body: Duration,
}

/// Serves `router` on `listener` until `stop` fires, then lets open
/// connections finish their requests (the caller bounds that wait).
pub async fn serve_router(
    listener: Box<dyn Listener>,
    router: Router,
    timeouts: HttpTimeouts,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let connections = TaskTracker::new();
    let mut accepted = Box::pin(incoming(listener));
    loop {
        let connection = tokio::select! {
            () = stop.cancelled() => break,
            next = accepted.next() => match next {
                Some(Ok(connection)) => connection,
                Some(Err(_)) | None => continue,
            },
        };
        let service = TowerToHyperService::new(
            router
                .clone()
                .map_request(with_body_deadline(timeouts.request_body)),
        );
        let builder = builder.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let served = builder.serve_connection_with_upgrades(TokioIo::new(connection), service);
            tokio::pin!(served);
            let result = tokio::select! {
                result = served.as_mut() => result,
                () = stop.cancelled() => {
                    served.as_mut().graceful_shutdown();
                    served.await
                }
            };
            if let Err(err) = result {
                tracing::debug!(error = %err, "HTTP connection ended with an error");
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Gives each request's body a deadline of `timeout` from now.
fn with_body_deadline<B>(
    timeout: Duration,
) -> impl Fn(http::Request<B>) -> http::Request<axum::body::Body> + Clone
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    move |request| request.map(|body| axum::body::Body::new(DeadlineBody::new(body, timeout)))
}

/// A request body that fails once its deadline passes.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {} ({BODY_TIMEOUT_KEY})", humantime::format_duration(*.0))]
pub struct BodyTimeout(Duration);

pin_project! {
    /// A body with a deadline (none for an empty body).
    pub struct DeadlineBody<B> {
        #[pin]
        inner: B,
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
        timeout: Duration,
    }
}

impl<B: Body> DeadlineBody<B> {
    /// `inner`, failing `timeout` from now.
    pub fn new(inner: B, timeout: Duration) -> Self {
        let deadline = (!inner.is_end_stream()).then(|| Box::pin(tokio::time::sleep(timeout)));
        Self {
            inner,
            deadline,
            timeout,
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                *this.deadline = None;
                return Poll::Ready(Some(Err(Box::new(BodyTimeout(*this.timeout)))));
            }
        }
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if frame.is_none() {
            *this.deadline = None;
        }
        Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

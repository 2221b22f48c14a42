//! Counts every gRPC call by method and final status code.
//!
//! The code of a successful call only arrives in the trailers at the end of
//! the response body (and for a stream, when the stream ends), so the layer
//! wraps the body and records when the trailers pass through. A body dropped
//! before its trailers counts as CANCELLED.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::net::BoxFuture;
use crate::telemetry::Metrics;

/// Label for a path outside the known set (bounds label cardinality).
const OTHER_METHOD: &str = "other";

/// The metric label of a request path: the full method name when it is one
/// this server knows, else `other`.
pub fn method_label(path: &str) -> &'static str {
    const FIXED: [&str; 4] = [
        "grpc.health.v1.Health/Check",
        "grpc.health.v1.Health/Watch",
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ];
    let path = path.trim_start_matches('/');
    if let Some(known) = FIXED.iter().find(|known| **known == path) {
        return known;
    }
    let Some(method) = path.strip_prefix("aegis.cluster.v1.NodeClusterService/") else {
        return OTHER_METHOD;
    };
    cluster_method_label(method)
}

fn cluster_method_label(method: &str) -> &'static str {
    macro_rules! labels {
        ($($name:literal),*) => {
            match method {
                $($name => concat!("aegis.cluster.v1.NodeClusterService/", $name),)*
                _ => OTHER_METHOD,
            }
        };
    }
    labels!(
        "AttestNode",
        "ChallengeNode",
        "ConnectEdge",
        "RotateEdgeKey",
        "IssueEnrollmentToken",
        "RegisterNode",
        "Heartbeat",
        "DeregisterNode",
        "RouteExecution",
        "ForwardExecution",
        "SyncConfig",
        "PushConfig",
        "ListPeers"
    )
}

/// Adds call counting to a gRPC server.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    metrics: Metrics,
}

impl GrpcMetricsLayer {
    /// Counts into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service produced by [`GrpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    ResBody: 'static,
{
    type Response = http::Response<CountedBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let method = method_label(request.uri().path());
        let metrics = self.metrics.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let (parts, body) = response.into_parts();
            let pending = PendingCount { metrics, method };
            // A trailers-only response (every error) carries its status in the headers.
            let pending = match status_code(&parts.headers) {
                Some(code) => {
                    pending.finish(code);
                    None
                }
                None => Some(pending),
            };
            Ok(http::Response::from_parts(
                parts,
                CountedBody {
                    inner: body,
                    pending,
                },
            ))
        })
    }
}

fn status_code(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers.get("grpc-status")?;
    let number = value.to_str().ok()?.parse::<i32>().ok()?;
    Some(tonic::Code::from_i32(number))
}

/// A call whose status has not been seen yet.
struct PendingCount {
    metrics: Metrics,
    method: &'static str,
}

impl PendingCount {
    fn finish(self, code: tonic::Code) {
        self.metrics.grpc_request(self.method, code);
    }
}

pin_project! {
    /// A response body that counts its call when the trailers go by.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        pending: Option<PendingCount>,
    }

    impl<B> PinnedDrop for CountedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(pending) = this.project().pending.take() {
                pending.finish(tonic::Code::Cancelled);
            }
        }
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_code) {
                    if let Some(pending) = this.pending.take() {
                        pending.finish(code);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(pending) = this.pending.take() {
                    pending.finish(tonic::Code::Internal);
                }
            }
            Poll::Ready(None) => {
                if let Some(pending) = this.pending.take() {
                    pending.finish(tonic::Code::Unknown);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::node_cluster::{NOT_SERVED_RPCS, SERVED_RPCS};

    #[test]
    fn known_methods_keep_their_names_and_others_collapse() {
        assert_eq!(
            method_label("/aegis.cluster.v1.NodeClusterService/AttestNode"),
            "aegis.cluster.v1.NodeClusterService/AttestNode"
        );
        assert_eq!(
            method_label("/aegis.cluster.v1.NodeClusterService/ListPeers"),
            "aegis.cluster.v1.NodeClusterService/ListPeers"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(
            method_label("/aegis.cluster.v1.NodeClusterService/Xyz"),
            "other"
        );
        assert_eq!(method_label("/random/path"), "other");
    }

    #[test]
    fn every_cluster_rpc_has_its_own_label() {
        for rpc in SERVED_RPCS.iter().chain(NOT_SERVED_RPCS.iter()) {
            let label = method_label(&format!("/aegis.cluster.v1.NodeClusterService/{rpc}"));
            assert!(label.ends_with(rpc), "{rpc} -> {label}");
        }
    }
}

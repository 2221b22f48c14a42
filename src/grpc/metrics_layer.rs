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

use super::node_cluster::{NOT_SERVED_RPCS, SERVED_RPCS};
use crate::net::BoxFuture;
use crate::proto::NODE_CLUSTER_SERVICE;
use crate::telemetry::Metrics;

/// Label for a service or method outside the known set (bounds label
/// cardinality: paths are chosen by clients).
const OTHER: &str = "other";

/// Services this server answers, with their methods.
const KNOWN: [(&str, &[&str]); 5] = [
    (NODE_CLUSTER_SERVICE, &SERVED_RPCS),
    (NODE_CLUSTER_SERVICE, &NOT_SERVED_RPCS),
    ("grpc.health.v1.Health", &["Check", "Watch"]),
    (
        "grpc.reflection.v1.ServerReflection",
        &["ServerReflectionInfo"],
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection",
        &["ServerReflectionInfo"],
    ),
];

/// The `(service, method)` metric labels of a request path: the names when
/// this server knows them, else `other`.
pub fn method_labels(path: &str) -> (&'static str, &'static str) {
    let Some((service, method)) = path.trim_start_matches('/').split_once('/') else {
        return (OTHER, OTHER);
    };
    let mut service_label = OTHER;
    for (known_service, methods) in KNOWN {
        if known_service != service {
            continue;
        }
        service_label = known_service;
        if let Some(known_method) = methods.iter().find(|known| **known == method) {
            return (known_service, known_method);
        }
    }
    (service_label, OTHER)
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
        let (service, method) = method_labels(request.uri().path());
        let metrics = self.metrics.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let (parts, body) = response.into_parts();
            let pending = PendingCount {
                metrics,
                service,
                method,
            };
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
    service: &'static str,
    method: &'static str,
}

impl PendingCount {
    fn finish(self, code: tonic::Code) {
        self.metrics.grpc_request(self.service, self.method, code);
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

    #[test]
    fn known_methods_keep_their_names_and_others_collapse() {
        assert_eq!(
            method_labels("/aegis.cluster.v1.NodeClusterService/AttestNode"),
            (NODE_CLUSTER_SERVICE, "AttestNode")
        );
        assert_eq!(
            method_labels("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        assert_eq!(
            method_labels("/aegis.cluster.v1.NodeClusterService/Xyz"),
            (NODE_CLUSTER_SERVICE, "other")
        );
        assert_eq!(method_labels("/random.Service/Check"), ("other", "other"));
        assert_eq!(method_labels("garbage"), ("other", "other"));
    }

    #[test]
    fn every_cluster_rpc_has_its_own_label() {
        for rpc in SERVED_RPCS.iter().chain(NOT_SERVED_RPCS.iter()) {
            let path = format!("/{NODE_CLUSTER_SERVICE}/{rpc}");
            assert_eq!(method_labels(&path), (NODE_CLUSTER_SERVICE, *rpc));
        }
    }
}

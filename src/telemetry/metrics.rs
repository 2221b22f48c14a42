//! Prometheus metrics of one replica.
//!
//! Each replica owns its own recorder instead of the process-global one, so
//! several replicas in one process (tests, the simulator) keep separate
//! counts. Label values come from closed sets (known method names, route
//! templates, status codes), never from raw request input.

use std::sync::Arc;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Counter of finished gRPC calls by `service`, `method` and `code`.
pub const GRPC_REQUESTS: &str = "aegis_relay_grpc_requests_total";
/// Counter of finished HTTP requests by `route` and `status`.
pub const HTTP_REQUESTS: &str = "aegis_relay_http_requests_total";
/// Gauge, always 1, labelled with the build version and replica name.
pub const BUILD_INFO: &str = "aegis_relay_build_info";

/// Handle to one replica's metrics; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Handles registered once for the per-event path (see `edge_event`).
    pub(super) edge_events: Vec<(&'static str, metrics::Counter)>,
}

impl Metrics {
    /// A fresh registry for the named replica.
    pub fn new(replica: &str) -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let edge_events = metrics::with_local_recorder(&recorder, super::edges::event_counters);
        let metrics = Self {
            inner: Arc::new(Inner {
                recorder,
                handle,
                edge_events,
            }),
        };
        let replica = replica.to_owned();
        metrics.record(|| {
            metrics::describe_counter!(
                GRPC_REQUESTS,
                "gRPC calls finished, by service, method and status code"
            );
            metrics::describe_counter!(
                HTTP_REQUESTS,
                "HTTP requests finished, by route and status"
            );
            metrics::describe_gauge!(BUILD_INFO, "Build of this replica (value is always 1)");
            metrics::gauge!(
                BUILD_INFO,
                "version" => env!("CARGO_PKG_VERSION"),
                "replica" => replica
            )
            .set(1.0);
        });
        metrics
    }

    /// Runs `f` with this replica's recorder as the metrics target.
    pub fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.inner.recorder, f)
    }

    /// Counts one finished gRPC call.
    pub fn grpc_request(&self, service: &'static str, method: &'static str, code: tonic::Code) {
        self.record(|| {
            metrics::counter!(
                GRPC_REQUESTS,
                "service" => service,
                "method" => method,
                "code" => grpc_code_name(code)
            )
            .increment(1);
        });
    }

    /// Counts one finished HTTP request.
    pub fn http_request(&self, route: String, status: u16) {
        self.record(|| {
            metrics::counter!(HTTP_REQUESTS, "route" => route, "status" => status.to_string())
                .increment(1);
        });
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.inner.handle.render()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The canonical upper-case name of a gRPC status code, as in the gRPC spec.
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

//! The HTTP server (port 8080): `/healthz`, `/readyz`, `/metrics`, and later
//! the `/v1/edge/*` REST surface. Errors use AEGIS's JSON error shape
//! `{status, code, message}`.

mod body;
mod caller;
mod enrollment;
mod error;
mod fleet;
mod fleet_preview;
mod groups;
mod hosts;
mod invoke;
mod metrics_layer;
mod probes;
mod relay_status;
mod request_id;
mod server;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;
pub use server::{HttpTimeouts, BODY_TIMEOUT_KEY};

use crate::app::Api;
use crate::net::Listener;
use crate::readiness::Readiness;
use crate::telemetry::Metrics;

/// What the HTTP handlers share.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// This replica's name.
    pub replica: String,
    /// Readiness, for `/readyz`.
    pub readiness: Readiness,
    /// Metrics, for `/metrics` and request counting.
    pub metrics: Metrics,
    /// Request handling shared with the gRPC server.
    pub api: Api,
    /// The bearer `/metrics` requires (`relay.metrics_token_file`).
    pub metrics_token: Option<std::sync::Arc<str>>,
}

/// Largest request body accepted on the REST surface (413 beyond).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The router with every route and the request-counting middleware.
pub fn router(state: HttpState) -> Router {
    let routes = Router::new()
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(probes::metrics))
        .route(
            "/v1/edge/enrollment-tokens",
            post(enrollment::issue_enrollment_token),
        )
        .route("/v1/edge/hosts", get(hosts::list_hosts))
        .route(
            "/v1/edge/hosts/{id}",
            delete(hosts::revoke_host)
                .get(hosts::get_host)
                .patch(hosts::patch_host),
        )
        .route(
            "/v1/edge/groups",
            get(groups::list_groups).post(groups::create_group),
        )
        .route(
            "/v1/edge/groups/{id}",
            get(groups::get_group)
                .patch(groups::patch_group)
                .delete(groups::delete_group),
        )
        .route("/v1/edge/fleet/preview", post(fleet_preview::preview))
        .route("/v1/edge/hosts/{id}/invoke", post(invoke::invoke_host))
        .route("/v1/edge/fleet/invoke", post(fleet::invoke))
        .route("/v1/edge/fleet/{id}/cancel", post(fleet::cancel))
        .route("/v1/edge/fleet/runs", get(fleet::runs))
        .route("/v1/edge/fleet/runs/{id}", get(fleet::run))
        .route("/v1/relay/status", get(relay_status::status))
        .route(
            "/v1/relay/where/tenant/{tenant_id}",
            get(relay_status::where_tenant),
        )
        .route(
            "/v1/relay/where/edge/{node_id}",
            get(relay_status::where_edge),
        )
        .route("/v1/edge/hosts/{id}/drain", post(invoke::drain_host))
        .route("/v1/edge/hosts/{id}/shutdown", post(invoke::shutdown_host))
        .route(
            "/v1/edge/hosts/{id}/push-config",
            post(invoke::push_config_host),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics_layer::count_requests,
        ))
        .with_state(state.clone());
    // Layers on a router wrap each route, inside the step that adds `Allow`
    // to a 405; wrapped whole, the JSON rewrite sees the finished answer.
    Router::new()
        .fallback_service(routes)
        .layer(axum::middleware::from_fn(error::json_method_not_allowed))
        .layer(axum::middleware::from_fn_with_state(
            std::sync::Arc::clone(&state.api.entropy),
            request_id::with_request_id,
        ))
}

/// Errors of the HTTP server.
#[derive(Debug, thiserror::Error)]
#[error("HTTP server failed: {0}")]
pub struct HttpServeError(#[from] std::io::Error);

/// Serves the router on `listener` until `stop` fires, then lets in-flight
/// requests finish (the caller bounds that wait).
pub async fn serve(
    listener: Box<dyn Listener>,
    state: HttpState,
    timeouts: HttpTimeouts,
    stop: CancellationToken,
) -> Result<(), HttpServeError> {
    server::serve_router(listener, router(state), timeouts, stop).await?;
    Ok(())
}

//! Counts every HTTP request by route template (never the raw path, so label
//! values stay a closed set) and status.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::telemetry::Metrics;

/// Route label for requests no route matched.
const UNMATCHED: &str = "unmatched";

/// Middleware counting the request once its response is ready.
pub async fn count_requests(
    State(metrics): State<Metrics>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    metrics.http_request(route, response.status().as_u16());
    response
}

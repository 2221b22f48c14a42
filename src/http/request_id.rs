//! Request ids: every response carries `x-request-id` (the client's, when it
//! sent a usable one, else a fresh UUID), and every log line of the request
//! is inside a span naming it. An error answer that hides internal details
//! points at this id, so an operator can find them in the log.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::runtime::Entropy;

/// The header carrying the id, both ways.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-chosen id kept; longer ones are replaced.
const MAX_CLIENT_ID_LEN: usize = 128;

/// Middleware: takes or makes the request's id, runs the request in a span
/// naming it, and puts it on the response.
pub async fn with_request_id(
    State(entropy): State<Arc<dyn Entropy>>,
    mut request: Request,
    next: Next,
) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .filter(|value| usable(value.as_bytes()))
        .cloned()
        .unwrap_or_else(|| fresh_id(entropy.as_ref()));
    request.headers_mut().insert(REQUEST_ID, id.clone());
    let span = tracing::info_span!(
        "http",
        request_id = id.to_str().unwrap_or_default(),
        method = %request.method(),
        path = request.uri().path(),
    );
    let mut response = next.run(request).instrument(span).await;
    response.headers_mut().insert(REQUEST_ID, id);
    response
}

/// A client's id is kept if it is short, visible ASCII.
fn usable(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_CLIENT_ID_LEN && id.iter().all(u8::is_ascii_graphic)
}

fn fresh_id(entropy: &dyn Entropy) -> HeaderValue {
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_str(&entropy.uuid_v4().to_string())
        .unwrap_or(HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_kept_only_when_short_and_visible() {
        assert!(usable(b"req-123"));
        assert!(!usable(b""));
        assert!(!usable(b"has space"));
        assert!(!usable(&[b'a'; 129]));
        assert!(usable(&[b'a'; 128]));
    }

    #[test]
    fn fresh_ids_are_version_4_uuids() {
        let id = fresh_id(&crate::runtime::OsEntropy);
        let parsed = id
            .to_str()
            .ok()
            .and_then(|text| uuid::Uuid::parse_str(text).ok());
        assert_eq!(parsed.map(|id| id.get_version_num()), Some(4));
    }
}

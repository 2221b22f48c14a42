//! REST fixtures: a JSON client for the relay's `/v1/edge/*` surface (any
//! method, a bearer of choice), caller tokens of any tenant and operator
//! level, and live edges (enrolled and connected by our edge client).

use aegis_relay::app::RunningRelay;
use serde_json::{json, Value};
use uuid::Uuid;

use super::edges::{enroll_edge, run_edge, Enrolled, RunningEdge};
use super::enroll::{sign_claims, BoxError};

/// An answer: status and JSON body (`Value::Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Parsed body.
    pub json: Value,
    /// Raw body.
    pub text: String,
}

impl Answer {
    /// The error body's `message` (empty when absent).
    pub fn message(&self) -> &str {
        self.json["message"].as_str().unwrap_or_default()
    }
}

/// A client of one relay's HTTP port acting with one bearer (or none).
#[derive(Debug, Clone)]
pub struct Rest {
    base: String,
    authorization: Option<String>,
}

impl Rest {
    /// A client sending `Authorization: <authorization>`, if given.
    pub fn new(relay: &RunningRelay, authorization: Option<&str>) -> Self {
        Self {
            base: format!("http://{}", relay.http_addr()),
            authorization: authorization.map(str::to_owned),
        }
    }

    /// Sends `method path` with `body` (raw text, may be empty).
    pub async fn send(&self, method: &str, path: &str, body: &str) -> Result<Answer, BoxError> {
        let url = format!("{}{path}", self.base);
        let headers: Vec<(&str, &str)> = self
            .authorization
            .iter()
            .map(|value| ("authorization", value.as_str()))
            .collect();
        let (status, text) = super::http_request(method, &url, &headers, body).await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer { status, json, text })
    }

    /// GET.
    pub async fn get(&self, path: &str) -> Result<Answer, BoxError> {
        self.send("GET", path, "").await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> Result<Answer, BoxError> {
        self.send("DELETE", path, "").await
    }

    /// POST a JSON value.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Answer, BoxError> {
        self.send("POST", path, &body.to_string()).await
    }

    /// PATCH a JSON value.
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Answer, BoxError> {
        self.send("PATCH", path, &body.to_string()).await
    }

    /// `POST /v1/edge/fleet/preview` of `target`.
    pub async fn preview(&self, target: &Value) -> Result<Answer, BoxError> {
        self.post("/v1/edge/fleet/preview", &json!({ "target": target }))
            .await
    }
}

/// `Bearer <token>` of a caller of `tenant` with operator level `role`
/// (`""` for a plain tenant user, `aegis:readonly`, ...), signed by `relay`.
pub async fn caller_bearer(
    relay: &RunningRelay,
    subject: &str,
    tenant: &str,
    role: &str,
) -> Result<String, BoxError> {
    let now = aegis_relay::runtime::SystemClock.utc_now().timestamp();
    let claims = json!({
        "iss": relay.tokens().issuer(), "sub": subject, "aud": "aegis-relay",
        "iat": now, "exp": now + 600, "tenant_id": tenant, "aegis_role": role,
        "realm_access": {"roles": []},
    });
    Ok(format!("Bearer {}", sign_claims(relay, &claims).await?))
}

/// The ids of `answer.json["resolved"]`, as text.
pub fn resolved(answer: &Answer) -> Vec<String> {
    answer.json["resolved"]
        .as_array()
        .map(|ids| {
            ids.iter()
                .filter_map(|id| id.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Node ids as sorted text, to compare with [`resolved`].
pub fn sorted_ids(ids: &[Uuid]) -> Vec<String> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.iter().map(Uuid::to_string).collect()
}

/// An edge of `tenant`, enrolled and connected by our edge client (it stops
/// when both halves are dropped).
pub async fn live_edge(
    relay: &RunningRelay,
    tenant: &str,
) -> Result<(Enrolled, RunningEdge), BoxError> {
    let enrolled = enroll_edge(relay, tenant).await?;
    let running = run_edge(relay, &enrolled.state, Default::default()).await?;
    Ok((enrolled, running))
}

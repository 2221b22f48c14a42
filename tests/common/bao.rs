//! OpenBao's HTTP API as the tests drive it: one token, JSON in, the
//! answer's `data` out.

use std::time::Duration;

use serde_json::Value;

use super::enroll::BoxError;

/// An OpenBao server at `url`, called with `token`.
pub struct BaoApi {
    pub url: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl BaoApi {
    /// A client of `url` (10 s per call) using `token`.
    pub fn new(url: String, token: String) -> Result<Self, BoxError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self { url, token, http })
    }

    /// One API call; the `data` of the answer (Null when none).
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, BoxError> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut request = self
            .http
            .request(method.clone(), format!("{}/v1/{path}", self.url))
            .header("X-Vault-Token", &self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            return Err(format!("{method} {path}: {status}: {text}").into());
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        let value: Value = serde_json::from_str(&text)?;
        Ok(value.get("data").cloned().unwrap_or(Value::Null))
    }
}

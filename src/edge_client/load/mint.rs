//! Minting enrollment tokens over the relay's REST API
//! (`POST /v1/edge/enrollment-tokens`), for the tenant each edge belongs to.

use std::time::Duration;

use serde::Deserialize;

/// Mints enrollment tokens over the relay's REST API.
#[derive(Clone)]
pub struct Minter {
    url: String,
    bearer: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for Minter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minter")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Why a token could not be minted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MintError {
    /// 401: the bearer is not a valid token for this relay.
    #[error("401 unauthorized: {0}")]
    Unauthorized(String),
    /// 403: the bearer may not mint for this tenant.
    #[error("403 forbidden for tenant {tenant}: {message}")]
    Forbidden {
        /// The tenant asked for.
        tenant: String,
        /// The relay's message.
        message: String,
    },
    /// Any other refusal.
    #[error("HTTP {status}: {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The relay's message.
        message: String,
    },
    /// No answer, or an unreadable one.
    #[error("{0}")]
    Transport(String),
}

impl MintError {
    pub(super) fn is_transient(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Rejected { status, .. } => *status == 429 || *status >= 500,
            Self::Unauthorized(_) | Self::Forbidden { .. } => false,
        }
    }
}

#[derive(Deserialize)]
struct Minted {
    token: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: String,
}

impl Minter {
    /// A minter posting to `{api}/v1/edge/enrollment-tokens` with `bearer`,
    /// each request bounded by `timeout`.
    pub fn new(api: &str, bearer: &str, timeout: Duration) -> Result<Self, MintError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|err| MintError::Transport(err.to_string()))?;
        Ok(Self {
            url: format!("{}/v1/edge/enrollment-tokens", api.trim_end_matches('/')),
            bearer: bearer.trim().to_owned(),
            client,
        })
    }

    /// A fresh enrollment token for `tenant`, labelled `issued_to`.
    pub async fn mint(&self, tenant: &str, issued_to: &str) -> Result<String, MintError> {
        let response = self
            .client
            .post(&self.url)
            .bearer_auth(&self.bearer)
            .header("x-aegis-tenant", tenant)
            .json(&serde_json::json!({ "issued_to": issued_to }))
            .send()
            .await
            .map_err(|err| MintError::Transport(format!("POST {}: {err}", self.url)))?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|err| MintError::Transport(format!("POST {}: {err}", self.url)))?;
        if status == 200 {
            return serde_json::from_slice::<Minted>(&body)
                .map(|minted| minted.token)
                .map_err(|err| MintError::Transport(format!("unexpected answer: {err}")));
        }
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|body| body.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).chars().take(200).collect());
        Err(match status {
            401 => MintError::Unauthorized(message),
            403 => MintError::Forbidden {
                tenant: tenant.to_owned(),
                message,
            },
            _ => MintError::Rejected { status, message },
        })
    }
}

//! HTTP client of the runtimes' API (`bot-runtime serve`): status polls and
//! control requests, with timeouts and a cap on the answer's size.

use std::time::Duration;

use paperbot_crds::runtime_api::{ApiError, ControlResponse, RuntimeStatus, STATUS_PATH};
use reqwest::{StatusCode, header};
use serde::{Serialize, de::DeserializeOwned};

/// Largest answer read from a runtime (a status with 50 positions and every
/// breaker is a few KiB).
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Why a call to a runtime failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// No answer: connection refused, DNS, timeout.
    #[error("runtime unreachable: {0}")]
    Unreachable(String),
    /// The runtime refused the token (401/403): the Secret changed under it.
    #[error("runtime refused the session's API token ({code}): {message}")]
    Unauthorized {
        /// HTTP status.
        code: u16,
        /// The runtime's message.
        message: String,
    },
    /// Any other non-2xx answer, with the runtime's error body when it had one.
    #[error("runtime answered {code}: {message}")]
    Refused {
        /// HTTP status.
        code: u16,
        /// The runtime's `ApiError.message`, or the start of the body.
        message: String,
        /// The runtime's `ApiError.error` code, e.g. `not_found`, `conflict`.
        error: Option<String>,
    },
    /// A 2xx answer that is not the expected JSON (or too large).
    #[error("runtime answer unreadable: {0}")]
    Decode(String),
}

impl ClientError {
    /// Whether the runtime did not answer at all (as opposed to refusing).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable(_))
    }
}

/// A shared client (one connection pool for all runtimes).
#[derive(Clone, Debug)]
pub struct RuntimeClient {
    http: reqwest::Client,
}

impl RuntimeClient {
    /// A client whose every request ends after `timeout` (connect 2 s at most).
    ///
    /// # Errors
    /// When the HTTP client cannot be built (TLS backend, system settings).
    pub fn new(timeout: Duration) -> Result<Self, ClientError> {
        crate::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1)
            .user_agent(concat!("paperbot-operator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Unreachable(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { http })
    }

    /// A client without timeouts of its own (only when [`Self::new`] fails).
    pub fn default_client() -> Self {
        crate::tls::install_crypto_provider();
        Self {
            http: reqwest::Client::default(),
        }
    }

    /// `GET {base}/v1/status`.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn status(&self, base: &str, token: &str) -> Result<RuntimeStatus, ClientError> {
        let req = self
            .http
            .get(format!("{}{STATUS_PATH}", base.trim_end_matches('/')))
            .bearer_auth(token);
        read(req).await
    }

    /// `POST {base}{path}` with an optional JSON body.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn post<B: Serialize + ?Sized>(
        &self,
        base: &str,
        path: &str,
        token: &str,
        body: Option<&B>,
    ) -> Result<ControlResponse, ClientError> {
        let mut req = self
            .http
            .post(format!("{}{path}", base.trim_end_matches('/')))
            .bearer_auth(token);
        req = match body {
            Some(b) => req.json(b),
            None => req.header(header::CONTENT_LENGTH, 0),
        };
        read(req).await
    }
}

async fn read<T: DeserializeOwned>(req: reqwest::RequestBuilder) -> Result<T, ClientError> {
    let mut resp = req
        .send()
        .await
        .map_err(|e| ClientError::Unreachable(error_chain(&e)))?;
    let code = resp.status();
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(ClientError::Decode(format!(
            "answer of {} bytes is larger than {MAX_ANSWER_BYTES}",
            resp.content_length().unwrap_or_default()
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ClientError::Unreachable(error_chain(&e)))?
    {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(ClientError::Decode(format!(
                "answer larger than {MAX_ANSWER_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    if code.is_success() {
        return serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()));
    }
    let api: Option<ApiError> = serde_json::from_slice(&body).ok();
    let message = api.as_ref().map_or_else(
        || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        |a| a.message.clone(),
    );
    if code == StatusCode::UNAUTHORIZED || code == StatusCode::FORBIDDEN {
        return Err(ClientError::Unauthorized {
            code: code.as_u16(),
            message,
        });
    }
    Err(ClientError::Refused {
        code: code.as_u16(),
        message,
        error: api.map(|a| a.error),
    })
}

/// The error and its sources on one line (reqwest's Display hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

//! One upstream's HTTP client: request timeout, retries of transient failures
//! with exponential backoff and jitter (`backon`), `429` + `Retry-After`
//! honoured across polls, a [`CircuitBreaker`] and a [`RequestBudget`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use tokio::time::Instant;

use super::breaker::{BreakerState, CircuitBreaker};
use super::budget::RequestBudget;
use super::{LiveError, SourceError};

/// Limits and retry settings of one source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpPolicy {
    /// Whole-request timeout (connect, send, body).
    pub timeout: Duration,
    /// Extra attempts after a transient failure within one poll (0 = none).
    pub max_retries: u32,
    /// First backoff delay; doubles per retry, with random jitter added.
    pub backoff_min: Duration,
    /// Largest backoff delay.
    pub backoff_max: Duration,
    /// Requests per minute this source may receive (retries included).
    pub requests_per_minute: u32,
    /// Failed polls in a row that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before a trial request.
    pub breaker_cool_down: Duration,
    /// Wait after a `429` that carries no usable `Retry-After`.
    pub default_retry_after: Duration,
    /// Longest `Retry-After` honoured (longer values are cut to this).
    pub max_retry_after: Duration,
}

impl Default for HttpPolicy {
    /// 10 s timeout, 2 retries from 250 ms up to 4 s, 30 requests per minute
    /// (CoinGecko's public limit is about that), breaker after 3 failed polls
    /// for 60 s, 60 s after a bare `429`, `Retry-After` capped at 10 minutes.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_retries: 2,
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(4),
            requests_per_minute: 30,
            breaker_failures: 3,
            breaker_cool_down: Duration::from_secs(60),
            default_retry_after: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(600),
        }
    }
}

/// Parse a `Retry-After` value: delay-seconds (`120`) or an HTTP date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`, RFC 9110 §10.2.3) relative to `now`.
/// A date in the past gives zero. `None` when the value is neither.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// HTTP access to one upstream, shared by `&self`.
#[derive(Debug)]
pub struct HttpSource {
    client: reqwest::Client,
    policy: HttpPolicy,
    breaker: CircuitBreaker,
    budget: RequestBudget,
    not_before: Mutex<Option<Instant>>,
    requests_sent: AtomicU64,
}

impl HttpSource {
    /// A client with `policy`. `https://` URLs are verified against the
    /// system trust store through [`tls::client_config`](super::tls::client_config)
    /// (rustls with `ring`; `SSL_CERT_FILE` replaces the store); `http://`
    /// works too (proxies, loopback tests).
    ///
    /// # Errors
    ///
    /// [`LiveError::Config`] for a zero timeout; [`LiveError::Client`] when
    /// the TLS setup fails (no CA certificate could be loaded).
    pub fn new(policy: HttpPolicy) -> Result<Self, LiveError> {
        if policy.timeout.is_zero() {
            return Err(LiveError::Config(
                "request timeout must be > 0 seconds".into(),
            ));
        }
        let tls = super::tls::client_config().map_err(|e| {
            LiveError::Client(format!(
                "TLS setup: {e} (CA certificates come from the system store, \
                 or from SSL_CERT_FILE / SSL_CERT_DIR when set)"
            ))
        })?;
        Self::with_tls_config(policy, tls)
    }

    /// A client with `policy` whose HTTPS uses `tls` as given (its crypto
    /// provider, trust anchors or verifier, protocol versions): for callers
    /// that pin their own roots, and tests.
    ///
    /// # Errors
    ///
    /// [`LiveError::Config`] for a zero timeout; [`LiveError::Client`] when
    /// reqwest refuses the configuration.
    pub fn with_tls_config(
        policy: HttpPolicy,
        tls: rustls::ClientConfig,
    ) -> Result<Self, LiveError> {
        if policy.timeout.is_zero() {
            return Err(LiveError::Config(
                "request timeout must be > 0 seconds".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(policy.timeout)
            .user_agent(concat!("paperbot-bot-runtime/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LiveError::Client(error_chain(&e)))?;
        Ok(Self {
            breaker: CircuitBreaker::new(policy.breaker_failures, policy.breaker_cool_down),
            budget: RequestBudget::per_minute(policy.requests_per_minute),
            client,
            policy,
            not_before: Mutex::new(None),
            requests_sent: AtomicU64::new(0),
        })
    }

    /// The policy.
    pub fn policy(&self) -> &HttpPolicy {
        &self.policy
    }

    /// The breaker's state.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// HTTP requests actually sent (retries included).
    pub fn requests_sent(&self) -> u64 {
        self.requests_sent.load(Ordering::Relaxed)
    }

    fn retry_wait(&self) -> Option<Duration> {
        let nb = *self.not_before.lock().unwrap_or_else(|p| p.into_inner());
        nb.and_then(|t| t.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    /// Whether a request may go out now.
    ///
    /// # Errors
    ///
    /// `CircuitOpen`, `RateLimited` (inside a `Retry-After` wait) or
    /// `BudgetExhausted`.
    pub fn ready(&self) -> Result<(), SourceError> {
        if let Err(remaining) = self.breaker.check() {
            return Err(SourceError::CircuitOpen { remaining });
        }
        if let Some(retry_after) = self.retry_wait() {
            return Err(SourceError::RateLimited { retry_after });
        }
        let wait = self.budget.wait_time();
        if !wait.is_zero() {
            return Err(SourceError::BudgetExhausted { wait });
        }
        Ok(())
    }

    /// GET `url` with `headers` and hand the body to `parse`; transient
    /// failures are retried with backoff while the budget allows. The result
    /// (a parse failure included) is recorded in the circuit breaker.
    ///
    /// # Errors
    ///
    /// The last [`SourceError`].
    pub async fn get<T>(
        &self,
        url: &str,
        headers: &HeaderMap,
        parse: impl Fn(&str) -> Result<T, SourceError>,
    ) -> Result<T, SourceError> {
        self.ready()?;
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(self.policy.backoff_min)
            .with_max_delay(self.policy.backoff_max)
            .with_max_times(self.policy.max_retries as usize)
            .with_jitter()
            .build();
        let result = loop {
            if let Err(wait) = self.budget.try_acquire() {
                break Err(SourceError::BudgetExhausted { wait });
            }
            let attempt = self.send(url, headers).await.and_then(|b| parse(&b));
            match attempt {
                Err(e) if e.is_transient() => match delays.next() {
                    Some(d) if self.budget.wait_time().is_zero() => {
                        tracing::debug!(url, error = %e, delay = ?d, "retrying live source request");
                        tokio::time::sleep(d).await;
                    }
                    _ => break Err(e),
                },
                other => break other,
            }
        };
        match &result {
            Ok(_) => self.breaker.record_success(),
            Err(e) if e.counts_as_failure() => self.breaker.record_failure(),
            Err(_) => {}
        }
        result
    }

    async fn send(&self, url: &str, headers: &HeaderMap) -> Result<String, SourceError> {
        self.requests_sent.fetch_add(1, Ordering::Relaxed);
        let resp = self
            .client
            .get(url)
            .headers(headers.clone())
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, Utc::now()))
                .unwrap_or(self.policy.default_retry_after)
                .min(self.policy.max_retry_after);
            *self.not_before.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(Instant::now() + retry_after);
            return Err(SourceError::RateLimited { retry_after });
        }
        let body = resp.text().await.map_err(|e| self.transport_error(e))?;
        if status.is_server_error() {
            return Err(SourceError::Server {
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            return Err(SourceError::Refused {
                status: status.as_u16(),
                body: body.chars().take(200).collect(),
            });
        }
        Ok(body)
    }

    fn transport_error(&self, e: reqwest::Error) -> SourceError {
        if e.is_timeout() {
            SourceError::Timeout {
                timeout: self.policy.timeout,
            }
        } else if e.is_decode() || e.is_body() {
            SourceError::Malformed(e.to_string())
        } else {
            SourceError::Connect(error_chain(&e))
        }
    }
}

/// `e` and its sources, `: `-separated: reqwest's own message names only
/// the URL; the cause (refused connection, `invalid peer certificate:
/// UnknownIssuer`, a name mismatch) is in the chain.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 27, 0).unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    /// Builds the client with the preconfigured ring config (reqwest would
    /// panic for a missing provider, or refuse an unrecognised config) and
    /// sends to an `https://` URL: the request reaches the TLS layer (here a
    /// closed loopback port refuses it) instead of failing as an unsupported
    /// scheme.
    #[tokio::test]
    async fn client_builds_and_speaks_https() {
        let s = HttpSource::new(HttpPolicy {
            max_retries: 0,
            ..HttpPolicy::default()
        })
        .unwrap();
        assert_eq!(s.requests_sent(), 0);
        assert_eq!(s.ready(), Ok(()));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let err = s
            .get(
                &format!("https://127.0.0.1:{port}/api/v3/simple/price"),
                &HeaderMap::new(),
                |b| Ok(b.to_string()),
            )
            .await
            .unwrap_err();
        let SourceError::Connect(msg) = &err else {
            panic!("expected a connect error, got {err:?}");
        };
        assert!(
            !msg.contains("scheme") && msg.to_lowercase().contains("connect"),
            "{msg}"
        );
        assert_eq!(s.requests_sent(), 1);
    }

    #[test]
    fn error_chain_names_the_causes() {
        let inner = std::io::Error::other("invalid peer certificate: UnknownIssuer");
        let outer = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, inner);
        // io::Error's Display already shows its inner error: not repeated.
        assert_eq!(
            error_chain(&outer),
            "invalid peer certificate: UnknownIssuer"
        );
        #[derive(Debug)]
        struct Wrap(std::io::Error);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error sending request")
            }
        }
        impl std::error::Error for Wrap {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let w = Wrap(std::io::Error::other("tls handshake eof"));
        assert_eq!(error_chain(&w), "error sending request: tls handshake eof");
    }

    #[test]
    fn zero_timeout_is_refused() {
        let p = HttpPolicy {
            timeout: Duration::ZERO,
            ..HttpPolicy::default()
        };
        assert!(matches!(HttpSource::new(p), Err(LiveError::Config(_))));
    }
}

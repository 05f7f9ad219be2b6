//! The runtime's HTTP API (axum), served by `bot-runtime serve` on a
//! [`SessionHandle`].
//!
//! | route | what | token |
//! |---|---|---|
//! | `GET /healthz` | the process serves requests | no |
//! | `GET /readyz` | 200 iff the status says ready, else 503 with why | no |
//! | `GET /metrics` | the session's Prometheus registry (also on `metrics_listen`) | no |
//! | `GET /openapi.json` | the OpenAPI 3.1 document ([`openapi_document`]) | no |
//! | `GET /v1/status` | the latest [`RuntimeStatus`](paperbot_crds::runtime_api::RuntimeStatus) | read |
//! | `GET /v1/events` | server-sent events ([`events`]) | read |
//! | `GET /v1/trades`, `/v1/decisions`, `/v1/positions`, `/v1/breakers/events`, `/v1/autopilot/adjustments` | cursor-paged ledger rows ([`paging`]) | read |
//! | `POST /v1/pause`, `/v1/resume`, `/v1/stop`, `/v1/breakers/{name}/reset`, `/v1/config` | control requests to the session | always |
//!
//! "read": the bearer token unless [`ApiOptions::open_reads`] ([`auth`]).
//! `/v1/positions` is the position history (closed positions, from the
//! ledger's round trips); open positions, with their marks, are in
//! `/v1/status`.
//!
//! Every 4xx/5xx answer is an [`ApiError`](paperbot_crds::runtime_api::ApiError)
//! body ([`error`]): unknown routes (404) and methods (405) included, as
//! well as bodies over [`ApiOptions::body_limit`] (413), and a handler that
//! panicked (500). Control requests are forwarded through
//! [`SessionHandle::request`] and answered within
//! [`ApiOptions::control_timeout`] (else 503).

pub mod auth;
pub mod error;
pub mod events;
mod handlers;
pub mod openapi;
pub mod paging;
mod routes;
pub mod rows;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::{
    Router,
    extract::DefaultBodyLimit,
    http::{StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

pub use auth::ApiToken;
pub use handlers::MAX_REVISION_LEN;
pub use routes::openapi_document;

use self::auth::Auth;
use self::error::{HttpError, code};
use crate::ledger::query::LedgerReader;
use crate::service::SessionHandle;

/// Default [`ApiOptions::body_limit`]: 64 KiB (a `ConfigUpdate` is about 2 KiB).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Default [`ApiOptions::control_timeout`].
pub const DEFAULT_CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// Default [`ApiOptions::max_event_streams`].
pub const DEFAULT_MAX_EVENT_STREAMS: usize = 64;

/// How the API serves.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// Address of the API (e.g. `0.0.0.0:8080`).
    pub listen: SocketAddr,
    /// A second address serving only `/metrics` (for a Prometheus scrape
    /// port apart from the API); `None` = `/metrics` on `listen` only.
    pub metrics_listen: Option<SocketAddr>,
    /// The session's API token; `None` refuses every control request and,
    /// unless `open_reads`, every read.
    pub token: Option<ApiToken>,
    /// Read routes (`GET /v1/*`) need no token.
    pub open_reads: bool,
    /// Read-only handle on the session's ledger (paged histories).
    pub ledger: LedgerReader,
    /// Largest request body, bytes (larger: 413).
    pub body_limit: usize,
    /// How long a control request waits for the session's answer (then 503).
    pub control_timeout: Duration,
    /// Event streams (`GET /v1/events`) open at once; one more is answered
    /// 503 (each holds a connection and a subscription).
    pub max_event_streams: usize,
    /// The session's candle files as (symbol, path) pairs, for the price
    /// charts of `GET /v1/report/{file}` (as `bot-runtime report --data`);
    /// empty (a live session, or trade files) draws the recorded prices.
    pub report_data: Vec<(String, std::path::PathBuf)>,
}

impl ApiOptions {
    /// Options listening on `listen`, reading `ledger`, without a token,
    /// reads closed, default limits.
    pub fn new(listen: SocketAddr, ledger: LedgerReader) -> Self {
        Self {
            listen,
            metrics_listen: None,
            token: None,
            open_reads: false,
            ledger,
            body_limit: DEFAULT_BODY_LIMIT,
            control_timeout: DEFAULT_CONTROL_TIMEOUT,
            max_event_streams: DEFAULT_MAX_EVENT_STREAMS,
            report_data: Vec::new(),
        }
    }
}

/// What every handler sees (cheap to clone).
#[derive(Clone, Debug)]
pub(crate) struct AppState {
    pub handle: SessionHandle,
    pub ledger: LedgerReader,
    pub auth: Arc<Auth>,
    pub body_limit: usize,
    pub control_timeout: Duration,
    /// The OpenAPI document, serialised once.
    pub openapi: Arc<String>,
    /// Set to true on shutdown: event streams end.
    pub shutdown: Arc<watch::Sender<bool>>,
    /// One permit per event stream that may be open.
    pub streams: Arc<tokio::sync::Semaphore>,
    /// The number of permits of `streams`.
    pub max_streams: usize,
    /// One permit per report build that may run at once
    /// ([`handlers::REPORT_BUILDS`]).
    pub report_builds: Arc<tokio::sync::Semaphore>,
    /// [`ApiOptions::report_data`].
    pub report_data: Arc<Vec<(String, std::path::PathBuf)>>,
}

/// The API's router for `handle` (for tests: [`serve`] adds the listeners
/// and graceful shutdown). Event streams end when the session side drops
/// its event sender.
pub fn router(handle: SessionHandle, opts: &ApiOptions) -> Router {
    let (tx, _) = watch::channel(false);
    build(handle, opts, Arc::new(tx))
}

fn build(handle: SessionHandle, opts: &ApiOptions, shutdown: Arc<watch::Sender<bool>>) -> Router {
    let doc = openapi_document();
    let openapi = serde_json::to_string_pretty(&doc).unwrap_or_else(|e| {
        // Serialising a `Value` cannot fail; keep serving regardless.
        format!("{{\"error\":\"internal\",\"message\":\"{e}\"}}")
    });
    let state = AppState {
        handle,
        ledger: opts.ledger.clone(),
        auth: Arc::new(Auth {
            token: opts.token.clone(),
            open_reads: opts.open_reads,
        }),
        body_limit: opts.body_limit,
        control_timeout: opts.control_timeout,
        openapi: Arc::new(openapi),
        shutdown,
        streams: Arc::new(tokio::sync::Semaphore::new(opts.max_event_streams)),
        max_streams: opts.max_event_streams,
        report_builds: Arc::new(tokio::sync::Semaphore::new(handlers::REPORT_BUILDS)),
        report_data: Arc::new(opts.report_data.clone()),
    };
    let mut sink = routes::RouterSink {
        router: Router::new(),
        state: state.clone(),
    };
    routes::declare(&mut sink);
    sink.router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(opts.body_limit))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(tracing_layer())
        .with_state(state)
}

/// Requests traced at `DEBUG`; 5xx answers are expected states (not ready,
/// session unavailable), not server faults.
fn tracing_layer() -> TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    tower_http::trace::DefaultMakeSpan,
    tower_http::trace::DefaultOnRequest,
    tower_http::trace::DefaultOnResponse,
    (),
    (),
    DefaultOnFailure,
> {
    TraceLayer::new_for_http()
        .on_body_chunk(())
        .on_eos(())
        .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG))
}

async fn not_found(uri: Uri) -> HttpError {
    HttpError::not_found(format!(
        "no route {}: see /openapi.json for the routes",
        uri.path()
    ))
}

async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        code::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {}: the Allow header lists the methods",
            uri.path()
        ),
    )
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("an API handler panicked");
    HttpError::internal("the request failed inside the runtime; it keeps serving").into_response()
}

/// The router of `metrics_listen`: `/metrics` only.
fn metrics_router(registry: prometheus::Registry) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move { handlers::render_metrics(&registry) }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// Serve the API on `opts.listen` (and `/metrics` on `opts.metrics_listen`)
/// until `shutdown` completes; then event streams end, requests in flight
/// finish, and this returns.
///
/// # Errors
/// When an address cannot be bound, or accepting fails fatally.
pub async fn serve(
    handle: SessionHandle,
    opts: ApiOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let api = TcpListener::bind(opts.listen).await?;
    let metrics = match opts.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    serve_on(api, metrics, handle, opts, shutdown).await
}

/// [`serve`] on listeners already bound (e.g. to port 0 in tests); the
/// addresses in `opts` are not used.
///
/// # Errors
/// When accepting fails fatally.
pub async fn serve_on(
    api: TcpListener,
    metrics: Option<TcpListener>,
    handle: SessionHandle,
    opts: ApiOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tx = Arc::new(watch::channel(false).0);
    let registry = handle.registry.clone();
    let app = build(handle, &opts, tx.clone());
    let done = {
        let tx = tx.clone();
        tokio::spawn(async move {
            shutdown.await;
            tx.send_replace(true);
        })
    };
    let stopped = |tx: &Arc<watch::Sender<bool>>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    if let Ok(addr) = api.local_addr() {
        tracing::info!(%addr, "API listening");
    }
    let api_server = axum::serve(api, app).with_graceful_shutdown(stopped(&tx));
    let result = match metrics {
        None => api_server.await,
        Some(m) => {
            if let Ok(addr) = m.local_addr() {
                tracing::info!(%addr, "metrics listening");
            }
            let metrics_server =
                axum::serve(m, metrics_router(registry)).with_graceful_shutdown(stopped(&tx));
            let (a, b) = tokio::join!(api_server, metrics_server);
            a.and(b)
        }
    };
    done.abort();
    result
}

#[cfg(test)]
mod tests;

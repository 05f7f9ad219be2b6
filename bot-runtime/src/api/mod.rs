//! TEMPORARY minimal HTTP API of `bot-runtime serve`, so that the session
//! side can be run and tested on its own; the full API (paged histories,
//! the event stream, OpenAPI, error bodies for every rejection) replaces
//! this module.
//!
//! `GET /healthz`, `/readyz`, `/metrics`, `/v1/status`; `POST /v1/pause`,
//! `/v1/resume`, `/v1/stop`, `/v1/breakers/{name}/reset`, `/v1/config`
//! (bearer token required; without a configured token they are refused).

use std::{future::Future, net::SocketAddr};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use paperbot_crds::runtime_api::{ApiError, ConfigUpdate};

use crate::service::{Control, ControlError, SessionHandle};

/// Where and how to serve.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// API address (`/healthz`, `/readyz`, `/metrics`, `/v1/...`).
    pub listen: SocketAddr,
    /// A second address serving `/metrics` only.
    pub metrics_listen: Option<SocketAddr>,
    /// Bearer token of the mutating routes (`None`: they are refused).
    pub token: Option<String>,
}

#[derive(Clone)]
struct App {
    handle: SessionHandle,
    token: Option<String>,
}

fn error(status: StatusCode, code: &str, message: String, field: Option<String>) -> Response {
    let body = ApiError {
        error: code.into(),
        message,
        field,
    };
    (status, Json(body)).into_response()
}

/// Constant-time comparison of the presented token with the configured one.
fn token_matches(given: &[u8], want: &[u8]) -> bool {
    given.len() == want.len()
        && given
            .iter()
            .zip(want)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The refusal of a request without the right token (`None`: authorized).
fn refusal(app: &App, headers: &HeaderMap) -> Option<Response> {
    let Some(want) = &app.token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "no API token is configured: control requests are refused".into(),
            None,
        ));
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        None => Some(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "expected Authorization: Bearer <token>".into(),
            None,
        )),
        Some(t) if token_matches(t.as_bytes(), want.as_bytes()) => None,
        Some(_) => Some(error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "wrong token".into(),
            None,
        )),
    }
}

async fn control(app: &App, headers: &HeaderMap, command: Control) -> Response {
    if let Some(r) = refusal(app, headers) {
        return r;
    }
    match app.handle.request(command).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => {
            let (status, code, field) = match &e {
                ControlError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found", None),
                ControlError::BadRequest { field, .. } => {
                    (StatusCode::BAD_REQUEST, "bad_request", Some(field.clone()))
                }
                ControlError::Conflict(_) => (StatusCode::CONFLICT, "conflict", None),
                ControlError::Unavailable(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None)
                }
            };
            error(status, code, e.to_string(), field)
        }
    }
}

fn metrics_text(handle: &SessionHandle) -> Response {
    let mut out = String::new();
    match prometheus::TextEncoder::new().encode_utf8(&handle.registry.gather(), &mut out) {
        Ok(()) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            out,
        )
            .into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
            None,
        ),
    }
}

/// The routes.
pub fn router(handle: SessionHandle, token: Option<String>) -> Router {
    let app = App { handle, token };
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(app): State<App>| async move {
                let s = app.handle.status.borrow().clone();
                let code = if s.ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                (code, Json(s)).into_response()
            }),
        )
        .route(
            "/metrics",
            get(|State(app): State<App>| async move { metrics_text(&app.handle) }),
        )
        .route(
            "/v1/status",
            get(|State(app): State<App>| async move {
                Json(app.handle.status.borrow().clone()).into_response()
            }),
        )
        .route(
            "/v1/pause",
            post(|State(app): State<App>, h: HeaderMap| async move {
                control(&app, &h, Control::Pause).await
            }),
        )
        .route(
            "/v1/resume",
            post(|State(app): State<App>, h: HeaderMap| async move {
                control(&app, &h, Control::Resume).await
            }),
        )
        .route(
            "/v1/stop",
            post(|State(app): State<App>, h: HeaderMap| async move {
                control(&app, &h, Control::Stop).await
            }),
        )
        .route(
            "/v1/breakers/{name}/reset",
            post(
                |State(app): State<App>, h: HeaderMap, Path(name): Path<String>| async move {
                    control(&app, &h, Control::ResetBreaker(name)).await
                },
            ),
        )
        .route(
            "/v1/config",
            post(
                |State(app): State<App>, h: HeaderMap, body: axum::body::Bytes| async move {
                    match serde_json::from_slice::<ConfigUpdate>(&body) {
                        Ok(update) => control(&app, &h, Control::Reload(Box::new(update))).await,
                        Err(e) => {
                            error(StatusCode::BAD_REQUEST, "bad_request", e.to_string(), None)
                        }
                    }
                },
            ),
        )
        .with_state(app)
}

/// Serve until `shutdown` completes.
///
/// # Errors
/// When an address cannot be bound or the server fails.
pub async fn serve(
    handle: SessionHandle,
    opts: ApiOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(opts.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "API listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = opts.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(addr).await?;
        let h = handle.clone();
        let mut rx = stop_rx.clone();
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let h = h.clone();
                async move { metrics_text(&h) }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(metrics, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
        });
    }
    let app = router(handle, opts.token);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = stop_tx.send(true);
    result
}

//! HTTP endpoints for Prometheus and the kubelet's probes:
//!
//! - `GET /metrics`: [`Metrics::render`], content type `text/plain; version=0.0.4`;
//! - `GET /healthz`: `200 ok` while the process serves requests (liveness);
//! - `GET /readyz`: `200 ok` once [`ServerState::ready`] is set (the
//!   operator sets it when its watches have synced, and while it stands by
//!   for the leader Lease), else `503` (readiness).

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::net::TcpListener;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::metrics::Metrics;

/// Shared state of the HTTP handlers.
#[derive(Clone, Debug)]
pub struct ServerState {
    /// Metrics rendered on `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Readiness reported on `/readyz`; the operator stores `true` once its
    /// watches have synced, and while it stands by for the leader Lease.
    pub ready: Arc<AtomicBool>,
}

impl ServerState {
    /// State with the given metrics, not ready yet.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// The router serving `/metrics`, `/healthz` and `/readyz`; requests and
/// failures are traced at `DEBUG` level.
pub fn router(state: ServerState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        // A 503 from /readyz is an answer, not a server failure: keep it
        // out of the error log.
        .layer(
            TraceLayer::new_for_http()
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .with_state(state)
}

/// Serves [`router`] on `addr` until `shutdown` resolves, then stops
/// accepting connections and waits for requests in flight.
///
/// # Errors
/// The I/O error of binding `addr` or of the accept loop.
pub async fn serve(
    addr: SocketAddr,
    state: ServerState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    serve_on(listener, state, shutdown).await
}

/// Like [`serve`], on a listener that is already bound (e.g. to port 0).
///
/// # Errors
/// The I/O error of the accept loop.
pub async fn serve_on(
    listener: TcpListener,
    state: ServerState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(state): State<ServerState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        state.metrics.render(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<ServerState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: watches have not synced yet",
        )
    }
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use tower::ServiceExt;

    use super::*;

    async fn get_path(state: &ServerState, path: &str) -> (StatusCode, Option<String>, String) {
        let response = router(state.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn metrics_endpoint_serves_the_exposition_format() {
        let state = ServerState::new(Arc::new(Metrics::new()));
        state.metrics.set_leader(true);
        state.metrics.init_controller("botsession");
        let (status, content_type, body) = get_path(&state, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type.as_deref(), Some("text/plain; version=0.0.4"));
        assert!(
            body.contains("paperbot_operator_queue_depth{controller=\"botsession\"} 0"),
            "{body}"
        );
        assert!(body.contains("paperbot_operator_leader 1"), "{body}");
    }

    #[tokio::test]
    async fn healthz_is_ok_even_before_ready() {
        let state = ServerState::new(Arc::new(Metrics::new()));
        let (status, _, body) = get_path(&state, "/healthz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    }

    #[tokio::test]
    async fn readyz_flips_with_the_ready_flag() {
        let state = ServerState::new(Arc::new(Metrics::new()));
        let (status, _, body) = get_path(&state, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("not ready"), "{body}");

        state.ready.store(true, Ordering::Release);
        let (status, _, body) = get_path(&state, "/readyz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));

        state.ready.store(false, Ordering::Release);
        assert_eq!(
            get_path(&state, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_are_refused() {
        let state = ServerState::new(Arc::new(Metrics::new()));
        assert_eq!(get_path(&state, "/nope").await.0, StatusCode::NOT_FOUND);
        let response = router(state)
            .oneshot(Request::post("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn serves_over_tcp_and_shuts_down_gracefully() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let state = ServerState::new(Arc::new(Metrics::new()));
        let server = tokio::spawn(serve_on(listener, state, async {
            let _ = stop_rx.await;
        }));

        let response = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response
        })
        .await
        .unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.ends_with("ok"), "{response}");

        stop_tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}

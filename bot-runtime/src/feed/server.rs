//! The feed's HTTP routes (axum) and its serve loop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::time::MissedTickBehavior;

use crate::market::live::FallbackChain;
use crate::market::live::feed::PRICES_PATH;

use super::{Feed, ServedBy};

#[derive(Deserialize)]
struct PricesQuery {
    #[serde(default)]
    symbols: String,
}

async fn prices(
    State(feed): State<Arc<Feed>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Query(q): Query<PricesQuery>,
) -> Response {
    match feed.prices(&q.symbols, client) {
        Ok(p) => axum::Json(p).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn readyz(State(feed): State<Arc<Feed>>) -> Response {
    if feed.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the last poll got no price from any source\n",
        )
            .into_response()
    }
}

async fn metrics(State(feed): State<Arc<Feed>>) -> Response {
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_to_string(&feed.metrics().registry.gather()) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("metrics could not be encoded: {e}\n"),
        )
            .into_response(),
    }
}

/// The routes: `GET /v1/prices?symbols=…`, `/healthz`, `/readyz`,
/// `/metrics`. Serve with `into_make_service_with_connect_info::<SocketAddr>`.
pub fn router(feed: Arc<Feed>) -> Router {
    Router::new()
        .route(PRICES_PATH, get(prices))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(feed)
}

/// Poll `chain` every `poll_interval` for `feed`'s union and serve the
/// routes on `listener` until `shutdown` completes; requests in flight
/// finish, then polling stops.
///
/// # Errors
///
/// When accepting connections fails fatally.
pub async fn serve(
    feed: Arc<Feed>,
    mut chain: FallbackChain,
    served_by: ServedBy,
    poll_interval: std::time::Duration,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let poller_feed = feed.clone();
    let poller = tokio::spawn(async move {
        let mut tick = tokio::time::interval(poll_interval);
        // Never catch up with a burst: at most one poll per interval.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            poller_feed.poll_once(&mut chain, &served_by).await;
        }
    });
    let app = router(feed).into_make_service_with_connect_info::<SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    poller.abort();
    result
}

//! A fake fleet of runtimes for operator scale tests: one HTTP server that
//! answers the runtime API (`/v1/status` and the control `POST`s) for any
//! number of sessions, under a path prefix per session
//! (`http://127.0.0.1:PORT/<namespace>/<session>`: the value of the
//! session's `paperbot.io/runtime-endpoint` annotation).
//!
//! It stands in for the `bot-runtime serve` processes only where running a
//! thousand real ones on two cores would measure the machine instead of the
//! operator; the end-to-end tests use real runtimes. Each fake session
//! starts Running with its equity at the allocation; [`FakeFleet::tick`]
//! moves the equity of every session (to measure the status write rate with
//! changing figures). Control requests change the phase as the real runtime
//! does. Every request is counted.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use paperbot_crds::runtime_api::{
    ApiError, ConfigUpdate, ControlResponse, LedgerHealthStatus, RuntimePhase, RuntimeStatus,
};
use rust_decimal::Decimal;

#[derive(Default)]
struct Inner {
    /// Answer for sessions never added, as Running with no money.
    auto_register: bool,
    sessions: Mutex<HashMap<(String, String), RuntimeStatus>>,
    status_requests: AtomicU64,
    control_requests: AtomicU64,
    unauthenticated: AtomicU64,
}

/// The fake fleet (cheap to clone).
#[derive(Clone, Default)]
pub struct FakeFleet {
    inner: Arc<Inner>,
}

type ApiResult<T> = Result<Json<T>, (StatusCode, Json<ApiError>)>;

fn refuse(code: StatusCode, error: &str, message: String) -> (StatusCode, Json<ApiError>) {
    (
        code,
        Json(ApiError {
            error: error.into(),
            message,
            field: None,
        }),
    )
}

impl FakeFleet {
    /// Add (or reset) a session: Running, ready, equity = cash = `allocation`,
    /// trading generation 1 of its StrategyConfig.
    pub fn add(&self, namespace: &str, name: &str, allocation: Decimal) {
        let status = RuntimeStatus {
            session: name.into(),
            session_id: name.into(),
            phase: RuntimePhase::Running,
            ready: true,
            initial_cash: allocation,
            cash: allocation,
            equity: allocation,
            ledger: LedgerHealthStatus {
                reachable: true,
                reason: None,
            },
            // A StrategyConfig's first generation: the strategy is in force.
            strategy_revision: Some("1".into()),
            ..Default::default()
        };
        self.lock()
            .insert((namespace.to_string(), name.to_string()), status);
    }

    /// Move every Running session's equity by `delta` (base currency) and
    /// count one more candle.
    pub fn tick(&self, delta: Decimal) {
        for s in self.lock().values_mut() {
            if s.phase == RuntimePhase::Running {
                s.equity += delta;
                s.unrealized_pnl += delta;
                s.candles += 1;
                if !s.initial_cash.is_zero() {
                    s.roi_pct = ((s.equity - s.initial_cash) / s.initial_cash
                        * Decimal::ONE_HUNDRED)
                        .round_dp(4);
                }
            }
        }
    }

    /// The status of one session.
    pub fn status(&self, namespace: &str, name: &str) -> Option<RuntimeStatus> {
        self.lock()
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// `GET /v1/status` requests answered so far.
    pub fn status_requests(&self) -> u64 {
        self.inner.status_requests.load(Ordering::Relaxed)
    }

    /// Control requests answered so far.
    pub fn control_requests(&self) -> u64 {
        self.inner.control_requests.load(Ordering::Relaxed)
    }

    /// Requests refused for a missing bearer token.
    pub fn unauthenticated_requests(&self) -> u64 {
        self.inner.unauthenticated.load(Ordering::Relaxed)
    }

    /// A fleet that answers for any session, adding it on its first request
    /// (Running, ready, no money): for tests whose sessions have no runtime
    /// of their own (kwok pods run no process).
    pub fn auto_registering() -> Self {
        Self {
            inner: Arc::new(Inner {
                auto_register: true,
                ..Default::default()
            }),
        }
    }

    /// One auto-registering fleet for the whole test process, served on its
    /// own thread (each test has its own tokio runtime); returns it and the
    /// endpoint template for [`paperbot_operator::sync::SyncSettings`].
    pub fn shared() -> &'static (FakeFleet, String) {
        static SHARED: std::sync::OnceLock<(FakeFleet, String)> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let fleet = FakeFleet::auto_registering();
            let serving = fleet.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime for the fake fleet");
                rt.block_on(async move {
                    let _ = tx.send(serving.serve().await);
                    std::future::pending::<()>().await;
                });
            });
            let addr = rx
                .recv()
                .expect("the fake fleet's thread answers")
                .expect("the fake fleet binds 127.0.0.1");
            (fleet, format!("http://{addr}/{{namespace}}/{{name}}"))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), RuntimeStatus>> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Serve on `127.0.0.1:0` in the background; returns the address.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn serve(&self) -> std::io::Result<SocketAddr> {
        let app = Router::new()
            .route("/{ns}/{name}/v1/status", get(status))
            .route("/{ns}/{name}/v1/{action}", post(control))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(addr)
    }

    /// The endpoint annotation value of a session served at `addr`.
    pub fn endpoint(addr: SocketAddr, namespace: &str, name: &str) -> String {
        format!("http://{addr}/{namespace}/{name}")
    }
}

fn authorised(fleet: &FakeFleet, headers: &HeaderMap) -> Result<(), (StatusCode, Json<ApiError>)> {
    let ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| !t.is_empty());
    if ok {
        Ok(())
    } else {
        fleet.inner.unauthenticated.fetch_add(1, Ordering::Relaxed);
        Err(refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "expected Authorization: Bearer <token>".into(),
        ))
    }
}

async fn status(
    State(fleet): State<FakeFleet>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult<RuntimeStatus> {
    authorised(&fleet, &headers)?;
    fleet.inner.status_requests.fetch_add(1, Ordering::Relaxed);
    if fleet.inner.auto_register && fleet.status(&ns, &name).is_none() {
        fleet.add(&ns, &name, Decimal::ZERO);
    }
    fleet.status(&ns, &name).map(Json).ok_or_else(|| {
        refuse(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no fake session {ns}/{name}"),
        )
    })
}

async fn control(
    State(fleet): State<FakeFleet>,
    Path((ns, name, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<ControlResponse> {
    authorised(&fleet, &headers)?;
    fleet.inner.control_requests.fetch_add(1, Ordering::Relaxed);
    let mut map = fleet.lock();
    let Some(s) = map.get_mut(&(ns.clone(), name.clone())) else {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no fake session {ns}/{name}"),
        ));
    };
    if s.phase.is_final() {
        return Err(refuse(
            StatusCode::CONFLICT,
            "conflict",
            format!("the session has ended ({:?})", s.phase),
        ));
    }
    s.phase = match action.as_str() {
        "pause" => RuntimePhase::Paused,
        "resume" => RuntimePhase::Running,
        "stop" => RuntimePhase::Stopped,
        "config" => {
            let update: ConfigUpdate = serde_json::from_slice(&body).map_err(|e| {
                refuse(StatusCode::BAD_REQUEST, "bad_request", format!("body: {e}"))
            })?;
            s.strategy_revision = update.revision;
            s.phase
        }
        other => {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route /v1/{other}"),
            ));
        }
    };
    Ok(Json(ControlResponse {
        phase: s.phase,
        message: format!("{action}: done"),
        effective_parameters: Default::default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_status_and_control_per_session() {
        let fleet = FakeFleet::default();
        fleet.add("ns", "a", Decimal::from(1000));
        let addr = fleet.serve().await.unwrap();
        paperbot_operator::tls::install_crypto_provider();
        let http = reqwest::Client::new();
        let base = FakeFleet::endpoint(addr, "ns", "a");
        let r = http.get(format!("{base}/v1/status")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let s: RuntimeStatus = http
            .get(format!("{base}/v1/status"))
            .bearer_auth("t")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(s.equity, Decimal::from(1000));
        fleet.tick(Decimal::from(5));
        let c: ControlResponse = http
            .post(format!("{base}/v1/pause"))
            .bearer_auth("t")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(c.phase, RuntimePhase::Paused);
        let s = fleet.status("ns", "a").unwrap();
        assert_eq!(s.equity, Decimal::from(1005));
        assert_eq!(s.roi_pct, Decimal::new(5, 1));
        assert_eq!(fleet.status_requests(), 1);
        assert_eq!(fleet.unauthenticated_requests(), 1);
    }
}

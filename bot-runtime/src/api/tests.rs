//! Tests of the HTTP layer: the session side is a responder task answering
//! control requests like a session would, the ledger a real (empty) SQLite
//! file. Paged reads over a ledger written by a real session are in
//! `tests/api.rs`.

use std::collections::BTreeMap;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::{
    Router,
    body::{Body, Bytes},
    http::{HeaderMap, Request, StatusCode, header},
};
use http_body_util::BodyExt as _;
use paperbot_crds::runtime_api::{
    ApiError, ControlResponse, LedgerHealthStatus, RuntimePhase, RuntimeStatus,
};
use rust_decimal::Decimal;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tower::ServiceExt as _;

use super::*;
use crate::ledger::LedgerStore as _;
use crate::ledger::records::{
    Action, BreakerEventRecord, DecisionRecord, FillReason, FillStatus, TradeRecord,
};
use crate::service::{Control, ControlError, ControlRequest, RuntimeEvent};
use crate::types::{Side, Timestamp};

const TOKEN: &str = "t0ken-for-tests";

/// Every control route with the body it takes.
const CONTROL_ROUTES: [(&str, Option<&str>); 5] = [
    ("/v1/pause", None),
    ("/v1/resume", None),
    ("/v1/stop", None),
    ("/v1/breakers/dailyLoss/reset", None),
    (
        "/v1/config",
        Some(r#"{"strategy":{"signals":{"rsi":{"period":14}}},"revision":"3"}"#),
    ),
];

/// Every read route under `/v1`.
const READ_ROUTES: [&str; 7] = [
    "/v1/status",
    "/v1/trades",
    "/v1/decisions",
    "/v1/positions",
    "/v1/breakers/events",
    "/v1/autopilot/adjustments",
    "/v1/events",
];

/// How the responder answers.
type Answer = fn(&Control) -> Result<ControlResponse, ControlError>;

/// Answers like a running session with breakers `dailyLoss` and `priceFeed`.
fn like_a_session(c: &Control) -> Result<ControlResponse, ControlError> {
    let ok = |phase, message: &str| {
        Ok(ControlResponse {
            phase,
            message: message.into(),
            ..Default::default()
        })
    };
    match c {
        Control::Pause => ok(RuntimePhase::Paused, "paused: no new entries"),
        Control::Resume => ok(RuntimePhase::Running, "resumed"),
        Control::Stop => ok(RuntimePhase::Stopped, "stopped"),
        Control::ResetBreaker(name) if ["dailyLoss", "priceFeed"].contains(&name.as_str()) => ok(
            RuntimePhase::Running,
            &format!("breaker {name} reset (was Open)"),
        ),
        Control::ResetBreaker(name) => Err(ControlError::NotFound {
            message: format!("no breaker {name:?}: the breakers are dailyLoss, priceFeed"),
        }),
        Control::Reload(u) => Ok(ControlResponse {
            phase: RuntimePhase::Running,
            message: format!("strategy revision {:?} in force", u.revision),
            effective_parameters: BTreeMap::from([("stopLossPct".into(), Decimal::new(15, 1))]),
        }),
    }
}

struct Fixture {
    status: watch::Sender<RuntimeStatus>,
    events: broadcast::Sender<RuntimeEvent>,
    handle: SessionHandle,
    /// The commands the responder received, in order.
    seen: Arc<Mutex<Vec<String>>>,
    ledger: LedgerReader,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// A session answering with `answer`, an event buffer of `capacity`,
    /// and an empty SQLite ledger.
    async fn new(answer: Answer, capacity: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let path = path.to_str().unwrap();
        crate::ledger::SqliteLedger::open(path)
            .await
            .unwrap()
            .close()
            .await;
        let ledger = LedgerReader::open(path).await.unwrap();
        let (status, status_rx) = watch::channel(RuntimeStatus {
            session: "bot".into(),
            session_id: "bot".into(),
            phase: RuntimePhase::Running,
            ready: false,
            ledger: LedgerHealthStatus {
                reachable: true,
                reason: None,
            },
            ..Default::default()
        });
        let (events, _) = broadcast::channel(capacity);
        let (control, mut requests) = mpsc::channel::<ControlRequest>(8);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Some(r) = requests.recv().await {
                log.lock().unwrap().push(format!("{:?}", r.command));
                let _ = r.reply.send(answer(&r.command));
            }
        });
        let handle = SessionHandle {
            status: status_rx,
            events: events.clone(),
            control,
            registry: representative_registry(),
        };
        Self {
            status,
            events,
            handle,
            seen,
            ledger,
            _dir: dir,
        }
    }

    fn options(&self, token: Option<&str>, open_reads: bool) -> ApiOptions {
        let mut o = ApiOptions::new(([127, 0, 0, 1], 0).into(), self.ledger.clone());
        o.token = token.map(|t| ApiToken::new(t).unwrap());
        o.open_reads = open_reads;
        o
    }

    fn router(&self, token: Option<&str>, open_reads: bool) -> Router {
        router(self.handle.clone(), &self.options(token, open_reads))
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// The runtime's own metric families ([`crate::service::Metrics`]) with a
/// few values set: equity 1.5, an open breaker, one latency and one commit.
fn representative_registry() -> prometheus::Registry {
    use crate::service::metrics::{Metrics, SessionLabels};
    let r = prometheus::Registry::new();
    let symbols = ["BTC-USD".to_string()];
    let m = Metrics::register(
        &r,
        &SessionLabels {
            session: "bot",
            account: "acct",
            strategy: "trend",
            symbols: &symbols,
        },
    )
    .unwrap();
    m.set_status(&RuntimeStatus {
        equity: Decimal::new(15, 1),
        breakers: vec![paperbot_crds::BreakerStatus {
            name: "dailyLoss".into(),
            state: paperbot_crds::BreakerState::Open,
            ..Default::default()
        }],
        ..Default::default()
    });
    m.decision_latency.observe(0.002);
    m.observe_commit(0.002);
    r
}

/// One request through the router.
async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = match body {
        Some((content_type, bytes)) => {
            if !content_type.is_empty() {
                req = req.header(header::CONTENT_TYPE, content_type);
            }
            Body::from(bytes)
        }
        None => Body::empty(),
    };
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, bytes)
}

fn json_body(b: &Bytes) -> serde_json::Value {
    serde_json::from_slice(b)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(b)))
}

fn api_error(b: &Bytes) -> ApiError {
    serde_json::from_slice(b)
        .unwrap_or_else(|e| panic!("not an ApiError body ({e}): {}", String::from_utf8_lossy(b)))
}

fn post_body(body: Option<&str>) -> Option<(&'static str, Vec<u8>)> {
    body.map(|b| ("application/json", b.as_bytes().to_vec()))
}

#[tokio::test]
async fn probes_metrics_and_the_document_need_no_token() {
    let f = Fixture::new(like_a_session, 16).await;
    let app = f.router(Some(TOKEN), false);

    let (s, _, b) = call(&app, "GET", "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json_body(&b)["status"], "ok");

    let (s, _, b) = call(&app, "GET", "/readyz", None, None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let e = api_error(&b);
    assert_eq!(e.error, "unavailable");
    assert!(e.message.contains("no market data"), "{}", e.message);
    f.status.send_modify(|s| s.ready = true);
    let (s, _, b) = call(&app, "GET", "/readyz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json_body(&b)["phase"], "Running");

    let (s, h, b) = call(&app, "GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], prometheus::TEXT_FORMAT);
    let text = String::from_utf8_lossy(&b);
    assert!(
        text.contains("paperbot_equity{account=\"acct\",session=\"bot\",strategy=\"trend\"} 1.5"),
        "{text}"
    );

    let (s, h, b) = call(&app, "GET", "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "application/json");
    assert_eq!(json_body(&b), openapi_document());
}

#[tokio::test]
async fn status_is_the_latest_published() {
    let f = Fixture::new(like_a_session, 16).await;
    let app = f.router(Some(TOKEN), false);
    let published = RuntimeStatus {
        session: "bot".into(),
        session_id: "bot-2".into(),
        phase: RuntimePhase::Paused,
        equity: Decimal::new(5_012_345, 2),
        trades: 12,
        ..Default::default()
    };
    f.status.send_replace(published.clone());
    let (s, _, b) = call(&app, "GET", "/v1/status", Some(TOKEN), None).await;
    assert_eq!(s, StatusCode::OK);
    let got: RuntimeStatus = serde_json::from_slice(&b).unwrap();
    assert_eq!(got, published);
    assert_eq!(json_body(&b)["equity"], "50123.45");
}

#[tokio::test]
async fn every_control_route_needs_the_token_none_401_wrong_403_right_200() {
    let f = Fixture::new(like_a_session, 16).await;
    for open_reads in [false, true] {
        let app = f.router(Some(TOKEN), open_reads);
        for (path, body) in CONTROL_ROUTES {
            let before = f.seen().len();
            let (s, h, b) = call(&app, "POST", path, None, post_body(body)).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(api_error(&b).error, "unauthorized");
            assert!(
                h[header::WWW_AUTHENTICATE]
                    .to_str()
                    .unwrap()
                    .starts_with("Bearer"),
                "{path}"
            );
            let (s, _, b) = call(&app, "POST", path, Some("wrong"), post_body(body)).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
            assert_eq!(api_error(&b).error, "forbidden");
            assert_eq!(
                f.seen().len(),
                before,
                "{path}: refused requests reach no session"
            );

            let (s, _, b) = call(&app, "POST", path, Some(TOKEN), post_body(body)).await;
            assert_eq!(s, StatusCode::OK, "{path}: {}", String::from_utf8_lossy(&b));
            let answer: ControlResponse = serde_json::from_slice(&b).unwrap();
            assert!(!answer.message.is_empty());
            assert_eq!(f.seen().len(), before + 1, "{path}: forwarded once");
        }
    }
    let seen = f.seen();
    assert_eq!(seen[0], "Pause");
    assert_eq!(seen[1], "Resume");
    assert_eq!(seen[2], "Stop");
    assert_eq!(seen[3], "ResetBreaker(\"dailyLoss\")");
    assert!(seen[4].starts_with("Reload("), "{}", seen[4]);
    assert!(seen[4].contains("revision: Some(\"3\")"), "{}", seen[4]);
}

#[tokio::test]
async fn reads_need_the_token_unless_opened() {
    let f = Fixture::new(like_a_session, 16).await;
    let closed = f.router(Some(TOKEN), false);
    let open = f.router(Some(TOKEN), true);
    for path in READ_ROUTES {
        // The event stream is read only for its status (headers), not its body.
        let get = |app: Router, token: Option<&'static str>| async move {
            let mut req = Request::builder().uri(path);
            if let Some(t) = token {
                req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            app.oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap()
                .status()
        };
        assert_eq!(
            get(closed.clone(), None).await,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            get(closed.clone(), Some("wrong")).await,
            StatusCode::FORBIDDEN,
            "{path}"
        );
        assert_eq!(
            get(closed.clone(), Some(TOKEN)).await,
            StatusCode::OK,
            "{path}"
        );
        assert_eq!(get(open.clone(), None).await, StatusCode::OK, "{path}");
    }
    // Open reads open no control route.
    let (s, _, _) = call(&open, "POST", "/v1/pause", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_runtime_without_a_token_refuses_control_and_closed_reads() {
    let f = Fixture::new(like_a_session, 16).await;
    for open_reads in [false, true] {
        let app = f.router(None, open_reads);
        for (path, body) in CONTROL_ROUTES {
            let (s, _, b) = call(&app, "POST", path, Some(TOKEN), post_body(body)).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
            let e = api_error(&b);
            assert!(e.message.contains("without an API token"), "{}", e.message);
        }
        let (s, _, _) = call(&app, "GET", "/v1/status", None, None).await;
        let want = if open_reads {
            StatusCode::OK
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(s, want);
    }
    assert!(f.seen().is_empty(), "nothing reached the session");
}

/// Sends a bad request, checks the status and the field named, and that
/// the body is an `ApiError`.
async fn bad(
    app: &Router,
    method: &str,
    uri: &str,
    body: Option<(&str, Vec<u8>)>,
    status: StatusCode,
    field: Option<&str>,
) -> ApiError {
    let (s, h, b) = call(app, method, uri, Some(TOKEN), body).await;
    assert_eq!(s, status, "{method} {uri}: {}", String::from_utf8_lossy(&b));
    assert_eq!(
        h[header::CONTENT_TYPE],
        "application/json",
        "{method} {uri}"
    );
    let e = api_error(&b);
    assert_eq!(e.field.as_deref(), field, "{method} {uri}: {e:?}");
    assert!(!e.message.is_empty());
    e
}

#[tokio::test]
async fn bad_requests_get_json_errors_naming_the_field_and_the_server_keeps_serving() {
    let f = Fixture::new(like_a_session, 16).await;
    let app = f.router(Some(TOKEN), false);
    let json = |s: &str| Some(("application/json", s.as_bytes().to_vec()));
    let bad_request = StatusCode::BAD_REQUEST;

    // Bodies.
    let e = bad(
        &app,
        "POST",
        "/v1/config",
        json("{\"strategy\": {"),
        bad_request,
        None,
    )
    .await;
    assert!(e.message.starts_with("malformed JSON"), "{}", e.message);
    let e = bad(
        &app,
        "POST",
        "/v1/config",
        json(r#"{"strategy":{"signals":{"rsi":{}}},"dryRun":true}"#),
        bad_request,
        Some("dryRun"),
    )
    .await;
    assert!(
        e.message.contains("unknown field `dryRun`"),
        "{}",
        e.message
    );
    bad(
        &app,
        "POST",
        "/v1/config",
        json(r#"{"strategy":{"signals":{"rsi":{}},"risk":{"colour":"red"}}}"#),
        bad_request,
        Some("strategy.risk.colour"),
    )
    .await;
    let e = bad(
        &app,
        "POST",
        "/v1/config",
        json(r#"{"strategy":{"intelLevel":11,"signals":{"rsi":{}}}}"#),
        bad_request,
        Some("strategy.intelLevel"),
    )
    .await;
    assert!(e.message.contains("expected 1 to 10"), "{}", e.message);
    bad(
        &app,
        "POST",
        "/v1/config",
        json(r#"{"strategy":{"signals":{}}}"#),
        bad_request,
        Some("strategy.signals"),
    )
    .await;
    let e = bad(&app, "POST", "/v1/config", json("{}"), bad_request, None).await;
    assert!(
        e.message.contains("missing field `strategy`"),
        "{}",
        e.message
    );
    bad(&app, "POST", "/v1/config", json(""), bad_request, None).await;
    bad(
        &app,
        "POST",
        "/v1/config",
        Some(("", b"{}".to_vec())),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        None,
    )
    .await;
    bad(
        &app,
        "POST",
        "/v1/config",
        Some(("text/plain", b"{}".to_vec())),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        None,
    )
    .await;
    let huge = format!(
        r#"{{"strategy":{{"signals":{{"rsi":{{}}}}}},"revision":"{}"}}"#,
        "x".repeat(DEFAULT_BODY_LIMIT)
    );
    let e = bad(
        &app,
        "POST",
        "/v1/config",
        json(&huge),
        StatusCode::PAYLOAD_TOO_LARGE,
        None,
    )
    .await;
    assert_eq!(e.error, "payload_too_large");
    bad(
        &app,
        "POST",
        "/v1/config",
        json(&format!(
            r#"{{"strategy":{{"signals":{{"rsi":{{}}}}}},"revision":"{}"}}"#,
            "r".repeat(64)
        )),
        bad_request,
        Some("revision"),
    )
    .await;

    // Query parameters.
    for (uri, field) in [
        ("/v1/trades?limit=0", "limit"),
        ("/v1/trades?limit=5000", "limit"),
        ("/v1/decisions?limit=ten", "limit"),
        ("/v1/trades?cursor=not-a-cursor", "cursor"),
        ("/v1/positions?from=yesterday", "from"),
        ("/v1/breakers/events?to=2018-13-01T00:00:00Z", "to"),
        ("/v1/breakers/events?symbol=BTC-USD", "symbol"),
        ("/v1/autopilot/adjustments?page=2", "page"),
        ("/v1/events?kinds=fill,gossip", "kinds"),
        ("/v1/status?verbose=1", "verbose"),
    ] {
        bad(&app, "GET", uri, None, bad_request, Some(field)).await;
    }
    let cursor = paging::History::Decisions.cursor(5);
    bad(
        &app,
        "GET",
        &format!("/v1/trades?cursor={cursor}"),
        None,
        bad_request,
        Some("cursor"),
    )
    .await;

    // A body where none is taken.
    let e = bad(
        &app,
        "POST",
        "/v1/pause",
        json(r#"{"force":true}"#),
        bad_request,
        None,
    )
    .await;
    assert!(e.message.contains("takes no body"), "{}", e.message);

    // Paths, routes and methods.
    let e = bad(
        &app,
        "POST",
        "/v1/breakers/noSuchBreaker/reset",
        None,
        StatusCode::NOT_FOUND,
        None,
    )
    .await;
    assert!(e.message.contains("dailyLoss, priceFeed"), "{}", e.message);
    bad(
        &app,
        "POST",
        "/v1/breakers/daily-loss/reset",
        None,
        bad_request,
        Some("name"),
    )
    .await;
    bad(
        &app,
        "POST",
        "/v1/breakers/%FF/reset",
        None,
        bad_request,
        Some("name"),
    )
    .await;
    let e = bad(
        &app,
        "GET",
        "/v1/nothing",
        None,
        StatusCode::NOT_FOUND,
        None,
    )
    .await;
    assert_eq!(e.error, "not_found");
    for (method, uri, allow) in [
        ("GET", "/v1/pause", "POST"),
        ("DELETE", "/v1/status", "GET,HEAD"),
        ("PUT", "/healthz", "GET,HEAD"),
    ] {
        let (s, h, b) = call(&app, method, uri, Some(TOKEN), None).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        assert_eq!(api_error(&b).error, "method_not_allowed");
        assert_eq!(h[header::ALLOW], allow, "{method} {uri}");
    }

    // None of it reached the session except the unknown breaker, and the
    // server still answers.
    assert_eq!(f.seen(), ["ResetBreaker(\"noSuchBreaker\")"]);
    let (s, _, _) = call(&app, "GET", "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(&app, "POST", "/v1/pause", Some(TOKEN), json("{}")).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn a_panicking_handler_answers_500_json() {
    let r = panicked(Box::new("boom"));
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let b = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(api_error(&b).error, "internal");
}

#[tokio::test]
async fn control_refusals_map_to_404_400_409_503() {
    let cases: [(Answer, StatusCode, &str, Option<&str>); 4] = [
        (
            |_| {
                Err(ControlError::NotFound {
                    message: "no such thing".into(),
                })
            },
            StatusCode::NOT_FOUND,
            "not_found",
            None,
        ),
        (
            |_| {
                Err(ControlError::BadRequest {
                    field: "strategy.risk.stopLossPct".into(),
                    message: "50 is above the autopilot bound 3".into(),
                })
            },
            StatusCode::BAD_REQUEST,
            "bad_request",
            Some("strategy.risk.stopLossPct"),
        ),
        (
            |_| {
                Err(ControlError::Conflict(
                    "the session has ended (Completed)".into(),
                ))
            },
            StatusCode::CONFLICT,
            "conflict",
            None,
        ),
        (
            |_| Err(ControlError::Unavailable("starting".into())),
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            None,
        ),
    ];
    for (answer, status, code, field) in cases {
        let f = Fixture::new(answer, 16).await;
        let app = f.router(Some(TOKEN), false);
        let (s, _, b) = call(&app, "POST", "/v1/resume", Some(TOKEN), None).await;
        assert_eq!(s, status);
        let e = api_error(&b);
        assert_eq!(e.error, code);
        assert_eq!(e.field.as_deref(), field);
    }
}

#[tokio::test]
async fn a_session_that_is_gone_or_silent_answers_503() {
    let f = Fixture::new(like_a_session, 16).await;
    // Gone: nobody receives control requests.
    let (tx, rx) = mpsc::channel(1);
    drop(rx);
    let mut gone = f.handle.clone();
    gone.control = tx;
    let app = router(gone, &f.options(Some(TOKEN), false));
    let (s, _, b) = call(&app, "POST", "/v1/pause", Some(TOKEN), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(api_error(&b).message.contains("shutting down"));

    // Silent: receives but never answers.
    let (tx, mut rx) = mpsc::channel::<ControlRequest>(1);
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Some(r) = rx.recv().await {
            kept.push(r);
        }
    });
    let mut silent = f.handle.clone();
    silent.control = tx;
    let mut opts = f.options(Some(TOKEN), false);
    opts.control_timeout = Duration::from_millis(50);
    let app = router(silent, &opts);
    let (s, _, b) = call(&app, "POST", "/v1/stop", Some(TOKEN), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(api_error(&b).message.contains("did not answer"));
    drop(app);
    held.abort();
}

#[tokio::test]
async fn paged_routes_answer_503_until_the_session_has_a_ledger_id() {
    let f = Fixture::new(like_a_session, 16).await;
    f.status.send_modify(|s| {
        s.session_id.clear();
        s.phase = RuntimePhase::Starting;
    });
    let app = f.router(Some(TOKEN), false);
    let (s, _, b) = call(&app, "GET", "/v1/trades", Some(TOKEN), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(api_error(&b).message.contains("Starting"));
    // With an id, an empty ledger gives an empty last page.
    f.status.send_modify(|s| s.session_id = "bot".into());
    let (s, _, b) = call(&app, "GET", "/v1/trades", Some(TOKEN), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json_body(&b), serde_json::json!({"items": []}));
}

// ---- the event stream ----

fn fill(seq: u64) -> RuntimeEvent {
    RuntimeEvent::Fill(TradeRecord {
        seq,
        decision_seq: seq,
        time: Timestamp(1_522_800_000_000 + seq as i64 * 60_000),
        symbol: "BTC-USD".into(),
        side: Side::Buy,
        quantity: Decimal::new(25, 2),
        reference_price: Decimal::new(700_000, 2),
        fill_price: Decimal::new(700_140, 2),
        fee: Decimal::new(175, 2),
        gas: Decimal::ZERO,
        slippage_cost: Decimal::new(35, 2),
        latency_ms: 250,
        realized_pnl: Decimal::ZERO,
        reason: FillReason::Signal,
        status: FillStatus::Filled,
        cash_after: Decimal::new(4_824_825, 2),
        position_after: Decimal::new(25, 2),
        cost_basis_after: Decimal::new(175_210, 2),
    })
}

fn one_of_each() -> Vec<RuntimeEvent> {
    let t = Timestamp(1_522_800_060_000);
    vec![
        RuntimeEvent::Price {
            symbol: "BTC-USD".into(),
            time: t,
            close: Decimal::new(700_012, 2),
        },
        RuntimeEvent::Decision(DecisionRecord {
            seq: 1,
            time: t,
            symbol: "BTC-USD".into(),
            action: Action::Buy,
            confidence: Decimal::new(6150, 2),
            price: Decimal::new(700_012, 2),
            quantity: Some(Decimal::new(25, 2)),
            positive_signals: "sma_crossover".into(),
            negative_signals: String::new(),
            risk_assessment: "ok".into(),
            reason: "trend up".into(),
        }),
        fill(1),
        RuntimeEvent::Breaker(BreakerEventRecord {
            time: t,
            breaker: "dailyLoss".into(),
            from_state: "Closed".into(),
            to_state: "Open".into(),
            reason: "daily loss 3.2 % >= 3 %".into(),
        }),
        RuntimeEvent::Adjustment(crate::ledger::records::AdjustmentRecord {
            id: 1,
            time: t,
            parameter: "stopLossPct".into(),
            old_value: Decimal::new(15, 1),
            new_value: Decimal::new(135, 2),
            reason: "win rate 30 %".into(),
            metrics_before: Default::default(),
        }),
        RuntimeEvent::AdjustmentOutcome(crate::ledger::records::AdjustmentOutcomeRecord {
            id: 1,
            time: t,
            outcome: crate::ledger::records::Outcome::Positive,
            metrics_after: Default::default(),
        }),
        RuntimeEvent::Phase {
            phase: RuntimePhase::Halted,
            message: Some("account kill switch".into()),
        },
    ]
}

/// Reads SSE events (name, JSON data) from `body` until `n` were read or
/// the stream ended; keep-alive comments are skipped.
async fn read_events(body: &mut Body, n: usize) -> Vec<(String, serde_json::Value)> {
    let mut text = String::new();
    let mut out = Vec::new();
    while out.len() < n {
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let mut name = String::new();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push_str(v);
                }
            }
            if !name.is_empty() {
                out.push((name, serde_json::from_str(&data).unwrap()));
            }
        }
        if out.len() >= n {
            break;
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    text.push_str(std::str::from_utf8(&data).unwrap());
                }
            }
            Some(Err(e)) => panic!("event stream failed: {e}"),
            None => break,
        }
    }
    out
}

async fn open_stream(app: &Router, query: &str) -> Body {
    let req = Request::builder()
        .uri(format!("/v1/events{query}"))
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    resp.into_body()
}

#[tokio::test]
async fn the_event_stream_delivers_published_events_in_order_with_their_names() {
    let f = Fixture::new(like_a_session, 64).await;
    let app = f.router(Some(TOKEN), false);
    let mut all = open_stream(&app, "").await;
    let mut filtered = open_stream(&app, "?kinds=fill,breaker").await;
    for e in one_of_each() {
        f.events.send(e).unwrap();
    }
    f.events.send(fill(2)).unwrap();
    let got = read_events(&mut all, 8).await;
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "price",
            "decision",
            "fill",
            "breaker",
            "adjustment",
            "adjustmentOutcome",
            "phase",
            "fill"
        ]
    );
    assert_eq!(got[0].1["close"], "7000.12");
    assert_eq!(got[1].1["action"], "buy");
    assert_eq!(got[2].1["seq"], 1);
    assert_eq!(got[2].1["fillPrice"], "7001.40");
    assert_eq!(got[2].1["time"], "2018-04-04T00:01:00Z");
    assert_eq!(got[3].1["toState"], "Open");
    assert!(got[3].1.get("seq").is_none());
    assert_eq!(got[4].1["newValue"], "1.35");
    assert_eq!(got[5].1["outcome"], "positive");
    assert_eq!(got[6].1["phase"], "Halted");
    assert_eq!(got[7].1["seq"], 2);

    let got = read_events(&mut filtered, 3).await;
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["fill", "breaker", "fill"]);
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_is_told_how_many_it_missed() {
    let f = Fixture::new(like_a_session, 4).await;
    let app = f.router(Some(TOKEN), false);
    let mut body = open_stream(&app, "").await;
    // Ten fills into a buffer of four, before the subscriber reads any.
    for seq in 1..=10 {
        f.events.send(fill(seq)).unwrap();
    }
    let got = read_events(&mut body, 5).await;
    assert_eq!(got[0].0, "lagged");
    assert_eq!(got[0].1["missed"], 6);
    let seqs: Vec<u64> = got[1..]
        .iter()
        .map(|(n, d)| {
            assert_eq!(n, "fill");
            d["seq"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(seqs, [7, 8, 9, 10]);
    // And it goes on.
    f.events.send(fill(11)).unwrap();
    let got = read_events(&mut body, 1).await;
    assert_eq!(got[0].1["seq"], 11);
}

#[tokio::test]
async fn the_event_stream_ends_when_the_server_goes_away() {
    let f = Fixture::new(like_a_session, 16).await;
    let app = f.router(Some(TOKEN), false);
    let mut body = open_stream(&app, "").await;
    f.events.send(fill(1)).unwrap();
    assert_eq!(read_events(&mut body, 1).await[0].1["seq"], 1);
    // The router (its state, and with it the shutdown signal) is gone: the
    // stream ends instead of holding its connection open.
    drop(app);
    assert!(body.frame().await.is_none());
}

#[tokio::test]
async fn event_streams_are_bounded_and_a_closed_one_frees_its_place() {
    let f = Fixture::new(like_a_session, 16).await;
    let mut opts = f.options(Some(TOKEN), false);
    opts.max_event_streams = 1;
    let app = router(f.handle.clone(), &opts);
    let first = open_stream(&app, "").await;
    let (s, _, b) = call(&app, "GET", "/v1/events", Some(TOKEN), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(api_error(&b).message.contains("1 event streams are open"));
    drop(first);
    let mut again = open_stream(&app, "").await;
    f.events.send(fill(1)).unwrap();
    assert_eq!(read_events(&mut again, 1).await[0].1["seq"], 1);
}

// ---- serve: listeners, shutdown ----

/// A raw HTTP/1.1 request on a new connection; returns the connection
/// after the request was written.
async fn send_raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

async fn read_to_end(mut s: tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn serve_shuts_down_gracefully_ending_streams_and_finishing_requests_in_flight() {
    let f = Fixture::new(like_a_session, 16).await;
    // A session that answers a pause only when told to.
    let (control, mut requests) = mpsc::channel::<ControlRequest>(1);
    let (got_request, request_arrived) = oneshot::channel::<oneshot::Sender<_>>();
    tokio::spawn(async move {
        if let Some(r) = requests.recv().await {
            let _ = got_request.send(r.reply);
        }
    });
    let mut handle = f.handle.clone();
    handle.control = control;

    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (api_addr, metrics_addr) = (api.local_addr().unwrap(), metrics.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_on(
        api,
        Some(metrics),
        handle,
        f.options(Some(TOKEN), false),
        async move {
            let _ = stopped.await;
        },
    ));

    // The metrics port serves /metrics only.
    let text = read_to_end(send_raw(metrics_addr, "GET", "/metrics", None).await).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("paperbot_fills_total"), "{text}");
    let text = read_to_end(send_raw(metrics_addr, "GET", "/v1/status", Some(TOKEN)).await).await;
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");

    // An open event stream and a pause the session has not answered yet.
    let stream = send_raw(api_addr, "GET", "/v1/events", Some(TOKEN)).await;
    let pause = send_raw(api_addr, "POST", "/v1/pause", Some(TOKEN)).await;
    let reply = request_arrived.await.unwrap();
    stop.send(()).unwrap();
    // The stream ends by itself (read_to_end returns) ...
    let text = read_to_end(stream).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("text/event-stream"), "{text}");
    // ... and the pause in flight still gets its answer.
    reply
        .send(Ok(ControlResponse {
            phase: RuntimePhase::Paused,
            message: "paused".into(),
            ..Default::default()
        }))
        .unwrap();
    let text = read_to_end(pause).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"phase\":\"Paused\""), "{text}");
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn serve_reports_an_address_it_cannot_bind() {
    let f = Fixture::new(like_a_session, 16).await;
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut opts = f.options(Some(TOKEN), false);
    opts.listen = taken.local_addr().unwrap();
    let e = serve(f.handle.clone(), opts, async {}).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
}

// ---- metrics lint, OpenAPI ----

/// `promtool check metrics` (Debian package `prometheus`) on `/metrics`.
/// Fails when promtool is not installed.
#[tokio::test]
async fn promtool_check_metrics_is_clean_on_the_runtime_metrics() {
    let f = Fixture::new(like_a_session, 16).await;
    let app = f.router(Some(TOKEN), false);
    let (s, _, body) = call(&app, "GET", "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    paperbot_testkit::assert_promtool_clean("/metrics", &String::from_utf8_lossy(&body));
}

/// The checked-in `bot-runtime/openapi.json` is the generated document.
/// Regenerate it with
/// `PAPERBOT_UPDATE_OPENAPI=1 cargo test -p bot-runtime --lib api::tests::openapi_json_is_up_to_date`.
#[test]
fn openapi_json_is_up_to_date() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let fresh = format!(
        "{}\n",
        serde_json::to_string_pretty(&openapi_document()).unwrap()
    );
    if std::env::var_os("PAPERBOT_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &fresh).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "{} is stale (or missing): regenerate it with\n  PAPERBOT_UPDATE_OPENAPI=1 cargo test -p \
         bot-runtime --lib api::tests::openapi_json_is_up_to_date\nand commit it",
        path.display()
    );
}

/// Every documented operation is served (the router answers neither "no
/// route" nor "method not allowed"), and every `$ref` resolves.
#[tokio::test]
async fn the_document_describes_the_served_routes_and_its_refs_resolve() {
    let f = Fixture::new(like_a_session, 16).await;
    let app = f.router(Some(TOKEN), false);
    let doc = openapi_document();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            operations += 1;
            let uri = path
                .replace("{name}", "dailyLoss")
                .replace("{file}", "summary.json");
            if uri == "/v1/events" {
                continue; // an endless body; its routing is tested above
            }
            let body = (method == "post").then(|| {
                (
                    "application/json",
                    br#"{"strategy":{"signals":{"rsi":{}}}}"#.to_vec(),
                )
            });
            let (s, _, _) = call(&app, &method.to_uppercase(), &uri, Some(TOKEN), body).await;
            assert!(
                s != StatusCode::NOT_FOUND && s != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {s}"
            );
        }
    }
    assert_eq!(operations, 17);
    fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 20);
    for r in all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external ref {r}"));
        assert!(doc.pointer(pointer).is_some(), "unresolved {r}");
    }
    for name in [
        "RuntimeStatus",
        "ConfigUpdate",
        "ApiError",
        "FillPage",
        "ControlResponse",
    ] {
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "schema {name} missing"
        );
    }
}

/// The store trait is used here only to show the reader sees what a
/// writer commits on the same file (the paging itself is tested over a real
/// session's ledger in `tests/api.rs`).
#[tokio::test]
async fn a_reader_beside_the_writer_sees_its_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.db");
    let path = path.to_str().unwrap();
    let mut writer = crate::ledger::SqliteLedger::open(path).await.unwrap();
    let reader = LedgerReader::open(path).await.unwrap();
    let session = crate::ledger::records::SessionRecord {
        id: "s".into(),
        name: "s".into(),
        account: "a".into(),
        strategy: "st".into(),
        base_currency: "USD".into(),
        initial_cash: Decimal::new(50_000, 0),
        config_json: "{}".into(),
        started_at: Timestamp(1_522_800_000_000),
    };
    writer.start_session(&session, "test").await.unwrap();
    let RuntimeEvent::Fill(t) = fill(1) else {
        unreachable!()
    };
    let batch = crate::ledger::records::LedgerBatch {
        trades: vec![t.clone()],
        cash: t.cash_after,
        time: t.time,
        ..Default::default()
    };
    writer.write_batch(&batch, "{}").await.unwrap();
    let q = crate::ledger::query::PageQuery {
        limit: 10,
        ..Default::default()
    };
    let page = reader.trades("s", &q, None).await.unwrap();
    assert_eq!(page.rows, vec![(1, t)]);
    assert_eq!(page.next_after, None);
    reader.ping().await.unwrap();
    reader.close().await;
    writer.close().await;
}

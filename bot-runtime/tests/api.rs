//! The API's paged histories over a REAL ledger written by a real session:
//! the quickstart (three days of BTC-USD and LTC-USD, holds recorded, the
//! price-feed breaker tripping on the data's outage) run by
//! `runner::run_session` into a SQLite file and into a PostgreSQL database
//! (paperbot-testkit). Pages fetched through the router concatenate to
//! exactly the rows the ledger holds, under every filter, and the readers
//! cannot write.

mod common;

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode, header},
};
use bot_runtime::{
    api::{
        self, ApiOptions, ApiToken,
        rows::{Adjustment, BreakerEvent, ClosedPosition, Decision, Fill},
    },
    config::{load_manifests, plan_sessions},
    ledger::{self, LedgerStore as _, query::LedgerReader, records::LedgerBatch},
    runner::{RunOptions, StopSignal, prepare, run_session},
    service::SessionHandle,
    types::Timestamp,
};
use http_body_util::BodyExt as _;
use paperbot_crds::runtime_api::{RuntimePhase, RuntimeStatus};
use paperbot_testkit::PostgresServer;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};
use tower::ServiceExt as _;

use common::example;

const TOKEN: &str = "paging-test-token";

/// Run the quickstart (holds recorded) into the ledger at `url`; returns
/// the session id.
async fn run_quickstart(url: &str, reports: &std::path::Path) -> String {
    let manifests = load_manifests(&example("quickstart.yaml")).expect("quickstart parses");
    let mut plans = plan_sessions(&manifests).expect("quickstart is valid");
    let mut plan = plans.remove(0);
    plan.session.record_holds = true;
    let prepared = prepare(plan).expect("quickstart data is valid");
    let opts = RunOptions {
        report_dir: reports.to_path_buf(),
        ..Default::default()
    };
    let mut l = ledger::open(url).await.expect("open the ledger");
    let out = run_session(prepared, &opts, Arc::new(StopSignal::new()), &mut l)
        .await
        .expect("the quickstart runs");
    assert_eq!(out.phase, "Completed");
    l.close().await;
    out.session_id
}

/// Every record of session `id`, read by the ledger's own reader.
async fn all_records(url: &str, id: &str) -> LedgerBatch {
    let l = ledger::open(url).await.expect("open the ledger");
    let mut all = LedgerBatch::default();
    let mut sink = |b: LedgerBatch| {
        all.append(b);
        Ok(())
    };
    l.read_records(id, 997, &mut sink)
        .await
        .expect("read records");
    l.close().await;
    all
}

/// The API over `reader`, serving session `id` (reads need the token).
fn api_for(reader: LedgerReader, id: &str) -> (Router, watch::Sender<RuntimeStatus>) {
    let (status, status_rx) = watch::channel(RuntimeStatus {
        session: "quickstart".into(),
        session_id: id.into(),
        phase: RuntimePhase::Completed,
        ready: true,
        ..Default::default()
    });
    let (control, _) = mpsc::channel(1);
    let handle = SessionHandle {
        status: status_rx,
        events: broadcast::channel(16).0,
        control,
        registry: prometheus::Registry::new(),
    };
    let mut opts = ApiOptions::new(([127, 0, 0, 1], 0).into(), reader);
    opts.token = Some(ApiToken::new(TOKEN).unwrap());
    (api::router(handle, &opts), status)
}

async fn get(app: &Router, uri: &str) -> (StatusCode, Value) {
    let req = Request::builder()
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, v)
}

/// Every item of `path` under `filters`, page by page with `limit`;
/// returns the items and the number of pages.
async fn fetch_all(app: &Router, path: &str, filters: &str, limit: usize) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut uri = format!("{path}?limit={limit}{filters}");
        if let Some(c) = &cursor {
            uri.push_str(&format!("&cursor={c}"));
        }
        let (status, page) = get(app, &uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {page}");
        pages += 1;
        let rows = page["items"].as_array().expect("items").clone();
        assert!(rows.len() <= limit, "{uri}: {} rows", rows.len());
        match page.get("nextCursor").and_then(Value::as_str) {
            Some(c) => {
                assert_eq!(rows.len(), limit, "{uri}: a page before the last is full");
                cursor = Some(c.to_owned());
                items.extend(rows);
            }
            None => {
                items.extend(rows);
                return (items, pages);
            }
        }
    }
}

fn json<T: serde::Serialize>(rows: impl IntoIterator<Item = T>) -> Vec<Value> {
    rows.into_iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect()
}

/// What each history must hold, from the ledger's own reader, as JSON.
struct Expected {
    trades: Vec<Value>,
    decisions: Vec<Value>,
    positions: Vec<Value>,
    breaker_events: Vec<Value>,
    adjustments: Vec<Value>,
}

impl Expected {
    fn from(b: &LedgerBatch) -> Self {
        let outcome = |id| b.adjustment_outcomes.iter().find(|o| o.id == id);
        Self {
            trades: json(b.trades.iter().map(Fill::from)),
            decisions: json(b.decisions.iter().map(Decision::from)),
            positions: json(
                b.round_trips
                    .iter()
                    .enumerate()
                    .map(|(i, r)| ClosedPosition::new(i as u64 + 1, r)),
            ),
            breaker_events: json(
                b.breaker_events
                    .iter()
                    .enumerate()
                    .map(|(i, e)| BreakerEvent::new(Some(i as u64 + 1), e)),
            ),
            adjustments: json(
                b.adjustments
                    .iter()
                    .map(|a| Adjustment::new(a, outcome(a.id))),
            ),
        }
    }
}

/// A JSON row's RFC 3339 `field` as market time.
fn time_of(row: &Value, field: &str) -> Timestamp {
    let text = row[field].as_str().expect("a time");
    Timestamp::from_datetime(chrono::DateTime::parse_from_rfc3339(text).unwrap().to_utc())
}

async fn check_paging(url: &str, reader: LedgerReader) {
    let reports = tempfile::tempdir().unwrap();
    let id = run_quickstart(url, reports.path()).await;
    let records = all_records(url, &id).await;
    let want = Expected::from(&records);
    assert!(want.trades.len() > 10, "{} trades", want.trades.len());
    assert!(
        want.decisions.len() > 5000,
        "{} decisions",
        want.decisions.len()
    );
    assert!(
        want.positions.len() > 5,
        "{} closed positions",
        want.positions.len()
    );
    assert!(
        !want.breaker_events.is_empty(),
        "the quickstart's data outage trips priceFeed"
    );
    assert!(
        !want.adjustments.is_empty(),
        "the quickstart's autopilot adjusts"
    );
    eprintln!(
        "{url}: {} trades, {} decisions, {} closed positions, {} breaker events, {} adjustments",
        want.trades.len(),
        want.decisions.len(),
        want.positions.len(),
        want.breaker_events.len(),
        want.adjustments.len()
    );
    let (app, _status) = api_for(reader, &id);

    // Whole histories, at several page sizes.
    let histories: [(&str, &Vec<Value>, &[usize]); 5] = [
        ("/v1/trades", &want.trades, &[1, 100, 1000]),
        ("/v1/decisions", &want.decisions, &[1000, 337]),
        ("/v1/positions", &want.positions, &[1, 7, 100]),
        ("/v1/breakers/events", &want.breaker_events, &[1, 100]),
        ("/v1/autopilot/adjustments", &want.adjustments, &[1, 100]),
    ];
    for (path, rows, limits) in histories {
        for &limit in limits {
            let (got, pages) = fetch_all(&app, path, "", limit).await;
            assert_eq!(got.len(), rows.len(), "{path} limit {limit}");
            assert!(
                got == *rows,
                "{path} limit {limit}: rows differ from the ledger's"
            );
            assert_eq!(
                pages,
                rows.len().div_ceil(limit).max(1),
                "{path} limit {limit}"
            );
        }
    }
    // The default page size is 100.
    let (_, page) = get(&app, "/v1/decisions").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 100);

    // Filters: symbol, market time, both.
    let day = 86_400_000;
    let start = records.decisions[0].time;
    let (from, to) = (start.plus_ms(day), start.plus_ms(2 * day));
    let window = format!("&from={}&to={}", from, to);
    let in_window = |t: Timestamp| from <= t && t < to;
    let symbol = |rows: &Vec<Value>, s: &str| -> Vec<Value> {
        rows.iter().filter(|r| r["symbol"] == s).cloned().collect()
    };
    let timed = |rows: &Vec<Value>, field: &str| -> Vec<Value> {
        rows.iter()
            .filter(|r| in_window(time_of(r, field)))
            .cloned()
            .collect()
    };
    let cases: Vec<(&str, String, Vec<Value>)> = vec![
        (
            "/v1/trades",
            "&symbol=LTC-USD".into(),
            symbol(&want.trades, "LTC-USD"),
        ),
        ("/v1/trades", window.clone(), timed(&want.trades, "time")),
        (
            "/v1/decisions",
            format!("&symbol=BTC-USD{window}"),
            timed(&symbol(&want.decisions, "BTC-USD"), "time"),
        ),
        (
            "/v1/positions",
            window.clone(),
            timed(&want.positions, "exitTime"),
        ),
        (
            "/v1/positions",
            "&symbol=BTC-USD".into(),
            symbol(&want.positions, "BTC-USD"),
        ),
        (
            "/v1/breakers/events",
            window.clone(),
            timed(&want.breaker_events, "time"),
        ),
        (
            "/v1/autopilot/adjustments",
            window.clone(),
            timed(&want.adjustments, "time"),
        ),
    ];
    for (path, filters, rows) in cases {
        let (got, _) = fetch_all(&app, path, &filters, 50).await;
        assert!(
            got == rows,
            "{path}{filters}: {} rows, the ledger has {}",
            got.len(),
            rows.len()
        );
    }
    // A filter that excludes some but not all rows was exercised.
    let ltc = symbol(&want.trades, "LTC-USD").len();
    assert!(0 < ltc && ltc < want.trades.len());
    assert!(!timed(&want.decisions, "time").is_empty());
    assert!(timed(&want.decisions, "time").len() < want.decisions.len());

    // Another session's rows are not served: a session id with no rows.
    let (app, status) = api_for(LedgerReader::open(url).await.unwrap(), &id);
    status.send_modify(|s| s.session_id = format!("{id}-9"));
    let (s, page) = get(&app, "/v1/trades").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page, serde_json::json!({"items": []}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_concatenate_to_the_ledger_rows_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ledger.db");
    let url = file.to_str().unwrap().to_owned();
    // The reader is opened on the file before the session writes it: WAL
    // lets it read beside the writer.
    ledger::open(&url).await.unwrap().close().await;
    let reader = LedgerReader::open(&url).await.unwrap();
    check_paging(&url, reader.clone()).await;
    let LedgerReader::Sqlite(pool) = &reader else {
        panic!("a SQLite reader")
    };
    let e = sqlx::query("DELETE FROM trades")
        .execute(pool)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("readonly"), "{e}");
    reader.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_concatenate_to_the_ledger_rows_postgres() {
    let server = PostgresServer::shared().expect("a PostgreSQL server for the test");
    let url = server
        .create_database("api_paging")
        .expect("create the test database");
    ledger::open(&url).await.unwrap().close().await;
    let reader = LedgerReader::open(&url).await.unwrap();
    check_paging(&url, reader.clone()).await;
    let LedgerReader::Postgres(pool) = &reader else {
        panic!("a PostgreSQL reader")
    };
    let e = sqlx::query("DELETE FROM trades")
        .execute(pool)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("read-only"), "{e}");
    reader.close().await;
}

#[tokio::test]
async fn a_reader_refuses_an_in_memory_ledger_and_names_a_missing_file() {
    let e = LedgerReader::open("sqlite::memory:").await.unwrap_err();
    assert!(e.to_string().contains("in-memory"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.db");
    let e = LedgerReader::open(missing.to_str().unwrap())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("none.db"), "{e}");
}

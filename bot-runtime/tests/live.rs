//! A `source: Live` session served end to end: `bot-runtime serve` polls two
//! local HTTP servers on loopback shaped like CoinGecko (`/simple/price`)
//! and Binance (`/api/v3/ticker/price`) once a second, builds 2-second
//! candles from a price series that moves with the wall clock, and trades
//! them. The test fails over from the first source to the second and hands
//! back (checked in `/v1/status` `marketData` and in `/metrics`), cuts both
//! off (the `priceFeed` breaker trips as soon as the price is older than
//! `maxAge`, while the outage lasts, and recovers by its rule), kills
//! the runtime with `kill -9` and restarts it (the session resumes from its
//! ledger checkpoint on the wall clock; the missed time is a data gap), and
//! checks the accounting invariant exactly at every stored snapshot.
//! Nothing asserts a duration: every wait polls with a generous deadline.

use std::{
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, http::StatusCode, response::IntoResponse};
use bot_runtime::ledger::{self, LedgerStore, records::LedgerBatch};
use rust_decimal::Decimal;
use serde_json::Value;

const TOKEN: &str = "live-token";
const DEADLINE: Duration = Duration::from_secs(120);

/// The price of BTC-USD at wall-clock second `s`: a slow zig-zag between 99
/// and 103 (8 s period, 1 % steps, well inside the 20 % jump band), so that
/// a 1/2 SMA crossover on 2-second candles both buys and sells.
fn price_at(s: i64) -> Decimal {
    const CYCLE: [i64; 8] = [100, 101, 102, 103, 102, 101, 100, 99];
    Decimal::from(CYCLE[s.rem_euclid(8) as usize])
}

fn now_s() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A fake upstream: answers with the current price while `up` is set, else
/// HTTP 503; counts requests.
struct Upstream {
    up: AtomicBool,
    hits: AtomicU64,
    url: String,
}

impl Upstream {
    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

/// Start a CoinGecko-shaped (`binance == false`) or Binance-shaped upstream
/// on `rt`.
fn start_upstream(rt: &tokio::runtime::Runtime, binance: bool) -> Arc<Upstream> {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind a loopback port for the fake upstream");
    let addr = listener.local_addr().expect("local address");
    let up = Arc::new(Upstream {
        up: AtomicBool::new(true),
        hits: AtomicU64::new(0),
        url: if binance {
            format!("http://{addr}")
        } else {
            format!("http://{addr}/api/v3")
        },
    });
    let state = up.clone();
    let app = Router::new().fallback(move || {
        let up = state.clone();
        async move {
            up.hits.fetch_add(1, Ordering::SeqCst);
            if !up.up.load(Ordering::SeqCst) {
                return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
            }
            let s = now_s();
            let p = price_at(s);
            let body = if binance {
                format!(r#"[{{"symbol":"BTCUSDT","price":"{p}.00000000"}}]"#)
            } else {
                format!(r#"{{"bitcoin":{{"usd":{p},"last_updated_at":{s}}}}}"#)
            };
            ([("content-type", "application/json")], body).into_response()
        }
    });
    rt.spawn(async move { axum::serve(listener, app).await });
    up
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// One HTTP/1.1 GET with the token; status code and body.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the runtime's API");
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Authorization: Bearer {TOKEN}\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {raw:?}"));
    (code, rest.to_string())
}

/// A `bot-runtime serve` process.
struct Runtime {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Runtime {
    fn start(dir: &Path, manifest: &Path, ledger_url: &str) -> Self {
        let port = free_port();
        std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
        let n = std::fs::read_dir(dir).unwrap().count();
        let log = dir.join(format!("serve-{n}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_bot-runtime"))
            .env("RUST_LOG", "info")
            .env("PAPERBOT_LIVE_API_KEY_GECKO", "demo-key")
            .env_remove("DATABASE_URL")
            .env_remove("PAPERBOT_LEDGER")
            .env_remove("PAPERBOT_API_TOKEN")
            .arg("serve")
            .arg("-f")
            .arg(manifest)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", "none", "--ledger", ledger_url])
            .arg("--report-dir")
            .arg(dir.join("reports"))
            .arg("--token-file")
            .arg(dir.join("token"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn bot-runtime serve");
        let mut rt = Self { child, port, log };
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = rt.child.try_wait() {
                panic!(
                    "serve exited ({status}) before answering:\n{}",
                    rt.log_text()
                );
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() && get(port, "/healthz").0 == 200 {
                return rt;
            }
            assert!(
                t0.elapsed() < DEADLINE,
                "the API never answered:\n{}",
                rt.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn status(&self) -> Value {
        let (code, body) = get(self.port, "/v1/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// `GET /metrics` (Prometheus text).
    fn metrics(&self) -> String {
        let (code, body) = get(self.port, "/metrics");
        assert_eq!(code, 200, "{body}");
        body
    }

    fn wait_for(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            let s = self.status();
            if f(&s) {
                return s;
            }
            assert!(
                t0.elapsed() < DEADLINE,
                "waited in vain for {what}; last status: {s:#}\nlog:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn terminate(mut self) {
        let pid = i32::try_from(self.child.id()).unwrap();
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = self.child.wait().unwrap();
        assert!(
            status.success(),
            "exit after SIGTERM: {status}\n{}",
            self.log_text()
        );
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn records(url: &str, id: &str) -> LedgerBatch {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let l = ledger::open(url).await.unwrap();
            let mut all = LedgerBatch::default();
            l.read_records(id, 4096, &mut |b| {
                all.append(b);
                Ok(())
            })
            .await
            .unwrap();
            l.close().await;
            all
        })
}

fn breaker<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["breakers"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["name"] == name))
        .unwrap_or_else(|| panic!("no breaker {name} in {s:#}"))
}

/// The value of the sample of `name` whose labels include `labels`, in the
/// Prometheus text `text`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (labels_text, value) = match rest.strip_prefix('{') {
            Some(r) => r.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        labels
            .iter()
            .all(|(k, v)| labels_text.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.trim().parse().ok())?
    })
}

fn breaker_trips(s: &Value, name: &str) -> u64 {
    s["breakers"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["name"] == name))
        .and_then(|b| b["trips"].as_u64())
        .unwrap_or_else(|| panic!("no breaker {name} in {s:#}"))
}

fn manifest(dir: &Path, gecko: &str, binance: &str) -> PathBuf {
    let text = format!(
        "apiVersion: paperbot.io/v1alpha1\nkind: PaperAccount\nmetadata: {{name: acct}}\n\
         spec: {{initialBalance: \"100000\"}}\n---\n\
         apiVersion: paperbot.io/v1alpha1\nkind: StrategyConfig\nmetadata: {{name: strat}}\nspec:\n  \
         mode: Custom\n  signals:\n    smaCrossover: {{fastPeriod: 1, slowPeriod: 2}}\n  risk:\n    \
         fixedQuantity: \"1\"\n    confidenceThreshold: \"0\"\n  circuitBreakers: {{cooldown: 4s}}\n---\n\
         apiVersion: paperbot.io/v1alpha1\nkind: BotSession\nmetadata: {{name: live}}\nspec:\n  \
         accountRef: {{name: acct}}\n  strategyRef: {{name: strat}}\n  allocation: \"100000\"\n  \
         symbols: [BTC-USD]\n  marketData:\n    source: Live\n    live:\n      interval: 2s\n      \
         pollInterval: 1s\n      maxAge: 3s\n      jumpBandPct: \"20\"\n      warmUp: Record\n      \
         useSharedFeed: false\n      sources:\n        \
         - {{name: gecko, kind: CoinGecko, requestsPerMinute: 600, baseUrl: \"{gecko}\", \
         apiKeySecretRef: {{name: cg, key: apiKey}}}}\n        \
         - {{name: binance, kind: Binance, requestsPerMinute: 600, baseUrl: \"{binance}\"}}\n"
    );
    let path = dir.join("live.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn live_session_trades_fails_over_records_gaps_and_resumes_after_kill_9() {
    let net = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let gecko = start_upstream(&net, false);
    let binance = start_upstream(&net, true);
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("ledger.db").display().to_string();
    let m = manifest(dir.path(), &gecko.url, &binance.url);

    // 1. Trades on candles built from the preferred source's prices.
    let rt = Runtime::start(dir.path(), &m, &url);
    let s = rt.wait_for("a live round trip", |s| s["roundTrips"].as_u64() >= Some(1));
    assert_eq!(s["phase"], "Running", "{s:#}");
    assert!(gecko.hits() > 0, "the preferred source was polled");
    let binance_before = binance.hits();
    assert_eq!(
        binance_before, 0,
        "the fallback is not asked while the first source serves"
    );

    // 2. The preferred source fails: the fallback serves, trading goes on,
    // and the status and the metrics say so.
    gecko.set_up(false);
    let candles = s["candles"].as_u64().unwrap();
    let s = rt.wait_for("candles priced by the fallback", |s| {
        s["candles"].as_u64() >= Some(candles + 3) && s["marketData"]["activeSource"] == "binance"
    });
    assert!(
        binance.hits() > binance_before,
        "failover to the second source"
    );
    let md = &s["marketData"];
    assert_eq!(md["preferredSource"], "gecko", "{md:#}");
    assert_eq!(md["staleSymbols"], serde_json::json!([]), "{md:#}");
    assert_eq!(md["sources"][0]["name"], "gecko", "{md:#}");
    assert!(md["sources"][0]["failures"].as_u64() >= Some(3), "{md:#}");
    assert!(md["sources"][1]["requests"].as_u64() >= Some(1), "{md:#}");
    let prom = rt.metrics();
    assert_eq!(
        metric(
            &prom,
            "paperbot_market_data_source_active",
            &[("source", "binance")]
        ),
        Some(1.0),
        "{prom}"
    );
    assert_eq!(
        metric(
            &prom,
            "paperbot_market_data_source_active",
            &[("source", "gecko")]
        ),
        Some(0.0),
        "{prom}"
    );
    assert_eq!(
        metric(&prom, "paperbot_market_data_degraded", &[]),
        Some(1.0),
        "{prom}"
    );
    assert!(
        metric(
            &prom,
            "paperbot_market_data_source_failures_total",
            &[("source", "gecko"), ("kind", "server")]
        ) >= Some(3.0),
        "{prom}"
    );
    assert!(
        metric(
            &prom,
            "paperbot_market_data_source_requests_total",
            &[("source", "binance")]
        ) >= Some(1.0),
        "{prom}"
    );

    // 3. The preferred source comes back: once its breaker lets a trial
    // through, it serves again.
    gecko.set_up(true);
    let s = rt.wait_for("the hand-back to the preferred source", |s| {
        s["marketData"]["activeSource"] == "gecko"
    });
    assert_eq!(s["marketData"]["sources"][0]["state"], "closed", "{s:#}");
    let prom = rt.metrics();
    assert_eq!(
        metric(
            &prom,
            "paperbot_market_data_source_active",
            &[("source", "gecko")]
        ),
        Some(1.0),
        "{prom}"
    );
    assert_eq!(
        metric(
            &prom,
            "paperbot_market_data_source_state",
            &[("source", "gecko"), ("state", "closed")]
        ),
        Some(1.0),
        "{prom}"
    );
    assert_eq!(
        metric(&prom, "paperbot_market_data_degraded", &[]),
        Some(0.0),
        "{prom}"
    );
    assert_eq!(
        metric(&prom, "paperbot_market_data_stale_symbols", &[]),
        Some(0.0),
        "{prom}"
    );

    // 4. Both fail. Once the last price is older than maxAge (3 s) the
    // priceFeed breaker trips at once, while the outage lasts (no candle
    // has come to measure a gap), and no candles are invented.
    assert_eq!(breaker(&s, "priceFeed")["state"], "Closed", "{s:#}");
    gecko.set_up(false);
    binance.set_up(false);
    let s = rt.wait_for("the priceFeed breaker to trip on stale prices", |s| {
        breaker(s, "priceFeed")["state"] == "Open"
    });
    let reason = breaker(&s, "priceFeed")["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.starts_with("stale price: BTC-USD last price") && reason.ends_with("> maxAge 3s"),
        "{reason}"
    );
    assert_eq!(
        s["marketData"]["staleSymbols"],
        serde_json::json!(["BTC-USD"]),
        "{s:#}"
    );
    let prom = rt.metrics();
    assert_eq!(
        metric(&prom, "paperbot_market_data_stale_symbols", &[]),
        Some(1.0),
        "{prom}"
    );
    assert_eq!(
        metric(&prom, "paperbot_market_data_degraded", &[]),
        Some(1.0),
        "{prom}"
    );
    assert!(
        metric(
            &prom,
            "paperbot_market_data_price_age_seconds",
            &[("symbol", "BTC-USD")]
        ) > Some(3.0),
        "{prom}"
    );
    let during = s["candles"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(10));
    let s = rt.status();
    let still = s["candles"].as_u64().unwrap();
    assert!(
        still <= during + 1,
        "no candles without prices ({during} → {still})"
    );
    assert_eq!(
        breaker(&s, "priceFeed")["state"],
        "Open",
        "held open while stale: {s:#}"
    );
    gecko.set_up(true);
    binance.set_up(true);
    // It recovers by the breaker's rule: after its cool-down (4 s) a valid
    // candle closes it (the first candle after the outage may re-open it
    // for its data gap first).
    let s = rt.wait_for("the priceFeed breaker to recover", |s| {
        breaker(s, "priceFeed")["state"] == "Closed"
            && s["marketData"]["staleSymbols"] == serde_json::json!([])
    });
    assert!(breaker_trips(&s, "priceFeed") >= 1);
    let session_id = s["sessionId"].as_str().unwrap().to_string();
    let killed_at = s["candles"].as_u64().unwrap();

    // 4. kill -9 mid-run; 12 s later a new process resumes the same session
    // on the wall clock, and the missed time is a recorded data gap.
    rt.kill9();
    let before = records(&url, &session_id);
    std::thread::sleep(Duration::from_secs(12));
    let rt = Runtime::start(dir.path(), &m, &url);
    let s = rt.wait_for("the resumed session to trade live candles", |s| {
        s["sessionId"] == session_id.as_str() && s["candles"].as_u64() > Some(killed_at)
    });
    let resumed_candles = s["candles"].as_u64().unwrap();
    rt.wait_for("live candles after the resume", |s| {
        s["candles"].as_u64() >= Some(resumed_candles + 2)
    });
    rt.terminate();

    let recs = records(&url, &session_id);
    assert!(
        recs.trades.len() >= 2,
        "trades recorded: {}",
        recs.trades.len()
    );
    assert!(
        recs.decisions.len() > before.decisions.len(),
        "decisions after the resume"
    );
    let trips: Vec<_> = recs
        .breaker_events
        .iter()
        .filter(|e| e.breaker == "priceFeed" && e.to_state == "Open")
        .collect();
    assert!(
        trips
            .iter()
            .any(|e| e.reason.starts_with("stale price: BTC-USD")),
        "the outage's stale prices are recorded: {trips:?}"
    );
    assert!(
        trips.iter().any(|e| e.reason.contains("data gap")),
        "the kill -9 gap is recorded: {trips:?}"
    );
    assert!(
        trips
            .iter()
            .all(|e| e.reason.contains("data gap") || e.reason.starts_with("stale price")),
        "{trips:?}"
    );
    assert!(
        recs.breaker_events
            .iter()
            .any(|e| e.breaker == "priceFeed" && e.to_state == "Closed"),
        "the breaker recovered: {:?}",
        recs.breaker_events
    );
    // The accounting invariant, exactly, at every snapshot.
    assert!(!recs.snapshots.is_empty());
    let initial = Decimal::from(100_000);
    for snap in &recs.snapshots {
        assert_eq!(
            snap.cash + snap.position_value,
            snap.equity,
            "at {}",
            snap.time
        );
        assert_eq!(
            initial + snap.realized_pnl + snap.unrealized_pnl,
            snap.equity,
            "at {}",
            snap.time
        );
    }
    // An interrupted (SIGTERM) serve takes no final snapshot, so the last
    // stored snapshot may predate the last round trips: no sum check here.
    assert!(!recs.round_trips.is_empty(), "round trips recorded");
}

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

mod common;

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    http::{StatusCode, Uri},
    response::IntoResponse,
};
use common::serve::{DEADLINE, Runtime, assert_accounting_exact, records};
use rust_decimal::Decimal;
use serde_json::Value;

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

/// How a fake upstream answers (shaped after the APIs' documented errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// The current price.
    Normal,
    /// HTTP 503.
    Down,
    /// HTTP 429 with `Retry-After: 3`.
    RateLimited,
    /// Accepts the request and answers only after 5 s (the runtime's
    /// request timeout is 1 s): a source gone silent.
    Silent,
    /// HTTP 200 with a truncated JSON body.
    Malformed,
    /// HTTP 200 without the symbol.
    Missing,
    /// HTTP 200 with twice the price (beyond the 20 % jump band).
    Spike,
}

const MODES: [Mode; 7] = [
    Mode::Normal,
    Mode::Down,
    Mode::RateLimited,
    Mode::Silent,
    Mode::Malformed,
    Mode::Missing,
    Mode::Spike,
];

/// A fake upstream answering in its [`Mode`]; counts requests.
struct Upstream {
    mode: AtomicU8,
    hits: AtomicU64,
    url: String,
}

impl Upstream {
    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
    fn set_up(&self, up: bool) {
        self.set_mode(if up { Mode::Normal } else { Mode::Down });
    }
    fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
    fn mode(&self) -> Mode {
        MODES[usize::from(self.mode.load(Ordering::SeqCst))]
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
        mode: AtomicU8::new(Mode::Normal as u8),
        hits: AtomicU64::new(0),
        url: if binance {
            format!("http://{addr}")
        } else {
            format!("http://{addr}/api/v3")
        },
    });
    let state = up.clone();
    let app = Router::new().fallback(move |uri: Uri| {
        let up = state.clone();
        async move {
            up.hits.fetch_add(1, Ordering::SeqCst);
            let json = [("content-type", "application/json")];
            let mode = up.mode();
            match mode {
                Mode::Down => {
                    return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
                }
                Mode::RateLimited => {
                    return (
                        StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", "3")],
                        r#"{"status":{"error_code":429,"error_message":"You've exceeded the Rate Limit."}}"#,
                    )
                        .into_response();
                }
                Mode::Silent => tokio::time::sleep(Duration::from_secs(5)).await,
                Mode::Malformed => {
                    return (json, r#"{"bitcoin":{"usd":"#).into_response();
                }
                Mode::Missing => {
                    return (json, if binance { "[]" } else { "{}" }).into_response();
                }
                Mode::Normal | Mode::Spike => {}
            }
            if binance && uri.path().ends_with("/klines") {
                let body = klines_body(uri.query().unwrap_or(""));
                return (json, body).into_response();
            }
            let s = now_s();
            let p = if mode == Mode::Spike {
                price_at(s) * Decimal::TWO
            } else {
                price_at(s)
            };
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

/// Close of every warm-up kline: below the live zig-zag (99–103), so that
/// a 1/2 SMA crossover warmed on it crosses up on the first live candle.
const KLINE_CLOSE: i64 = 90;

/// A Binance `klines` body for `query` (`interval=1s`, `limit=N`): N rows of
/// one second ending with the one in progress (Binance's last row is still
/// open), every price [`KLINE_CLOSE`].
fn klines_body(query: &str) -> String {
    let limit: i64 = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("limit="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    assert!(query.contains("interval=1s"), "klines query {query}");
    let current = chrono::Utc::now().timestamp_millis() / 1000 * 1000;
    let p = KLINE_CLOSE;
    let rows: Vec<String> = (0..limit)
        .rev()
        .map(|k| {
            let open = current - k * 1000;
            format!(
                r#"[{open},"{p}.00","{p}.00","{p}.00","{p}.00","2.5",{},"225.0",4,"1.0","90.0","0"]"#,
                open + 999
            )
        })
        .collect();
    format!("[{}]", rows.join(","))
}

/// The CoinGecko source's API key, as the operator would pass it.
const KEYS: &[(&str, &str)] = &[("PAPERBOT_LIVE_API_KEY_GECKO", "demo-key")];

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
    manifest_with(
        dir,
        "interval: 2s\n      warmUp: Record",
        &format!(
            "- {{name: gecko, kind: CoinGecko, requestsPerMinute: 600, baseUrl: \"{gecko}\", \
             apiKeySecretRef: {{name: cg, key: apiKey}}}}\n        \
             - {{name: binance, kind: Binance, requestsPerMinute: 600, baseUrl: \"{binance}\"}}"
        ),
    )
}

/// The session `live` on BTC-USD with a 1/2 SMA crossover, with `settings`
/// (interval and warm-up lines of `marketData.live`) and `sources` (the
/// list items of `marketData.live.sources`).
fn manifest_with(dir: &Path, settings: &str, sources: &str) -> PathBuf {
    let text = format!(
        "apiVersion: paperbot.io/v1alpha1\nkind: PaperAccount\nmetadata: {{name: acct}}\n\
         spec: {{initialBalance: \"100000\"}}\n---\n\
         apiVersion: paperbot.io/v1alpha1\nkind: StrategyConfig\nmetadata: {{name: strat}}\nspec:\n  \
         mode: Custom\n  signals:\n    smaCrossover: {{fastPeriod: 1, slowPeriod: 2}}\n  risk:\n    \
         fixedQuantity: \"1\"\n    confidenceThreshold: \"0\"\n  circuitBreakers: {{cooldown: 4s}}\n---\n\
         apiVersion: paperbot.io/v1alpha1\nkind: BotSession\nmetadata: {{name: live}}\nspec:\n  \
         accountRef: {{name: acct}}\n  strategyRef: {{name: strat}}\n  allocation: \"100000\"\n  \
         recordHolds: true\n  symbols: [BTC-USD]\n  marketData:\n    source: Live\n    live:\n      {settings}\n      \
         pollInterval: 1s\n      maxAge: 3s\n      jumpBandPct: \"20\"\n      \
         useSharedFeed: false\n      sources:\n        {sources}\n"
    );
    let path = dir.join("live.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The session `live` of [`manifest`] over a CoinGecko-shaped and a
/// Binance-shaped upstream, its ledger in a temporary directory.
struct TwoSources {
    /// Serves the upstreams; dropped last.
    _net: tokio::runtime::Runtime,
    gecko: Arc<Upstream>,
    binance: Arc<Upstream>,
    dir: tempfile::TempDir,
    url: String,
    manifest: PathBuf,
}

impl TwoSources {
    fn start() -> Self {
        let net = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let gecko = start_upstream(&net, false);
        let binance = start_upstream(&net, true);
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("ledger.db").display().to_string();
        let manifest = manifest(dir.path(), &gecko.url, &binance.url);
        Self {
            _net: net,
            gecko,
            binance,
            dir,
            url,
            manifest,
        }
    }
}

#[test]
fn live_session_trades_fails_over_records_gaps_and_resumes_after_kill_9() {
    let t = TwoSources::start();
    let (gecko, binance, dir, url, m) = (&t.gecko, &t.binance, &t.dir, &t.url, &t.manifest);

    // 1. Trades on candles built from the preferred source's prices.
    let rt = Runtime::start(dir.path(), m, url, KEYS);
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
    let before = records(url, &session_id);
    std::thread::sleep(Duration::from_secs(12));
    let rt = Runtime::start(dir.path(), m, url, KEYS);
    let s = rt.wait_for("the resumed session to trade live candles", |s| {
        s["sessionId"] == session_id.as_str() && s["candles"].as_u64() > Some(killed_at)
    });
    let resumed_candles = s["candles"].as_u64().unwrap();
    rt.wait_for("live candles after the resume", |s| {
        s["candles"].as_u64() >= Some(resumed_candles + 2)
    });
    rt.terminate();

    let recs = records(url, &session_id);
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
    assert_accounting_exact("live", &recs, Decimal::from(100_000));
    // An interrupted (SIGTERM) serve takes no final snapshot, so the last
    // stored snapshot may predate the last round trips: no sum check here.
    assert!(!recs.round_trips.is_empty(), "round trips recorded");
}

/// `warmUp: Klines`: a new live session fetches the strategy's look-back of
/// recent 1-second klines (3 for a 1/2 SMA crossover) from the Binance
/// source before its first live candle, so it decides on that very candle
/// (a cold crossover needs three closes first); the klines are not traded
/// or recorded, and a resumed session does not fetch them again.
#[test]
fn klines_warm_up_lets_a_new_live_session_decide_on_its_first_candle() {
    let net = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let binance = start_upstream(&net, true);
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("ledger.db").display().to_string();
    let m = manifest_with(
        dir.path(),
        "interval: 1s\n      warmUp: Klines",
        &format!(
            "- {{name: binance, kind: Binance, requestsPerMinute: 600, baseUrl: \"{}\"}}",
            binance.url
        ),
    );
    let rt = Runtime::start(dir.path(), &m, &url, KEYS);
    let s = rt.wait_for("a fill", |s| s["trades"].as_u64() >= Some(1));
    let session_id = s["sessionId"].as_str().unwrap().to_string();
    let log = rt.log_text();
    assert!(
        log.contains("warmed the indicators up on recent klines")
            && log.contains("candles=2")
            && log.contains("needed=3"),
        "the runtime should log the warm-up (3 klines asked, the open one dropped):\n{log}"
    );
    rt.terminate();

    let recs = records(&url, &session_id);
    let first_snapshot = recs.snapshots.first().expect("a snapshot").time;
    let first = recs.decisions.first().expect("a decision");
    assert_eq!(
        first.time.millis(),
        first_snapshot.millis() + 1000,
        "the first decision is made on the first live candle: {first:?}"
    );
    assert_eq!(
        format!("{:?}", first.action),
        "Buy",
        "the warmed crossover (klines at {KLINE_CLOSE}, live ≥ 99) crosses up: {first:?}"
    );
    assert!(
        first.positive_signals.contains("sma"),
        "reasoning names the SMA crossover: {first:?}"
    );
    assert!(
        recs.decisions
            .iter()
            .all(|d| d.price != Decimal::from(KLINE_CLOSE)),
        "no decision on a warm-up kline"
    );
    assert!(
        recs.snapshots.iter().all(|s| s.time >= first_snapshot),
        "the equity curve starts at the first live candle"
    );

    // Resumed: the checkpoint has the warmed signals; no second warm-up.
    let hits = binance.hits();
    let rt = Runtime::start(dir.path(), &m, &url, KEYS);
    rt.wait_for("the resumed session", |s| {
        s["sessionId"] == session_id.as_str()
    });
    std::thread::sleep(Duration::from_secs(2));
    let log = rt.log_text();
    assert!(
        !log.contains("warmed the indicators up"),
        "a resumed session must not warm up again:\n{log}"
    );
    rt.terminate();
    assert!(binance.hits() > hits, "the resumed session polls prices");
}

/// The fallback chain through every way an upstream fails, in a served live
/// session: the preferred source (CoinGecko-shaped) answers 503, then 429
/// with `Retry-After`, goes silent past the request timeout, sends
/// malformed JSON, leaves the symbol out, and sends a price twice the last
/// one. Each time the second source (Binance-shaped) prices the symbol, the
/// candles go on, and the preferred source takes over again once it
/// answers well. Then both go down for longer than the data-gap limit: no
/// candle is invented, the `priceFeed` breaker trips and closes again when
/// prices return. The accounting invariant holds exactly at every snapshot,
/// and no trade was made at a spiked price.
#[test]
fn every_upstream_failure_fails_over_and_hands_back_with_the_ledger_exact() {
    let t = TwoSources::start();
    let (gecko, binance, dir, url, m) = (&t.gecko, &t.binance, &t.dir, &t.url, &t.manifest);
    let rt = Runtime::start(dir.path(), m, url, KEYS);
    let s = rt.wait_for("live candles", |s| s["candles"].as_u64() >= Some(2));
    let session_id = s["sessionId"].as_str().unwrap().to_string();

    // The preferred source serves alone until the fallback's counter stays
    // still for 2.5 s while its own moves.
    let wait_hand_back = |what: &str| {
        let t0 = Instant::now();
        loop {
            let (g, b) = (gecko.hits(), binance.hits());
            std::thread::sleep(Duration::from_millis(2500));
            if gecko.hits() > g && binance.hits() == b {
                return;
            }
            assert!(
                t0.elapsed() < DEADLINE,
                "the preferred source never took over again after {what}:\n{}",
                rt.log_text()
            );
        }
    };
    wait_hand_back("the start");
    for mode in [
        Mode::Down,
        Mode::RateLimited,
        Mode::Silent,
        Mode::Malformed,
        Mode::Missing,
        Mode::Spike,
    ] {
        let (g0, b0) = (gecko.hits(), binance.hits());
        let c0 = rt.status()["candles"].as_u64().unwrap();
        gecko.set_mode(mode);
        // Long enough for a 2 s candle to close on the fallback's prices;
        // short enough that a spike (2 polls at most) is never confirmed as
        // a lasting move (3 in a row).
        std::thread::sleep(Duration::from_millis(if mode == Mode::Spike {
            1800
        } else {
            4500
        }));
        gecko.set_mode(Mode::Normal);
        assert!(
            binance.hits() > b0,
            "{mode:?}: the second source was not asked"
        );
        if mode == Mode::RateLimited {
            // One poll a second for 4.5 s, but Retry-After: 3 after a 429.
            assert!(
                gecko.hits() - g0 <= 3,
                "{mode:?}: Retry-After not honoured: {} requests in 4.5 s",
                gecko.hits() - g0
            );
        }
        rt.wait_for(&format!("candles during and after {mode:?}"), |s| {
            s["candles"].as_u64() > Some(c0)
        });
        wait_hand_back(&format!("{mode:?}"));
    }

    // Both down past the data-gap limit (5 candles = 10 s).
    let trips = breaker_trips(&rt.status(), "priceFeed");
    gecko.set_up(false);
    binance.set_up(false);
    std::thread::sleep(Duration::from_secs(2));
    let during = rt.status()["candles"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(12));
    let still = rt.status()["candles"].as_u64().unwrap();
    assert!(
        still <= during + 1,
        "no candles without prices ({during} → {still})"
    );
    gecko.set_up(true);
    binance.set_up(true);
    rt.wait_for("the priceFeed breaker to trip on the gap", |s| {
        breaker_trips(s, "priceFeed") > trips
    });
    rt.wait_for("the priceFeed breaker to close again", |s| {
        s["breakers"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["name"] == "priceFeed"))
            .is_some_and(|b| b["state"] == "Closed")
    });
    rt.terminate();

    let recs = records(url, &session_id);
    assert_accounting_exact("live", &recs, Decimal::from(100_000));
    // Prices are 99–103; a spiked one (198–206) must never reach a trade.
    assert!(
        recs.trades
            .iter()
            .all(|t| t.reference_price < Decimal::from(110)),
        "a trade at a spiked price: {:?}",
        recs.trades
    );
    assert!(
        recs.decisions.iter().all(|d| d.price < Decimal::from(110)),
        "a decision on a spiked price"
    );
    assert!(
        recs.breaker_events.iter().any(|e| e.breaker == "priceFeed"
            && e.to_state == "Open"
            && e.reason.contains("data gap")),
        "the outage is recorded: {:?}",
        recs.breaker_events
    );
}

//! Live price sources against local HTTP servers on loopback that answer like
//! CoinGecko and Binance (bodies shaped after their documentation, kept in
//! `tests/fixtures/live/`): normal answers, 429 with Retry-After, 5xx,
//! timeouts, malformed JSON, a missing symbol, a price spike, a silent source,
//! a source coming back, and the request budget counted at the server.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bot_runtime::market::live::{
    Binance, ChainConfig, CoinGecko, CoinGeckoPlan, FallbackChain, HttpPolicy, LiveSource, Quote,
    parse_klines, parse_simple_price, parse_ticker_prices,
};
use bot_runtime::types::{SymbolId, Timestamp};
use rust_decimal_macros::dec;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/live");
/// `last_updated_at` of bitcoin in the CoinGecko fixture, in ms.
const CG_TIME: i64 = 1_711_356_300_000;
/// "Now" for polls: 30 s after the fixture's time.
const NOW: Timestamp = Timestamp(CG_TIME + 30_000);

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{FIXTURES}/{name}"))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// How the scripted upstream answers.
#[derive(Clone, Debug)]
enum Mode {
    Ok(String),
    TooMany(String),
    Status(u16),
    Silent(Duration),
}

struct Upstream {
    mode: Mutex<Mode>,
    hits: AtomicU64,
    times: Mutex<Vec<Instant>>,
    last_uri: Mutex<String>,
    last_headers: Mutex<HeaderMap>,
}

impl Upstream {
    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }
    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn start(mode: Mode) -> (String, Arc<Upstream>) {
    let up = Arc::new(Upstream {
        mode: Mutex::new(mode),
        hits: AtomicU64::new(0),
        times: Mutex::new(Vec::new()),
        last_uri: Mutex::new(String::new()),
        last_headers: Mutex::new(HeaderMap::new()),
    });
    let state = up.clone();
    let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        let up = state.clone();
        async move {
            up.hits.fetch_add(1, Ordering::SeqCst);
            up.times.lock().unwrap().push(Instant::now());
            *up.last_uri.lock().unwrap() = uri.to_string();
            *up.last_headers.lock().unwrap() = headers;
            let mode = up.mode.lock().unwrap().clone();
            let resp: Response = match mode {
                Mode::Ok(body) => ([("content-type", "application/json")], body).into_response(),
                Mode::TooMany(ra) => {
                    (StatusCode::TOO_MANY_REQUESTS, [("retry-after", ra)], "{}").into_response()
                }
                Mode::Status(s) => (
                    StatusCode::from_u16(s).unwrap(),
                    fixture("binance_error_invalid_symbol.json"),
                )
                    .into_response(),
                Mode::Silent(d) => {
                    tokio::time::sleep(d).await;
                    "[]".into_response()
                }
            };
            resp
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port for the fake upstream");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), up)
}

fn policy() -> HttpPolicy {
    HttpPolicy {
        timeout: Duration::from_millis(500),
        max_retries: 1,
        backoff_min: Duration::from_millis(10),
        backoff_max: Duration::from_millis(20),
        requests_per_minute: 1000,
        breaker_failures: 1,
        breaker_cool_down: Duration::from_millis(300),
        default_retry_after: Duration::from_secs(1),
        max_retry_after: Duration::from_secs(5),
    }
}

fn symbols() -> Vec<String> {
    vec!["BTC-USD".to_string(), "ETH-USD".to_string()]
}

fn coingecko(url: &str, p: HttpPolicy) -> CoinGecko {
    CoinGecko::new(
        &symbols(),
        &BTreeMap::new(),
        CoinGeckoPlan::Public,
        Some(url),
        p,
    )
    .expect("coingecko source")
}

fn binance(url: &str, p: HttpPolicy) -> Binance {
    Binance::new(&symbols(), &BTreeMap::new(), Some(url), p).expect("binance source")
}

fn chain(sources: Vec<Box<dyn LiveSource>>) -> FallbackChain {
    FallbackChain::new(sources, symbols(), &ChainConfig::default()).expect("chain")
}

fn cg_body(btc: &str, eth: &str, time_s: i64) -> String {
    format!(
        r#"{{"bitcoin":{{"usd":{btc},"last_updated_at":{time_s}}},"ethereum":{{"usd":{eth},"last_updated_at":{time_s}}}}}"#
    )
}

fn bn_body(btc: &str, eth: &str) -> String {
    format!(r#"[{{"symbol":"BTCUSDT","price":"{btc}"}},{{"symbol":"ETHUSDT","price":"{eth}"}}]"#)
}

#[test]
fn fixtures_parse_exactly() {
    let cg = parse_simple_price(
        &fixture("coingecko_simple_price.json"),
        &[
            ("BTC-USD", "bitcoin"),
            ("ETH-USD", "ethereum"),
            ("SOL-USD", "solana"),
        ],
        NOW,
    )
    .unwrap();
    let Quote::Price(btc) = &cg[0] else {
        panic!("{cg:?}")
    };
    assert_eq!(
        (btc.price, btc.time),
        (dec!(67187.3358), Timestamp(CG_TIME))
    );
    let Quote::Price(eth) = &cg[1] else {
        panic!("{cg:?}")
    };
    assert_eq!(eth.price, dec!(3459.12000000000003));
    assert!(matches!(&cg[2], Quote::Rejected { reason, .. } if reason.as_str() == "missing"));

    let bn = parse_ticker_prices(
        &fixture("binance_ticker_price.json"),
        &[("BTC-USD", "BTCUSDT")],
        NOW,
    )
    .unwrap();
    assert!(matches!(&bn[0], Quote::Price(t) if t.price == dec!(67190.01) && t.time == NOW));

    // The third kline closes after "now" (still open): only two are kept.
    let now = Timestamp(1_711_356_100_000);
    let k = parse_klines(&fixture("binance_klines.json"), SymbolId(0), 60_000, now).unwrap();
    assert_eq!(k.len(), 2);
    assert_eq!(k[1].open_time, Timestamp(1_711_356_000_000));
    assert_eq!(
        (k[1].open, k[1].close, k[1].volume),
        (dec!(67200.1), dec!(67187.33), dec!(9.75))
    );

    assert!(parse_simple_price("{not json", &[], NOW).is_err());
    assert!(parse_ticker_prices(r#"{"code":-1121}"#, &[], NOW).is_err());
}

#[test]
fn unknown_symbol_fails_at_start() {
    let err = Binance::new(&["BTC-USD", "NOPE-USD"], &BTreeMap::new(), None, policy()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("NOPE-USD") && text.contains("binance"),
        "{text}"
    );
}

#[tokio::test]
async fn one_bulk_request_per_poll_with_the_api_key_header() {
    let (url, up) = start(Mode::Ok(fixture("coingecko_simple_price.json"))).await;
    let cg = CoinGecko::new(
        &symbols(),
        &BTreeMap::new(),
        CoinGeckoPlan::Demo("demo-key-123".into()),
        Some(&url),
        policy(),
    )
    .unwrap();
    let mut c = chain(vec![Box::new(cg)]);
    for _ in 0..3 {
        let out = c.poll_at(NOW).await;
        assert_eq!(out.ticks.len(), 2, "{out:?}");
        assert!(out.stale.is_empty());
    }
    assert_eq!(up.hits(), 3, "one request per poll for both symbols");
    let uri = up.last_uri.lock().unwrap().clone();
    assert!(
        uri.starts_with(
            "/simple/price?ids=bitcoin%2Cethereum&vs_currencies=usd&include_last_updated_at=true"
        ),
        "{uri}"
    );
    assert_eq!(
        up.last_headers.lock().unwrap()["x-cg-demo-api-key"],
        "demo-key-123"
    );
    assert_eq!(c.stats().active.as_deref(), Some("coingecko"));
}

#[tokio::test]
async fn binance_bulk_ticker_and_warm_up_klines() {
    let (url, up) = start(Mode::Ok(fixture("binance_ticker_price.json"))).await;
    let bn = binance(&url, policy());
    let q = bn.fetch(&symbols(), NOW).await.unwrap();
    assert_eq!(q.len(), 2);
    let uri = up.last_uri.lock().unwrap().clone();
    assert_eq!(
        uri,
        "/api/v3/ticker/price?symbols=%5B%22BTCUSDT%22%2C%22ETHUSDT%22%5D"
    );
    up.set(Mode::Ok(fixture("binance_klines.json")));
    let k = bn
        .klines(
            "BTC-USD",
            SymbolId(3),
            60_000,
            3,
            Timestamp(1_711_356_200_000),
        )
        .await
        .unwrap();
    assert_eq!(k.len(), 3);
    assert!(k.iter().all(|c| c.symbol == SymbolId(3)));
    let uri = up.last_uri.lock().unwrap().clone();
    assert_eq!(uri, "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=3");
    // An unknown symbol answers 400 -1121: refused, with Binance's message.
    up.set(Mode::Status(400));
    let err = bn.fetch(&symbols(), NOW).await.unwrap_err();
    assert_eq!(err.kind(), "refused");
    assert!(err.to_string().contains("Invalid symbol"), "{err}");
}

#[tokio::test]
async fn server_errors_fail_over_and_the_preferred_source_takes_back() {
    let (cg_url, cg_up) = start(Mode::Status(503)).await;
    let (bn_url, _bn_up) = start(Mode::Ok(bn_body("67190.01", "3458.96"))).await;
    let mut c = chain(vec![
        Box::new(coingecko(&cg_url, policy())),
        Box::new(binance(&bn_url, policy())),
    ]);
    // First a normal poll from the preferred source.
    cg_up.set(Mode::Ok(cg_body("67187.33", "3459.12", CG_TIME / 1000)));
    assert_eq!(c.poll_at(NOW).await.ticks.len(), 2);
    assert_eq!(c.stats().active.as_deref(), Some("coingecko"));
    // 5xx: retried once, then Binance serves; the breaker opens.
    cg_up.set(Mode::Status(503));
    let out = c.poll_at(NOW).await;
    assert_eq!(out.ticks.len(), 2, "{out:?}");
    assert_eq!(
        cg_up.hits(),
        3,
        "one normal request, one failed request and its retry"
    );
    let s = c.stats();
    assert_eq!(s.active.as_deref(), Some("binance"));
    assert_eq!(s.failovers, 1);
    assert_eq!(s.sources[0].failures.get("server"), Some(&1));
    // While open the preferred source is skipped without a request.
    let out = c.poll_at(NOW).await;
    assert_eq!(out.ticks.len(), 2);
    assert_eq!(cg_up.hits(), 3);
    assert_eq!(c.stats().sources[0].skipped.get("circuit_open"), Some(&1));
    // It recovers; after the cool-down the trial request succeeds: hand-back.
    cg_up.set(Mode::Ok(cg_body("67187.40", "3459.20", CG_TIME / 1000)));
    tokio::time::sleep(Duration::from_millis(350)).await;
    let out = c.poll_at(NOW).await;
    assert_eq!(out.ticks.len(), 2);
    let s = c.stats();
    assert_eq!(s.active.as_deref(), Some("coingecko"));
    assert_eq!(s.handbacks, 1);
    assert_eq!(s.sources[0].breaker.map(|b| b.as_str()), Some("closed"));
    assert_eq!(s.sources[1].accepted, 4);
}

#[tokio::test]
async fn a_429_is_honoured_for_at_least_retry_after() {
    let (cg_url, cg_up) = start(Mode::TooMany("1".into())).await;
    let (bn_url, bn_up) = start(Mode::Ok(bn_body("67190.01", "3458.96"))).await;
    let mut c = chain(vec![
        Box::new(coingecko(
            &cg_url,
            HttpPolicy {
                breaker_failures: 10,
                ..policy()
            },
        )),
        Box::new(binance(&bn_url, policy())),
    ]);
    let out = c.poll_at(NOW).await;
    assert_eq!(out.ticks.len(), 2, "Binance covers the 429");
    assert_eq!(out.errors[0].1.kind(), "rate_limited");
    cg_up.set(Mode::Ok(cg_body("67187.33", "3459.12", CG_TIME / 1000)));
    // Poll every 100 ms until CoinGecko is asked again.
    while cg_up.hits() < 2 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.poll_at(NOW).await;
    }
    let times = cg_up.times.lock().unwrap().clone();
    assert!(
        times[1] - times[0] >= Duration::from_secs(1),
        "{:?}",
        times[1] - times[0]
    );
    let s = c.stats();
    assert!(
        s.sources[0]
            .skipped
            .get("rate_limited")
            .copied()
            .unwrap_or(0)
            >= 1,
        "{s:?}"
    );
    assert_eq!(s.sources[0].failures.get("rate_limited"), Some(&1));
    assert_eq!(s.active.as_deref(), Some("coingecko"));
    assert!(bn_up.hits() >= 2);
}

#[tokio::test]
async fn timeout_and_malformed_json_fall_back_and_are_counted() {
    let (cg_url, cg_up) = start(Mode::Silent(Duration::from_secs(3))).await;
    let (bn_url, _bn) = start(Mode::Ok(bn_body("67190.01", "3458.96"))).await;
    let mut c = chain(vec![
        Box::new(coingecko(
            &cg_url,
            HttpPolicy {
                max_retries: 0,
                breaker_failures: 10,
                ..policy()
            },
        )),
        Box::new(binance(&bn_url, policy())),
    ]);
    let out = c.poll_at(NOW).await;
    assert_eq!(out.ticks.len(), 2);
    assert_eq!(out.errors[0].1.kind(), "timeout");
    cg_up.set(Mode::Ok("{\"bitcoin\": {\"usd\": 671".into()));
    let out = c.poll_at(NOW).await;
    assert_eq!(out.ticks.len(), 2);
    let s = c.stats();
    assert_eq!(s.sources[0].failures.get("timeout"), Some(&1));
    assert_eq!(s.sources[0].failures.get("malformed"), Some(&1));
    assert_eq!(s.sources[1].accepted, 4);
}

#[tokio::test]
async fn missing_non_numeric_and_spiking_prices_are_rejected() {
    let (cg_url, cg_up) = start(Mode::Ok(cg_body("100", "10", CG_TIME / 1000))).await;
    let (bn_url, bn_up) = start(Mode::Ok(bn_body("100.5", "10.1"))).await;
    let mut c = chain(vec![
        Box::new(coingecko(&cg_url, policy())),
        Box::new(binance(&bn_url, policy())),
    ]);
    assert_eq!(c.poll_at(NOW).await.ticks.len(), 2);
    // CoinGecko leaves out ethereum: Binance prices ETH alone.
    cg_up.set(Mode::Ok(format!(
        r#"{{"bitcoin":{{"usd":101,"last_updated_at":{}}}}}"#,
        CG_TIME / 1000
    )));
    let out = c.poll_at(NOW).await;
    assert_eq!(out.ticks.len(), 2, "{out:?}");
    assert!(
        bn_up
            .last_uri
            .lock()
            .unwrap()
            .ends_with("%5B%22ETHUSDT%22%5D")
    );
    // A spike (BTC ×3) on CoinGecko and a word on Binance: BTC is not passed on.
    cg_up.set(Mode::Ok(cg_body("300", "10", CG_TIME / 1000)));
    bn_up.set(Mode::Ok(bn_body("abc", "10")));
    let out = c.poll_at(NOW).await;
    assert_eq!(
        out.ticks
            .iter()
            .map(|t| t.symbol.as_str())
            .collect::<Vec<_>>(),
        ["ETH-USD"]
    );
    assert_eq!(c.fresh("BTC-USD", NOW).map(|t| t.price), Some(dec!(101)));
    // Zero and negative.
    cg_up.set(Mode::Ok(cg_body("0", "-1", CG_TIME / 1000)));
    bn_up.set(Mode::Status(502));
    let out = c.poll_at(NOW).await;
    assert!(out.ticks.is_empty());
    let s = c.stats();
    assert_eq!(s.sources[0].rejected.get("missing"), Some(&1));
    assert_eq!(s.sources[0].rejected.get("jump"), Some(&1));
    assert_eq!(s.sources[0].rejected.get("zero"), Some(&1));
    assert_eq!(s.sources[0].rejected.get("negative"), Some(&1));
    assert_eq!(s.sources[1].rejected.get("non_numeric"), Some(&1));
}

#[tokio::test]
async fn a_silent_source_goes_stale() {
    // CoinGecko keeps answering with the same old last_updated_at.
    let (cg_url, _cg) = start(Mode::Ok(cg_body("100", "10", CG_TIME / 1000))).await;
    let mut c = chain(vec![Box::new(coingecko(&cg_url, policy()))]);
    assert!(c.poll_at(NOW).await.stale.is_empty());
    // 119 s later the prices are still fresh (max_age 120 s); after that not.
    let later = NOW.plus_ms(89_000);
    assert!(c.poll_at(later).await.stale.is_empty());
    let out = c.poll_at(later.plus_ms(2_000)).await;
    assert_eq!(out.stale, symbols());
    assert!(out.ticks.is_empty());
    assert_eq!(c.stats().sources[0].rejected.get("stale"), Some(&2));
    assert_eq!(c.stats().stale_polls, 1);
}

#[tokio::test]
async fn request_budget_is_respected_at_the_server() {
    let (cg_url, cg_up) = start(Mode::Ok(cg_body("100", "10", CG_TIME / 1000))).await;
    let (bn_url, bn_up) = start(Mode::Ok(bn_body("100", "10"))).await;
    let mut c = chain(vec![
        Box::new(coingecko(
            &cg_url,
            HttpPolicy {
                requests_per_minute: 3,
                ..policy()
            },
        )),
        Box::new(binance(&bn_url, policy())),
    ]);
    for _ in 0..8 {
        assert_eq!(c.poll_at(NOW).await.ticks.len(), 2);
    }
    assert_eq!(cg_up.hits(), 3, "3 requests per minute");
    assert_eq!(bn_up.hits(), 5);
    let s = c.stats();
    assert_eq!(s.sources[0].skipped.get("budget"), Some(&5));
    assert_eq!(s.sources[0].http_requests, 3);
    assert_eq!(s.failovers, 1);
}

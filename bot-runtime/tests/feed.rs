//! The shared feed (`bot-runtime feed`, the real binary) against a local
//! upstream on loopback shaped like CoinGecko's `/simple/price` (see
//! `tests/fixtures/live/coingecko_simple_price.json`) that counts requests:
//! 100 clients on the same 9 symbols cost one upstream request per poll
//! interval and each receives every price; runtimes fall back to their direct
//! source when the feed stops and hand back when it returns.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use bot_runtime::market::live::feed::FeedSource;
use bot_runtime::market::live::{
    ChainConfig, CoinGecko, CoinGeckoPlan, FallbackChain, HttpPolicy, LiveSource, Quote,
};
use bot_runtime::types::Timestamp;
use common::feed::{FeedProcess, SYMBOLS};
use rust_decimal::Decimal;

fn symbols() -> Vec<String> {
    SYMBOLS.iter().map(|s| s.0.to_string()).collect()
}

/// Price of symbol `i` in the upstream's answer number `generation`:
/// `(i + 1) × 1000 + generation` USD, so a received price names the answer it
/// came from (moves of 0.1 %, well inside the jump band).
fn price(i: usize, generation: u64) -> Decimal {
    Decimal::from((i as u64 + 1) * 1000 + generation)
}

fn generation_of(symbol: &str, p: Decimal) -> u64 {
    let i = SYMBOLS
        .iter()
        .position(|s| s.0 == symbol)
        .unwrap_or_else(|| panic!("unexpected symbol {symbol}"));
    let g = p - Decimal::from((i as u64 + 1) * 1000);
    u64::try_from(g).unwrap_or_else(|_| panic!("price {p} of {symbol} is not from the upstream"))
}

/// A CoinGecko-shaped upstream; each answer is the next generation.
async fn start_upstream() -> (String, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let h = hits.clone();
    let app = Router::new().route(
        "/simple/price",
        axum::routing::get(move |Query(q): Query<BTreeMap<String, String>>| {
            let h = h.clone();
            async move {
                let generation = h.fetch_add(1, Ordering::SeqCst) + 1;
                let now_s = chrono::Utc::now().timestamp();
                let ids: BTreeSet<&str> = q.get("ids").map_or("", |s| s).split(',').collect();
                let mut body = serde_json::Map::new();
                for (i, (_, id)) in SYMBOLS.iter().enumerate() {
                    if ids.contains(id) {
                        let v: serde_json::Value = serde_json::from_str(&format!(
                            r#"{{"usd":{},"last_updated_at":{now_s}}}"#,
                            price(i, generation)
                        ))
                        .expect("json");
                        body.insert((*id).to_string(), v);
                    }
                }
                axum::Json(serde_json::Value::Object(body))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port for the fake upstream");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), hits)
}

/// `feed.yaml` for the 9 symbols with one CoinGecko source at `upstream`,
/// polled every `poll` (Go duration such as `1s`).
fn feed_config(upstream: &str, poll: &str) -> String {
    let list = symbols().join(", ");
    format!(
        "pollInterval: {poll}\nmaxAge: 60s\njumpBandPct: \"20\"\nforgetAfterPolls: 5\n\
         symbols: [{list}]\nsources:\n  - {{name: coingecko, kind: CoinGecko, \
         requestsPerMinute: 6000, baseUrl: \"{upstream}\"}}\n"
    )
}

fn feed_policy() -> HttpPolicy {
    HttpPolicy {
        timeout: Duration::from_secs(5),
        max_retries: 0,
        requests_per_minute: 6000,
        breaker_failures: 1,
        breaker_cool_down: Duration::from_millis(300),
        ..HttpPolicy::default()
    }
}

/// Ask the feed at `feed_url` for `syms` every 100 ms until it prices them
/// all (the first request registers them); fails after 100 tries.
async fn wait_until_priced(feed_url: &str, syms: &[String]) {
    let probe = FeedSource::new(feed_url, feed_policy()).expect("feed source");
    for _ in 0..100 {
        let q = probe
            .fetch(syms, Timestamp(0))
            .await
            .expect("the feed answers");
        if q.iter().all(|q| matches!(q, Quote::Price(_))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the feed never priced all of {syms:?}");
}

async fn metric(feed_url: &str, name: &str) -> u64 {
    // reqwest has no built-in TLS provider in this workspace.
    bot_runtime::market::live::tls::install_default_provider();
    let text = reqwest::get(format!("{feed_url}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
}

/// 100 clients polling the same 9 symbols every 100 ms through the feed
/// (poll interval 1 s): the upstream sees one request per feed poll, never
/// more than one per interval, and every client receives every price of
/// every upstream answer in the measured window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_clients_cost_one_upstream_request_per_interval() {
    const CLIENTS: usize = 100;
    const INTERVALS: u32 = 5;
    let interval = Duration::from_secs(1);
    let (upstream, hits) = start_upstream().await;
    let feed = FeedProcess::start(&feed_config(&upstream, "1s"), &[], "127.0.0.1:0");
    let syms = symbols();

    // Warm-up: the first request registers the symbols; wait for prices.
    wait_until_priced(&feed.url, &syms).await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let src = FeedSource::new(&feed.url, feed_policy()).expect("feed source");
        let syms = syms.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            // symbol → generations received; and the requests sent.
            let mut seen: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
            let mut requests = 0u64;
            while !stop.load(Ordering::SeqCst) {
                requests += 1;
                let quotes = src
                    .fetch(&syms, Timestamp(0))
                    .await
                    .expect("a client's request to the feed failed");
                for q in quotes {
                    let Quote::Price(t) = q else {
                        panic!("the feed lost a price: {q:?}")
                    };
                    seen.entry(t.symbol.clone())
                        .or_default()
                        .insert(generation_of(&t.symbol, t.price));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (seen, requests)
        }));
    }
    // Measure from the first answer every client can see whole.
    tokio::time::sleep(interval).await;
    let first = hits.load(Ordering::SeqCst);
    let started = std::time::Instant::now();
    tokio::time::sleep(interval * INTERVALS).await;
    let last = hits.load(Ordering::SeqCst);
    let elapsed = started.elapsed();
    // Let every client see the last answer of the window, then stop.
    tokio::time::sleep(interval).await;
    stop.store(true, Ordering::SeqCst);
    let mut client_requests = 0;
    for t in tasks {
        let (seen, requests) = t.await.expect("client task");
        client_requests += requests;
        for s in &syms {
            let got = seen.get(s).cloned().unwrap_or_default();
            let missed: Vec<u64> = (first..=last).filter(|g| !got.contains(g)).collect();
            assert!(
                missed.is_empty(),
                "a client missed answers {missed:?} of {s} (window {first}..={last}, got {got:?})"
            );
        }
    }
    let window = last - first;
    // At most one upstream request per interval (the poll timer never
    // bursts to catch up), at least one poll in the window.
    let allowed = elapsed.as_millis() / interval.as_millis() + 1;
    assert!(window >= 1, "the feed did not poll in {elapsed:?}");
    assert!(
        u128::from(window) <= allowed,
        "{window} upstream requests in {elapsed:?}: expected at most {allowed} (one per interval)"
    );
    // Every upstream request was one feed poll, counted by the feed too.
    let polls = metric(&feed.url, "paperbot_feed_polls_total").await;
    let by_source = metric(
        &feed.url,
        "paperbot_feed_upstream_requests_total{source=\"coingecko\"}",
    )
    .await;
    let total = hits.load(Ordering::SeqCst);
    assert!(
        by_source == polls && (polls == total || polls + 1 == total),
        "feed polls {polls}, feed's upstream count {by_source}, upstream saw {total}"
    );
    assert!(
        client_requests >= CLIENTS as u64 * u64::from(INTERVALS),
        "{client_requests} client requests"
    );
    eprintln!(
        "measured: {CLIENTS} clients sent {client_requests} requests to the feed; upstream saw \
         {window} requests in {elapsed:?} (interval {interval:?}), {total} in all; each client \
         received all {} answers × 9 symbols",
        window + 1
    );
    assert_eq!(metric(&feed.url, "paperbot_feed_symbols").await, 9);
    let status = feed.terminate();
    assert!(status.success(), "feed exit after SIGTERM: {status}");
}

/// Chains [feed, direct CoinGecko]: served by the feed; the feed stops
/// (SIGTERM) → the direct source takes over (failover in ChainStats, direct
/// upstream requests); the feed returns on the same address → hand-back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtimes_fall_back_when_the_feed_stops_and_hand_back() {
    const CHAINS: usize = 5;
    let (feed_upstream, _) = start_upstream().await;
    let (direct_upstream, direct_hits) = start_upstream().await;
    let feed = FeedProcess::start(&feed_config(&feed_upstream, "200ms"), &[], "127.0.0.1:0");
    let listen = feed.listen_addr();
    let syms = symbols();
    let mut chains: Vec<FallbackChain> = (0..CHAINS)
        .map(|_| {
            let f = FeedSource::new(&feed.url, feed_policy()).expect("feed source");
            let d = CoinGecko::new(
                &syms,
                &BTreeMap::new(),
                CoinGeckoPlan::Public,
                Some(&direct_upstream),
                HttpPolicy {
                    requests_per_minute: 6000,
                    ..HttpPolicy::default()
                },
            )
            .expect("direct source")
            .with_name("direct");
            FallbackChain::new(
                vec![Box::new(f), Box::new(d)],
                syms.clone(),
                &ChainConfig::default(),
            )
            .expect("chain")
        })
        .collect();

    async fn poll_until(chains: &mut [FallbackChain], want: &str) {
        for _ in 0..100 {
            let mut all = true;
            for c in chains.iter_mut() {
                let out = c.poll().await;
                all &= out.ticks.len() == 9 && c.stats().active.as_deref() == Some(want);
            }
            if all {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let active: Vec<_> = chains.iter().map(|c| c.stats().active).collect();
        panic!("chains never all served by {want}: {active:?}");
    }

    poll_until(&mut chains, "feed").await;
    let direct_before = direct_hits.load(Ordering::SeqCst);

    let status = feed.terminate();
    assert!(status.success(), "feed exit after SIGTERM: {status}");
    poll_until(&mut chains, "direct").await;
    assert!(direct_hits.load(Ordering::SeqCst) > direct_before);
    for c in &chains {
        let s = c.stats();
        assert!(s.failovers >= 1, "{s:?}");
        let feed_stats = &s.sources[0];
        assert!(
            feed_stats.failures.get("connect").copied().unwrap_or(0) >= 1,
            "{feed_stats:?}"
        );
    }

    let feed = FeedProcess::start(&feed_config(&feed_upstream, "200ms"), &[], &listen);
    poll_until(&mut chains, "feed").await;
    let direct_after = direct_hits.load(Ordering::SeqCst);
    for c in &mut chains {
        let s = c.stats();
        assert!(s.handbacks >= 1, "{s:?}");
        assert_eq!(c.poll().await.ticks.len(), 9);
    }
    assert_eq!(
        direct_hits.load(Ordering::SeqCst),
        direct_after,
        "the direct source was asked although the feed served"
    );
    let status = feed.terminate();
    assert!(status.success(), "feed exit after SIGTERM: {status}");
}

/// A symbol no source can map (`NOPE-USD`, e.g. from one session with a
/// typo) does not stop the feed: the real binary starts, serves the other
/// 9, counts the skipped one in `/metrics` and refuses it with HTTP 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_skips_a_symbol_no_source_can_map_and_serves_the_rest() {
    let (upstream, hits) = start_upstream().await;
    let config = feed_config(&upstream, "200ms").replace("symbols: [", "symbols: [NOPE-USD, ");
    let feed = FeedProcess::start(&config, &[], "127.0.0.1:0");
    assert_eq!(metric(&feed.url, "paperbot_feed_unmapped_symbols").await, 1);
    wait_until_priced(&feed.url, &symbols()).await;
    assert!(hits.load(Ordering::SeqCst) >= 1);
    let refused = reqwest::get(format!("{}/v1/prices?symbols=BTC-USD,NOPE-USD", feed.url))
        .await
        .expect("GET /v1/prices");
    assert_eq!(refused.status().as_u16(), 400);
    let body = refused.text().await.expect("body");
    assert!(body.contains("NOPE-USD"), "{body}");
    let status = feed.terminate();
    assert!(status.success(), "feed exit after SIGTERM: {status}");
}

//! Live sessions served end to end (`bot-runtime serve`) with
//! `PAPERBOT_FEED_URL` pointing at a real `bot-runtime feed` process, both
//! configured with the same CoinGecko-shaped upstream on loopback. The feed
//! and the runtimes send different API keys (`PAPERBOT_LIVE_API_KEY_GECKO`),
//! so the upstream counts who asked.
//!
//! - One session: while the feed runs, every upstream request is the feed's
//!   and the session still gets its candles; when the feed is killed, the
//!   runtime polls the upstream directly (its own budget) and keeps trading;
//!   when the feed returns on its address, the runtime hands back to it.
//! - The fleet: 100 `serve` processes on the same 9 symbols cost the
//!   upstream one request per poll interval (the feed's), none of their own
//!   while the feed serves, and every session decides on every symbol with
//!   the accounting invariant exact at every snapshot.
//!
//! Nothing asserts a duration: every wait polls with a generous deadline.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, extract::Query, http::HeaderMap};
use common::{
    feed::{FeedProcess, SYMBOLS},
    serve::{DEADLINE, Runtime, assert_accounting_exact, records},
};
use rust_decimal::Decimal;

const FEED_KEY: &str = "feed-key";
const RUNTIME_KEY: &str = "runtime-key";
/// The API key variable of the `gecko` source, for the feed and runtimes.
const KEY_ENV: &str = "PAPERBOT_LIVE_API_KEY_GECKO";

/// The two tests each start real processes polling on the wall clock; the
/// fleet one loads both cores, so they run one after the other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Price of the `i`-th symbol of [`SYMBOLS`] at wall-clock second `s`: `i +
/// 1` times a zig-zag between 99 and 103 USD (1 % steps, inside the jump
/// band) so that a 1/2 SMA crossover trades.
fn price_at(i: usize, s: i64) -> Decimal {
    const CYCLE: [i64; 8] = [100, 101, 102, 103, 102, 101, 100, 99];
    Decimal::from(CYCLE[s.rem_euclid(8) as usize] * (i as i64 + 1))
}

/// Whether `p` is a price [`price_at`] gives for `symbol`.
fn is_upstream_price(symbol: &str, p: Decimal) -> bool {
    let Some(i) = SYMBOLS.iter().position(|s| s.0 == symbol) else {
        return false;
    };
    (0..8).any(|s| price_at(i, s) == p)
}

/// Requests to the upstream by the demo key they carried.
#[derive(Default)]
struct Hits(Mutex<BTreeMap<String, u64>>);

impl Hits {
    fn of(&self, key: &str) -> u64 {
        self.0
            .lock()
            .map(|m| m.get(key).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// A CoinGecko-shaped `/simple/price` upstream (body shaped as in
/// `tests/fixtures/live/coingecko_simple_price.json`) for the ids of
/// [`SYMBOLS`] asked for in `ids`, counting requests by their
/// `x-cg-demo-api-key` header.
///
/// Served by the returned tokio runtime (one worker), which must be kept.
fn start_upstream() -> (tokio::runtime::Runtime, String, Arc<Hits>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind a loopback port for the fake upstream");
    let addr = listener.local_addr().expect("local address");
    let hits = Arc::new(Hits::default());
    let h = hits.clone();
    let app = Router::new().route(
        "/simple/price",
        axum::routing::get(
            move |headers: HeaderMap, Query(q): Query<BTreeMap<String, String>>| {
                let h = h.clone();
                async move {
                    let key = headers
                        .get("x-cg-demo-api-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_string();
                    if let Ok(mut m) = h.0.lock() {
                        *m.entry(key).or_default() += 1;
                    }
                    let s = chrono::Utc::now().timestamp();
                    let ids: BTreeSet<&str> =
                        q.get("ids").map_or("", String::as_str).split(',').collect();
                    let body: Vec<String> = SYMBOLS
                        .iter()
                        .enumerate()
                        .filter(|(_, (_, id))| ids.contains(id))
                        .map(|(i, (_, id))| {
                            format!(
                                r#""{id}":{{"usd":{},"last_updated_at":{s}}}"#,
                                price_at(i, s)
                            )
                        })
                        .collect();
                    (
                        [("content-type", "application/json")],
                        format!("{{{}}}", body.join(",")),
                    )
                }
            },
        ),
    );
    rt.spawn(async move { axum::serve(listener, app).await });
    (rt, format!("http://{addr}"), hits)
}

/// `feed.yaml` for `symbols` with the `gecko` source at `upstream`, polled
/// every second.
fn feed_config(upstream: &str, symbols: &[&str]) -> String {
    format!(
        "pollInterval: 1s\nmaxAge: 10s\njumpBandPct: \"20\"\nsymbols: [{}]\n\
         sources:\n  - {{name: gecko, kind: CoinGecko, requestsPerMinute: 600, \
         baseUrl: \"{upstream}\", apiKeySecretRef: {{name: cg, key: apiKey}}}}\n",
        symbols.join(", ")
    )
}

/// The session `live` on `symbols` (2-second candles from prices polled
/// every second, a 1/2 SMA crossover, holds recorded when `record_holds`)
/// with the `gecko` source at `upstream` behind the shared feed.
fn manifest(dir: &Path, upstream: &str, symbols: &[&str], record_holds: bool) -> PathBuf {
    let text = format!(
        "apiVersion: paperbot.io/v1alpha1\nkind: PaperAccount\nmetadata: {{name: acct}}\n\
         spec: {{initialBalance: \"100000\"}}\n---\n\
         apiVersion: paperbot.io/v1alpha1\nkind: StrategyConfig\nmetadata: {{name: strat}}\nspec:\n  \
         mode: Custom\n  signals:\n    smaCrossover: {{fastPeriod: 1, slowPeriod: 2}}\n  risk:\n    \
         fixedQuantity: \"1\"\n    confidenceThreshold: \"0\"\n---\n\
         apiVersion: paperbot.io/v1alpha1\nkind: BotSession\nmetadata: {{name: live}}\nspec:\n  \
         accountRef: {{name: acct}}\n  strategyRef: {{name: strat}}\n  allocation: \"100000\"\n  \
         recordHolds: {record_holds}\n  symbols: [{}]\n  marketData:\n    source: Live\n    live:\n      \
         interval: 2s\n      pollInterval: 1s\n      maxAge: {}\n      jumpBandPct: \"20\"\n      \
         warmUp: Record\n      sources:\n        \
         - {{name: gecko, kind: CoinGecko, requestsPerMinute: 600, baseUrl: \"{upstream}\", \
         apiKeySecretRef: {{name: cg, key: apiKey}}}}\n",
        symbols.join(", "),
        // A fleet on two cores may be late by a few seconds.
        if symbols.len() > 1 { "10s" } else { "3s" },
    );
    let path = dir.join("live.yaml");
    std::fs::write(&path, text).expect("write the manifest");
    path
}

/// Wait until `f` holds, polling every 200 ms; `what` names it on failure.
fn until(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < DEADLINE, "waited in vain for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A `field` in KiB of process `pid`'s `/proc/<pid>/<file>` (lines such as
/// `VmRSS:   40000 kB`): `("status", "VmRSS")` is its resident set size,
/// `("smaps_rollup", "Pss")` its proportional set size (shared pages such as
/// the binary's code divided among the processes sharing them).
fn proc_kib(pid: u32, file: &str, field: &str) -> u64 {
    let path = format!("/proc/{pid}/{file}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {path}:\n{text}"))
}

/// A counter of the feed's `/metrics` (a line `name value`).
fn feed_metric(feed: &FeedProcess, name: &str) -> u64 {
    let (code, text) = common::serve::get(feed.port(), "/metrics");
    assert_eq!(code, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing in:\n{text}"))
}

#[test]
fn a_served_session_trades_through_the_feed_and_polls_directly_while_it_is_down() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (_net, upstream, hits) = start_upstream();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = feed_config(&upstream, &["BTC-USD"]);
    let feed = FeedProcess::start(&config, &[(KEY_ENV, FEED_KEY)], "127.0.0.1:0");
    let (feed_url, feed_listen) = (feed.url.clone(), feed.listen_addr());
    let m = manifest(dir.path(), &upstream, &["BTC-USD"], false);
    let ledger = dir.path().join("ledger.db").display().to_string();

    // 1. Through the feed: candles and a round trip, and not one upstream
    //    request with the runtime's key.
    let rt = Runtime::start(
        dir.path(),
        &m,
        &ledger,
        &[(KEY_ENV, RUNTIME_KEY), ("PAPERBOT_FEED_URL", &feed_url)],
    );
    let s = rt.wait_for("a round trip through the feed", |s| {
        s["roundTrips"].as_u64() >= Some(1)
    });
    assert_eq!(s["phase"], "Running", "{s:#}");
    assert!(hits.of(FEED_KEY) > 0, "the feed polled the upstream");
    assert_eq!(hits.of("none"), 0);
    // The feed answers a symbol it was never asked for as pending until its
    // next poll, so the runtime's first polls may go direct; after that the
    // feed serves every poll.
    let at_start = hits.of(RUNTIME_KEY);
    let candles = s["candles"].as_u64().expect("candles");
    rt.wait_for("three more candles through the feed", |s| {
        s["candles"].as_u64() >= Some(candles + 3)
    });
    assert_eq!(
        hits.of(RUNTIME_KEY),
        at_start,
        "the runtime asked the upstream itself while the feed served\n{}",
        rt.log_text()
    );

    // 2. The feed dies: the runtime polls the upstream directly and keeps
    //    building candles.
    feed.kill();
    let candles = rt.status()["candles"].as_u64().expect("candles");
    until("the runtime's own upstream requests", || {
        hits.of(RUNTIME_KEY) > 0
    });
    let s = rt.wait_for("three more candles without the feed", |s| {
        s["candles"].as_u64() >= Some(candles + 3)
    });
    assert_eq!(s["phase"], "Running", "{s:#}");
    let direct = hits.of(RUNTIME_KEY);
    assert!(direct > 0);

    // 3. The feed returns on its address: the runtime hands back (its direct
    //    requests stop growing while the feed's grow).
    let _feed = FeedProcess::start(&config, &[(KEY_ENV, FEED_KEY)], &feed_listen);
    let t0 = Instant::now();
    loop {
        let (own, fed) = (hits.of(RUNTIME_KEY), hits.of(FEED_KEY));
        std::thread::sleep(Duration::from_secs(3));
        if hits.of(RUNTIME_KEY) == own && hits.of(FEED_KEY) > fed {
            break;
        }
        assert!(
            t0.elapsed() < DEADLINE,
            "the runtime kept polling directly after the feed returned\n{}",
            rt.log_text()
        );
    }
    let candles = rt.status()["candles"].as_u64().expect("candles");
    let s = rt.wait_for("two more candles through the feed again", |s| {
        s["candles"].as_u64() >= Some(candles + 2)
    });
    assert_eq!(s["phase"], "Running", "{s:#}");
    println!(
        "upstream requests: feed {}, runtime direct {} ({at_start} before the feed had \
         the symbol, the rest while it was down or just back)",
        hits.of(FEED_KEY),
        hits.of(RUNTIME_KEY)
    );
}

/// Sessions in the fleet test (`PAPERBOT_FLEET_SESSIONS` overrides it, to
/// measure how far a machine goes).
const FLEET: usize = 100;

/// 100 `bot-runtime serve` processes (each its own SQLite ledger) on the
/// same 9 symbols behind one `bot-runtime feed`: over a ~10 s window the
/// upstream sees at most one request per feed poll interval (+1 for a poll
/// at each edge) and not one request with the runtimes' key; every session
/// decides on all 9 symbols at the upstream's prices, and the accounting
/// invariant holds exactly at every stored snapshot. Prints the start time,
/// the summed RSS and the request counts (`-- --nocapture`).
#[test]
fn a_hundred_served_sessions_cost_one_upstream_request_per_poll_interval() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let sessions = std::env::var("PAPERBOT_FLEET_SESSIONS")
        .ok()
        .map_or(FLEET, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("PAPERBOT_FLEET_SESSIONS={v:?}: expected a count"))
        });
    const WINDOW: Duration = Duration::from_secs(10);
    const POLL: Duration = Duration::from_secs(1);
    let (_net, upstream, hits) = start_upstream();
    let root = tempfile::tempdir().expect("temp dir");
    let symbols: Vec<&str> = SYMBOLS.iter().map(|s| s.0).collect();
    let feed = FeedProcess::start(
        &feed_config(&upstream, &symbols),
        &[(KEY_ENV, FEED_KEY)],
        "127.0.0.1:0",
    );
    let m = manifest(root.path(), &upstream, &symbols, true);

    // Ask the feed once so that it has every price before the first runtime
    // polls it (a symbol it never had is answered as pending and polled
    // directly).
    let feed_port = feed.port();
    let query = format!("/v1/prices?symbols={}", symbols.join(","));
    until("the feed pricing all 9 symbols", || {
        let (code, body) = common::serve::get(feed_port, &query);
        code == 200 && body.contains(r#""pending":[]"#)
    });

    // Start them, ten at a time in parallel.
    let env = [
        (KEY_ENV, RUNTIME_KEY),
        ("PAPERBOT_FEED_URL", feed.url.as_str()),
    ];
    let t0 = Instant::now();
    let mut fleet: Vec<(PathBuf, Runtime)> = std::thread::scope(|scope| {
        let starters: Vec<_> = (0..sessions)
            .collect::<Vec<_>>()
            .chunks(sessions.div_ceil(10).max(1))
            .map(|chunk| {
                let chunk = chunk.to_vec();
                let (root, m, env) = (root.path(), &m, &env);
                scope.spawn(move || {
                    chunk
                        .into_iter()
                        .map(|i| {
                            let dir = root.join(format!("s{i:03}"));
                            std::fs::create_dir(&dir).expect("session dir");
                            let db = dir.join("ledger.db");
                            let rt = Runtime::start_with_args(
                                &dir,
                                m,
                                &db.display().to_string(),
                                env,
                                &["--snapshot-interval", "2s"],
                            );
                            (db, rt)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        starters
            .into_iter()
            .flat_map(|s| s.join().expect("a starter thread panicked"))
            .collect()
    });
    let started = t0.elapsed();
    let ids: Vec<String> = fleet
        .iter()
        .map(|(_, rt)| {
            let s = rt.wait_for("a first candle", |s| s["candles"].as_u64() >= Some(1));
            s["sessionId"]
                .as_str()
                .unwrap_or_else(|| panic!("no sessionId in {s:#}"))
                .to_string()
        })
        .collect();
    let all_candles = t0.elapsed();

    // The window: count upstream requests by key.
    let (feed_before, direct_before) = (hits.of(FEED_KEY), hits.of(RUNTIME_KEY));
    let w0 = Instant::now();
    std::thread::sleep(WINDOW);
    let (feed_after, direct_after) = (hits.of(FEED_KEY), hits.of(RUNTIME_KEY));
    let window = w0.elapsed();
    // Every runtime is still serving: one that ended shows its log.
    for (i, (_, rt)) in fleet.iter_mut().enumerate() {
        if let Ok(Some(status)) = rt.child_status() {
            panic!("runtime {i} exited ({status}):\n{}", rt.log_text());
        }
    }
    let rss_kib_total: u64 = fleet
        .iter()
        .map(|(_, rt)| proc_kib(rt.pid(), "status", "VmRSS"))
        .sum();
    let pss_kib_total: u64 = fleet
        .iter()
        .map(|(_, rt)| proc_kib(rt.pid(), "smaps_rollup", "Pss"))
        .sum();
    let feed_rss = proc_kib(feed.pid(), "status", "VmRSS");
    let feed_requests = feed_after - feed_before;
    let allowed = u64::try_from(window.as_millis() / POLL.as_millis()).unwrap_or(u64::MAX) + 1;
    let served_by_feed = fleet
        .iter()
        .filter(|(_, rt)| rt.status()["marketData"]["activeSource"] == "shared_feed")
        .count();
    let client_requests = feed_metric(&feed, "paperbot_feed_client_requests_total");
    println!(
        "fleet: {sessions} sessions started (API up) in {started:.1?}, all with candles after \
         {all_candles:.1?}; summed RSS {:.0} MiB ({:.1} MiB each), summed PSS {:.0} MiB \
         ({:.1} MiB each); feed RSS {:.1} MiB",
        rss_kib_total as f64 / 1024.0,
        rss_kib_total as f64 / 1024.0 / sessions.max(1) as f64,
        pss_kib_total as f64 / 1024.0,
        pss_kib_total as f64 / 1024.0 / sessions.max(1) as f64,
        feed_rss as f64 / 1024.0,
    );
    println!(
        "fleet: in a {window:.1?} window the upstream saw {feed_requests} request(s) from the \
         feed (at most {allowed} allowed, poll interval {POLL:?}) and {} from runtimes; \
         {served_by_feed}/{sessions} sessions served by the feed; runtimes' direct requests in \
         all {direct_after}, the feed's {feed_after}; the feed answered {client_requests} \
         client requests",
        direct_after - direct_before,
    );
    assert!(feed_requests >= 1, "the feed did not poll in {window:?}");
    assert!(
        feed_requests <= allowed,
        "{feed_requests} upstream requests by the feed in {window:?}: expected at most {allowed}"
    );
    assert_eq!(
        direct_after, direct_before,
        "runtimes asked the upstream themselves while the feed served"
    );
    assert_eq!(
        served_by_feed, sessions,
        "every session is served by the feed"
    );

    // Stop them (SIGTERM, in parallel) and read every ledger.
    let dbs: Vec<PathBuf> = fleet.iter().map(|(db, _)| db.clone()).collect();
    std::thread::scope(|scope| {
        let mut fleet = fleet;
        while !fleet.is_empty() {
            let rest = fleet.split_off(fleet.len().saturating_sub(sessions.div_ceil(10).max(1)));
            scope.spawn(move || {
                for (_, rt) in rest {
                    rt.terminate();
                }
            });
        }
    });
    let initial = Decimal::from(100_000);
    let (mut decisions, mut snapshots, mut round_trips) = (0usize, 0usize, 0usize);
    for (db, id) in dbs.iter().zip(&ids) {
        let recs = records(&db.display().to_string(), id);
        // Every candle of the session had all 9 prices: each symbol has a
        // decision at every candle time (but the last, which SIGTERM may
        // cut between two symbols of the same time).
        let mut times: BTreeMap<&str, BTreeSet<i64>> = BTreeMap::new();
        for d in &recs.decisions {
            times
                .entry(d.symbol.as_str())
                .or_default()
                .insert(d.time.millis());
        }
        let mut all: BTreeSet<i64> = times.values().flatten().copied().collect();
        all.pop_last();
        assert!(
            !all.is_empty(),
            "{id} in {} decided on fewer than two candles",
            db.display()
        );
        for s in &symbols {
            let missed: Vec<i64> = times
                .get(s)
                .map_or(all.clone(), |t| all.difference(t).copied().collect())
                .into_iter()
                .collect();
            assert!(
                missed.is_empty(),
                "{id} in {}: no decision on {s} at candle times {missed:?} (ms)",
                db.display()
            );
        }
        for d in &recs.decisions {
            assert!(
                is_upstream_price(&d.symbol, d.price),
                "{id} decided on {} at {}, not a price of the upstream",
                d.symbol,
                d.price
            );
        }
        assert_accounting_exact(id, &recs, initial);
        decisions += recs.decisions.len();
        snapshots += recs.snapshots.len();
        round_trips += recs.round_trips.len();
    }
    println!(
        "fleet: {sessions} ledgers: {decisions} decisions (every session on all 9 symbols at \
         every candle), {snapshots} snapshots with the invariant exact, {round_trips} round trips"
    );
    let status = feed.terminate();
    assert!(status.success(), "feed exit after SIGTERM: {status}");
}

//! A live session served end to end (`bot-runtime serve`) with
//! `PAPERBOT_FEED_URL` pointing at a real `bot-runtime feed` process, both
//! configured with the same CoinGecko-shaped upstream on loopback. The feed
//! and the runtime send different API keys (`PAPERBOT_LIVE_API_KEY_GECKO`),
//! so the upstream counts who asked: while the feed runs, every upstream
//! request is the feed's and the session still gets its candles; when the
//! feed is killed, the runtime polls the upstream directly (its own budget)
//! and keeps trading; when the feed returns on its address, the runtime hands
//! back to it. Nothing asserts a duration: every wait polls with a generous
//! deadline.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, http::HeaderMap};
use rust_decimal::Decimal;
use serde_json::Value;

const TOKEN: &str = "feed-session-token";
const DEADLINE: Duration = Duration::from_secs(120);
const FEED_KEY: &str = "feed-key";
const RUNTIME_KEY: &str = "runtime-key";

/// BTC-USD at wall-clock second `s`: a zig-zag between 99 and 103 (1 %
/// steps, inside the jump band) so that a 1/2 SMA crossover trades.
fn price_at(s: i64) -> Decimal {
    const CYCLE: [i64; 8] = [100, 101, 102, 103, 102, 101, 100, 99];
    Decimal::from(CYCLE[s.rem_euclid(8) as usize])
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
/// `tests/fixtures/live/coingecko_simple_price.json`) counting requests by
/// their `x-cg-demo-api-key` header.
fn start_upstream(rt: &tokio::runtime::Runtime) -> (String, Arc<Hits>) {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind a loopback port for the fake upstream");
    let addr = listener.local_addr().expect("local address");
    let hits = Arc::new(Hits::default());
    let h = hits.clone();
    let app = Router::new().route(
        "/simple/price",
        axum::routing::get(move |headers: HeaderMap| {
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
                let p = price_at(s);
                (
                    [("content-type", "application/json")],
                    format!(r#"{{"bitcoin":{{"usd":{p},"last_updated_at":{s}}}}}"#),
                )
            }
        }),
    );
    rt.spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), hits)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// The real `bot-runtime feed` on `port`.
struct FeedProcess {
    child: Child,
}

impl FeedProcess {
    fn start(dir: &Path, upstream: &str, port: u16) -> Self {
        let config = dir.join("feed.yaml");
        std::fs::write(
            &config,
            format!(
                "pollInterval: 1s\nmaxAge: 3s\njumpBandPct: \"20\"\nsymbols: [BTC-USD]\n\
                 sources:\n  - {{name: gecko, kind: CoinGecko, requestsPerMinute: 600, \
                 baseUrl: \"{upstream}\", apiKeySecretRef: {{name: cg, key: apiKey}}}}\n"
            ),
        )
        .expect("write feed.yaml");
        let mut child = Command::new(env!("CARGO_BIN_EXE_bot-runtime"))
            .env("PAPERBOT_LIVE_API_KEY_GECKO", FEED_KEY)
            .args(["feed", "--config"])
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start bot-runtime feed");
        let stdout = child.stdout.take().expect("feed stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the feed's listening line");
        assert!(
            line.starts_with("feed listening on "),
            "feed did not start: first line {line:?}"
        );
        Self { child }
    }

    fn kill(mut self) {
        self.child.kill().expect("kill the feed");
        self.child.wait().expect("wait for the feed");
    }
}

impl Drop for FeedProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 GET with the token; status code and body.
fn get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the runtime's API");
    s.set_read_timeout(Some(DEADLINE)).expect("read timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Authorization: Bearer {TOKEN}\r\n\r\n"
    )
    .expect("send the request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the answer");
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {raw:?}"));
    (code, rest.to_string())
}

/// A `bot-runtime serve` process with `PAPERBOT_FEED_URL`.
struct Runtime {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Runtime {
    fn start(dir: &Path, manifest: &Path, feed_url: &str) -> Self {
        let port = free_port();
        std::fs::write(dir.join("token"), format!("{TOKEN}\n")).expect("write the token");
        let log = dir.join("serve.log");
        let child = Command::new(env!("CARGO_BIN_EXE_bot-runtime"))
            .env("RUST_LOG", "info")
            .env("PAPERBOT_LIVE_API_KEY_GECKO", RUNTIME_KEY)
            .env("PAPERBOT_FEED_URL", feed_url)
            .env_remove("DATABASE_URL")
            .env_remove("PAPERBOT_LEDGER")
            .env_remove("PAPERBOT_API_TOKEN")
            .arg("serve")
            .arg("-f")
            .arg(manifest)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", "none", "--ledger"])
            .arg(dir.join("ledger.db"))
            .arg("--report-dir")
            .arg(dir.join("reports"))
            .arg("--token-file")
            .arg(dir.join("token"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the log"))
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
        serde_json::from_str(&body).expect("status is JSON")
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
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn manifest(dir: &Path, upstream: &str) -> PathBuf {
    let text = format!(
        "apiVersion: paperbot.io/v1alpha1\nkind: PaperAccount\nmetadata: {{name: acct}}\n\
         spec: {{initialBalance: \"100000\"}}\n---\n\
         apiVersion: paperbot.io/v1alpha1\nkind: StrategyConfig\nmetadata: {{name: strat}}\nspec:\n  \
         mode: Custom\n  signals:\n    smaCrossover: {{fastPeriod: 1, slowPeriod: 2}}\n  risk:\n    \
         fixedQuantity: \"1\"\n    confidenceThreshold: \"0\"\n---\n\
         apiVersion: paperbot.io/v1alpha1\nkind: BotSession\nmetadata: {{name: live}}\nspec:\n  \
         accountRef: {{name: acct}}\n  strategyRef: {{name: strat}}\n  allocation: \"100000\"\n  \
         symbols: [BTC-USD]\n  marketData:\n    source: Live\n    live:\n      interval: 2s\n      \
         pollInterval: 1s\n      maxAge: 3s\n      jumpBandPct: \"20\"\n      warmUp: Record\n      \
         sources:\n        \
         - {{name: gecko, kind: CoinGecko, requestsPerMinute: 600, baseUrl: \"{upstream}\", \
         apiKeySecretRef: {{name: cg, key: apiKey}}}}\n"
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

#[test]
fn a_served_session_trades_through_the_feed_and_polls_directly_while_it_is_down() {
    let net = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (upstream, hits) = start_upstream(&net);
    let dir = tempfile::tempdir().expect("temp dir");
    let feed_port = free_port();
    let feed = FeedProcess::start(dir.path(), &upstream, feed_port);
    let feed_url = format!("http://127.0.0.1:{feed_port}");
    let m = manifest(dir.path(), &upstream);

    // 1. Through the feed: candles and a round trip, and not one upstream
    //    request with the runtime's key.
    let rt = Runtime::start(dir.path(), &m, &feed_url);
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
    let _feed = FeedProcess::start(dir.path(), &upstream, feed_port);
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

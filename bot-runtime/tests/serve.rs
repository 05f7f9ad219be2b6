//! `bot-runtime serve` as the operator's pods run it: real processes, real
//! SQLite files (and once a real PostgreSQL server), the HTTP API on a local
//! port, `kill -9` and SIGTERM. Nothing asserts a duration: every wait polls
//! with a generous deadline and fails with the last status and the
//! runtime's log.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use bot_runtime::ledger::{self, LedgerStore, SessionInfo};
use common::serve::{DEADLINE, Runtime, block_on, read_records, records};
use paperbot_testkit::PostgresServer;
use serde_json::{Value, json};

fn postgres() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(|| PostgresServer::start().expect("start a PostgreSQL server for the tests"))
}

/// Every stored session of the ledger, newest first.
fn sessions(url: &str) -> Vec<SessionInfo> {
    block_on(async {
        let l = ledger::open(url).await.unwrap();
        let s = l.list_sessions().await.unwrap();
        l.close().await;
        s
    })
}

/// `promtool check metrics` finds nothing to say about `text`.
fn promtool_check(text: &str) {
    paperbot_testkit::assert_promtool_clean("the runtime's /metrics", text);
}

fn sqlite_url(dir: &Path) -> String {
    dir.join("ledger.db").display().to_string()
}

/// A strategy that trades every reversal: SMA(1/2) crossover, one unit,
/// no threshold; `extra` is appended to `spec:` (indented by 2).
fn strategy(extra: &str) -> String {
    format!(
        "apiVersion: paperbot.io/v1alpha1\nkind: StrategyConfig\nmetadata: {{name: strat}}\nspec:\n  \
         mode: Custom\n  signals:\n    smaCrossover: {{fastPeriod: 1, slowPeriod: 2}}\n  risk:\n    \
         fixedQuantity: \"1\"\n    confidenceThreshold: \"0\"\n{extra}"
    )
}

/// Account + strategy + a session named `name` whose `spec:` ends with
/// `session` (indented by 2).
fn manifest(dir: &Path, file: &str, strategy: &str, name: &str, session: &str) -> PathBuf {
    let text = format!(
        "apiVersion: paperbot.io/v1alpha1\nkind: PaperAccount\nmetadata: {{name: acct}}\n\
         spec: {{initialBalance: \"100000\"}}\n---\n{strategy}\n---\n\
         apiVersion: paperbot.io/v1alpha1\nkind: BotSession\nmetadata: {{name: {name}}}\nspec:\n  \
         accountRef: {{name: acct}}\n  strategyRef: {{name: strat}}\n  allocation: \"100000\"\n{session}"
    );
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

/// A simulated market of one-second candles (real time by default: one
/// candle a second, on the wall clock).
const SIMULATED: &str = "  symbols: [SIM]\n  marketData:\n    source: Simulated\n    simulated: \
     {seed: 7, initialPrice: \"100\", annualVolatility: \"3\", interval: 1s, candles: 10000000}\n";

fn count_open(s: &Value) -> usize {
    s["positions"].as_array().map_or(0, Vec::len)
}

fn breaker<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["breakers"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["name"] == name))
        .unwrap_or_else(|| panic!("no breaker {name} in {s:#}"))
}

/// Wall clock in ms since the epoch.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn rfc3339_ms(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
        .timestamp_millis()
}

/// A simulated session on the wall clock, started paused, resumed, paused
/// again, stopped: it keeps serving, answers what an ended session answers,
/// exits 0 on SIGTERM, and a restarted process serves the same final status
/// and starts nothing.
#[test]
fn paced_simulated_session_on_the_wall_clock_pause_resume_stop_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let m = manifest(
        dir.path(),
        "sim.yaml",
        &strategy(""),
        "sim",
        &format!("{SIMULATED}  desiredState: Paused\n"),
    );
    let rt = Runtime::start(dir.path(), &m, &url, &[]);

    // Paused from the manifest; candles keep coming, one a second, at
    // market times close to the wall clock (the market starts at the wall
    // clock aligned to its interval).
    let first = rt.wait_for("a first candle", |s| s["candles"].as_u64() >= Some(1));
    assert_eq!(first["phase"], "Paused", "{first:#}");
    let s = rt.wait_for("4 more candles", |s| {
        s["candles"].as_u64() >= Some(first["candles"].as_u64().unwrap() + 4)
    });
    let lag = now_ms() - rfc3339_ms(s["lastCandleTime"].as_str().unwrap());
    assert!(
        (-5_000..120_000).contains(&lag),
        "market time {} should follow the wall clock (lag {lag} ms)",
        s["lastCandleTime"]
    );
    assert_eq!(s["trades"], 0, "no entry while paused: {s:#}");
    assert_eq!(s["ready"], true, "{s:#}");
    assert!(s["dataAgeSeconds"].as_f64().is_some(), "{s:#}");

    // Resume: it trades.
    let (code, a) = rt.post("/v1/resume", None);
    assert_eq!((code, a["phase"].as_str()), (200, Some("Running")), "{a}");
    let (code, a) = rt.post("/v1/resume", None);
    assert_eq!(code, 200, "{a}");
    assert!(
        a["message"].as_str().unwrap().contains("nothing to do"),
        "{a}"
    );
    rt.wait_for("a fill after resuming", |s| s["trades"].as_u64() >= Some(1));

    // Pause is idempotent.
    let (code, a) = rt.post("/v1/pause", None);
    assert_eq!((code, a["phase"].as_str()), (200, Some("Paused")), "{a}");
    let (code, a) = rt.post("/v1/pause", None);
    assert_eq!(code, 200, "{a}");
    assert_eq!(a["message"], "already paused: nothing to do");
    assert_eq!(rt.status()["phase"], "Paused");

    // Stop: recorded as Stopped, final report written, still serving.
    let (code, a) = rt.post("/v1/stop", None);
    assert_eq!((code, a["phase"].as_str()), (200, Some("Stopped")), "{a}");
    let fin = rt.status();
    assert_eq!(fin["phase"], "Stopped", "{fin:#}");
    assert_eq!(fin["ready"], true);
    let stored = sessions(&url);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].phase, "Stopped");
    let summary: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("reports/sim/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["phase"], "Stopped");
    let dec = |v: &Value| {
        v.as_str()
            .unwrap()
            .parse::<rust_decimal::Decimal>()
            .unwrap()
    };
    assert_eq!(
        dec(&summary["final_equity"]),
        dec(&fin["equity"]),
        "the report's final equity is the status's"
    );
    for path in ["/v1/pause", "/v1/resume", "/v1/breakers/priceFeed/reset"] {
        let (code, a) = rt.post(path, None);
        assert_eq!(code, 409, "{path}: {a}");
        assert!(
            a["message"]
                .as_str()
                .unwrap()
                .contains("has ended (Stopped)"),
            "{a}"
        );
    }
    let (code, a) = rt.post("/v1/stop", None);
    assert_eq!(code, 200, "{a}");
    assert!(
        a["message"].as_str().unwrap().contains("already ended"),
        "{a}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(rt.status(), fin, "nothing moves after the end");
    assert_eq!(rt.get("/readyz").0, 200);
    rt.terminate();

    // A restarted process (a pod restarted after the end) starts nothing and
    // serves the same final status.
    let rt = Runtime::start(dir.path(), &m, &url, &[]);
    let again = rt.wait_for("the final status", |s| s["phase"] != "Starting");
    for key in [
        "phase",
        "sessionId",
        "cash",
        "equity",
        "realizedPnl",
        "unrealizedPnl",
        "trades",
        "roundTrips",
        "positions",
        "breakers",
        "autopilot",
        "candles",
        "lastCandleTime",
    ] {
        assert_eq!(again[key], fin[key], "{key}: {again:#} vs {fin:#}");
    }
    assert_eq!(sessions(&url).len(), 1, "no new run was started");
    rt.terminate();
}

/// Candles (1 minute) of a replay that buys at 101 (an SMA(1/2) cross up on
/// candle 3, filled at the next open), stays flat for `flat` candles, drops
/// through the 5 % stop-loss (95.95), then crosses up again.
fn pause_csv(dir: &Path, flat: usize) -> PathBuf {
    let mut rows: Vec<(f64, f64, f64, f64)> = vec![
        (100.0, 100.0, 100.0, 100.0),
        (100.0, 100.0, 100.0, 100.0),
        (100.0, 100.0, 99.0, 99.0),
        (99.0, 101.0, 99.0, 101.0),
    ];
    rows.extend(std::iter::repeat_n((101.0, 101.0, 101.0, 101.0), flat));
    rows.extend([
        (101.0, 101.0, 90.0, 94.0),
        (94.0, 94.0, 93.0, 93.0),
        (93.0, 97.0, 93.0, 97.0),
        (97.0, 98.0, 97.0, 98.0),
        (98.0, 98.0, 98.0, 98.0),
    ]);
    let t0 = chrono::DateTime::parse_from_rfc3339("2024-03-01T00:00:00Z").unwrap();
    let mut text = String::from("timestamp,open,high,low,close,volume\n");
    for (i, (o, h, l, c)) in rows.into_iter().enumerate() {
        let t = t0 + chrono::Duration::minutes(i as i64);
        text.push_str(&format!(
            "{},{o},{h},{l},{c},10\n",
            t.format("%Y-%m-%dT%H:%M:%SZ")
        ));
    }
    let path = dir.join("X_1m.csv");
    std::fs::write(&path, text).unwrap();
    path
}

/// Paused mid-position: no new entry, but the stop-loss still exits; the
/// pause survives SIGTERM and a restart at another speed.
#[test]
fn pause_stops_entries_but_a_stop_loss_still_exits_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let csv = pause_csv(dir.path(), 120);
    let m = manifest(
        dir.path(),
        "pause.yaml",
        &strategy("    stopLossPct: \"5\"\n"),
        "pause",
        &format!(
            "  symbols: [X]\n  marketData:\n    source: Replay\n    speed: \"60\"\n    replay:\n      \
             files:\n        - {{symbol: X, path: {}}}\n",
            csv.display()
        ),
    );
    // One candle a second: the position opens within seconds, and the flat
    // stretch leaves two minutes to pause before the drop.
    let rt = Runtime::start(dir.path(), &m, &url, &[]);
    let open = rt.wait_for("the position to open", |s| count_open(s) == 1);
    assert_eq!(open["phase"], "Running");
    let (code, a) = rt.post("/v1/pause", None);
    assert_eq!((code, a["phase"].as_str()), (200, Some("Paused")), "{a}");
    let paused = rt.status();
    assert_eq!(
        paused["phase"], "Paused",
        "the answer comes after the status shows it"
    );
    assert!(
        paused["candles"].as_u64() < Some(4 + 120),
        "paused before the drop: {paused:#}"
    );
    // SIGTERM mid-session: exit 0, recorded as interrupted (resumable).
    rt.terminate();
    let stored = sessions(&url);
    assert_eq!(stored[0].phase, "Interrupted");

    // Restarted as fast as possible: it resumes paused and runs to the end.
    let rt = Runtime::start_with_args(dir.path(), &m, &url, &[], &["--speed", "max"]);
    let fin = rt.wait_for("the end", |s| s["phase"] == "Completed");
    assert_eq!(
        count_open(&fin),
        0,
        "the stop-loss closed the position: {fin:#}"
    );
    let recs = records(&url, "pause");
    let trades: Vec<(String, String, String)> = recs
        .trades
        .iter()
        .map(|t| {
            (
                t.side.as_str().to_string(),
                t.reason.as_str().to_string(),
                t.fill_price.normalize().to_string(),
            )
        })
        .collect();
    assert_eq!(
        trades,
        [
            ("buy".to_string(), "signal".to_string(), "101".to_string()),
            (
                "sell".to_string(),
                "stop_loss".to_string(),
                "95.95".to_string()
            ),
        ],
        "one entry before the pause, the stop-loss exit while paused, no entry after"
    );
    let skipped = recs
        .decisions
        .iter()
        .find(|d| d.reason.contains("session paused: new entries blocked"))
        .unwrap_or_else(|| panic!("no skipped entry: {:#?}", recs.decisions));
    assert_eq!(skipped.action.as_str(), "skip");
    assert_eq!(sessions(&url)[0].phase, "Completed");
    rt.terminate();
}

/// A tripped breaker reset by request: recorded in the ledger as a breaker
/// event, and still closed after `kill -9` and a resume.
#[test]
fn breaker_reset_is_recorded_and_survives_kill_9_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let m = manifest(
        dir.path(),
        "reset.yaml",
        &strategy("  circuitBreakers:\n    maxDailyTrades: 1\n"),
        "reset",
        SIMULATED,
    );
    let rt = Runtime::start(dir.path(), &m, &url, &[]);
    rt.wait_for("dailyTradeCap to trip", |s| {
        s["breakers"].as_array().is_some_and(|b| {
            b.iter()
                .any(|b| b["name"] == "dailyTradeCap" && b["state"] == "Open")
        })
    });
    // Paused first, so that no new entry trips it again before the check.
    assert_eq!(rt.post("/v1/pause", None).0, 200);

    let (code, a) = rt.post("/v1/breakers/nosuch/reset", None);
    assert_eq!(code, 404, "{a}");
    let msg = a["message"].as_str().unwrap();
    assert!(
        msg.contains("dailyTradeCap") && msg.contains("priceFeed"),
        "lists the breakers: {a}"
    );
    let (code, a) = rt.post("/v1/breakers/minBalance/reset", None);
    assert_eq!(code, 404, "a breaker that is not configured: {a}");

    let (code, a) = rt.post("/v1/breakers/dailyTradeCap/reset", None);
    assert_eq!(code, 200, "{a}");
    assert_eq!(a["message"], "breaker dailyTradeCap reset (was Open)");
    let s = rt.status();
    let b = breaker(&s, "dailyTradeCap");
    assert_eq!(b["state"], "Closed", "{s:#}");
    assert_eq!(b["reason"], "reset by request");
    assert_eq!(b["trips"], 1);
    let (code, a) = rt.post("/v1/breakers/dailyTradeCap/reset", None);
    assert_eq!(code, 200, "{a}");
    assert_eq!(
        a["message"],
        "breaker dailyTradeCap is Closed: nothing to reset"
    );

    // The reset is in the ledger the moment it is answered.
    rt.kill9();
    let recs = records(&url, "reset");
    let ev = recs
        .breaker_events
        .iter()
        .rfind(|e| e.breaker == "dailyTradeCap")
        .unwrap();
    assert_eq!(
        (
            ev.from_state.as_str(),
            ev.to_state.as_str(),
            ev.reason.as_str()
        ),
        ("Open", "Closed", "reset by request")
    );
    assert_eq!(sessions(&url)[0].phase, "Running", "killed, unfinished");

    // Resumed: still closed, still paused.
    let rt = Runtime::start(dir.path(), &m, &url, &[]);
    let s = rt.wait_for("the resumed session", |s| s["phase"] != "Starting");
    assert_eq!(s["phase"], "Paused", "{s:#}");
    let b = breaker(&s, "dailyTradeCap");
    assert_eq!(
        (b["state"].as_str(), b["trips"].as_u64()),
        (Some("Closed"), Some(1)),
        "{s:#}"
    );
    rt.kill9();
}

/// The strategy as `POST /v1/config` takes it (JSON), with a stop-loss of
/// `stop` percent and an RSI added.
fn reloaded_strategy(stop: &str) -> Value {
    json!({
        "mode": "Custom",
        "signals": {"smaCrossover": {"fastPeriod": 1, "slowPeriod": 2}, "rsi": {"period": 3}},
        "risk": {"fixedQuantity": "1", "confidenceThreshold": "0", "stopLossPct": stop}
    })
}

/// A hot reload keeps cash and positions, shows its revision, is in force
/// after `kill -9` and a resume, and the resumed manifest must carry it.
#[test]
fn reload_keeps_positions_and_cash_and_survives_kill_9_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    let m = manifest(
        dir.path(),
        "reload.yaml",
        &strategy(""),
        "reload",
        SIMULATED,
    );
    let rt = Runtime::start(dir.path(), &m, &url, &[]);
    rt.wait_for("an open position", |s| count_open(s) == 1);

    // Refused reloads name the field.
    let (code, a) = rt.post(
        "/v1/config",
        Some(&json!({"strategy": reloaded_strategy("150"), "revision": "6"})),
    );
    assert_eq!(code, 400, "{a}");
    assert_eq!(a["field"], "strategy.risk.stopLossPct", "{a}");
    let (code, a) = rt.post(
        "/v1/config",
        Some(&json!({"strategy": reloaded_strategy("2"), "revision": "x".repeat(64)})),
    );
    assert_eq!((code, a["field"].as_str()), (400, Some("revision")), "{a}");

    // Accepted: compared across the reload when no candle came in between
    // (one comes every second; retried otherwise).
    let mut compared = false;
    for attempt in 0..20 {
        let before = rt.status();
        let (code, a) = rt.post(
            "/v1/config",
            Some(&json!({"strategy": reloaded_strategy("2"), "revision": "7"})),
        );
        assert_eq!(code, 200, "{a}");
        assert_eq!(a["effectiveParameters"]["stopLossPct"], "2", "{a}");
        let after = rt.status();
        assert_eq!(after["strategyRevision"], "7");
        assert_eq!(
            after["autopilot"]["effectiveParameters"]["stopLossPct"],
            "2"
        );
        if after["candles"] == before["candles"] {
            assert_eq!(after["cash"], before["cash"], "attempt {attempt}");
            assert_eq!(after["positions"], before["positions"], "attempt {attempt}");
            assert_eq!(after["trades"], before["trades"]);
            compared = true;
            break;
        }
    }
    assert!(compared, "never a reload between two candles");
    rt.kill9();
    let cut = sessions(&url);
    assert_eq!(cut[0].phase, "Running");

    // The manifest without the reload no longer matches: refused, exit 1.
    let out = Command::new(env!("CARGO_BIN_EXE_bot-runtime"))
        .env_remove("DATABASE_URL")
        .args([
            "serve",
            "--metrics-listen",
            "none",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("-f")
        .arg(&m)
        .args(["--ledger", &url])
        .arg("--report-dir")
        .arg(dir.path().join("reports"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("strategy.spec") && err.contains("hot-reloaded (revision 7)"),
        "{err}"
    );

    // With the reloaded StrategyConfig it resumes, the reload in force.
    let reloaded = strategy("")
        .replace("slowPeriod: 2}\n", "slowPeriod: 2}\n    rsi: {period: 3}\n")
        .replace(
            "    confidenceThreshold: \"0\"\n",
            "    confidenceThreshold: \"0\"\n    stopLossPct: \"2\"\n",
        );
    assert!(reloaded.contains("rsi") && reloaded.contains("stopLossPct"));
    let m2 = manifest(dir.path(), "reloaded.yaml", &reloaded, "reload", SIMULATED);
    let rt = Runtime::start(dir.path(), &m2, &url, &[]);
    let s = rt.wait_for("the resumed session", |s| s["phase"] == "Running");
    assert_eq!(s["strategyRevision"], "7", "{s:#}");
    assert_eq!(s["autopilot"]["effectiveParameters"]["stopLossPct"], "2");
    assert!(s["candles"].as_u64() >= Some(1));
    assert_eq!(sessions(&url).len(), 1, "resumed, not restarted");
    rt.terminate();
    assert_eq!(sessions(&url)[0].phase, "Interrupted");

    // Asked to, a resume adopts the manifest's StrategyConfig as a reload
    // (here: back to the first one), and a later resume then takes it.
    let rt = Runtime::start_with_args(dir.path(), &m, &url, &[], &["--adopt-manifest-strategy"]);
    let s = rt.wait_for("the resumed session", |s| s["phase"] == "Running");
    assert!(s.get("strategyRevision").is_none(), "{s:#}");
    assert!(
        s["autopilot"]["effectiveParameters"]
            .get("stopLossPct")
            .is_none(),
        "the first strategy has no stop-loss: {s:#}"
    );
    // Committed with the next batch (the status shows committed state only).
    rt.wait_for("a commit", |c| {
        c["candles"].as_u64() > s["candles"].as_u64()
    });
    rt.kill9();
    let rt = Runtime::start(dir.path(), &m, &url, &[]);
    rt.wait_for("the resumed session", |s| s["phase"] == "Running");
    assert_eq!(sessions(&url).len(), 1);
    rt.terminate();
}

/// A replay into PostgreSQL runs to its end as fast as possible; a
/// restarted process serves the same final status from the database and
/// starts nothing. Metrics and readiness are served all along.
#[test]
fn completed_replay_in_postgres_is_served_again_after_a_restart() {
    let pg = postgres();
    let url = pg.create_database("serve_completed").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let quickstart = std::fs::read_to_string(common::example("quickstart.yaml")).unwrap();
    let data = std::fs::canonicalize(common::example("data")).unwrap();
    let m = dir.path().join("quickstart.yaml");
    std::fs::write(
        &m,
        quickstart.replace("path: data/", &format!("path: {}/", data.display())),
    )
    .unwrap();
    let rt = Runtime::start(dir.path(), &m, &url, &[]);
    let fin = rt.wait_for("the end", |s| s["phase"] == "Completed");
    assert_eq!(fin["ready"], true);
    assert!(fin["trades"].as_u64() > Some(10), "{fin:#}");
    assert!(
        fin["winRatePct"].is_string() && fin["sharpeRatio"].is_string(),
        "{fin:#}"
    );
    let (code, metrics) = rt.get("/metrics");
    assert_eq!(code, 200);
    for line in [
        "paperbot_session_phase{account=\"demo\",phase=\"Completed\",session=\"quickstart\",strategy=\"trend-follower\"} 1",
        "paperbot_ready{account=\"demo\",session=\"quickstart\",strategy=\"trend-follower\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    promtool_check(&metrics);
    let filled: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("paperbot_fills_total{") && l.contains("status=\"filled\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(
        Some(filled),
        fin["trades"].as_u64(),
        "fills counted:\n{metrics}"
    );
    rt.terminate();

    let rt = Runtime::start(dir.path(), &m, &url, &[]);
    let again = rt.wait_for("the final status", |s| s["phase"] != "Starting");
    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("message");
        v
    };
    assert_eq!(strip(again), strip(fin.clone()), "rebuilt from the ledger");
    assert_eq!(sessions(&url).len(), 1);
    let (code, metrics) = rt.get("/metrics");
    assert_eq!(code, 200);
    let gauge: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "paperbot_equity{account=\"demo\",session=\"quickstart\",strategy=\"trend-follower\"} ",
            )
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no equity gauge:\n{metrics}"));
    let equity: f64 = fin["equity"].as_str().unwrap().parse().unwrap();
    assert!(
        (gauge - equity).abs() <= equity * 1e-12,
        "the equity gauge {gauge} is the status's {equity} (rebuilt from the ledger)"
    );
    let candles = ["BTC-USD", "LTC-USD"].map(|s| {
        format!(
            "{s}={}/{s}_1m_coinbase_2018-04-04_2018-04-06.csv",
            data.display()
        )
    });
    assert_report_is_served(&rt, &url, "quickstart", dir.path(), &candles);
    rt.terminate();
}

/// `GET /v1/report/{file}` serves the files `bot-runtime report --data
/// <the session's candle files>` writes from the same ledger, byte for byte
/// (report.html with its embedded charts too), and refuses what is not a
/// report file.
fn assert_report_is_served(rt: &Runtime, url: &str, session: &str, dir: &Path, data: &[String]) {
    let out = dir.join("cli-report");
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_bot-runtime"))
        .args(["report", "--ledger", url, "--session", session, "--out"])
        .arg(&out)
        .arg("--data")
        .args(data)
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", common::text(&cli.stderr));
    for file in [
        "report.html",
        "summary.json",
        "trades.csv",
        "round_trips.csv",
        "decisions.csv",
        "by_symbol.csv",
        "by_exit_reason.csv",
        "daily.csv",
    ] {
        let (code, body) = rt.get(&format!("/v1/report/{file}"));
        assert_eq!(code, 200, "{file}: {body}");
        let want = std::fs::read_to_string(out.join(file)).unwrap();
        assert_eq!(body, want, "{file} served = {file} of `bot-runtime report`");
    }
    for (path, code, says) in [
        ("/v1/report/nope.csv", 404, "it has by_exit_reason.csv"),
        ("/v1/report/..%2Fpaperbot.db", 404, "not a report file"),
        ("/v1/report/.hidden.csv", 404, "not a report file"),
        ("/v1/report/summary.txt", 404, "not a report file"),
        ("/v1/report/summary.json?x=1", 400, "x"),
    ] {
        let (got, body) = rt.get(path);
        assert_eq!(got, code, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
    let (code, body) = common::serve::http(rt.port, "GET", "/v1/report/summary.json", None, None);
    assert_eq!(code, 401, "reads need the token here: {body}");
}

/// In process: the event stream carries the committed fills (exactly the
/// ledger's, in order), decisions, prices and the final phase, in market-time
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_the_commits_in_order() {
    use bot_runtime::{
        config,
        runner::{RunOptions, StopSignal},
        service::{self, RuntimeEvent, ServeOptions},
    };
    use paperbot_crds::runtime_api::RuntimePhase;

    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(dir.path());
    // Ten one-minute candles a second (a start of its own: paced from the
    // first candle, not the wall clock).
    let m = manifest(
        dir.path(),
        "events.yaml",
        &strategy(""),
        "events",
        "  symbols: [SIM]\n  marketData:\n    source: Simulated\n    speed: \"600\"\n    simulated: \
         {seed: 3, annualVolatility: \"4\", interval: 1m, candles: 60, start: \"2024-05-01T00:00:00Z\"}\n",
    );
    let plan = config::plan_sessions(&config::load_manifests(&m).unwrap())
        .unwrap()
        .remove(0);
    let store = ledger::open(&url).await.unwrap();
    let opts = ServeOptions {
        run: RunOptions {
            report_dir: dir.path().join("reports"),
            ..RunOptions::default()
        },
        speed: None,
        ledger_url: None,
    };
    let (handle, task) =
        service::start(plan, opts, store, std::sync::Arc::new(StopSignal::new())).unwrap();
    let mut rx = handle.events.subscribe();
    let mut events = Vec::new();
    let t0 = Instant::now();
    loop {
        let e = tokio::time::timeout(DEADLINE.saturating_sub(t0.elapsed()), rx.recv())
            .await
            .expect("events until the end")
            .expect("no event missed");
        let done = matches!(
            e,
            RuntimeEvent::Phase {
                phase: RuntimePhase::Completed,
                ..
            }
        );
        events.push(e);
        if done {
            break;
        }
    }
    let out = task.await.unwrap().unwrap();
    assert_eq!(out.end, service::ServeEnd::Final(RuntimePhase::Completed));

    let fills: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RuntimeEvent::Fill(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    let trades = read_records(&url, "events").await.trades;
    assert!(!fills.is_empty(), "{events:#?}");
    assert!(
        trades.ends_with(&fills),
        "the fills streamed are the ledger's (from the subscription on)"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RuntimeEvent::Decision(_)))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RuntimeEvent::Price { .. }))
    );
    let times: Vec<i64> = events
        .iter()
        .filter_map(|e| match e {
            RuntimeEvent::Fill(t) => Some(t.time.millis()),
            RuntimeEvent::Decision(d) => Some(d.time.millis()),
            RuntimeEvent::Price { time, .. } => Some(time.millis()),
            _ => None,
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "market-time order: {times:?}"
    );
    assert_eq!(handle.status.borrow().phase, RuntimePhase::Completed);
}

/// A PostgreSQL outage: trading waits, the status says the ledger is
/// unreachable and why, `/readyz` answers 503, control
/// requests are refused as unavailable; once the database is back the
/// session carries on and is ready again.
#[test]
fn a_ledger_outage_makes_the_runtime_unready_until_the_database_is_back() {
    let mut pg = PostgresServer::start().expect("start a PostgreSQL server for the outage");
    let url = pg.create_database("serve_outage").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(
        dir.path(),
        "outage.yaml",
        &strategy(""),
        "outage",
        SIMULATED,
    );
    let rt = Runtime::start_with_args(dir.path(), &m, &url, &[], &["--ledger-retry-timeout", "0s"]);
    let up = rt.wait_for("trading", |s| {
        s["ready"] == true && s["candles"].as_u64() >= Some(2)
    });
    assert_eq!(up["ledger"]["reachable"], true);
    assert_eq!(rt.get("/readyz").0, 200);

    pg.stop().unwrap();
    let down = rt.wait_for("the outage to show", |s| s["ledger"]["reachable"] == false);
    assert!(down["ledger"]["reason"].is_string(), "{down:#}");
    assert_eq!(down["ready"], false, "{down:#}");
    assert_eq!(rt.get("/readyz").0, 503);
    let (code, a) = rt.post("/v1/pause", None);
    assert_eq!(code, 503, "{a}");
    let stalled = rt.status()["candles"].clone();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        rt.status()["candles"],
        stalled,
        "no trading ahead of the ledger"
    );

    pg.start_again().unwrap();
    let back = rt.wait_for("the ledger to come back", |s| {
        s["ready"] == true && s["candles"].as_u64() > stalled.as_u64()
    });
    assert_eq!(back["ledger"]["reachable"], true);
    assert_eq!(rt.post("/v1/pause", None).0, 200);
    rt.terminate();
}

//! End-to-end tests of the `bot-runtime` binary: the README's main job, the
//! backtest command, and the clear errors for bad input.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use common::*;

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("bot-runtime starts")
}

fn outputs(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("ledger.db"), dir.join("reports"))
}

/// The README's first command on the shipped quickstart.
#[test]
fn quickstart_runs_end_to_end_and_writes_ledger_and_report() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, reports) = outputs(tmp.path());
    let out = run(bin()
        .args(["run", "-f"])
        .arg(example("quickstart.yaml"))
        .arg("--ledger")
        .arg(&db)
        .arg("--report-dir")
        .arg(&reports));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    for label in [
        "Round trips",
        "Win rate",
        "Realized P&L",
        "Unrealized P&L",
        "ROI",
        "Max drawdown",
        "Sharpe",
        "Sortino",
        "Profit factor",
        "Fees",
        "Slippage",
        "Circuit-breaker trips",
        "Autopilot adjustments",
    ] {
        assert!(stdout.contains(label), "summary lacks {label:?}:\n{stdout}");
    }
    let dir = reports.join("quickstart");
    for f in [
        "summary.json",
        "trades.csv",
        "round_trips.csv",
        "decisions.csv",
        "equity.png",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing in {}", dir.display());
    }
    let png = std::fs::read(dir.join("equity.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["phase"], "Completed");
    assert!(summary["fills"].as_u64().unwrap() > 0, "{summary}");
    // The quickstart data has a 7-hour outage: the price-feed breaker trips on it.
    assert!(summary["breaker_trips"].as_u64().unwrap() >= 1, "{summary}");
    let decisions = std::fs::read_to_string(dir.join("decisions.csv")).unwrap();
    assert!(decisions.lines().count() > 10);
    // A second run gets a new ledger session id and its own report directory.
    let out = run(bin()
        .args(["run", "-f"])
        .arg(example("quickstart.yaml"))
        .arg("--ledger")
        .arg(&db)
        .arg("--report-dir")
        .arg(&reports)
        .arg("--no-progress"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(reports.join("quickstart-2/summary.json").is_file());
    // Same inputs and seed: the two ledger sessions hold identical rows.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ledger = bot_runtime::ledger::SqliteLedger::open(db.to_str().unwrap())
            .await
            .unwrap();
        let a = bot_runtime::ledger::LedgerStore::dump_session(&ledger, "quickstart")
            .await
            .unwrap();
        let b = bot_runtime::ledger::LedgerStore::dump_session(&ledger, "quickstart-2")
            .await
            .unwrap();
        assert!(a.lines().count() > 100, "ledger dump is too small:\n{a}");
        let strip = |s: &str| s.replace("quickstart-2", "quickstart");
        assert_eq!(strip(&a), strip(&b));
    });
}

/// `backtest` reproduces the reference round trips, written to round_trips.csv.
#[test]
fn backtest_command_reproduces_reference_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, reports) = outputs(tmp.path());
    let data = shared_data("BTC-PERP_1m_ftx_2022-01.csv");
    let out = run(bin()
        .args(["backtest", "--data"])
        .arg(format!("BTC-PERP={}", data.display()))
        .args(["--quote-volume", "BTC-PERP", "--strategy"])
        .arg(example("sma-parity.yaml"))
        .arg("--ledger")
        .arg(&db)
        .arg("--report-dir")
        .arg(&reports));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got = std::fs::read_to_string(reports.join("backtest/round_trips.csv")).unwrap();
    let want = std::fs::read_to_string(shared_reference(
        "sma-10-30_BTC-PERP_1m_ftx_2022-01.trades.csv",
    ))
    .unwrap();
    // Times compared as text, numbers as exact decimals (the reference writes "38.0" for 38).
    let first6 = |l: &str| {
        l.split(',')
            .take(6)
            .map(|f| match rust_decimal::Decimal::from_str_exact(f) {
                Ok(d) => d.normalize().to_string(),
                Err(_) => f.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let got: Vec<String> = got.lines().map(first6).collect();
    let want: Vec<String> = want.lines().map(first6).collect();
    assert_eq!(got.len(), 935);
    assert_eq!(got, want);
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reports.join("backtest/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["final_equity"], "98082.85");
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

/// A manifest that replays one local CSV file.
fn manifest_with(csv: &str, strategy_risk: &str) -> String {
    format!(
        r#"apiVersion: paperbot.io/v1alpha1
kind: PaperAccount
metadata: {{name: acct}}
spec:
  initialBalance: "10000"
---
apiVersion: paperbot.io/v1alpha1
kind: StrategyConfig
metadata: {{name: strat}}
spec:
  signals:
    smaCrossover: {{fastPeriod: 2, slowPeriod: 3}}
  risk:
{strategy_risk}
---
apiVersion: paperbot.io/v1alpha1
kind: BotSession
metadata: {{name: bot}}
spec:
  accountRef: {{name: acct}}
  strategyRef: {{name: strat}}
  allocation: "10000"
  symbols: [BTC-USD]
  marketData:
    source: Replay
    replay:
      files: [{{symbol: BTC-USD, path: {csv}}}]
"#
    )
}

const GOOD_CSV: &str = "timestamp,open,high,low,close,volume\n\
2022-01-01T00:00:00Z,100,101,99,100,5\n\
2022-01-01T00:01:00Z,100,102,99,101,5\n\
2022-01-01T00:02:00Z,101,103,100,102,5\n\
2022-01-01T00:03:00Z,102,103,100,101,5\n";

/// Every user error ends with one clear message naming file, line or field
/// and what was expected — and nothing is traded, recorded or reported.
#[test]
fn bad_inputs_fail_before_trading_with_clear_messages() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "good.csv", GOOD_CSV);
    write(
        tmp.path(),
        "bad.csv",
        &GOOD_CSV.replace("2022-01-01T00:02:00Z,101,", "2022-01-01T00:02:00Z,abc,"),
    );
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown field",
            manifest_with("good.csv", "    maxPositionSize: \"10\""),
            vec![
                "m.yaml:14:",
                "StrategyConfig \"strat\"",
                "unknown field `maxPositionSize`",
                "maxPositionSizePct",
            ],
        ),
        (
            "percentage of 150",
            manifest_with("good.csv", "    stopLossPct: \"150\""),
            vec![
                "m.yaml:14:",
                "spec.risk.stopLossPct: 150 is out of range: expected 0 to 100",
            ],
        ),
        (
            "missing data file",
            manifest_with("nope.csv", "    stopLossPct: \"2\""),
            vec![
                "BotSession \"bot\"",
                "spec.marketData.replay.files[0].path",
                "nope.csv not found",
            ],
        ),
        (
            "abc as a price",
            manifest_with("bad.csv", "    stopLossPct: \"2\""),
            vec!["bad.csv:4:", "\"abc\""],
        ),
    ];
    for (what, manifest, expected) in cases {
        let m = write(tmp.path(), "m.yaml", &manifest);
        let (db, reports) = outputs(tmp.path());
        let out = run(bin()
            .args(["run", "-f"])
            .arg(&m)
            .arg("--ledger")
            .arg(&db)
            .arg("--report-dir")
            .arg(&reports));
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{what}: should fail");
        assert!(stderr.contains("error:"), "{what}: {stderr}");
        for e in expected {
            assert!(stderr.contains(e), "{what}: expected {e:?} in:\n{stderr}");
        }
        assert_eq!(
            stderr.matches("error:").count(),
            1,
            "{what}: one message:\n{stderr}"
        );
        assert!(
            !reports.exists(),
            "{what}: no report for a run that never started"
        );
        assert!(
            !db.exists(),
            "{what}: no ledger for a run that never started"
        );
    }
}

/// A simulated market, paced: 576 five-minute candles (48 h of market time)
/// at 86,400× real time take at least 2 s of wall time. Only the lower bound
/// is asserted; a slow machine only makes the run longer.
#[test]
fn simulated_session_runs_paced_with_speed() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, reports) = outputs(tmp.path());
    let start = std::time::Instant::now();
    let out = run(bin()
        .args(["run", "-f"])
        .arg(example("simulated.yaml"))
        .args(["--speed", "86400", "--ledger"])
        .arg(&db)
        .arg("--report-dir")
        .arg(&reports));
    let elapsed = start.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        elapsed >= std::time::Duration::from_millis(1900),
        "paced run took only {elapsed:?}"
    );
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reports.join("simulated/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["bars"], 576 * 3);
    assert_eq!(summary["phase"], "Completed");
}

/// `backtest` merges several symbols' files by timestamp.
#[test]
fn backtest_merges_several_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, reports) = outputs(tmp.path());
    let out = run(bin()
        .args(["backtest", "--data"])
        .arg(example(
            "data/BTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv",
        ))
        .arg(example(
            "data/LTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv",
        ))
        .arg("--strategy")
        .arg(example("quickstart.yaml"))
        .args(["--fee-rate-pct", "0.1", "--name", "two", "--ledger"])
        .arg(&db)
        .arg("--report-dir")
        .arg(&reports));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("two/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["bars"], 3887 * 2);
    // The benchmark, from the files' first open and last close: half the
    // cash in each symbol, 0.1 % fee on entry and exit.
    let d = |v: &str| rust_decimal::Decimal::from_str_exact(v).unwrap();
    let cash = d(summary["initial_equity"].as_str().unwrap());
    let fee = d("0.001");
    let mut value = rust_decimal::Decimal::ZERO;
    for f in [
        "data/BTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv",
        "data/LTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv",
    ] {
        let body = std::fs::read_to_string(example(f)).unwrap();
        let rows: Vec<Vec<&str>> = body
            .lines()
            .skip(1)
            .map(|l| l.split(',').collect())
            .collect();
        let (open, close) = (d(rows[0][1]), d(rows[rows.len() - 1][4]));
        value += cash / rust_decimal::Decimal::TWO / (open * (rust_decimal::Decimal::ONE + fee))
            * close
            * (rust_decimal::Decimal::ONE - fee);
    }
    let want = ((value - cash) * rust_decimal::Decimal::ONE_HUNDRED / cash)
        .round_dp_with_strategy(8, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    let got = d(summary["benchmark_return_pct"].as_str().unwrap());
    assert!(
        (got - want).abs() <= d("0.00000001"),
        "benchmark {got} vs {want}"
    );
    let roi = d(summary["roi_pct"].as_str().unwrap());
    assert_eq!(d(summary["excess_return_pct"].as_str().unwrap()), roi - got);
    assert_eq!(
        summary["symbols"],
        serde_json::json!(["BTC-USD", "LTC-USD"])
    );
    assert_eq!(summary["session_id"], "two");
    assert_eq!(summary["currency"], "USD");
    // Three UTC days of data; one breakdown row per symbol traded; every
    // exit reason and still_open.
    let lines = |f: &str| {
        std::fs::read_to_string(reports.join("two").join(f))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let daily = lines("daily.csv");
    assert_eq!(daily.len(), 4, "{daily:?}");
    assert!(daily[1].starts_with("2018-04-04,") && daily[3].starts_with("2018-04-06,"));
    let by_symbol = lines("by_symbol.csv");
    assert!(by_symbol[1].starts_with("BTC-USD,") && by_symbol[2].starts_with("LTC-USD,"));
    assert_eq!(lines("by_exit_reason.csv").len(), 8);
    let trades = std::fs::read_to_string(reports.join("two/trades.csv")).unwrap();
    assert!(trades.contains(",BTC-USD,") && trades.contains(",LTC-USD,"));
    // Each symbol's fills are in time order (across symbols, a stop touched
    // inside a candle is stamped at the candle's close, so the interleaving
    // follows the processing order of candles, not the stamps).
    for sym in ["BTC-USD", "LTC-USD"] {
        let times: Vec<&str> = trades
            .lines()
            .skip(1)
            .filter(|l| l.split(',').nth(3) == Some(sym))
            .map(|l| l.split(',').nth(2).unwrap())
            .collect();
        assert!(times.len() > 4, "{sym}");
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "{sym} fills out of order"
        );
    }
    assert_ids_link_round_trips_fills_and_decisions(&reports.join("two"));
}

/// Rows of a report CSV as header-keyed maps.
fn csv_maps(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    r.records()
        .map(|row| {
            header
                .iter()
                .cloned()
                .zip(row.unwrap().iter().map(str::to_owned))
                .collect()
        })
        .collect()
}

/// The report's stable ids: every round trip names its opening and closing
/// fills (same symbol, times and exit price) and the decisions behind them;
/// every fill of a position carries its id; automatic exits name no decision.
fn assert_ids_link_round_trips_fills_and_decisions(dir: &Path) {
    let trades = csv_maps(&dir.join("trades.csv"));
    let decisions = csv_maps(&dir.join("decisions.csv"));
    let round_trips = csv_maps(&dir.join("round_trips.csv"));
    let fill = |seq: &str| {
        trades
            .iter()
            .find(|t| t["seq"] == seq)
            .unwrap_or_else(|| panic!("no fill with seq {seq}"))
    };
    let decision = |seq: &str| {
        decisions
            .iter()
            .find(|d| d["seq"] == seq)
            .unwrap_or_else(|| panic!("no decision with seq {seq}"))
    };
    assert!(round_trips.len() > 4, "{}", round_trips.len());
    let mut automatic = 0;
    for rt in &round_trips {
        let entry = fill(&rt["position_id"]);
        let exit = fill(&rt["exit_fill_seq"]);
        for f in [entry, exit] {
            assert_eq!(f["symbol"], rt["symbol"]);
            assert_eq!(f["position_id"], rt["position_id"]);
            assert_eq!(f["status"], "filled");
        }
        assert_eq!(
            (entry["side"].as_str(), exit["side"].as_str()),
            ("buy", "sell")
        );
        assert_eq!(entry["time"], rt["entry_time"]);
        assert_eq!(exit["time"], rt["exit_time"]);
        assert_eq!(exit["fill_price"], rt["exit_price"]);
        assert_eq!(exit["position_after"], "0");
        assert_eq!(exit["reason"], rt["exit_reason"]);
        assert_eq!(entry["decision_seq"], rt["entry_decision_seq"]);
        let d = decision(&rt["entry_decision_seq"]);
        assert_eq!(
            (d["action"].as_str(), d["symbol"].as_str()),
            ("buy", rt["symbol"].as_str())
        );
        if rt["exit_reason"] == "signal" {
            let d = decision(&rt["exit_decision_seq"]);
            assert_eq!(d["action"], "sell");
            assert_eq!(exit["decision_seq"], rt["exit_decision_seq"]);
        } else {
            automatic += 1;
            assert_eq!(rt["exit_decision_seq"], "", "{rt:?}");
            assert_eq!(exit["decision_seq"], "0");
        }
    }
    assert!(automatic > 0, "no automatic exit to check");
    // Every filled fill belongs to a position; ids are unique per round trip.
    for t in trades.iter().filter(|t| t["status"] == "filled") {
        assert!(!t["position_id"].is_empty(), "{t:?}");
    }
    let ids: std::collections::HashSet<&str> = round_trips
        .iter()
        .map(|r| r["position_id"].as_str())
        .collect();
    assert_eq!(ids.len(), round_trips.len());
}

/// Ctrl-C (SIGINT) stops a run cleanly: the last batch is committed, the
/// session is recorded as Interrupted (resumable), and the ledger holds every
/// fill the report shows.
#[test]
fn interrupt_commits_what_was_done_and_closes_the_session() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, reports) = outputs(tmp.path());
    let child = bin()
        .args(["run", "-f"])
        .arg(example("simulated.yaml"))
        .args(["--speed", "20000", "--ledger"])
        .arg(&db)
        .arg("--report-dir")
        .arg(&reports)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    // SAFETY: sending SIGINT to our own child process.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("interrupted"));
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reports.join("simulated/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["phase"], "Interrupted");
    let bars = summary["bars"].as_u64().unwrap();
    assert!(bars > 0 && bars < 576 * 3, "stopped part-way: {bars}");
    let csv_fills = std::fs::read_to_string(reports.join("simulated/trades.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ledger = bot_runtime::ledger::SqliteLedger::open(db.to_str().unwrap())
            .await
            .unwrap();
        let (phase,): (String,) =
            sqlx::query_as("SELECT phase FROM sessions WHERE id = 'simulated'")
                .fetch_one(ledger.pool())
                .await
                .unwrap();
        assert_eq!(phase, "Interrupted");
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM trades WHERE session_id = 'simulated'")
                .fetch_one(ledger.pool())
                .await
                .unwrap();
        assert_eq!(
            n as usize, csv_fills,
            "ledger and report hold the same fills"
        );
    });
}

/// Every manifest in examples/ parses, and every one with a BotSession plans
/// (references resolve, funds suffice, data files exist).
#[test]
fn every_example_manifest_is_valid() {
    let dir = example("");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let m = bot_runtime::config::load_manifests(&path).unwrap_or_else(|e| panic!("{e}"));
        if !m.sessions.is_empty() {
            let plans = bot_runtime::config::plan_sessions(&m).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(plans.len(), m.sessions.len(), "{}", path.display());
        } else {
            assert!(!m.strategies.is_empty(), "{}: no objects", path.display());
        }
        checked += 1;
    }
    assert!(
        checked >= 4,
        "found only {checked} example manifests in {}",
        dir.display()
    );
}

/// `backtest --currency BTC` counts the money of an ETH-BTC backtest in BTC:
/// `summary.json` and the printed summary say BTC, and money is shown to
/// the satoshi (8 places) rather than rounded to USD cents. A blank or
/// over-long code is refused naming the flag, before anything runs.
#[test]
fn backtest_counts_money_in_the_currency_given() {
    let tmp = tempfile::tempdir().unwrap();
    let (db, reports) = outputs(tmp.path());
    let backtest = |currency: &str, name: &str| {
        bin()
            .args(["backtest", "--data"])
            .arg(format!(
                "ETH-BTC={}",
                common::shared_data("ETH-BTC_5m_bittrex_2018-01-10_2018-01-30.csv").display()
            ))
            .arg("--strategy")
            .arg(example("sma-parity.yaml"))
            .args(["--initial-cash", "2.5", "--fee-rate-pct", "0.25"])
            .args(["--currency", currency, "--name", name, "--ledger"])
            .arg(&db)
            .arg("--report-dir")
            .arg(&reports)
            .output()
            .unwrap()
    };
    let out = backtest("BTC", "eth-btc");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(reports.join("eth-btc/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["currency"], "BTC");
    assert_eq!(summary["initial_equity"], "2.5");
    assert!(summary["fills"].as_u64().unwrap() > 0, "it trades");
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("BTC") && stdout.contains("2.50000000"),
        "the summary in BTC to 8 places:\n{stdout}"
    );
    for bad in ["", "   ", "ABCDEFGHIJKLMNOPQ"] {
        let out = backtest(bad, "bad");
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(
            err.contains("--currency") && err.contains("expected a currency code"),
            "{bad:?}: {err}"
        );
        assert!(!reports.join("bad").exists(), "nothing ran for {bad:?}");
    }
}

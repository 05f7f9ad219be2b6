//! `bot-runtime sweep`, driven as a user runs it on real files of
//! `../shared/data/market`: the same grid gives the same table and
//! `sweep.csv` whatever `--jobs`; every variant's figures equal those of a
//! `bot-runtime backtest` run (real SQLite ledger, real report) with that
//! variant's strategy file; invalid combinations are skipped with their
//! reason; `best.yaml` parses back into a valid StrategyConfig that
//! backtests to the rank-1 figures; bad grids write nothing.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use paperbot_crds::StrategyConfig;
use serde_json::Value;

use common::{bin, shared_data, text};

const BASE: &str = "\
apiVersion: paperbot.io/v1alpha1
kind: StrategyConfig
metadata:
  name: sma-grid
spec:
  mode: Custom
  signals:
    smaCrossover:
      fastPeriod: 10
      slowPeriod: 30
  risk:
    maxPositionSizePct: \"20\"
    confidenceThreshold: \"0\"
";

/// fastPeriod 5, 10, 30 (30 = slowPeriod: invalid) × stopLossPct 0.5, 1.5.
const GRID: &str = "signals.smaCrossover.fastPeriod=5,10,30,risk.stopLossPct=0.5..1.5:1";

/// Two symbols over the same two days, a time range, fees and slippage:
/// flags given identically to `sweep` and `backtest`.
fn common_flags() -> Vec<String> {
    vec![
        "--data".into(),
        format!(
            "BTC-USD={}",
            shared_data("BTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv").display()
        ),
        format!(
            "LTC-USD={}",
            shared_data("LTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv").display()
        ),
        "--fee-rate-pct".into(),
        "0.1".into(),
        "--slippage-bps".into(),
        "2".into(),
        "--from".into(),
        "2018-04-04T06:00:00Z".into(),
        "--to".into(),
        "2018-04-06T18:00:00Z".into(),
        "--snapshot-interval".into(),
        "30m".into(),
    ]
}

fn write_base(dir: &Path) -> PathBuf {
    let p = dir.join("base.yaml");
    std::fs::write(&p, BASE).unwrap();
    p
}

fn sweep(dir: &Path, grid: &str, extra: &[&str]) -> Output {
    let base = write_base(dir);
    bin()
        .arg("sweep")
        .args(common_flags())
        .arg("--strategy")
        .arg(&base)
        .args(["--grid", grid, "--no-progress"])
        .args(extra)
        .output()
        .expect("bot-runtime starts")
}

fn sweep_ok(dir: &Path, out: &Path, jobs: &str) -> String {
    let o = sweep(
        dir,
        GRID,
        &[
            "--jobs",
            jobs,
            "--out",
            out.to_str().unwrap(),
            "--metric",
            "sharpe",
        ],
    );
    assert!(
        o.status.success(),
        "sweep failed:\n{}\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// The table part of stdout (the `wrote` lines name the output directory).
fn table_of(stdout: &str) -> String {
    stdout
        .lines()
        .filter(|l| !l.starts_with("wrote "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `summary.json` of a `backtest` run with `strategy` (same flags as the sweep).
fn backtest(dir: &Path, strategy: &Path, tag: &str) -> Value {
    backtest_with(dir, strategy, tag, &common_flags())
}

/// [`backtest`] with the data and execution flags `flags`.
fn backtest_with(dir: &Path, strategy: &Path, tag: &str, flags: &[String]) -> Value {
    let reports = dir.join(format!("reports-{tag}"));
    let o = bin()
        .arg("backtest")
        .args(flags)
        .arg("--strategy")
        .arg(strategy)
        .args(["--no-progress", "--ledger"])
        .arg(dir.join(format!("{tag}.db")))
        .arg("--report-dir")
        .arg(&reports)
        .output()
        .expect("bot-runtime starts");
    assert!(
        o.status.success(),
        "backtest {tag} failed:\n{}\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let s = std::fs::read_to_string(reports.join("backtest/summary.json")).unwrap();
    serde_json::from_str(&s).unwrap()
}

/// A summary without who it is about (session and strategy names differ
/// between a sweep variant and a backtest by design).
fn figures(mut v: Value) -> Value {
    let o = v.as_object_mut().expect("summary is an object");
    for k in ["session_id", "session_name", "strategy"] {
        assert!(o.remove(k).is_some(), "summary has no {k}");
    }
    v
}

fn summaries(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("summaries.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn same_grid_gives_the_same_table_and_csv_whatever_the_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let ta = sweep_ok(dir.path(), &a, "1");
    let tb = sweep_ok(dir.path(), &b, "2");
    let tc = sweep_ok(dir.path(), &c, "2");
    assert_eq!(table_of(&ta), table_of(&tb));
    assert_eq!(table_of(&ta), table_of(&tc));
    for f in ["sweep.csv", "summaries.jsonl", "best.yaml"] {
        let fa = std::fs::read(a.join(f)).unwrap();
        assert_eq!(fa, std::fs::read(b.join(f)).unwrap(), "{f}: --jobs 1 vs 2");
        assert_eq!(fa, std::fs::read(c.join(f)).unwrap(), "{f}: run 2 vs 3");
    }
    // The table lists the 4 valid variants ranked by Sharpe, descending.
    let csv = std::fs::read_to_string(a.join("sweep.csv")).unwrap();
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let header = rows.headers().unwrap().clone();
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let rows: Vec<csv::StringRecord> = rows.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 6, "every variant is in sweep.csv");
    let sharpe: Vec<f64> = rows[..4]
        .iter()
        .map(|r| r[col("sharpe_ratio")].parse().unwrap())
        .collect();
    assert!(sharpe.windows(2).all(|w| w[0] >= w[1]), "{sharpe:?}");
    for (k, r) in rows[..4].iter().enumerate() {
        assert_eq!(r[col("rank")], (k + 1).to_string());
        assert!(r[col("error")].is_empty());
    }
    // fastPeriod 30 = slowPeriod: both variants skipped, with the reason.
    for r in &rows[4..] {
        assert_eq!(&r[col("signals.smaCrossover.fastPeriod")], "30");
        assert!(r[col("rank")].is_empty());
        assert!(
            r[col("error")].contains("fastPeriod (30) must be smaller than slowPeriod (30)"),
            "{:?}",
            &r[col("error")]
        );
    }
    assert_eq!(
        rows.iter()
            .map(|r| r[col("risk.stopLossPct")].to_string())
            .filter(|v| v == "0.5" || v == "1.5")
            .count(),
        6
    );
    assert!(ta.contains("rank") && ta.contains("fastPeriod") && ta.contains("stopLossPct"));
}

#[test]
fn every_variant_equals_a_single_backtest_of_its_strategy_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    sweep_ok(dir.path(), &out, "2");
    let lines = summaries(&out);
    assert_eq!(lines.len(), 6);
    let base: serde_yaml::Value = serde_yaml::from_str(BASE).unwrap();
    let mut compared = 0;
    for (k, line) in lines.iter().enumerate() {
        assert_eq!(line["variant"], k + 1, "grid order");
        let fast: u64 = line["values"]["signals.smaCrossover.fastPeriod"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let stop = line["values"]["risk.stopLossPct"].as_str().unwrap();
        // Grid order: the last path varies fastest.
        assert_eq!(fast, [5, 10, 30][k / 2]);
        assert_eq!(stop, ["0.5", "1.5"][k % 2]);
        if fast == 30 {
            assert!(line["summary"].is_null());
            assert!(line["error"].as_str().unwrap().contains("slowPeriod"));
            continue;
        }
        // The variant's strategy file, written independently of the sweep.
        let mut doc = base.clone();
        doc["spec"]["signals"]["smaCrossover"]["fastPeriod"] = fast.into();
        doc["spec"]["risk"]["stopLossPct"] = stop.into();
        let file = dir.path().join(format!("variant-{k}.yaml"));
        std::fs::write(&file, serde_yaml::to_string(&doc).unwrap()).unwrap();
        let single = backtest(dir.path(), &file, &format!("v{k}"));
        let swept = line["summary"].clone();
        assert_eq!(swept["phase"], "Completed");
        assert!(
            swept["round_trips"].as_u64().unwrap() > 0,
            "the variant trades"
        );
        assert_eq!(figures(swept), figures(single), "variant {}", k + 1);
        compared += 1;
    }
    assert_eq!(compared, 4);
}

/// Breakers, RSI, take-profit, order failures, latency and market impact:
/// every variant still equals its single backtest (own RNG per run, same
/// seed), the breaker trips included.
#[test]
fn variants_with_breakers_and_failing_orders_equal_single_backtests() {
    const BASE2: &str = "\
apiVersion: paperbot.io/v1alpha1
kind: StrategyConfig
metadata:
  name: breakers
spec:
  mode: Aggressive
  signals:
    smaCrossover: {fastPeriod: 5, slowPeriod: 20}
    rsi: {period: 14, oversold: \"30\", overbought: \"70\"}
  risk:
    maxPositionSizePct: \"20\"
    confidenceThreshold: \"0\"
  circuitBreakers:
    maxConsecutiveLosses: 3
    cooldown: 30m
";
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("breakers.yaml");
    std::fs::write(&base, BASE2).unwrap();
    let flags: Vec<String> = [
        "--data".to_string(),
        shared_data("BTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv")
            .display()
            .to_string(),
    ]
    .into_iter()
    .chain(
        [
            "--fee-rate-pct",
            "0.1",
            "--impact-pct",
            "1",
            "--latency",
            "90s",
            "--failure-rate-pct",
            "5",
            "--seed",
            "7",
        ]
        .map(String::from),
    )
    .collect();
    let out = dir.path().join("out");
    let o = bin()
        .arg("sweep")
        .args(&flags)
        .arg("--strategy")
        .arg(&base)
        .args([
            "--grid",
            "circuitBreakers.maxConsecutiveLosses=2,5,risk.takeProfitPct=0.3,1",
            "--jobs",
            "2",
            "--no-progress",
            "--out",
        ])
        .arg(&out)
        .output()
        .expect("bot-runtime starts");
    assert!(o.status.success(), "sweep failed: {}", text(&o.stderr));
    let lines = summaries(&out);
    assert_eq!(lines.len(), 4);
    let base_doc: serde_yaml::Value = serde_yaml::from_str(BASE2).unwrap();
    let mut trips = 0;
    let mut failed = 0;
    for (k, line) in lines.iter().enumerate() {
        let losses: u64 = line["values"]["circuitBreakers.maxConsecutiveLosses"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let tp = line["values"]["risk.takeProfitPct"].as_str().unwrap();
        let mut doc = base_doc.clone();
        doc["spec"]["circuitBreakers"]["maxConsecutiveLosses"] = losses.into();
        doc["spec"]["risk"]["takeProfitPct"] = tp.into();
        let file = dir.path().join(format!("b-{k}.yaml"));
        std::fs::write(&file, serde_yaml::to_string(&doc).unwrap()).unwrap();
        let single = backtest_with(dir.path(), &file, &format!("b{k}"), &flags);
        let swept = line["summary"].clone();
        trips += swept["breaker_trips"].as_u64().unwrap();
        failed += swept["failed_orders"].as_u64().unwrap();
        assert_eq!(figures(swept), figures(single), "variant {}", k + 1);
    }
    assert!(trips > 0, "the breakers tripped in some variant");
    assert!(failed > 0, "some orders failed");
}

#[test]
fn best_yaml_is_a_valid_strategy_config_that_backtests_to_the_rank_1_figures() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    sweep_ok(dir.path(), &out, "2");
    let best_text = std::fs::read_to_string(out.join("best.yaml")).unwrap();
    let best: StrategyConfig = serde_yaml::from_str(&best_text).expect("best.yaml parses");
    best.spec.validate().expect("best.yaml is valid");
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let mut rows = csv::Reader::from_reader(csv.as_bytes());
    let header = rows.headers().unwrap().clone();
    let col = |n: &str| header.iter().position(|h| h == n).unwrap();
    let first = rows.records().next().unwrap().unwrap();
    let variant = &first[col("variant")];
    assert_eq!(
        best.metadata.name.as_deref(),
        Some(format!("sma-grid-sweep-{variant}").as_str())
    );
    let sma = best.spec.signals.sma_crossover.as_ref().unwrap();
    assert_eq!(
        sma.fast_period.to_string(),
        first[col("signals.smaCrossover.fastPeriod")]
    );
    assert_eq!(sma.slow_period, 30, "unvaried fields are kept");
    assert_eq!(
        best.spec
            .risk
            .stop_loss_pct
            .unwrap()
            .get()
            .normalize()
            .to_string(),
        first[col("risk.stopLossPct")]
    );
    // The manifest loader of `run`/`backtest` takes it as it is.
    let single = backtest(dir.path(), &out.join("best.yaml"), "best");
    let ranked = summaries(&out)
        .into_iter()
        .find(|l| l["variant"].as_u64().map(|n| n.to_string()).as_deref() == Some(variant))
        .unwrap();
    assert_eq!(figures(ranked["summary"].clone()), figures(single));
}

#[test]
fn bad_grids_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (grid, needle) in [
        (
            "signals.smaCrossover.fast=5,6",
            "signals.smaCrossover has no field \"fast\"",
        ),
        ("risk.stopLossPct=1..3", "no :step"),
        (
            "signals.smaCrossover.fastPeriod=2.5",
            "fastPeriod=2.5: this field is an integer",
        ),
        (
            "signals.smaCrossover.fastPeriod=1..200:1,risk.stopLossPct=0.1..10:0.1",
            "at most 10000",
        ),
        // Every variant invalid (fast ≥ slow).
        (
            "signals.smaCrossover.fastPeriod=30,40",
            "no variant of the grid could run",
        ),
    ] {
        let out = dir.path().join("out");
        let o = sweep(dir.path(), grid, &["--out", out.to_str().unwrap()]);
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{grid}: accepted");
        assert!(err.contains(needle), "{grid}: {err}");
        assert!(!out.exists(), "{grid}: wrote {}", out.display());
    }
}

/// A variant that can never trade as intended says why before the table:
/// `slowPeriod` 5000 needs more candles than the files hold, so that
/// variant gets the pre-run warning `backtest` would print for its
/// strategy, naming the variant and its values; the base's own settings
/// warn nobody, and the variant still runs (with no trades).
#[test]
fn variants_that_can_never_trade_are_warned_about_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = sweep(
        dir.path(),
        "signals.smaCrossover.slowPeriod=30,5000",
        &["--out", out.to_str().unwrap()],
    );
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{stdout}\n{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 2, "one per symbol: {stderr}");
    for (w, symbol) in warnings.iter().zip(["BTC-USD", "LTC-USD"]) {
        assert!(
            w.starts_with("warning: variant 2 (signals.smaCrossover.slowPeriod=5000): ")
                && w.contains(&format!("symbol \"{symbol}\" has "))
                && w.contains("needs 5001 closes"),
            "{w}"
        );
    }
    let summaries = summaries(&out);
    assert_eq!(summaries.len(), 2, "both variants ran");
    let trades: Vec<u64> = summaries
        .iter()
        .map(|s| s["summary"]["round_trips"].as_u64().unwrap_or(u64::MAX))
        .collect();
    assert!(
        trades[0] > 0 && trades[1] == 0,
        "round trips per variant: {trades:?}"
    );
}

//! The report's figures checked against backtesting.py itself.
//!
//! Runs the parity strategy (`examples/sma-parity.yaml`, SMA 10/30 long
//! only, 0.1 BTC per entry, no fees) on the month of BTC-PERP minutes with
//! our `bot-runtime backtest` and with backtesting.py 0.6.6
//! (`tests/reference/backtesting_py_stats.py`, FractionalBacktest, next-open
//! fills), then compares every figure the two define, trade by trade first.
//!
//! The Python environment: `$PAPERBOT_PYREF_PYTHON` (an interpreter with
//! `tests/reference/requirements.txt` installed), else
//! `target/pyref/bin/python` in the workspace, which `.ci/run` creates:
//!
//! ```text
//! python3 -m venv target/pyref
//! target/pyref/bin/pip install -r tests/reference/requirements.txt
//! ```
//!
//! Without it the test fails with that command; it never skips.
//!
//! Both runs leave one 0.1 position open at the end. backtesting.py 0.6.6
//! (`finalize_trades=False`, its default) keeps it out of the trade
//! statistics and its exposure time, and counts it in the equity (so in the
//! return, drawdown and CAGR); ours does the same for the round-trip
//! figures and the equity, and counts it in the exposure time (to the end).
//!
//! Rounding: our decimal figures are rounded to the places they are printed
//! with (percentages to a few places); such a figure must lie within half a
//! unit of its last printed place of backtesting.py's f64 value (plus a
//! 1e-9 relative allowance for the f64 arithmetic of backtesting.py, which
//! also multiplies prices by 0.1 and divides them back). f64 figures of ours
//! (SQN, CAGR, Calmar) are compared with a 1e-9 relative tolerance.
//!
//! Not compared, and why:
//! - Sharpe and Sortino ratios: backtesting.py's are its "Return (Ann.)"
//!   (the geometric mean of *daily* equity returns compounded over 365
//!   days when the data has weekends) over an annualised volatility of daily
//!   returns; ours are the arithmetic mean of *snapshot* returns over their
//!   sample standard deviation (Sortino: downside deviation), times
//!   √(periods per year). Different sampling, mean and scaling: no tolerance
//!   would relate them.
//! - "Avg. Trade [%]" (a geometric mean of trade returns), "Profit Factor"
//!   (a ratio of *return* sums; ours is of P&L sums), "Kelly Criterion",
//!   "Alpha", "Beta", "Volatility (Ann.)", "Avg. Drawdown" and its duration:
//!   we have no figure with those definitions.
//! - Our best/worst *round trip* is ranked by P&L; backtesting.py's "Best
//!   Trade [%]" by return. Compared instead: backtesting.py's best/worst
//!   return against the extreme `return_pct` of our `round_trips.csv`.

mod common;

use std::{path::PathBuf, process::Command, str::FromStr};

use chrono::DateTime;
use common::*;
use rust_decimal::{Decimal, RoundingStrategy, prelude::ToPrimitive};
use serde_json::Value;

const MINUTE_MS: i64 = 60_000;
/// Places of the summary's quotients (`bot_runtime::analytics::QUOTIENT_DP`).
const QUOTIENT_DP: i32 = bot_runtime::analytics::QUOTIENT_DP as i32;
/// Places of a round trip's `return_pct` and of `max_drawdown_pct` (percent,
/// rounded by the engine).
const TRADE_DP: i32 = 4;
const DRAWDOWN_DP: i32 = 4;
const DAY_MS: f64 = 86_400_000.0;

/// The interpreter with backtesting.py, or a failure saying how to make it.
fn pyref_python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = match std::env::var_os("PAPERBOT_PYREF_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => root.join("target/pyref/bin/python"),
    };
    assert!(
        p.is_file(),
        "no Python environment with backtesting.py at {} (or $PAPERBOT_PYREF_PYTHON): create it \
         from the workspace root with\n  python3 -m venv target/pyref && target/pyref/bin/pip \
         install -r tests/reference/requirements.txt\n(.ci/run does this)",
        p.display()
    );
    p
}

/// backtesting.py's run of the parity strategy on `data` (see the script).
fn backtesting_py(data: &std::path::Path) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/reference/backtesting_py_stats.py");
    let out = Command::new(pyref_python())
        .arg(&script)
        .arg(data)
        .output()
        .expect("the reference Python starts");
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        text(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
    assert_eq!(
        v["versions"]["backtesting"], "0.6.6",
        "tests/reference/requirements.txt pins backtesting==0.6.6"
    );
    v
}

/// Milliseconds since the epoch of an RFC 3339 time.
fn ms(t: &str) -> i64 {
    DateTime::parse_from_rfc3339(t)
        .unwrap_or_else(|e| panic!("{t:?} is not RFC 3339: {e}"))
        .timestamp_millis()
}

fn dec(v: &Value, what: &str) -> Decimal {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected a decimal string, got {v}"));
    Decimal::from_str(s).unwrap_or_else(|e| panic!("{what}: {s:?}: {e}"))
}

fn num(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what}: expected a number, got {v}"))
}

/// `ours` (a decimal rounded to `dp` places) agrees with `theirs` to half
/// a unit of that place (plus 1e-9 relative for f64).
fn assert_rounded(what: &str, ours: Decimal, dp: i32, theirs: f64) {
    let half_ulp = 0.5 * 10f64.powi(-dp);
    let diff = (ours.to_f64().unwrap() - theirs).abs();
    assert!(
        diff <= half_ulp + 1e-9 * theirs.abs().max(1.0),
        "{what}: ours {ours} vs backtesting.py {theirs} (|diff| {diff:e} > {half_ulp:e})"
    );
}

/// Two f64 figures within 1e-9 relative.
fn assert_close(what: &str, ours: f64, theirs: f64) {
    let diff = (ours - theirs).abs();
    assert!(
        diff <= 1e-9 * theirs.abs().max(1.0),
        "{what}: {ours} vs {theirs} (|diff| {diff:e})"
    );
}

struct RoundTrip {
    entry_ms: i64,
    exit_ms: i64,
    entry_price: Decimal,
    exit_price: Decimal,
    pnl: Decimal,
    return_pct: Decimal,
}

fn round_trips(csv: &str) -> Vec<RoundTrip> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("round_trips.csv has no {name} column: {header:?}"))
    };
    let (et, ep, xt, xp, pnl, ret) = (
        col("entry_time"),
        col("entry_price"),
        col("exit_time"),
        col("exit_price"),
        col("pnl"),
        col("return_pct"),
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let d = |i: usize| Decimal::from_str(f[i]).unwrap_or_else(|e| panic!("{l}: {e}"));
            RoundTrip {
                entry_ms: ms(f[et]),
                exit_ms: ms(f[xt]),
                entry_price: d(ep),
                exit_price: d(xp),
                pnl: d(pnl),
                return_pct: d(ret),
            }
        })
        .collect()
}

/// Opens and closes of a candle file, exact (for the buy-and-hold conventions).
fn candle_prices(path: &std::path::Path) -> (Vec<Decimal>, Vec<Decimal>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut opens = Vec::new();
    let mut closes = Vec::new();
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        opens.push(Decimal::from_str(f[1]).unwrap());
        closes.push(Decimal::from_str(f[4]).unwrap());
    }
    (opens, closes)
}

#[test]
fn report_figures_agree_with_backtesting_py() {
    let data = shared_data("BTC-PERP_1m_ftx_2022-01.csv");
    let bt = backtesting_py(&data);
    let stats = &bt["stats"];
    let s = |k: &str| num(&stats[k], k);

    let tmp = tempfile::tempdir().unwrap();
    let reports = tmp.path().join("reports");
    // Snapshots every candle, as backtesting.py's equity curve is per bar
    // (the drawdown duration is measured on the snapshots).
    let out = Command::new(env!("CARGO_BIN_EXE_bot-runtime"))
        .env("RUST_LOG", "warn")
        .args(["backtest", "--data"])
        .arg(format!("BTC-PERP={}", data.display()))
        .args(["--quote-volume", "BTC-PERP", "--strategy"])
        .arg(example("sma-parity.yaml"))
        .args(["--snapshot-interval", "1m", "--ledger"])
        .arg(tmp.path().join("ledger.db"))
        .arg("--report-dir")
        .arg(&reports)
        .output()
        .expect("bot-runtime starts");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = reports.join("backtest");
    let ours: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    let o = |k: &str| dec(&ours[k], k);
    let rts = round_trips(&std::fs::read_to_string(dir.join("round_trips.csv")).unwrap());

    // The same trades: times equal, prices and P&L equal to f64 precision.
    let theirs = bt["trades"].as_array().expect("trades");
    assert_eq!(rts.len(), 934);
    assert_eq!(theirs.len(), rts.len(), "number of closed trades");
    assert_eq!(s("# Trades") as usize, rts.len());
    assert_eq!(ours["round_trips"], 934);
    for (i, (a, b)) in rts.iter().zip(theirs).enumerate() {
        assert_eq!(
            a.entry_ms,
            ms(b["entry_time"].as_str().unwrap()),
            "trade {i}"
        );
        assert_eq!(a.exit_ms, ms(b["exit_time"].as_str().unwrap()), "trade {i}");
        assert_close(
            "entry price",
            a.entry_price.to_f64().unwrap(),
            num(&b["entry_price"], "entry_price"),
        );
        assert_close(
            "exit price",
            a.exit_price.to_f64().unwrap(),
            num(&b["exit_price"], "exit_price"),
        );
        assert_close("pnl", a.pnl.to_f64().unwrap(), num(&b["pnl"], "pnl"));
        // Our return_pct is percent, rounded; theirs a fraction.
        assert_rounded(
            "trade return %",
            a.return_pct,
            TRADE_DP,
            num(&b["return_pct"], "return_pct") * 100.0,
        );
    }
    // The position still open at the end: one 0.1 BTC, in neither's trade figures.
    let open = bt["open_trades"].as_array().expect("open_trades");
    assert_eq!(open.len(), 1);
    assert_eq!(ours["open_positions"], 1);
    assert_eq!(
        ms(open[0]["entry_time"].as_str().unwrap()),
        ms("2022-01-31T23:57:00Z")
    );

    // Equity, return, drawdown: the same per-bar equity (cash + position ×
    // close, the open position included).
    assert_eq!(o("final_equity"), Decimal::from_str("98082.85").unwrap());
    assert_close("final equity", 98082.85, s("Equity Final [$]"));
    assert_rounded("Return [%]", o("roi_pct"), QUOTIENT_DP, s("Return [%]"));
    // backtesting.py reports the drawdown as a negative percent.
    assert_rounded(
        "Max. Drawdown [%]",
        o("max_drawdown_pct"),
        DRAWDOWN_DP,
        -s("Max. Drawdown [%]"),
    );

    // Win rate: P&L > 0 over all closed trades, both.
    assert_rounded(
        "Win Rate [%]",
        o("win_rate_pct"),
        QUOTIENT_DP,
        s("Win Rate [%]"),
    );
    // Best/worst trade by return.
    let best = rts.iter().map(|r| r.return_pct).max().unwrap();
    let worst = rts.iter().map(|r| r.return_pct).min().unwrap();
    assert_rounded("Best Trade [%]", best, TRADE_DP, s("Best Trade [%]"));
    assert_rounded("Worst Trade [%]", worst, TRADE_DP, s("Worst Trade [%]"));
    // Expectancy: the arithmetic mean of trade returns, both. Ours is the
    // mean of the recorded returns, which are rounded to 4 places (percent),
    // so it is within half a unit of that 4th place of the exact mean.
    let n = Decimal::from(rts.len() as u64);
    let mean_recorded = (rts.iter().map(|r| r.return_pct).sum::<Decimal>() / n)
        .round_dp_with_strategy(QUOTIENT_DP as u32, RoundingStrategy::MidpointAwayFromZero);
    assert_eq!(
        o("expectancy_pct"),
        mean_recorded,
        "expectancy_pct = mean of round_trips.csv's return_pct"
    );
    let diff = (o("expectancy_pct").to_f64().unwrap() - s("Expectancy [%]")).abs();
    assert!(
        diff <= 0.5e-4 + 1e-9,
        "Expectancy [%]: ours {} vs backtesting.py {} (|diff| {diff:e} > 5e-5)",
        o("expectancy_pct"),
        s("Expectancy [%]")
    );
    // SQN: √n × mean P&L / sample sd of P&L, both.
    assert_close("SQN", num(&ours["sqn"], "sqn"), s("SQN"));

    // Trade durations: exit − entry (both fill bars' open times).
    // backtesting.py ceils the mean and max to the data's period (1 minute).
    let durations: Vec<i64> = rts.iter().map(|r| r.exit_ms - r.entry_ms).collect();
    let mean_ms = durations.iter().sum::<i64>() as f64 / durations.len() as f64;
    let ceil_min = |x: f64| (x / MINUTE_MS as f64).ceil() * 60.0;
    assert_eq!(
        ceil_min(mean_ms),
        s("Avg. Trade Duration"),
        "Avg. Trade Duration, s"
    );
    let longest = *durations.iter().max().unwrap();
    assert_eq!(
        (longest / 1000) as f64,
        s("Max. Trade Duration"),
        "Max. Trade Duration, s"
    );
    let win_max = ours["max_win_duration_ms"].as_i64().unwrap();
    let loss_max = ours["max_loss_duration_ms"].as_i64().unwrap();
    assert_eq!(
        win_max.max(loss_max),
        longest,
        "ours: max(winners, losers) = longest"
    );
    // Winners' and losers' means (ours, rounded to the ms) from their trades.
    for (key, win) in [
        ("avg_win_duration_ms", true),
        ("avg_loss_duration_ms", false),
    ] {
        let d: Vec<i64> = theirs
            .iter()
            .filter(|t| {
                let p = num(&t["pnl"], "pnl");
                if win { p > 0.0 } else { p < 0.0 }
            })
            .map(|t| ms(t["exit_time"].as_str().unwrap()) - ms(t["entry_time"].as_str().unwrap()))
            .collect();
        let mean = d.iter().sum::<i64>() as f64 / d.len() as f64;
        let got = ours[key].as_i64().unwrap();
        assert!(
            (got as f64 - mean).abs() <= 0.5,
            "{key}: ours {got} vs {mean} from backtesting.py's trades"
        );
    }

    // Buy & hold. backtesting.py: (last close − close at its first trading
    // bar, i.e. after the indicators' warm-up) / that close, no fees. Ours:
    // bought at the first candle's OPEN (fee 0 here), valued at the last
    // close. Both checked against the file; they differ by the base price.
    let (opens, closes) = candle_prices(&data);
    let warmup = bt["warmup_bars"].as_u64().unwrap() as usize;
    assert_eq!(warmup, 29, "SMA(30) has its first value on the 30th bar");
    let last = *closes.last().unwrap();
    let pct = |base: Decimal| {
        ((last - base) / base * Decimal::ONE_HUNDRED)
            .to_f64()
            .unwrap()
    };
    assert_close(
        "Buy & Hold Return [%] (theirs, from the closes)",
        pct(closes[warmup]),
        s("Buy & Hold Return [%]"),
    );
    assert_rounded(
        "benchmark_return_pct (ours, from the first open)",
        o("benchmark_return_pct"),
        QUOTIENT_DP,
        pct(opens[0]),
    );

    // Exposure time. backtesting.py: bars from each closed trade's entry
    // bar to its exit bar inclusive, over all bars (the open trade not
    // counted). Ours: time from each fill to the closing fill, plus the
    // open position to the end, over the span (first open to last close).
    let bars = bt["bars"].as_u64().unwrap() as f64;
    assert_eq!(bars as usize, closes.len());
    let closed_minutes: i64 = durations.iter().sum::<i64>() / MINUTE_MS;
    let theirs_bars = closed_minutes as f64 + rts.len() as f64; // exit bar counted too
    assert_close(
        "Exposure Time [%] from the trades",
        theirs_bars / bars * 100.0,
        s("Exposure Time [%]"),
    );
    let start_ms = ms("2022-01-01T00:00:00Z");
    let end_ms = ms("2022-01-31T23:59:00Z") + MINUTE_MS;
    let open_ms = end_ms - ms(open[0]["entry_time"].as_str().unwrap());
    let ours_pct =
        (closed_minutes * MINUTE_MS + open_ms) as f64 / (end_ms - start_ms) as f64 * 100.0;
    assert_rounded(
        "exposure_time_pct",
        o("exposure_time_pct"),
        QUOTIENT_DP,
        ours_pct,
    );
    // The difference is one bar per closed trade (theirs) against the open
    // position's 3 minutes (ours): about 934 / 44,640 = 2.09 points.
    let gap = s("Exposure Time [%]") - o("exposure_time_pct").to_f64().unwrap();
    assert!(
        (gap - (934.0 - 3.0) / bars * 100.0).abs() < 1e-3,
        "exposure gap {gap}"
    );

    // CAGR: ((final / initial)^(1 / years) − 1) × 100, both. backtesting.py:
    // years = (last bar's open − first bar's open) / 365.25 days; ours:
    // (last close − first open) / 365 days.
    let ratio = s("Equity Final [$]") / 100_000.0;
    let their_years = (ms("2022-01-31T23:59:00Z") - start_ms) as f64 / (365.25 * DAY_MS);
    assert_close(
        "CAGR [%] (theirs)",
        (ratio.powf(1.0 / their_years) - 1.0) * 100.0,
        s("CAGR [%]"),
    );
    let our_years = (end_ms - start_ms) as f64 / (365.0 * DAY_MS);
    let our_cagr = num(&ours["cagr_pct"], "cagr_pct");
    assert_close(
        "cagr_pct (ours)",
        (ratio.powf(1.0 / our_years) - 1.0) * 100.0,
        our_cagr,
    );
    assert!(
        (our_cagr - s("CAGR [%]")).abs() < 0.1,
        "the conventions differ by < 0.1 point here"
    );

    // Calmar: ours CAGR % / max drawdown %; backtesting.py "Return (Ann.)"
    // (the geometric mean daily return compounded over 365 days) / max
    // drawdown. Same denominator (checked above), different numerator.
    let dd = -s("Max. Drawdown [%]");
    assert_close(
        "Calmar Ratio (theirs)",
        s("Return (Ann.) [%]") / dd,
        s("Calmar Ratio"),
    );
    // Ours divides by its own max drawdown, rounded to 4 places (so within
    // 0.00005 / 2.116 ≈ 2.4e-5 relative of dividing by theirs).
    let our_dd = o("max_drawdown_pct").to_f64().unwrap();
    let our_calmar = num(&ours["calmar_ratio"], "calmar_ratio");
    assert_close("calmar_ratio (ours)", our_cagr / our_dd, our_calmar);
    assert!(((our_cagr / dd) / our_calmar - 1.0).abs() <= 0.5e-4 / dd + 1e-9);

    // Max drawdown duration: from the last bar at the peak to the next bar
    // back at it, or to the end. backtesting.py stamps the bars' equity with
    // their open time and ends an unrecovered drawdown at the last bar's
    // open; ours stamps snapshots with the candle's close and ends at the
    // last close. Both ends move by one bar: the same length (here not
    // recovered, 05:37 on Jan 1 to the end of the month).
    let ddp = &ours["max_drawdown_duration"];
    let our_ms = ddp["duration_ms"].as_i64().expect("duration_ms");
    let theirs_ms = (s("Max. Drawdown Duration") * 1000.0) as i64;
    let expected = theirs_ms;
    assert_eq!(our_ms, expected, "max drawdown duration: {ddp}");

    // For the reader (`-- --nocapture`): the figures side by side.
    let f = |k: &str| ours[k].to_string();
    for (name, ours, theirs) in [
        ("return %", f("roi_pct"), "Return [%]"),
        ("max drawdown %", f("max_drawdown_pct"), "Max. Drawdown [%]"),
        ("win rate %", f("win_rate_pct"), "Win Rate [%]"),
        ("expectancy %", f("expectancy_pct"), "Expectancy [%]"),
        ("SQN", f("sqn"), "SQN"),
        ("exposure %", f("exposure_time_pct"), "Exposure Time [%]"),
        (
            "buy & hold %",
            f("benchmark_return_pct"),
            "Buy & Hold Return [%]",
        ),
        ("CAGR %", f("cagr_pct"), "CAGR [%]"),
        ("Calmar", f("calmar_ratio"), "Calmar Ratio"),
        ("Sharpe (not compared)", f("sharpe_ratio"), "Sharpe Ratio"),
        (
            "Sortino (not compared)",
            f("sortino_ratio"),
            "Sortino Ratio",
        ),
    ] {
        eprintln!(
            "{name:<24} ours {ours:<24} backtesting.py {}",
            stats[theirs]
        );
    }
}

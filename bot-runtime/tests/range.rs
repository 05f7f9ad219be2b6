//! Time ranges of replay files (`spec.marketData.replay.from` / `to`, and
//! the `--from` / `--to` flags of `run` and `backtest`), through the real
//! `bot-runtime` binary on hand-made candle files and a SQLite ledger.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::Duration,
};

use bot_runtime::{
    ledger::{self, LedgerStore as _},
    types::Timestamp,
};

use common::{
    bin, example,
    serve::{block_on, dump},
    text,
};

/// 2024-01-01T00:00:00Z, ms.
const T0: i64 = 1_704_067_200_000;
const MINUTE: i64 = 60_000;

fn at(minute: i64) -> String {
    Timestamp(T0 + minute * MINUTE).to_rfc3339()
}

/// A 1m candle file of `n` candles from [`T0`]: a zig-zag around `base`
/// (exact decimals, volume 10), so the strategy trades in every part.
fn candle_file(dir: &Path, name: &str, n: i64, base: i64) -> PathBuf {
    let mut out = String::from("timestamp,open,high,low,close,volume\n");
    for i in 0..n {
        // A 40-candle saw tooth of ±2 %.
        let phase = i % 40;
        let step = if phase < 20 { phase } else { 40 - phase };
        let open = base * 1000 + step * base;
        let close = open + if phase < 20 { base } else { -base };
        let (hi, lo) = (open.max(close) + base / 2, open.min(close) - base / 2);
        out.push_str(&format!(
            "{},{}.{:03},{}.{:03},{}.{:03},{}.{:03},10\n",
            at(i),
            open / 1000,
            open % 1000,
            hi / 1000,
            hi % 1000,
            lo / 1000,
            lo % 1000,
            close / 1000,
            close % 1000
        ));
    }
    let p = dir.join(name);
    std::fs::write(&p, out).unwrap();
    p
}

/// The quickstart manifest on hand-made files of `n` candles per symbol,
/// recording holds (one decision per symbol and candle), with `range`
/// (YAML lines for `replay:`) added.
fn manifest(dir: &Path, n: i64, range: &str) -> PathBuf {
    let btc = candle_file(dir, "BTC-USD.csv", n, 100);
    let ltc = candle_file(dir, "LTC-USD.csv", n, 7);
    let text = std::fs::read_to_string(example("quickstart.yaml"))
        .unwrap()
        .replace(
            "data/BTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv",
            &btc.display().to_string(),
        )
        .replace(
            "data/LTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv",
            &ltc.display().to_string(),
        )
        .replace("    replay:\n", &format!("    replay:\n{range}"))
        .replace(
            "  desiredState: Running",
            "  desiredState: Running\n  recordHolds: true",
        );
    assert!(
        text.contains("recordHolds"),
        "quickstart.yaml changed shape"
    );
    let p = dir.join("session.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn run(dir: &Path, m: &Path, extra: &[&str]) -> Output {
    bin()
        .args(["run", "--no-progress", "-f"])
        .arg(m)
        .arg("--ledger")
        .arg(dir.join("ledger.db"))
        .arg("--report-dir")
        .arg(dir.join("reports"))
        .args(extra)
        .output()
        .expect("bot-runtime starts")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "bot-runtime failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn refused(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "bot-runtime accepted what it should refuse:\nstdout:\n{}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// The decision times (column `time`, RFC 3339) of decisions.csv, per symbol.
fn decision_times(reports: &Path) -> Vec<(String, Timestamp)> {
    let csv = std::fs::read_to_string(reports.join("quickstart/decisions.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let t = header.iter().position(|h| *h == "time").unwrap();
    let s = header.iter().position(|h| *h == "symbol").unwrap();
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let ms = chrono::DateTime::parse_from_rfc3339(f[t])
                .unwrap()
                .timestamp_millis();
            (f[s].to_string(), Timestamp(ms))
        })
        .collect()
}

/// Decisions of the run, per symbol: (count, first, last).
fn decisions_of(dir: &Path, symbol: &str) -> (usize, Timestamp, Timestamp) {
    let times: Vec<Timestamp> = decision_times(&dir.join("reports"))
        .into_iter()
        .filter(|(s, _)| s == symbol)
        .map(|(_, t)| t)
        .collect();
    assert!(!times.is_empty(), "no decision of {symbol}");
    (
        times.len(),
        *times.iter().min().unwrap(),
        *times.iter().max().unwrap(),
    )
}

/// Every candle opening in `[from, to)` is decided on (holds are recorded),
/// and none outside: decision times are candle times inside the range.
fn assert_traded_exactly(dir: &Path, from_minute: i64, to_minute: i64) {
    let from = Timestamp(T0 + from_minute * MINUTE);
    let to = Timestamp(T0 + to_minute * MINUTE);
    for symbol in ["BTC-USD", "LTC-USD"] {
        let (n, first, last) = decisions_of(dir, symbol);
        // A decision is made at a candle's close (open + 1 minute) or at
        // its open; either way inside [from, to].
        assert!(
            first >= from,
            "{symbol}: first decision {first} before {from}"
        );
        assert!(last <= to, "{symbol}: last decision {last} after {to}");
        assert!(
            last < to || n as i64 == to_minute - from_minute,
            "{symbol}: {n} decisions up to {last}"
        );
        assert_eq!(
            n as i64,
            to_minute - from_minute,
            "{symbol}: one decision per candle in the range ({first} .. {last})"
        );
    }
}

#[test]
fn a_range_in_the_manifest_trades_exactly_its_candles() {
    let tmp = tempfile::tempdir().unwrap();
    let range = format!("      from: \"{}\"\n      to: \"{}\"\n", at(100), at(250));
    let m = manifest(tmp.path(), 400, &range);
    // validate counts only the candles in the range.
    let out = bin().args(["validate", "-f"]).arg(&m).output().unwrap();
    let stdout = ok(&out);
    assert!(
        stdout.contains("150 rows")
            && stdout.contains(&format!(
                "range: candles opening between {} (inclusive) and {} (exclusive)",
                at(100),
                at(250)
            )),
        "validate counts the candles of the range:\n{stdout}"
    );
    ok(&run(tmp.path(), &m, &[]));
    assert_traded_exactly(tmp.path(), 100, 250);
}

#[test]
fn flags_override_the_manifest_range_bound_by_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let range = format!("      from: \"{}\"\n      to: \"{}\"\n", at(100), at(250));
    let m = manifest(tmp.path(), 400, &range);
    // --from replaces the manifest's from; its to stays.
    ok(&run(tmp.path(), &m, &["--from", &at(120)]));
    assert_traded_exactly(tmp.path(), 120, 250);
    // Both flags, in a fresh ledger and report directory.
    let tmp2 = tempfile::tempdir().unwrap();
    let m2 = manifest(tmp2.path(), 400, &range);
    ok(&run(
        tmp2.path(),
        &m2,
        &["--from", &at(10), "--to", &at(390)],
    ));
    assert_traded_exactly(tmp2.path(), 10, 390);
    // A manifest without a range and only --to.
    let tmp3 = tempfile::tempdir().unwrap();
    let m3 = manifest(tmp3.path(), 400, "");
    ok(&run(tmp3.path(), &m3, &["--to", &at(300)]));
    assert_traded_exactly(tmp3.path(), 0, 300);
}

#[test]
fn backtest_takes_from_and_to() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manifest(tmp.path(), 400, "");
    let out = bin()
        .arg("backtest")
        .arg("--data")
        .arg(tmp.path().join("BTC-USD.csv"))
        .arg("--data")
        .arg(tmp.path().join("LTC-USD.csv"))
        .arg("--strategy")
        .arg(&m)
        .args(["--no-progress", "--record-holds", "--name", "quickstart"])
        .args(["--from", &at(50), "--to", &at(200)])
        .arg("--ledger")
        .arg(tmp.path().join("ledger.db"))
        .arg("--report-dir")
        .arg(tmp.path().join("reports"))
        .output()
        .unwrap();
    ok(&out);
    assert_traded_exactly(tmp.path(), 50, 200);
}

#[test]
fn bad_ranges_are_refused_before_trading() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manifest(tmp.path(), 400, "");
    // from == to, from > to.
    for (from, to) in [(at(100), at(100)), (at(200), at(100))] {
        let err = refused(&run(tmp.path(), &m, &["--from", &from, "--to", &to]));
        assert!(err.contains("must be before"), "{err}");
    }
    // Not RFC 3339; not UTC.
    let err = refused(&run(tmp.path(), &m, &["--from", "2024-01-01"]));
    assert!(
        err.contains("--from") && err.contains("not an RFC 3339 time"),
        "{err}"
    );
    let err = refused(&run(tmp.path(), &m, &["--to", "2024-01-01T02:00:00+02:00"]));
    assert!(err.contains("--to") && err.contains("not in UTC"), "{err}");
    // A manifest range that is out of order: refused with its field.
    let other = tempfile::tempdir().unwrap();
    let bad = format!("      from: \"{}\"\n      to: \"{}\"\n", at(300), at(100));
    let mb = manifest(other.path(), 400, &bad);
    let err = refused(&run(other.path(), &mb, &[]));
    assert!(
        err.contains("spec.marketData.replay.from") && err.contains("must be before"),
        "{err}"
    );
    // A range past the end of the data selects nothing.
    let err = refused(&run(
        tmp.path(),
        &m,
        &["--from", &at(1000), "--to", &at(2000)],
    ));
    assert!(
        err.contains("no candle of BTC-USD.csv between")
            && err.contains(&format!("the file covers {} to {}", at(0), at(399))),
        "{err}"
    );
    // Nothing was traded: the ledger holds no session.
    let sessions = block_on(async {
        let l = ledger::open(&tmp.path().join("ledger.db").display().to_string())
            .await
            .expect("open ledger");
        let s = l.list_sessions().await.expect("list");
        l.close().await;
        s
    });
    assert!(sessions.is_empty(), "{sessions:?}");
}

/// kill -9 while a ranged session runs, several times, then resume: the
/// ledger equals an uninterrupted run's row for row (the resume skips the
/// in-range candles already traded).
#[test]
fn kill_9_and_resume_with_a_range_equals_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 20_000;
    let range = format!("      from: \"{}\"\n", at(3_000));
    let m = manifest(tmp.path(), n, &range);
    let args = ["--to", &at(n - 2_000)];
    // The reference.
    let reference = tmp.path().join("reference");
    std::fs::create_dir_all(&reference).unwrap();
    ok(&run(&reference, &m, &args));
    let want = dump(
        &reference.join("ledger.db").display().to_string(),
        "quickstart",
    );
    // Killed runs, paced so each commits as it goes.
    let crashed = tmp.path().join("crashed");
    std::fs::create_dir_all(&crashed).unwrap();
    let mut kills = 0;
    for attempt in 0..40 {
        let mut child = bin()
            .args(["run", "--no-progress", "-f"])
            .arg(&m)
            .arg("--ledger")
            .arg(crashed.join("ledger.db"))
            .arg("--report-dir")
            .arg(crashed.join("reports"))
            .args(args)
            .args(["--resume", "--batch-candles", "64", "--speed", "60000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(150 + 37 * (attempt % 7)));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        if kills == 5 {
            break;
        }
    }
    assert!(kills >= 1, "no run was killed");
    let stdout = ok(&run(&crashed, &m, &[args[0], args[1], "--resume"]));
    assert!(stdout.contains("(resumed)"), "{stdout}");
    let got = dump(
        &crashed.join("ledger.db").display().to_string(),
        "quickstart",
    );
    assert!(
        got == want,
        "ledger after {kills} kills differs from the uninterrupted run ({} vs {} lines)\n{stdout}",
        got.lines().count(),
        want.lines().count()
    );
    println!(
        "kill -9 with a range: {kills} kills, {} ledger rows equal",
        want.lines().count()
    );
    // The resumed run traded exactly the range too.
    assert_traded_exactly(&crashed, 3_000, n - 2_000);
}

/// A trade file (`format: Trades`) is cut by the same range: its candles
/// are aggregated while streaming and only those opening in the range trade.
#[test]
fn a_range_applies_to_trade_files_too() {
    let tmp = tempfile::tempdir().unwrap();
    let range = format!("      from: \"{}\"\n      to: \"{}\"\n", at(60), at(240));
    let m = manifest(tmp.path(), 300, &range);
    // Three trades per minute for BTC-USD, replacing its candle file.
    let mut trades = String::from("timestamp,price,quantity,side\n");
    for i in 0..300 * 3 {
        let phase = (i / 3) % 40;
        let price = 100_000 + if phase < 20 { phase } else { 40 - phase } * 100 + i % 3;
        let t = Timestamp(T0 + i * 20_000).to_rfc3339();
        let side = if i % 2 == 0 { "buy" } else { "sell" };
        trades.push_str(&format!("{t},{price},0.5,{side}\n"));
    }
    let path = tmp.path().join("BTC-USD-trades.csv");
    std::fs::write(&path, trades).unwrap();
    let btc = tmp.path().join("BTC-USD.csv").display().to_string();
    let text = std::fs::read_to_string(&m).unwrap().replace(
        &format!("path: {btc}"),
        &format!(
            "path: {}\n          format: Trades\n          interval: 1m",
            path.display()
        ),
    );
    assert!(text.contains("format: Trades"), "{text}");
    std::fs::write(&m, text).unwrap();
    let stdout = ok(&bin().args(["validate", "-f"]).arg(&m).output().unwrap());
    assert!(
        stdout.contains("trades making 180 1m candles"),
        "validate counts the candles of the range:\n{stdout}"
    );
    ok(&run(tmp.path(), &m, &[]));
    assert_traded_exactly(tmp.path(), 60, 240);
}

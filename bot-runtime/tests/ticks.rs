//! Tick data: trade files aggregated into candles (`market::ticks`), the
//! `bot-runtime data candles` command, and replay straight from a trade file
//! (`marketData.replay.files[].format: Trades`).
//!
//! The hand-made fixture and its hand-computed candles are in
//! `tests/fixtures/ticks/` (its README shows the computation).

mod common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Output,
};

use bot_runtime::{
    config::{parse_manifests, plan_sessions},
    market::{
        DataError, TradeCandles, TradeReader, scan_candle_file, scan_trade_file, ticks::Trade,
    },
    types::{Candle, Side, SymbolId, Timestamp},
};
use common::*;
use rust_decimal_macros::dec;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ticks")
        .join(name)
}

fn ok(out: &Output) -> String {
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    stdout
}

fn trade_candles(path: &Path, interval_ms: i64) -> Vec<Candle> {
    TradeCandles::open(path, SymbolId(0), interval_ms)
        .unwrap()
        .map(|c| c.unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

fn ts(rfc3339: &str) -> Timestamp {
    Timestamp::from_datetime(rfc3339.parse().unwrap())
}

#[test]
fn hand_made_trades_make_the_hand_computed_candles() {
    let trades = fixture("trades.csv");
    for (interval_ms, expected) in [(60_000, "candles_1m.csv"), (300_000, "candles_5m.csv")] {
        let got = trade_candles(&trades, interval_ms);
        let want = candles(&fixture(expected), 0);
        assert_eq!(got, want, "{expected}");
    }
    // The 00:04 minute field by field: two identical rows are two trades,
    // and the float-artefact quantity is summed exactly.
    let c = trade_candles(&trades, 60_000);
    assert_eq!(c.len(), 5, "00:01 and 00:02 have no trades: no candle");
    assert_eq!(c[3].open_time, ts("2024-08-09T00:04:00Z"));
    assert_eq!(
        (c[3].open, c[3].high, c[3].low, c[3].close, c[3].volume),
        (
            dec!(104.5),
            dec!(104.75),
            dec!(104.5),
            dec!(104.75),
            dec!(0.60031099999999999997)
        )
    );
    assert!(c.iter().all(|c| c.interval_ms == 60_000));

    let s = scan_trade_file(&trades, 60_000).unwrap();
    assert_eq!(s.trades, 12);
    assert_eq!(s.first_trade, ts("2024-08-08T23:59:05Z"));
    assert_eq!(s.last_trade, ts("2024-08-09T00:05:30Z"));
    assert_eq!(
        (
            s.candles.rows,
            s.candles.first,
            s.candles.last,
            s.candles.missing_intervals
        ),
        (5, ts("2024-08-08T23:59:00Z"), ts("2024-08-09T00:05:00Z"), 2)
    );
    assert!(s.first_candle_partial() && s.last_candle_partial());
    // Hourly: one candle holding everything, still partial at both ends.
    let h = trade_candles(&trades, 3_600_000);
    assert_eq!(h.len(), 2);
    assert_eq!(
        (h[1].open, h[1].high, h[1].low, h[1].close),
        (dec!(99.8), dec!(106), dec!(98.1), dec!(106))
    );
}

#[test]
fn trade_reader_yields_checked_trades_in_file_order() {
    let trades: Vec<Trade> = TradeReader::open(&fixture("trades.csv"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(trades.len(), 12);
    assert_eq!(
        trades[0],
        Trade {
            time: ts("2024-08-08T23:59:05Z"),
            price: dec!(100),
            quantity: dec!(0.5),
            side: Side::Buy
        }
    );
    assert_eq!(
        trades[8], trades[9],
        "identical rows are kept as two trades"
    );
    assert_eq!(trades[1].side, Side::Sell);
}

/// The fixture with row `line` (1 = header) replaced by `row`.
fn with_line(dir: &Path, line: usize, row: &str) -> PathBuf {
    let text = fs::read_to_string(fixture("trades.csv")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[line - 1] = row;
    let p = dir.join(format!(
        "bad{line}-{}.csv",
        fs::read_dir(dir).unwrap().count()
    ));
    fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

fn refused(path: &Path) -> DataError {
    let e = scan_trade_file(path, 60_000).unwrap_err();
    // The streaming reader stops at the same row with the same error.
    let streamed = TradeCandles::open(path, SymbolId(0), 60_000)
        .unwrap()
        .find_map(Result::err)
        .expect("the stream reports the error too");
    assert_eq!(streamed, e);
    e
}

#[test]
fn bad_rows_are_refused_with_file_line_column_and_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(usize, &str, &str)] = &[
        (
            7,
            "2024-08-08T23:59:30.000Z,99,1,buy",
            "time goes backwards: 2024-08-08T23:59:30Z after 2024-08-09T00:00:00Z (line 6); \
             expected trades in non-decreasing time order (several may share a timestamp)",
        ),
        (
            3,
            "2024-08-08T23:59:20.250Z,0,0.25,sell",
            "price must be > 0, found 0",
        ),
        (
            3,
            "2024-08-08T23:59:20.250Z,-102.5,0.25,sell",
            "price must be > 0, found -102.5",
        ),
        (
            3,
            "2024-08-08T23:59:20.250Z,102.5,0,sell",
            "quantity must be > 0, found 0 (a trade of nothing is not a trade)",
        ),
        (
            3,
            "2024-08-08T23:59:20.250Z,102.5,-0.25,sell",
            "quantity must be > 0, found -0.25 (a trade of nothing is not a trade)",
        ),
        (
            3,
            "2024-08-08T23:59:20.250Z,abc,0.25,sell",
            "column \"price\": \"abc\" is not a decimal number (expected e.g. 46197.5)",
        ),
        (
            3,
            "2024-08-08T23:59:20.250Z,NaN,0.25,sell",
            "column \"price\": \"NaN\" is not a decimal number (expected e.g. 46197.5)",
        ),
        (
            3,
            "2024-08-08T23:59:20.250Z,102.5,1e3,sell",
            "column \"quantity\": \"1e3\" is not a decimal number (expected e.g. 46197.5)",
        ),
        (
            3,
            "2024-08-08T23:59:20.250Z,102.5,,sell",
            "column \"quantity\": \"\" is not a decimal number (expected e.g. 46197.5)",
        ),
        (
            3,
            "2024-08-08T23:59:20.250Z,10000000000000,0.25,sell",
            "price 10000000000000 is outside the accepted range 0.000000000001 to 1000000000000",
        ),
        (
            3,
            "2024-08-08T23:59:20.250Z,102.5,1000000000000000001,sell",
            "quantity 1000000000000000001 is above the accepted maximum 1000000000000000000",
        ),
        (
            3,
            "2024-08-08T23:59:20.250Z,102.5,0.25,BUY",
            "column \"side\": \"BUY\" is not a side (expected buy or sell, the taker's side)",
        ),
        (
            3,
            "2024-08-08T23:59:20.250Z,102.5,0.25",
            "expected 4 columns (timestamp,price,quantity,side), found 3",
        ),
        (
            3,
            "2024-08-08T23:59:20.250Z,102.5,0.25,sell,17",
            "expected 4 columns (timestamp,price,quantity,side), found 5",
        ),
        (
            3,
            "",
            "empty line (expected 4 columns (timestamp,price,quantity,side))",
        ),
        (
            6,
            "timestamp,price,quantity,side",
            "a second header row \"timestamp,price,quantity,side\" (expected a trade row: were \
             two trade files joined with their headers?)",
        ),
        (
            3,
            "1723161560250,102.5,0.25,sell",
            "timestamp \"1723161560250\" is not RFC 3339 UTC (expected e.g. 2022-01-01T00:00:00Z)",
        ),
        (
            3,
            "2024-08-09T01:59:20.250+02:00,102.5,0.25,sell",
            "timestamp \"2024-08-09T01:59:20.250+02:00\" has offset +02:00 (expected UTC: a Z or +00:00 suffix)",
        ),
    ];
    for (line, row, reason) in cases {
        let p = with_line(dir.path(), *line, row);
        let e = refused(&p);
        assert_eq!(
            (e.line, e.reason.as_str()),
            (*line as u64, *reason),
            "{row:?}"
        );
        assert_eq!(e.to_string(), format!("{}:{line}: {reason}", p.display()));
    }
}

#[test]
fn whole_file_problems_are_line_0_or_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        fs::write(&p, body).unwrap();
        p
    };
    let missing = dir.path().join("nope.csv");
    let e = scan_trade_file(&missing, 60_000).unwrap_err();
    assert_eq!(
        (e.line, e.reason.as_str()),
        (
            0,
            "file not found (expected a trades CSV file (timestamp,price,quantity,side))"
        )
    );
    let e = scan_trade_file(&write("empty.csv", ""), 60_000).unwrap_err();
    assert_eq!(
        (e.line, e.reason.as_str()),
        (
            0,
            "empty file (expected the header \"timestamp,price,quantity,side\" and trade rows)"
        )
    );
    let e = scan_trade_file(
        &write("header.csv", "timestamp,price,quantity,side\n"),
        60_000,
    )
    .unwrap_err();
    assert_eq!(
        (e.line, e.reason.as_str()),
        (
            0,
            "no trade rows after the header (expected at least one row below \
             \"timestamp,price,quantity,side\")"
        )
    );
    // A candle file is not a trade file.
    let candle_file = shared_data("BTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv");
    let e = scan_trade_file(&candle_file, 60_000).unwrap_err();
    assert_eq!(
        (e.line, e.reason.as_str()),
        (
            1,
            "header is \"timestamp,open,high,low,close,volume\" (expected exactly \
             \"timestamp,price,quantity,side\")"
        )
    );
    let e = scan_trade_file(&fixture("trades.csv"), 0).unwrap_err();
    assert_eq!(
        (e.line, e.reason.as_str()),
        (0, "candle interval must be > 0 ms, found 0 ms")
    );
    // CRLF line endings and a byte-order mark are read like the candle files'.
    let crlf = fs::read_to_string(fixture("trades.csv"))
        .unwrap()
        .replace('\n', "\r\n");
    let p = write("crlf.csv", &format!("\u{feff}{crlf}"));
    assert_eq!(
        trade_candles(&p, 60_000),
        trade_candles(&fixture("trades.csv"), 60_000)
    );
}

#[test]
fn cli_writes_the_hand_computed_candle_files() {
    let dir = tempfile::tempdir().unwrap();
    for (interval, expected, missing) in [("1m", "candles_1m.csv", 2), ("5m", "candles_5m.csv", 0)]
    {
        let out_path = dir.path().join(format!("out_{interval}.csv"));
        let stdout = ok(&bin()
            .args(["data", "candles", "--interval", interval])
            .arg(fixture("trades.csv"))
            .arg(&out_path)
            .output()
            .unwrap());
        assert_eq!(
            fs::read_to_string(&out_path).unwrap(),
            fs::read_to_string(fixture(expected)).unwrap(),
            "{interval}"
        );
        let candles = if interval == "1m" { 5 } else { 3 };
        assert!(
            stdout.contains(&format!(
                "{candles} candle(s) of {interval} from 12 trade(s), opening"
            )) && stdout.contains(&format!(
                "; {missing} interval(s) without trades left as gaps"
            )),
            "{stdout}"
        );
        assert!(
            stdout
                .contains("the last candle may be partial: the trades end at 2024-08-09T00:05:30Z"),
            "{stdout}"
        );
        // The output is a valid candle file with its gaps kept.
        let s = scan_candle_file(&out_path, None).unwrap();
        assert_eq!((s.rows, s.missing_intervals), (candles, missing));
    }
}

#[test]
fn cli_refuses_a_bad_trade_file_and_leaves_the_output_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let bad = with_line(dir.path(), 7, "2024-08-08T23:59:30.000Z,99,1,buy");
    let out_path = dir.path().join("out.csv");
    fs::write(&out_path, "keep me\n").unwrap();
    let out = bin()
        .args(["data", "candles", "--interval", "1m"])
        .arg(&bad)
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:7: time goes backwards: 2024-08-08T23:59:30Z after 2024-08-09T00:00:00Z (line 6)",
            bad.display()
        )),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(&out_path).unwrap(), "keep me\n");
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "no partial file is left behind: {names:?}");

    // A bad interval and the input as output are refused too.
    let out = bin()
        .args(["data", "candles", "--interval", "soon"])
        .arg(fixture("trades.csv"))
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid duration \"soon\""),
        "{}",
        text(&out.stderr)
    );
    let copy = dir.path().join("copy.csv");
    fs::copy(fixture("trades.csv"), &copy).unwrap();
    let out = bin()
        .args(["data", "candles", "--interval", "1m"])
        .arg(&copy)
        .arg(&copy)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("the output is the input file"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        fs::read(&copy).unwrap(),
        fs::read(fixture("trades.csv")).unwrap()
    );
}

/// A trade file given as a candle file says how to use it.
#[test]
fn a_trade_file_given_as_candles_gets_a_hint() {
    let e = scan_candle_file(&fixture("trades.csv"), None).unwrap_err();
    assert_eq!(
        (e.line, e.reason.as_str()),
        (
            1,
            "header is \"timestamp,price,quantity,side\" (expected exactly \
             \"timestamp,open,high,low,close,volume\"): this is a trade file; replay it with \
             format: Trades and an interval, or aggregate it with `bot-runtime data candles \
             --interval 1m IN OUT`"
        )
    );
}

/// The shared XRP/ETH trades aggregated to 1m are the shared XRP/ETH 1m
/// candles, value for value (the data README's own check, redone here).
#[test]
fn xrp_eth_trades_rebuild_the_shared_1m_candles() {
    let trades = shared_data("XRP-ETH_trades_binance_2019-10-11_2019-10-13.csv");
    let got = trade_candles(&trades, 60_000);
    let want = candles(
        &shared_data("XRP-ETH_1m_binance_2019-10-11_2019-10-13.csv"),
        0,
    );
    assert_eq!(got.len(), 2_469);
    assert_eq!(got, want);
    let s = scan_trade_file(&trades, 60_000).unwrap();
    assert_eq!((s.trades, s.candles.missing_intervals), (12_477, 1_091));
}

/// Every shared trade file reads clean and aggregates at 1m, 5m and 1h.
#[test]
fn every_shared_trade_file_aggregates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/market");
    let mut files = 0;
    for entry in fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if !p.to_string_lossy().contains("_trades_") {
            continue;
        }
        for iv in [60_000, 300_000, 3_600_000] {
            let s = scan_trade_file(&p, iv).unwrap_or_else(|e| panic!("{e}"));
            let span = (s.last_trade.0 - s.first_trade.0) / iv + 1;
            assert!(
                s.candles.rows + s.candles.missing_intervals <= span as u64 + 1,
                "{}: {s:?}",
                p.display()
            );
            let volume: rust_decimal::Decimal = TradeReader::open(&p)
                .unwrap()
                .map(|t| t.unwrap().quantity)
                .sum();
            let candle_volume: rust_decimal::Decimal =
                trade_candles(&p, iv).iter().map(|c| c.volume).sum();
            assert_eq!(volume, candle_volume, "{}", p.display());
        }
        files += 1;
    }
    assert_eq!(files, 6);
}

fn session_manifest(file_entry: &str) -> String {
    format!(
        r#"apiVersion: paperbot.io/v1alpha1
kind: PaperAccount
metadata: {{name: acct}}
spec:
  baseCurrency: ETH
  initialBalance: "100"
---
apiVersion: paperbot.io/v1alpha1
kind: StrategyConfig
metadata: {{name: strat}}
spec:
  signals:
    smaCrossover: {{fastPeriod: 3, slowPeriod: 8}}
  risk:
    maxPositionSizePct: "20"
    stopLossPct: "0.5"
    takeProfitPct: "0.5"
---
apiVersion: paperbot.io/v1alpha1
kind: BotSession
metadata: {{name: bot}}
spec:
  accountRef: {{name: acct}}
  strategyRef: {{name: strat}}
  allocation: "100"
  symbols: [XRP-ETH]
  marketData:
    source: Replay
    replay:
      files:
        - {file_entry}
  execution:
    feeRatePct: "0.1"
"#
    )
}

/// Run `manifest` in `dir` (its own ledger and report directory); returns
/// the report directory of session `bot`.
fn run_session(dir: &Path, manifest: &str) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let m = dir.join("session.yaml");
    fs::write(&m, manifest).unwrap();
    let validate = ok(&bin().args(["validate", "-f"]).arg(&m).output().unwrap());
    assert!(validate.starts_with("ok: BotSession \"bot\""), "{validate}");
    ok(&bin()
        .args(["run", "-f"])
        .arg(&m)
        .arg("--ledger")
        .arg(dir.join("ledger.db"))
        .arg("--report-dir")
        .arg(dir.join("reports"))
        .output()
        .unwrap());
    dir.join("reports/bot")
}

/// A session replaying a trade file directly trades exactly like one
/// replaying the candle file `data candles` wrote from it.
#[test]
fn replay_from_trades_equals_replay_of_the_candles_the_cli_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let trades = shared_data("XRP-ETH_trades_binance_2019-10-11_2019-10-13.csv");
    let candles_csv = tmp.path().join("xrp-eth-1m.csv");
    ok(&bin()
        .args(["data", "candles", "--interval", "1m"])
        .arg(&trades)
        .arg(&candles_csv)
        .output()
        .unwrap());

    let from_trades = run_session(
        &tmp.path().join("trades"),
        &session_manifest(&format!(
            "{{symbol: XRP-ETH, path: {}, format: Trades, interval: 1m}}",
            trades.display()
        )),
    );
    let from_candles = run_session(
        &tmp.path().join("candles"),
        &session_manifest(&format!(
            "{{symbol: XRP-ETH, path: {}}}",
            candles_csv.display()
        )),
    );
    for f in ["trades.csv", "round_trips.csv", "decisions.csv"] {
        let a = fs::read_to_string(from_trades.join(f)).unwrap();
        let b = fs::read_to_string(from_candles.join(f)).unwrap();
        assert_eq!(a, b, "{f} differs");
    }
    let fills = fs::read_to_string(from_trades.join("trades.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    assert!(fills >= 10, "the strategy should trade: {fills} fills");
    let summary = |d: &Path| -> serde_json::Value {
        serde_json::from_str(&fs::read_to_string(d.join("summary.json")).unwrap()).unwrap()
    };
    let (a, b) = (summary(&from_trades), summary(&from_candles));
    for k in ["final_equity", "realized_pnl", "round_trips", "fills"] {
        assert_eq!(a[k], b[k], "summary.json {k}");
    }
}

#[test]
fn manifest_rules_for_trade_files() {
    let dir = tempfile::tempdir().unwrap();
    let trades = fixture("trades.csv");
    let check = |entry: &str| {
        let text = session_manifest(entry);
        let m = parse_manifests(&text, &dir.path().join("m.yaml")).map_err(|e| e.to_string())?;
        plan_sessions(&m).map_err(|e| e.to_string())
    };
    let e = check(&format!(
        "{{symbol: XRP-ETH, path: {}, format: Trades}}",
        trades.display()
    ))
    .unwrap_err();
    assert!(
        e.contains(
            "spec.marketData.replay.files[0].interval: is required when format is Trades: \
             expected the candle length to aggregate the trades into, e.g. 1m"
        ),
        "{e}"
    );
    let e = check(&format!(
        "{{symbol: XRP-ETH, path: {}, format: Trades, interval: 1m, volumeUnit: Quote}}",
        trades.display()
    ))
    .unwrap_err();
    assert!(
        e.contains(
            "spec.marketData.replay.files[0].volumeUnit: must be Base when format is Trades"
        ),
        "{e}"
    );
    let e = check(&format!(
        "{{symbol: XRP-ETH, path: {}, format: Ticks, interval: 1m}}",
        trades.display()
    ))
    .unwrap_err();
    assert!(
        e.contains(
            "spec.marketData.replay.files[0].format: unknown variant `Ticks`, expected `Candles` or `Trades`"
        ),
        "{e}"
    );
    // A trade file is planned with its format and interval.
    let plans = check(&format!(
        "{{symbol: XRP-ETH, path: {}, format: Trades, interval: 5m}}",
        trades.display()
    ))
    .unwrap();
    assert_eq!(plans[0].replay[0].interval_ms, Some(300_000));
    assert_eq!(
        plans[0].replay[0].format,
        paperbot_crds::ReplayFormat::Trades
    );
}

/// A bad row of a trade file fails `validate` and `run` with its file and
/// line before anything trades.
#[test]
fn a_bad_trade_file_fails_validate_and_run_before_trading() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = with_line(tmp.path(), 4, "2024-08-08T23:59:20.250Z,101,0,buy");
    let m = tmp.path().join("session.yaml");
    fs::write(
        &m,
        session_manifest(&format!(
            "{{symbol: XRP-ETH, path: {}, format: Trades, interval: 1m}}",
            bad.display()
        )),
    )
    .unwrap();
    let expected = format!(
        "{}:4: quantity must be > 0, found 0 (a trade of nothing is not a trade)",
        bad.display()
    );
    let ledger = tmp.path().join("ledger.db");
    let ledger = ledger.to_str().unwrap();
    for args in [
        vec!["validate", "-f"],
        vec!["run", "--ledger", ledger, "-f"],
    ] {
        let out = bin().args(&args).arg(&m).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains(&expected),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(
        !tmp.path().join("ledger.db").exists(),
        "nothing was recorded"
    );
}

mod fuzz {
    //! No trade file panics the reader: arbitrary rows give `Ok` or an error
    //! naming the file and a line; what is accepted makes consistent candles.

    use super::*;
    use proptest::prelude::*;

    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (1u64..1_000_000, 0u32..8).prop_map(|(m, s)| rust_decimal::Decimal::new(m as i64, s).to_string()),
            1 => "[0-9]{1,30}(\\.[0-9]{1,30})?",
            1 => prop_oneof![
                Just("0"), Just("-1"), Just("NaN"), Just("1e3"), Just(""), Just("+5"),
                Just("1000000000000000001"), Just("0.0000000000001"), Just("79228162514264337593543950336"),
            ].prop_map(str::to_string),
        ]
    }

    fn time(second: u32) -> impl Strategy<Value = String> {
        prop_oneof![
            6 => (0u32..1000).prop_map(move |ms| format!(
                "2024-08-08T23:{:02}:{:02}.{ms:03}Z", second / 60 % 60, second % 60
            )),
            1 => prop_oneof![
                Just("9999-12-31T23:59:59.999Z"), Just("0000-01-01T00:00:00Z"),
                Just("2024-08-08T23:59:60Z"), Just("2024-08-08T23:00:00.0001Z"),
                Just("2024-08-08T23:00:00+01:00"), Just("1723161560250"),
            ].prop_map(str::to_string),
        ]
    }

    fn row(second: u32) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            8 => (time(second), number(), number(), prop_oneof![Just("buy"), Just("sell"), Just("BUY"), Just("")])
                .prop_map(|(t, p, q, s)| format!("{t},{p},{q},{s}").into_bytes()),
            1 => proptest::collection::vec(number(), 0..7).prop_map(|v| v.join(",").into_bytes()),
            1 => proptest::collection::vec(any::<u8>(), 0..50),
        ]
    }

    fn file() -> impl Strategy<Value = Vec<u8>> {
        (1usize..20)
            .prop_flat_map(|n| (0..n as u32).map(|i| row(i * 7)).collect::<Vec<_>>())
            .prop_map(|rows| {
                let mut out = TRADE_FILE_HEADER.as_bytes().to_vec();
                for r in rows {
                    out.push(b'\n');
                    out.extend_from_slice(&r);
                }
                out
            })
    }

    use bot_runtime::market::TRADE_FILE_HEADER;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn any_trade_file_gives_ok_or_a_located_error(bytes in file(), interval in prop_oneof![Just(1i64), Just(1_000), Just(60_000), Just(86_400_000)]) {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("t.csv");
            fs::write(&p, &bytes).unwrap();
            match scan_trade_file(&p, interval) {
                Err(e) => {
                    prop_assert_eq!(&e.file, &p);
                    prop_assert!(e.line >= 2 || e.reason.starts_with("no trade rows"), "{}", e);
                }
                Ok(s) => {
                    let trades: Vec<Trade> = TradeReader::open(&p).unwrap().map(Result::unwrap).collect();
                    let candles = trade_candles(&p, interval);
                    prop_assert_eq!(s.trades as usize, trades.len());
                    prop_assert_eq!(s.candles.rows as usize, candles.len());
                    prop_assert!(candles.len() <= trades.len());
                    for c in &candles {
                        prop_assert!(c.low <= c.open.min(c.close) && c.open.max(c.close) <= c.high);
                        prop_assert_eq!(c.open_time.0.rem_euclid(interval), 0);
                    }
                    let volume: rust_decimal::Decimal = trades.iter().map(|t| t.quantity).sum();
                    let candle_volume: rust_decimal::Decimal = candles.iter().map(|c| c.volume).sum();
                    prop_assert_eq!(volume, candle_volume);
                }
            }
        }
    }
}

//! `bot-runtime validate` runs every check `run` makes before trading (the
//! manifest, every data row, the warnings) and names what it read; bad
//! `--speed` values and session names that would escape `--report-dir` are
//! refused before anything is written.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use common::{bin, text};

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("bot-runtime starts")
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

/// `rows` one-minute candles from 2022-01-01T00:00:00Z at price 100, with
/// `bad` replacing the row on file line `bad_line` (1 = header) if given.
fn csv(rows: u32, bad: Option<(u64, &str)>) -> String {
    let mut out = String::from("timestamp,open,high,low,close,volume\n");
    for i in 0..rows {
        let line = u64::from(i) + 2;
        match bad {
            Some((l, row)) if l == line => out.push_str(row),
            _ => out.push_str(&format!(
                "2022-01-01T{:02}:{:02}:00Z,100,101,99,100,5",
                i / 60,
                i % 60
            )),
        }
        out.push('\n');
    }
    out
}

const ACCOUNT_AND_STRATEGY: &str = r#"apiVersion: paperbot.io/v1alpha1
kind: PaperAccount
metadata: {name: acct}
spec:
  initialBalance: "100000"
---
apiVersion: paperbot.io/v1alpha1
kind: StrategyConfig
metadata: {name: strat}
spec:
  signals:
    smaCrossover: {fastPeriod: 10, slowPeriod: 30}
  tokens: {block: [LTC-USD]}
  circuitBreakers: {maxDataGap: 30s, minBalance: "60000"}
"#;

fn session(name: &str, files: &[(&str, &str)]) -> String {
    let symbols: Vec<&str> = files.iter().map(|(s, _)| *s).collect();
    let files: String = files
        .iter()
        .map(|(s, p)| format!("        - {{symbol: {s}, path: {p}}}\n"))
        .collect();
    format!(
        r#"---
apiVersion: paperbot.io/v1alpha1
kind: BotSession
metadata: {{name: {name}}}
spec:
  accountRef: {{name: acct}}
  strategyRef: {{name: strat}}
  allocation: "50000"
  symbols: [{}]
  marketData:
    source: Replay
    replay:
      files:
{files}"#,
        symbols.join(", ")
    )
}

#[test]
fn validate_reads_every_file_and_prints_rows_interval_period_and_warnings() {
    let out = run(bin()
        .args(["validate", "-f"])
        .arg(common::example("quickstart.yaml")));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("ok: BotSession \"quickstart\""), "{stdout}");
    assert!(
        stdout.contains(
            "data/BTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv (BTC-USD): 3887 rows, 1m \
             candles, 2018-04-04T00:00:00Z to "
        ),
        "{stdout}"
    );
    assert!(stdout.contains(", 433 missing intervals"), "{stdout}");
    assert!(stdout.contains("(LTC-USD): "), "{stdout}");
    assert!(!stdout.contains("warning"), "{stdout}");

    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "btc.csv", &csv(20, None));
    write(tmp.path(), "ltc.csv", &csv(40, None));
    let m = write(
        tmp.path(),
        "m.yaml",
        &format!(
            "{ACCOUNT_AND_STRATEGY}{}",
            session("warned", &[("BTC-USD", "btc.csv"), ("LTC-USD", "ltc.csv")])
        ),
    );
    let out = run(bin().args(["validate", "-f"]).arg(&m));
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "warnings are not errors: {stdout}");
    let btc = tmp.path().join("btc.csv");
    for expected in [
        format!(
            "  read {} (BTC-USD): 20 rows, 1m candles, 2022-01-01T00:00:00Z to 2022-01-01T00:19:00Z",
            btc.display()
        ),
        "  warning: symbol \"LTC-USD\" is never traded: StrategyConfig \"strat\" spec.tokens.block lists it".to_string(),
        "  warning: circuitBreakers.maxDataGap 30s is shorter than the 1m candle interval of \"BTC-USD\"".to_string(),
        "  warning: symbol \"BTC-USD\" has 20 candle(s) but the quickest configured signal needs 31 closes before its first reading: no signal and no trade for it".to_string(),
        "  warning: circuitBreakers.minBalance 60000 is above the allocation 50000: the minBalance breaker is open from the first candle and no entry is ever made".to_string(),
    ] {
        assert!(stdout.contains(&expected), "expected {expected:?} in:\n{stdout}");
    }
    assert_eq!(stdout.matches("warning:").count(), 5, "{stdout}");
}

#[test]
fn validate_checks_every_row_of_every_session_and_names_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "good.csv", &csv(40, None));
    write(
        tmp.path(),
        "bad.csv",
        &csv(
            40,
            Some((17, "2022-01-01T00:15:00Z,100,10000000000000,99,100,5")),
        ),
    );
    let m = write(
        tmp.path(),
        "m.yaml",
        &format!(
            "{ACCOUNT_AND_STRATEGY}{}{}",
            session("first", &[("BTC-USD", "good.csv")]),
            session("second", &[("BTC-USD", "bad.csv")])
        )
        .replace("\"100000\"", "\"200000\""),
    );
    let out = run(bin().args(["validate", "-f"]).arg(&m));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("ok: BotSession \"first\""), "{stdout}");
    let bad = tmp.path().join("bad.csv");
    let expected = format!(
        "error: BotSession \"second\": {}:17: high price 10000000000000 is outside the \
         accepted range 0.000000000001 to 1000000000000",
        bad.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        stderr.contains("1 of 2 session(s) have bad market data"),
        "{stderr}"
    );
}

#[test]
fn speed_out_of_range_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    for speed in ["1e-300", "0", "-5", "NaN", "inf", "2000000"] {
        let (db, reports) = (tmp.path().join("l.db"), tmp.path().join("reports"));
        let out = run(bin()
            .args(["run", "-f"])
            .arg(common::example("simulated.yaml"))
            .arg(format!("--speed={speed}"))
            .arg("--ledger")
            .arg(&db)
            .arg("--report-dir")
            .arg(&reports));
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "--speed {speed}: {stderr}");
        assert!(
            stderr.contains("error: --speed: ")
                && stderr.contains(
                    "is out of range: expected a multiple of real time from 0.001 to 1000000"
                ),
            "--speed {speed}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!db.exists() && !reports.exists(), "--speed {speed}");
    }
}

#[test]
fn session_names_that_would_escape_the_report_dir_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    write(&data, "btc.csv", &csv(40, None));
    let strategy = write(&data, "s.yaml", ACCOUNT_AND_STRATEGY);
    let reports = data.join("reports");
    for name in ["..", "/abs/path", "../../x", "Upper"] {
        let out = run(bin()
            .args(["backtest", "--data"])
            .arg(data.join("btc.csv"))
            .arg("--strategy")
            .arg(&strategy)
            .args(["--name", name])
            .arg("--ledger")
            .arg(data.join("l.db"))
            .arg("--report-dir")
            .arg(&reports));
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "--name {name}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "metadata.name: {name:?} is not a valid session name"
            )) && stderr.contains("expected a DNS-1123 label"),
            "--name {name}: {stderr}"
        );
        // Nothing written, inside or outside the report directory.
        assert!(!reports.exists() && !data.join("l.db").exists(), "{name}");
        let entries: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, ["data"], "--name {name}");
    }
}

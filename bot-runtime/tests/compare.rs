//! `bot-runtime sessions compare`: real sessions run by the real binary into
//! one ledger (SQLite, and one case on a real PostgreSQL server), compared;
//! the table and `compare.csv` must equal each session's own
//! `summary.json`, the chart must be a decodable PNG of the chart size, a
//! name must mean its newest run, and errors must write nothing.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Output,
    sync::OnceLock,
};

use bot_runtime::report::{CHART_HEIGHT, CHART_WIDTH};
use paperbot_testkit::PostgresServer;
use rust_decimal::{Decimal, RoundingStrategy};

use common::{bin, example, text};

fn postgres() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(|| PostgresServer::start().expect("start a PostgreSQL server for the tests"))
}

/// The quickstart session named `name`, with strategy `strategy` (the
/// quickstart's trend-follower, or a faster SMA-only variant under another
/// name), allocation `allocation` USD, absolute data paths.
fn manifest(dir: &Path, name: &str, strategy: &str, allocation: &str) -> PathBuf {
    let quickstart = std::fs::read_to_string(example("quickstart.yaml")).unwrap();
    let data = std::fs::canonicalize(example("data")).unwrap();
    let mut text = quickstart
        .replace("name: quickstart", &format!("name: {name}"))
        .replace("path: data/", &format!("path: {}/", data.display()))
        .replace(
            "allocation: \"50000\"",
            &format!("allocation: \"{allocation}\""),
        );
    if strategy != "trend-follower" {
        text = text
            .replace("trend-follower", strategy)
            .replace("fastPeriod: 20", "fastPeriod: 5")
            .replace("slowPeriod: 60", "slowPeriod: 15");
    }
    assert!(
        text.contains(&format!("allocation: \"{allocation}\"")),
        "quickstart.yaml changed shape"
    );
    let path = dir.join(format!("{name}-{allocation}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Run `manifest` to the end into `ledger`, reports under `reports`.
fn run(manifest: &Path, ledger: &str, reports: &Path) {
    let out = bin()
        .args(["run", "--no-progress", "-f"])
        .arg(manifest)
        .arg("--ledger")
        .arg(ledger)
        .arg("--report-dir")
        .arg(reports)
        .output()
        .expect("bot-runtime starts");
    assert!(
        out.status.success(),
        "run failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn compare(ledger: &str, out: &Path, args: &[&str]) -> Output {
    bin()
        .args(["sessions", "compare", "--ledger", ledger, "--out"])
        .arg(out)
        .args(args)
        .output()
        .expect("bot-runtime starts")
}

fn summary(reports: &Path, id: &str) -> serde_json::Value {
    let path = reports.join(id).join("summary.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn dec(v: &serde_json::Value) -> Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("{v} is not a decimal string"))
        .parse()
        .unwrap()
}

fn dp2(d: Decimal) -> String {
    format!(
        "{:.2}",
        d.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
    )
}

fn opt_dp2(v: &serde_json::Value) -> String {
    if v.is_null() {
        "n/a".into()
    } else {
        dp2(dec(v))
    }
}

fn ratio(v: &serde_json::Value) -> String {
    v.as_f64()
        .map_or_else(|| "n/a".to_owned(), |f| format!("{f:.2}"))
}

/// The cells of the table row of session `id`.
fn row<'a>(table: &'a str, id: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| l.split(['│', '┆']).map(str::trim).collect::<Vec<_>>())
        .find(|cells| cells.get(1) == Some(&id))
        .unwrap_or_else(|| panic!("no row for {id} in:\n{table}"))
        .into_iter()
        .skip(1)
        .collect()
}

/// The table row and the CSV row of `id` hold `s`'s figures.
fn assert_figures(
    table: &str,
    csv_rows: &[csv::StringRecord],
    header: &csv::StringRecord,
    id: &str,
    s: &serde_json::Value,
) {
    let cells = row(table, id);
    let want = [
        id.to_owned(),
        s["strategy"].as_str().unwrap().to_owned(),
        format!(
            "{} .. {}",
            s["start"].as_str().unwrap(),
            s["end"].as_str().unwrap()
        ),
        s["bars"].to_string(),
        s["round_trips"].to_string(),
        dp2(dec(&s["win_rate_pct"])),
        format!("{} USD", dp2(dec(&s["realized_pnl"]))),
        dp2(dec(&s["roi_pct"])),
        opt_dp2(&s["benchmark_return_pct"]),
        opt_dp2(&s["excess_return_pct"]),
        dp2(dec(&s["max_drawdown_pct"])),
        ratio(&s["sharpe_ratio"]),
        ratio(&s["sortino_ratio"]),
        opt_dp2(&s["profit_factor"]),
        dp2(dec(&s["exposure_time_pct"])),
        format!("{} USD", dp2(dec(&s["fees_paid"]))),
    ];
    for (i, w) in want.iter().enumerate() {
        assert_eq!(
            cells.get(i).copied(),
            Some(w.as_str()),
            "column {i} of {id}:\n{table}"
        );
    }

    let rec = csv_rows
        .iter()
        .find(|r| r.get(0) == Some(id))
        .unwrap_or_else(|| panic!("no CSV row for {id}"));
    let col = |name: &str| {
        let i = header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name}"));
        rec.get(i).unwrap().to_owned()
    };
    assert_eq!(col("strategy"), s["strategy"].as_str().unwrap());
    assert_eq!(col("currency"), "USD");
    assert_eq!(col("start"), s["start"].as_str().unwrap());
    assert_eq!(col("end"), s["end"].as_str().unwrap());
    assert_eq!(col("candles"), s["bars"].to_string());
    assert_eq!(col("trades"), s["round_trips"].to_string());
    for key in [
        "win_rate_pct",
        "realized_pnl",
        "roi_pct",
        "benchmark_return_pct",
        "excess_return_pct",
        "max_drawdown_pct",
        "profit_factor",
        "exposure_time_pct",
        "fees_paid",
    ] {
        let got = col(key);
        if s[key].is_null() {
            assert_eq!(got, "", "{key} of {id}");
        } else {
            assert_eq!(
                got.parse::<Decimal>().unwrap(),
                dec(&s[key]),
                "{key} of {id}"
            );
        }
    }
    for key in ["sharpe_ratio", "sortino_ratio"] {
        let got = col(key);
        match s[key].as_f64() {
            Some(f) => assert_eq!(got.parse::<f64>().unwrap(), f, "{key} of {id}"),
            None => assert_eq!(got, "", "{key} of {id}"),
        }
    }
}

fn read_csv(path: &Path) -> (csv::StringRecord, Vec<csv::StringRecord>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header = r.headers().unwrap().clone();
    let rows = r.records().collect::<Result<Vec<_>, _>>().unwrap();
    (header, rows)
}

/// Decode the PNG: it has the chart size and more than a blank page.
fn assert_png(path: &Path) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("PNG pixels decode");
    assert_eq!((info.width, info.height), (CHART_WIDTH, CHART_HEIGHT));
    let pixels = &buf[..info.buffer_size()];
    let coloured = pixels
        .chunks(info.color_type.samples())
        .filter(|p| {
            p.iter().take(3).any(|&c| c < 200) && p.iter().take(3).max() != p.iter().take(3).min()
        })
        .count();
    assert!(
        coloured > 1000,
        "the chart has almost no coloured line ({coloured} pixels)"
    );
}

#[test]
fn compare_two_strategies_equals_their_own_summaries_and_names_mean_the_newest_run() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("ledger.db");
    let url = db.display().to_string();
    let reports = tmp.path().join("reports");
    run(
        &manifest(tmp.path(), "alpha", "trend-follower", "50000"),
        &url,
        &reports,
    );
    run(
        &manifest(tmp.path(), "beta", "fast-sma", "20000"),
        &url,
        &reports,
    );
    // A second run of alpha, with another allocation: id alpha-2.
    run(
        &manifest(tmp.path(), "alpha", "trend-follower", "30000"),
        &url,
        &reports,
    );
    let (a1, a2, b) = (
        summary(&reports, "alpha"),
        summary(&reports, "alpha-2"),
        summary(&reports, "beta"),
    );
    assert_ne!(a1["initial_equity"], a2["initial_equity"]);
    assert_ne!(a2["strategy"], b["strategy"]);

    // By name: alpha means alpha-2; sorted by ROI.
    let out_dir = tmp.path().join("cmp");
    let out = compare(&url, &out_dir, &["--sort", "roi", "alpha", "beta"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let (header, rows) = read_csv(&out_dir.join("compare.csv"));
    assert_eq!(rows.len(), 2);
    let ids: Vec<&str> = rows.iter().map(|r| r.get(0).unwrap()).collect();
    let mut by_roi = [
        ("alpha-2", dec(&a2["roi_pct"])),
        ("beta", dec(&b["roi_pct"])),
    ];
    by_roi.sort_by_key(|x| std::cmp::Reverse(x.1));
    assert_eq!(
        ids,
        by_roi.iter().map(|x| x.0).collect::<Vec<_>>(),
        "not sorted by ROI"
    );
    assert_figures(&stdout, &rows, &header, "alpha-2", &a2);
    assert_figures(&stdout, &rows, &header, "beta", &b);
    assert_png(&out_dir.join("compare_equity.png"));

    // By id, three sessions, the order given; `alpha-1` is the first run.
    let out_dir = tmp.path().join("cmp3");
    let out = compare(&url, &out_dir, &["alpha-2", "beta", "alpha-1"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (header, rows) = read_csv(&out_dir.join("compare.csv"));
    let ids: Vec<&str> = rows.iter().map(|r| r.get(0).unwrap()).collect();
    assert_eq!(ids, ["alpha-2", "beta", "alpha"]);
    assert_figures(&stdout, &rows, &header, "alpha", &a1);
    assert_figures(&stdout, &rows, &header, "beta", &b);
    assert_png(&out_dir.join("compare_equity.png"));

    // `alpha` (a name) is alpha-2 again: named twice, nothing written.
    let dup_dir = tmp.path().join("dup");
    let out = compare(&url, &dup_dir, &["alpha-2", "alpha"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("named twice"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dup_dir.exists());
}

#[test]
fn compare_errors_are_clear_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("ledger.db");
    let url = db.display().to_string();
    let reports = tmp.path().join("reports");
    run(
        &manifest(tmp.path(), "gamma", "trend-follower", "50000"),
        &url,
        &reports,
    );
    run(
        &manifest(tmp.path(), "delta", "fast-sma", "20000"),
        &url,
        &reports,
    );
    let out_dir = tmp.path().join("cmp");
    let fails = |args: &[&str], ledger: &str, want: &[&str]| {
        let out = compare(ledger, &out_dir, args);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        for w in want {
            assert!(err.contains(w), "{args:?}: stderr lacks {w:?}:\n{err}");
        }
        assert!(!out_dir.exists(), "{args:?} wrote {}", out_dir.display());
    };
    fails(&["gamma"], &url, &["2 to 20", "got 1"]);
    fails(&[], &url, &["2 to 20", "got 0"]);
    let many: Vec<String> = (0..21).map(|i| format!("s{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    fails(&many, &url, &["2 to 20", "got 21"]);
    fails(
        &["gamma", "nope"],
        &url,
        &["no session \"nope\"", "known sessions:", "gamma", "delta"],
    );
    fails(&["gamma", "gamma"], &url, &["named twice"]);
    let missing = tmp.path().join("missing.db");
    fails(
        &["gamma", "delta"],
        missing.to_str().unwrap(),
        &["cannot open ledger", "no such file"],
    );
    assert!(!missing.exists(), "a missing ledger was created");
    // A PostgreSQL server that is not there.
    fails(
        &["gamma", "delta"],
        "postgres://bot:secret@127.0.0.1:1/ledger",
        &["127.0.0.1"],
    );
}

#[test]
fn compare_reads_a_postgresql_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let url = postgres()
        .create_database("compare")
        .expect("create a test database");
    let reports = tmp.path().join("reports");
    run(
        &manifest(tmp.path(), "pg-a", "trend-follower", "50000"),
        &url,
        &reports,
    );
    run(
        &manifest(tmp.path(), "pg-b", "fast-sma", "20000"),
        &url,
        &reports,
    );
    let out_dir = tmp.path().join("cmp");
    let out = compare(&url, &out_dir, &["pg-a", "pg-b"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (header, rows) = read_csv(&out_dir.join("compare.csv"));
    assert_figures(&stdout, &rows, &header, "pg-a", &summary(&reports, "pg-a"));
    assert_figures(&stdout, &rows, &header, "pg-b", &summary(&reports, "pg-b"));
    assert_png(&out_dir.join("compare_equity.png"));
}

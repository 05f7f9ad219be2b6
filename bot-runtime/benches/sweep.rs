//! Throughput of `bot-runtime sweep` against single `backtest` runs.
//!
//! ```text
//! cargo bench -p bot-runtime --bench sweep
//! ```
//!
//! Input: the 1,026,720-candle file of the engine benchmark (written once
//! to `target/bench-data/`), strategy `examples/sma-parity.yaml`. Reported
//! (medians of 3 whole processes; no assertion — machines are shared and
//! noisy):
//! 1. one `bot-runtime backtest` (validate + stream the CSV, engine, SQLite
//!    ledger, report files): wall time and candles/s;
//! 2. `bot-runtime sweep` of 8 variants (fastPeriod 5, 10, 15, 20 ×
//!    stopLossPct 1, 2) with `--jobs 1` and `--jobs 2`: wall time,
//!    variant-candles/s (8 × 1,026,720 / wall time) and peak RSS.

use std::process::{Command, Stdio};

mod common;

use common::{million_candle_file, repo, run_measured};

const GRID: &str = "signals.smaCrossover.fastPeriod=5,10,15,20,risk.stopLossPct=1,2";
const VARIANTS: f64 = 8.0;
const CANDLES: f64 = 1_026_720.0;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn base(cmd: &str, file: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bot-runtime"));
    c.arg(cmd)
        .arg("--data")
        .arg(format!("BTC-PERP={}", file.display()))
        .args(["--quote-volume", "BTC-PERP", "--strategy"])
        .arg(repo().join("examples/sma-parity.yaml"))
        .args(["--no-progress"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("sweep benchmark: run with `cargo bench -p bot-runtime --bench sweep`");
        return;
    }
    let file = million_candle_file();
    let work = repo().join("target/bench-data/sweep");
    let mut times = Vec::new();
    for i in 0..3 {
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        let (secs, _) = run_measured(
            base("backtest", &file)
                .arg("--ledger")
                .arg(work.join("ledger.db"))
                .arg("--report-dir")
                .arg(work.join("reports")),
        );
        println!("  backtest run {i}: {secs:.3} s");
        times.push(secs);
    }
    let single = median(&mut times);
    println!(
        "one backtest process: median {single:.3} s = {:.2} M candles/s",
        CANDLES / single / 1e6
    );
    for jobs in ["1", "2"] {
        let mut times = Vec::new();
        let mut rss = Vec::new();
        for i in 0..3 {
            let _ = std::fs::remove_dir_all(&work);
            let (secs, kib) = run_measured(
                base("sweep", &file)
                    .args(["--grid", GRID, "--jobs", jobs, "--out"])
                    .arg(&work),
            );
            println!(
                "  sweep --jobs {jobs} run {i}: {secs:.3} s, peak RSS {:.1} MiB",
                kib as f64 / 1024.0
            );
            times.push(secs);
            rss.push(kib as f64 / 1024.0);
        }
        let secs = median(&mut times);
        println!(
            "sweep of 8 variants, --jobs {jobs}: median {secs:.3} s = {:.2} M variant-candles/s \
             ({:.2}× one backtest's candles/s), median peak RSS {:.1} MiB",
            VARIANTS * CANDLES / secs / 1e6,
            (VARIANTS * CANDLES / secs) / (CANDLES / single),
            median(&mut rss)
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}

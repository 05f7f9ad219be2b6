//! What durability costs: the whole `bot-runtime backtest` process on the
//! 1,026,720-candle file with the SQLite ledger and with PostgreSQL, and the
//! time a runtime killed at 90 % of that file takes to resume and finish.
//!
//! ```text
//! cargo bench -p bot-runtime --bench durability
//! ```
//!
//! Input and strategy as in the `engine` benchmark (the FTX BTC-PERP month
//! repeated 23 times, SMA(10/30), `examples/sma-parity.yaml`; the file is
//! written by `cargo bench --bench engine` or by this benchmark). Medians of
//! `RUNS` runs, with the range; nothing is asserted (shared, noisy machines).
//!
//! 1. Whole process, SQLite: validation scan + streaming parse, engine,
//!    SQLite ledger with a checkpoint per batch, report from committed
//!    batches.
//! 2. Whole process, PostgreSQL: the same into a throw-away PostgreSQL server
//!    on loopback (Debian's binaries via `paperbot-testkit`), durable
//!    (`fsync=on`, `synchronous_commit=on`).
//! 3. Resume after `kill -9` at 90 %: one run is killed once its ledger has
//!    committed 90 % of the market time; the killed ledger is copied, and
//!    `backtest --resume` is timed on a fresh copy each run. The resumed
//!    process reads the checkpoint, rebuilds the report from the ledger's
//!    rows, skips the 90 % of the feed already traded (parsing it, without
//!    the engine), trades the last 10 % and finishes.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bot_runtime::ledger::{self, LedgerStore};
use paperbot_testkit::PostgresServer;

const RUNS: usize = 5;

mod common;

use common::{million_candle_file, repo};

fn backtest(file: &Path, ledger: &str, reports: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bot-runtime"));
    c.args(["backtest", "--data"])
        .arg(format!("BTC-PERP={}", file.display()))
        .args(["--quote-volume", "BTC-PERP", "--strategy"])
        .arg(repo().join("examples/sma-parity.yaml"))
        .args(["--no-progress", "--name", "bench", "--ledger", ledger])
        .arg("--report-dir")
        .arg(reports)
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .env_remove("PAPERBOT_LEDGER")
        .stdout(Stdio::null());
    c
}

fn run_ok(cmd: &mut Command) -> f64 {
    let t = Instant::now();
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .expect("spawn bot-runtime");
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "bot-runtime failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    secs
}

fn report(what: &str, mut v: Vec<f64>) {
    v.sort_by(f64::total_cmp);
    println!(
        "{what}: median {:.3} s (runs {:.3}–{:.3})",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1]
    );
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Fraction (0–1) of the file's market time the ledger `l` has committed.
fn committed_fraction(l: &ledger::Ledger, first: i64, last: i64) -> f64 {
    block_on(async {
        let at = l
            .session("bench")
            .await
            .ok()
            .flatten()
            .and_then(|s| s.last_batch_at);
        at.map_or(0.0, |t| (t.millis() - first) as f64 / (last - first) as f64)
    })
}

fn whole_process(file: &Path, work: &Path, url_for: &mut dyn FnMut(usize) -> String, what: &str) {
    let mut times = Vec::new();
    for i in 0..RUNS {
        let reports = work.join(format!("reports-{i}"));
        let url = url_for(i);
        times.push(run_ok(&mut backtest(file, &url, &reports)));
    }
    report(what, times);
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("durability benchmark: run with `cargo bench -p bot-runtime --bench durability`");
        return;
    }
    let file = million_candle_file();
    let scan = bot_runtime::market::csv::scan_candle_file(&file, None).unwrap();
    println!("input: {} ({} candles)", file.display(), scan.rows);
    let work = tempfile::tempdir().unwrap();

    // 1. SQLite.
    let dir = work.path().to_path_buf();
    whole_process(
        &file,
        work.path(),
        &mut |i| dir.join(format!("sqlite-{i}.db")).display().to_string(),
        "whole backtest process, SQLite ledger",
    );

    // 2. PostgreSQL, durable.
    let pg = PostgresServer::start_with(&["fsync=on", "synchronous_commit=on"])
        .expect("start PostgreSQL");
    whole_process(
        &file,
        work.path(),
        &mut |i| pg.create_database(&format!("bench_{i}")).unwrap(),
        "whole backtest process, PostgreSQL ledger (fsync on)",
    );

    // 3. Resume after kill -9 at 90 %.
    let killed = work.path().join("killed");
    std::fs::create_dir_all(&killed).unwrap();
    let url = killed.join("ledger.db").display().to_string();
    let mut child = backtest(&file, &url, &killed.join("reports"))
        .args(["--batch-candles", "8192"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (first, last) = (scan.first.millis(), scan.last.millis());
    // One reader handle, opened once the runtime has created the ledger.
    let reader = loop {
        assert!(child.try_wait().unwrap().is_none(), "finished before 90 %");
        if let Ok(l) = block_on(ledger::open(&url))
            && block_on(l.session("bench")).ok().flatten().is_some()
        {
            break l;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut at = 0.0;
    while at < 0.9 {
        assert!(child.try_wait().unwrap().is_none(), "finished before 90 %");
        at = committed_fraction(&reader, first, last);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    block_on(reader.close());
    println!("killed at {:.1} % of the market time committed", at * 100.0);
    let mut times = Vec::new();
    for i in 0..=RUNS {
        let copy = work.path().join(format!("resume-{i}"));
        std::fs::create_dir_all(&copy).unwrap();
        for f in std::fs::read_dir(&killed).unwrap() {
            let p = f.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, copy.join(p.file_name().unwrap())).unwrap();
            }
        }
        let url = copy.join("ledger.db").display().to_string();
        let mut cmd = backtest(&file, &url, &copy.join("reports"));
        cmd.arg("--resume");
        if i == 0 {
            // Once: where the time goes (the runtime logs it at info level).
            cmd.env("RUST_LOG", "info");
            let out = cmd.output().unwrap();
            let log = String::from_utf8_lossy(&out.stderr);
            if let Some(line) = log.lines().find(|l| l.contains("resuming from")) {
                println!("  {line}");
            }
            continue;
        }
        times.push(run_ok(&mut cmd));
    }
    report(
        "resume after kill -9 at 90 % (whole resumed process)",
        times,
    );
}

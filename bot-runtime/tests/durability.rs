//! A session survives anything: `kill -9` at random moments, SIGTERM (paced
//! and unpaced), a PostgreSQL outage, a second runtime of the same session,
//! and a full disk. Every scenario runs the real `bot-runtime` binary against
//! a real SQLite file or a real PostgreSQL server, and ends by comparing the
//! ledger (and the report) with an uninterrupted run of the same inputs.

mod common;

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use bot_runtime::ledger::{self, LedgerStore};
use paperbot_testkit::PostgresServer;
use rand::{RngExt as _, SeedableRng as _};
use rust_decimal::Decimal;

use common::{
    bin, example,
    serve::{block_on, dump, records},
    text,
};

/// One PostgreSQL server for every test of this binary (a database each).
fn postgres() -> &'static PostgresServer {
    static SERVER: OnceLock<PostgresServer> = OnceLock::new();
    SERVER.get_or_init(|| PostgresServer::start().expect("start a PostgreSQL server for the tests"))
}

/// The quickstart session with every cost and every source of randomness on
/// (fees, impact slippage, gas, latency with jitter, failures, stops,
/// trailing stops, max hold, breakers incl. the price-feed breaker on the
/// data's 7-hour outage, autopilot), recording holds, under the name `name`,
/// with absolute data paths so the manifest can live anywhere.
fn manifest(dir: &Path, name: &str) -> PathBuf {
    let quickstart = std::fs::read_to_string(example("quickstart.yaml")).unwrap();
    let data = std::fs::canonicalize(example("data")).unwrap();
    let text = quickstart
        .replace("name: quickstart", &format!("name: {name}"))
        .replace("path: data/", &format!("path: {}/", data.display()))
        .replace("    seed: 42", "    seed: 42\n    gasCost: \"0.35\"")
        .replace(
            "  desiredState: Running",
            "  desiredState: Running\n  recordHolds: true",
        );
    assert!(text.contains("gasCost"), "quickstart.yaml changed shape");
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// [`manifest`] on the quickstart data repeated `copies` times back to back
/// (each copy shifted by 3 days; the files span 2.7 days with their 7-hour
/// gap), written into `dir`: a session long enough that 50 short-lived runs
/// cannot finish it, however fast the machine.
fn long_manifest(dir: &Path, name: &str, copies: i64) -> PathBuf {
    const SHIFT_MS: i64 = 3 * 86_400_000;
    let m = manifest(dir, name);
    let data = std::fs::canonicalize(example("data")).unwrap();
    let mut text = std::fs::read_to_string(&m).unwrap();
    for file in [
        "BTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv",
        "LTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv",
    ] {
        let src = std::fs::read_to_string(data.join(file)).unwrap();
        let mut out = String::from("timestamp,open,high,low,close,volume\n");
        for k in 0..copies {
            for line in src.lines().skip(1) {
                let (ts, rest) = line.split_once(',').unwrap();
                let t = chrono::DateTime::parse_from_rfc3339(ts)
                    .unwrap()
                    .timestamp_millis()
                    + k * SHIFT_MS;
                out.push_str(&bot_runtime::types::Timestamp(t).to_rfc3339());
                out.push(',');
                out.push_str(rest);
                out.push('\n');
            }
        }
        let long = dir.join(format!("{copies}x-{file}"));
        std::fs::write(&long, out).unwrap();
        text = text.replace(
            &data.join(file).display().to_string(),
            &long.display().to_string(),
        );
    }
    std::fs::write(&m, text).unwrap();
    m
}

/// A ledger for a test: a SQLite file in `dir`, or a fresh PostgreSQL database.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

fn ledger_url(backend: Backend, dir: &Path, name: &str) -> String {
    match backend {
        Backend::Sqlite => dir.join(format!("{name}.db")).display().to_string(),
        Backend::Postgres => postgres()
            .create_database(name)
            .expect("create a test database"),
    }
}

fn run_args(cmd: &mut Command, manifest: &Path, ledger: &str, reports: &Path) {
    cmd.args(["run", "--no-progress", "-f"])
        .arg(manifest)
        .arg("--ledger")
        .arg(ledger)
        .arg("--report-dir")
        .arg(reports);
}

/// Run to the end and insist on success.
fn run_to_end(cmd: &mut Command) -> String {
    let out = cmd.output().expect("bot-runtime starts");
    assert!(
        out.status.success(),
        "bot-runtime failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn session_info(url: &str, id: &str) -> ledger::SessionInfo {
    block_on(async {
        let l = ledger::open(url).await.expect("open ledger");
        let s = l.session(id).await.expect("read").expect("session stored");
        l.close().await;
        s
    })
}

/// Compare two dumps line by line: (rows compared, mismatching rows).
fn compare_dumps(reference: &str, got: &str) -> (usize, usize) {
    let a: Vec<&str> = reference.lines().collect();
    let b: Vec<&str> = got.lines().collect();
    let rows = a.len().max(b.len());
    let mismatches = (0..rows).filter(|&i| a.get(i) != b.get(i)).count();
    (rows, mismatches)
}

fn assert_same_ledger(reference: &str, got: &str, what: &str) {
    let (rows, mismatches) = compare_dumps(reference, got);
    if mismatches > 0 {
        let first = reference
            .lines()
            .zip(got.lines())
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("reference: {a}\n      got: {b}"))
            .unwrap_or_else(|| "one dump is a prefix of the other".into());
        panic!("{what}: {mismatches} of {rows} ledger rows differ; first:\n{first}");
    }
    assert!(
        rows > 1000,
        "{what}: only {rows} rows: the scenario is too small"
    );
}

/// The accounting invariant at every stored snapshot, exactly:
/// `cash + position value = equity = initial cash + realized + unrealized`.
fn assert_invariant_at_every_snapshot(url: &str, id: &str) -> usize {
    let info = session_info(url, id);
    let recs = records(url, id);
    assert!(recs.snapshots.len() > 50, "too few snapshots");
    for s in &recs.snapshots {
        assert_eq!(s.cash + s.position_value, s.equity, "at {}", s.time);
        assert_eq!(
            info.initial_cash + s.realized_pnl + s.unrealized_pnl,
            s.equity,
            "at {}",
            s.time
        );
    }
    let realized: Decimal = recs.round_trips.iter().map(|r| r.pnl).sum();
    let last = recs.snapshots.last().unwrap();
    assert_eq!(
        realized, last.realized_pnl,
        "realized P&L = sum of round trips"
    );
    recs.snapshots.len()
}

/// Every report file of `a` equals `b`'s, byte for byte: the CSVs,
/// summary.json, and the charts and report.html (a resumed run folds the
/// candles it skipped into the price series, so its charts are the same).
fn assert_same_report(a: &Path, b: &Path) {
    let charts = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("price_") && n.ends_with(".png"))
            .collect();
        v.sort();
        v
    };
    let prices = charts(a);
    assert!(!prices.is_empty(), "no price chart in {}", a.display());
    assert_eq!(
        prices,
        charts(b),
        "price charts of {} and {}",
        a.display(),
        b.display()
    );
    let mut files: Vec<String> = ["equity.png", "report.html"].map(String::from).to_vec();
    files.extend(prices);
    assert_same_files(a, b, &files);
    assert_same_tables(a, b);
}

/// The CSVs and summary.json of `a` equal `b`'s, byte for byte.
fn assert_same_tables(a: &Path, b: &Path) {
    let files = [
        "summary.json",
        "trades.csv",
        "round_trips.csv",
        "decisions.csv",
        "by_symbol.csv",
        "by_exit_reason.csv",
        "daily.csv",
    ]
    .map(String::from);
    assert_same_files(a, b, &files);
}

fn assert_same_files(a: &Path, b: &Path, files: &[String]) {
    for f in files {
        let x = std::fs::read(a.join(f)).unwrap_or_else(|e| panic!("{}: {e}", a.join(f).display()));
        let y = std::fs::read(b.join(f)).unwrap_or_else(|e| panic!("{}: {e}", b.join(f).display()));
        assert!(
            x == y,
            "report file {f} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

/// The uninterrupted reference run of session `name` (SQLite): its dump and
/// its report directory.
fn reference(dir: &Path, name: &str, m: &Path) -> (String, PathBuf) {
    let url = ledger_url(Backend::Sqlite, dir, &format!("{name}-reference"));
    let reports = dir.join("reference-reports");
    let mut cmd = bin();
    run_args(&mut cmd, m, &url, &reports);
    run_to_end(&mut cmd);
    (dump(&url, name), reports.join(name))
}

/// One scenario: a temp dir, the session's manifest, a ledger on `backend`
/// and a report dir; `want` and `want_reports` are the uninterrupted
/// reference run's dump and report directory.
struct Scenario {
    tmp: tempfile::TempDir,
    name: &'static str,
    manifest: PathBuf,
    url: String,
    reports: PathBuf,
    want: String,
    want_reports: PathBuf,
}

impl Scenario {
    fn new(backend: Backend, name: &'static str) -> Self {
        Self::with_copies(backend, name, 1)
    }

    /// On the quickstart data repeated `copies` times ([`long_manifest`]).
    fn with_copies(backend: Backend, name: &'static str, copies: i64) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let manifest = if copies == 1 {
            manifest(tmp.path(), name)
        } else {
            long_manifest(tmp.path(), name, copies)
        };
        let (want, want_reports) = reference(tmp.path(), name, &manifest);
        let db = format!("{name}_{backend:?}")
            .to_lowercase()
            .replace('-', "_");
        let url = ledger_url(backend, tmp.path(), &db);
        let reports = tmp.path().join("reports");
        Self {
            tmp,
            name,
            manifest,
            url,
            reports,
            want,
            want_reports,
        }
    }

    /// `bot-runtime run` of this scenario's session with `args`.
    fn run(&self, args: &[&str]) -> Command {
        let mut cmd = bin();
        run_args(&mut cmd, &self.manifest, &self.url, &self.reports);
        cmd.args(args);
        cmd
    }

    /// Resume to the end and compare the ledger with the reference.
    fn resume_and_compare(&self, what: &str) {
        run_to_end(&mut self.run(&["--resume"]));
        assert_same_ledger(&self.want, &dump(&self.url, self.name), what);
    }
}

/// Wait for a child for at most `limit`; kill it and fail if it is still running.
fn wait_within(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

/// Start `cmd` (output discarded) and `kill -9` it after `after`: a crashed
/// runtime that leaves its session unfinished.
fn kill_9_after(cmd: &mut Command, after: Duration) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before its kill"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Paced at this multiple of real time, the 3-day session takes about 15 s.
const PACED_SPEED: &str = "17280";

/// kill -9 at random moments at least 50 times, then resume to the end; the
/// ledger equals the uninterrupted run's, row for row, and so does the report.
fn crash_test(backend: Backend) {
    // Four copies of the data (31,096 candles): 50 short runs cannot finish it.
    let sc = Scenario::with_copies(backend, "crash", 4);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut kills = 0;
    let mut attempts = 0;
    while kills < 50 {
        attempts += 1;
        assert!(attempts < 80, "the session ended after only {kills} kills");
        // Two runs in three are paced (a commit per candle); the others run
        // as fast as they can with small batches.
        let paced = attempts % 3 != 0;
        let mut args = vec!["--resume", "--batch-candles", "64"];
        if paced {
            args.extend(["--speed", PACED_SPEED]);
        }
        let mut child = sc
            .run(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let delay_ms = if paced {
            rng.random_range(50..400)
        } else {
            rng.random_range(5..120)
        };
        std::thread::sleep(Duration::from_millis(delay_ms));
        match child.try_wait().unwrap() {
            None => {
                child.kill().unwrap(); // SIGKILL: no handler runs
                child.wait().unwrap();
                kills += 1;
            }
            Some(status) => {
                let err = stderr_of(&mut child);
                panic!("run {attempts} ended by itself before its kill ({status}):\n{err}");
            }
        }
    }
    let info = session_info(&sc.url, sc.name);
    assert!(
        info.is_unfinished(),
        "killed session is resumable: {info:?}"
    );
    // The last run resumes and finishes.
    let stdout = run_to_end(&mut sc.run(&["--resume"]));
    assert!(stdout.contains("(resumed)"), "{stdout}");
    let got = dump(&sc.url, sc.name);
    let (rows, mismatches) = compare_dumps(&sc.want, &got);
    let snapshots = assert_invariant_at_every_snapshot(&sc.url, sc.name);
    println!(
        "crash test ({backend:?}): kills {kills}, ledger rows compared {rows}, mismatches \
         {mismatches}, snapshots checked {snapshots}"
    );
    assert_same_ledger(&sc.want, &got, "ledger after 50 kills and resumes");
    assert_same_report(&sc.want_reports, &sc.reports.join(sc.name));
}

#[test]
fn kill_9_fifty_times_then_resume_equals_an_uninterrupted_run_sqlite() {
    crash_test(Backend::Sqlite);
}

#[test]
fn kill_9_fifty_times_then_resume_equals_an_uninterrupted_run_postgres() {
    crash_test(Backend::Postgres);
}

/// SIGTERM mid-run: exit 0 within 5 s, the session is `Interrupted` and
/// resumable, the report holds exactly what the ledger holds; resuming
/// finishes it identically to an uninterrupted run.
fn sigterm_test(paced: bool) {
    let sc = Scenario::new(
        Backend::Sqlite,
        if paced { "term-paced" } else { "term-fast" },
    );
    // Unpaced, tiny batches and a slow debug build keep the run going for a
    // while; the signal comes once the first commits are in.
    let mut args = vec!["--batch-candles", "16"];
    if paced {
        args.extend(["--speed", PACED_SPEED]);
    }
    let mut child = sc
        .run(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(if paced { 1500 } else { 150 }));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before SIGTERM"
    );
    signal(&child, libc::SIGTERM);
    let sent = Instant::now();
    let status = wait_within(&mut child, Duration::from_secs(5), "after SIGTERM");
    let took = sent.elapsed();
    let err = stderr_of(&mut child);
    assert!(status.success(), "exit after SIGTERM: {status}\n{err}");
    println!(
        "SIGTERM ({}): exit 0 after {took:?}",
        if paced { "paced" } else { "unpaced" }
    );
    let info = session_info(&sc.url, sc.name);
    assert_eq!(info.phase, "Interrupted", "{info:?}");
    assert!(info.is_unfinished());
    // The report is what the ledger committed: same trades, same decisions.
    let recs = records(&sc.url, sc.name);
    let dir = sc.reports.join(sc.name);
    let csv_rows = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .unwrap()
            .lines()
            .count()
            - 1
    };
    assert_eq!(csv_rows("trades.csv"), recs.trades.len());
    assert_eq!(csv_rows("decisions.csv"), recs.decisions.len());
    assert_eq!(csv_rows("round_trips.csv"), recs.round_trips.len());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["phase"], "Interrupted");
    assert!(
        recs.decisions.len() < sc.want.lines().count(),
        "the run was interrupted before its end"
    );
    // Resume: the same command with --resume finishes it exactly.
    sc.resume_and_compare("ledger after SIGTERM and resume");
}

#[test]
fn sigterm_unpaced_exits_0_quickly_and_resumes_exactly() {
    sigterm_test(false);
}

#[test]
fn sigterm_paced_exits_0_quickly_and_resumes_exactly() {
    sigterm_test(true);
}

/// PostgreSQL stopped for 30 s mid-run: the runtime pauses trading and says
/// why, retries with backoff, and carries on; nothing lost or duplicated.
#[test]
fn postgres_outage_of_30_s_pauses_trading_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let name = "outage";
    let (want, _) = reference(tmp.path(), name, &manifest(tmp.path(), name));
    let mut server = PostgresServer::start().expect("a PostgreSQL server of its own");
    let url = server.create_database("outage").expect("database");
    let m = manifest(tmp.path(), name);
    let reports = tmp.path().join("reports");
    let mut cmd = bin();
    run_args(&mut cmd, &m, &url, &reports);
    cmd.args(["--speed", PACED_SPEED]);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before the outage"
    );
    let before = session_info(&url, name).trades;
    server.stop().expect("stop PostgreSQL");
    std::thread::sleep(Duration::from_secs(30));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the runtime gave up during the outage"
    );
    server.start_again().expect("start PostgreSQL again");
    let status = wait_within(&mut child, Duration::from_secs(120), "after the outage");
    let err = stderr_of(&mut child);
    assert!(status.success(), "{status}\n{err}");
    assert!(
        err.contains("ledger unavailable: trading paused"),
        "the reason is visible:\n{err}"
    );
    assert!(err.contains("ledger is back"), "{err}");
    let info = session_info(&url, name);
    assert_eq!(info.phase, "Completed");
    assert!(info.trades > before);
    // PostgreSQL's dump equals the uninterrupted SQLite run's, row for row.
    assert_same_ledger(&want, &dump(&url, name), "ledger after a 30 s outage");
}

/// Two runtimes of one session against one ledger: exactly one trades; the
/// other is refused naming the holder, and the ledger equals an
/// uninterrupted run's.
fn fencing_test(backend: Backend) {
    let sc = Scenario::new(backend, "fenced");
    let mut first = sc
        .run(&["--resume", "--speed", PACED_SPEED])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(first.try_wait().unwrap().is_none());
    let trades_before = session_info(&sc.url, sc.name).trades;
    let other_reports = sc.tmp.path().join("other-reports");
    let mut second = bin();
    run_args(&mut second, &sc.manifest, &sc.url, &other_reports);
    second.args(["--resume"]);
    let out = second.output().unwrap();
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "the second runtime must refuse:\n{err}"
    );
    assert!(
        err.contains("being written by another live runtime")
            && err.contains(&format!("pid {}", first.id())),
        "the refusal names the holder:\n{err}"
    );
    assert!(
        !other_reports.join(sc.name).join("summary.json").exists(),
        "the refused runtime wrote no report"
    );
    let status = wait_within(&mut first, Duration::from_secs(60), "the first runtime");
    assert!(status.success(), "{}", stderr_of(&mut first));
    assert!(session_info(&sc.url, sc.name).trades > trades_before);
    assert_same_ledger(
        &sc.want,
        &dump(&sc.url, sc.name),
        "ledger of the fenced session",
    );
}

#[test]
fn a_second_runtime_of_a_session_is_fenced_out_sqlite() {
    fencing_test(Backend::Sqlite);
}

#[test]
fn a_second_runtime_of_a_session_is_fenced_out_postgres() {
    fencing_test(Backend::Postgres);
}

/// `sessions list|show|close` and `report`: an orphan of a killed run is
/// listed as unfinished, closed explicitly, and any session's report is
/// regenerated from the ledger alone, identical to the one the run wrote.
#[test]
fn sessions_commands_and_report_regeneration_work_from_the_ledger_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manifest(tmp.path(), "orphan");
    let url = ledger_url(Backend::Sqlite, tmp.path(), "sessions");
    let reports = tmp.path().join("reports");
    // A completed session, then a killed one.
    let done = manifest(tmp.path(), "done");
    let mut cmd = bin();
    run_args(&mut cmd, &done, &url, &reports);
    run_to_end(&mut cmd);
    let mut cmd = bin();
    run_args(&mut cmd, &m, &url, &reports);
    cmd.args(["--speed", PACED_SPEED]);
    kill_9_after(&mut cmd, Duration::from_millis(1500));

    let sessions = |args: &[&str]| {
        let out = bin()
            .arg("sessions")
            .args(args)
            .arg("--ledger")
            .arg(&url)
            .output()
            .unwrap();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let (ok, list, err) = sessions(&["list"]);
    assert!(ok, "{err}");
    for want in ["orphan", "Running", "done", "Completed", "1 unfinished"] {
        assert!(
            list.contains(want),
            "`sessions list` lacks {want:?}:\n{list}"
        );
    }
    let (ok, show, err) = sessions(&["show", "done"]);
    assert!(ok, "{err}");
    assert!(
        show.contains("phase:         Completed") && show.contains("\"round_trips\""),
        "{show}"
    );

    // The completed session's report, regenerated from the ledger, equals the run's.
    let regenerated = tmp.path().join("regenerated");
    let out = bin()
        .args(["report", "--session", "done", "--out"])
        .arg(&regenerated)
        .arg("--ledger")
        .arg(&url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Without the candles, the regenerated charts draw the recorded prices
    // (so their pixels differ); every table is the same.
    assert_same_tables(&reports.join("done"), &regenerated);
    for f in ["equity.png", "report.html"] {
        assert!(regenerated.join(f).is_file(), "{f} not regenerated");
    }
    // The regenerated summary has the identity and the benchmark (carried in
    // the checkpoint), not only the totals.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(regenerated.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["session_id"], "done");
    assert_eq!(summary["session_name"], "done");
    assert!(
        summary["strategy"].as_str().is_some_and(|s| !s.is_empty()),
        "{summary}"
    );
    assert!(
        summary["symbols"].as_array().is_some_and(|s| !s.is_empty()),
        "{summary}"
    );
    assert!(summary["benchmark_return_pct"].is_string(), "{summary}");
    assert!(summary["excess_return_pct"].is_string(), "{summary}");

    // Close the orphan; it is Stopped, and cannot be closed or resumed again.
    let (ok, closed, err) = sessions(&["close", "orphan"]);
    assert!(ok, "{err}");
    assert!(
        closed.contains("closed session \"orphan\" as Stopped"),
        "{closed}"
    );
    let info = session_info(&url, "orphan");
    assert_eq!(info.phase, "Stopped");
    assert!(!info.is_unfinished());
    let (ok, _, err) = sessions(&["close", "orphan"]);
    assert!(!ok && err.contains("already ended"), "{err}");
    let (ok, _, err) = sessions(&["show", "nope"]);
    assert!(!ok && err.contains("no session \"nope\""), "{err}");
}

/// After a normal run the SQLite main file alone holds everything (the WAL
/// was checkpointed and the pool closed), and `started_at` is the first
/// candle's time, not the time of the first commit.
#[test]
fn the_sqlite_file_alone_is_complete_and_started_at_is_the_first_candle() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manifest(tmp.path(), "whole");
    let url = ledger_url(Backend::Sqlite, tmp.path(), "whole");
    let mut cmd = bin();
    run_args(&mut cmd, &m, &url, &tmp.path().join("reports"));
    run_to_end(&mut cmd);
    let copy = tmp.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(&url, copy.join("whole.db")).unwrap();
    assert!(!copy.join("whole.db-wal").exists());
    let copied = copy.join("whole.db").display().to_string();
    let a = session_info(&url, "whole");
    let b = session_info(&copied, "whole");
    assert!(a.trades > 0);
    assert_eq!(a, b, "the main file alone holds the whole session");
    assert_eq!(a.started_at.to_rfc3339(), "2018-04-04T00:00:00Z");
}

/// Bad input gets a clear error and leaves the sessions already in the
/// ledger exactly as they were.
#[test]
fn bad_inputs_give_clear_errors_and_leave_earlier_sessions_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let url = ledger_url(Backend::Sqlite, tmp.path(), "intact");
    let reports = tmp.path().join("reports");
    let good = manifest(tmp.path(), "good");
    let mut cmd = bin();
    run_args(&mut cmd, &good, &url, &reports);
    run_to_end(&mut cmd);
    let before = dump(&url, "good");

    let fails = |cmd: &mut Command, want: &[&str]| {
        let out = cmd.output().unwrap();
        let err = text(&out.stderr);
        assert!(!out.status.success(), "expected a failure:\n{err}");
        for w in want {
            assert!(err.contains(w), "error lacks {w:?}:\n{err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    };

    // A 28-significant-digit price: refused at validation with file:line.
    let data = tmp.path().join("big");
    std::fs::create_dir(&data).unwrap();
    let src = std::fs::read_to_string(
        example("data").join("BTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv"),
    )
    .unwrap();
    let mut lines: Vec<String> = src.lines().map(str::to_owned).collect();
    lines[3] = "2018-04-04T00:02:00Z,7405,1234567890123456789012345678,7405,7405,1".into();
    let csv = data.join("BTC-USD_1m.csv");
    std::fs::write(&csv, lines.join("\n") + "\n").unwrap();
    let big = std::fs::read_to_string(&good)
        .unwrap()
        .replace("name: good", "name: big")
        .replace(
            &std::fs::canonicalize(example("data"))
                .unwrap()
                .join("BTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv")
                .display()
                .to_string(),
            &csv.display().to_string(),
        );
    let big_manifest = tmp.path().join("big.yaml");
    std::fs::write(&big_manifest, big).unwrap();
    let mut cmd = bin();
    run_args(&mut cmd, &big_manifest, &url, &reports);
    fails(
        &mut cmd,
        &["BTC-USD_1m.csv:4", "high", "outside the accepted range"],
    );

    // --speed that no clock can follow.
    let mut cmd = bin();
    run_args(&mut cmd, &good, &url, &reports);
    cmd.args(["--speed", "1e-300"]);
    fails(&mut cmd, &["--speed"]);

    // A name that would escape the report directory.
    let mut cmd = bin();
    cmd.args([
        "backtest",
        "--no-progress",
        "--name",
        "../../x",
        "--strategy",
    ])
    .arg(&good)
    .arg("--data")
    .arg(example("data").join("BTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv"))
    .arg("--ledger")
    .arg(&url)
    .arg("--report-dir")
    .arg(&reports);
    fails(&mut cmd, &["../../x", "DNS-1123"]);
    assert!(!tmp.path().join("x").exists() && !reports.join("../../x").exists());

    assert_eq!(
        before,
        dump(&url, "good"),
        "the earlier session is untouched"
    );
    block_on(async {
        let l = ledger::open(&url).await.unwrap();
        let ids: Vec<String> = l
            .list_sessions()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, ["good"], "nothing else was recorded");
        l.close().await;
    });
}

/// A ledger on a full disk: trading stops at once, the runtime retries, then
/// gives up with a clear error; the session is never reported Completed and
/// the earlier session on the same disk is intact.
#[test]
fn a_full_disk_stops_trading_and_never_reports_completed() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    // A 4 MiB tmpfs: room for one short session, not for a full one.
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&disk)
        .status()
        .expect("run mount(8)");
    assert!(
        mounted.success(),
        "this test needs root to mount a small tmpfs as a full disk"
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(disk.clone());
    let url = disk.join("ledger.db").display().to_string();
    let reports = tmp.path().join("reports");
    // An earlier, short session fits.
    let short = std::fs::read_to_string(manifest(tmp.path(), "short"))
        .unwrap()
        .replace(
            "  recordHolds: true",
            "  recordHolds: false\n  stopAfter: \"2h\"",
        );
    let short_manifest = tmp.path().join("short2.yaml");
    std::fs::write(&short_manifest, short).unwrap();
    let mut cmd = bin();
    run_args(&mut cmd, &short_manifest, &url, &reports);
    run_to_end(&mut cmd);
    let before = dump(&url, "short");
    // Fill most of the rest of the disk, then run a long session.
    let free = {
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let path = std::ffi::CString::new(disk.display().to_string()).unwrap();
        // SAFETY: a valid NUL-terminated path and a zeroed out-parameter.
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
        st.f_bavail as u64 * st.f_frsize as u64
    };
    std::fs::write(
        disk.join("filler"),
        vec![0u8; (free.saturating_sub(256 * 1024)) as usize],
    )
    .unwrap();
    let long = manifest(tmp.path(), "long");
    let mut cmd = bin();
    run_args(&mut cmd, &long, &url, &reports);
    cmd.args(["--ledger-retry-timeout", "3s", "--batch-candles", "256"]);
    let out = cmd.output().unwrap();
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "a full disk must fail the run:\n{err}"
    );
    assert!(err.contains("ledger"), "{err}");
    assert!(err.contains("full") || err.contains("disk"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    std::fs::remove_file(disk.join("filler")).unwrap();
    assert_eq!(before, dump(&url, "short"), "the earlier session is intact");
    let info = session_info(&url, "long");
    assert!(info.is_unfinished(), "never Completed: {info:?}");
    let summary = std::fs::read_to_string(reports.join("long/summary.json")).unwrap_or_default();
    assert!(
        !summary.contains("\"Completed\""),
        "the report does not claim Completed"
    );
    // With room again, the session resumes and completes exactly.
    let (want, _) = reference(tmp.path(), "long", &long);
    let mut cmd = bin();
    run_args(&mut cmd, &long, &url, &reports);
    cmd.arg("--resume");
    run_to_end(&mut cmd);
    assert_same_ledger(
        &want,
        &dump(&url, "long"),
        "ledger after a full disk and resume",
    );
}

/// A second signal exits at once (status 130), and still nothing is lost:
/// every committed batch stays, and a resumed run finishes identically to an
/// uninterrupted one.
#[test]
fn a_second_signal_exits_at_once_and_loses_nothing() {
    let sc = Scenario::new(Backend::Sqlite, "twice");
    let mut child = sc
        .run(&["--speed", PACED_SPEED])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, libc::SIGINT);
    signal(&child, libc::SIGTERM);
    let status = wait_within(&mut child, Duration::from_secs(5), "after two signals");
    let err = stderr_of(&mut child);
    assert!(
        status.success() || status.code() == Some(130),
        "exit after two signals: {status}\n{err}"
    );
    assert!(session_info(&sc.url, sc.name).is_unfinished());
    sc.resume_and_compare("ledger after two signals and resume");
    // Resuming an ended session runs nothing again (a pod restarted after
    // the end does not start `twice-2`).
    let stdout = run_to_end(&mut sc.run(&["--resume"]));
    assert!(
        stdout.contains("already ended (Completed); nothing to resume"),
        "{stdout}"
    );
    block_on(async {
        let l = ledger::open(&sc.url).await.unwrap();
        assert_eq!(l.list_sessions().await.unwrap().len(), 1);
        l.close().await;
    });
}

/// A manifest of several sessions is validated in full — every session,
/// every data file, every row — before the first one trades: a bad last row
/// of the second session's file leaves the ledger without any session.
#[test]
fn every_session_of_a_manifest_is_validated_before_the_first_trades() {
    let tmp = tempfile::tempdir().unwrap();
    let first = std::fs::read_to_string(manifest(tmp.path(), "first")).unwrap();
    let src = std::fs::read_to_string(
        example("data").join("LTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv"),
    )
    .unwrap();
    let bad = tmp.path().join("LTC-USD_bad.csv");
    std::fs::write(
        &bad,
        format!("{src}2018-04-07T00:00:00Z,130,129,131,130,1\n"),
    )
    .unwrap();
    let rows = src.lines().count() + 1;
    let session = first
        .split("\n---\n")
        .find(|d| d.contains("kind: BotSession"))
        .unwrap()
        .replace("name: first", "name: second")
        .replace(
            &std::fs::canonicalize(example("data"))
                .unwrap()
                .join("LTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv")
                .display()
                .to_string(),
            &bad.display().to_string(),
        )
        .replace("allocation: \"50000\"", "allocation: \"10000\"");
    let both = tmp.path().join("both.yaml");
    std::fs::write(&both, format!("{first}\n---\n{session}")).unwrap();
    let url = ledger_url(Backend::Sqlite, tmp.path(), "both");
    let mut cmd = bin();
    run_args(&mut cmd, &both, &url, &tmp.path().join("reports"));
    let out = cmd.output().unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("BotSession \"second\"") && err.contains(&format!("LTC-USD_bad.csv:{rows}")),
        "the error names the session and the row:\n{err}"
    );
    assert!(
        !Path::new(&url).exists(),
        "nothing was recorded: no ledger was even created"
    );
    assert!(
        !tmp.path().join("reports").exists(),
        "no report was written"
    );
}

/// `--resume` refuses a manifest that no longer matches what the ledger
/// recorded, naming the first differing setting, and leaves the session as
/// it was.
#[test]
fn resume_refuses_a_changed_manifest_naming_the_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manifest(tmp.path(), "changed");
    let url = ledger_url(Backend::Sqlite, tmp.path(), "changed");
    let reports = tmp.path().join("reports");
    let mut cmd = bin();
    run_args(&mut cmd, &m, &url, &reports);
    cmd.args(["--speed", PACED_SPEED]);
    kill_9_after(&mut cmd, Duration::from_millis(1500));
    let before = dump(&url, "changed");
    let text_before = std::fs::read_to_string(&m).unwrap();
    let edited = text_before.replace("stopLossPct: \"1.5\"", "stopLossPct: \"1.7\"");
    assert_ne!(edited, text_before, "quickstart.yaml changed shape");
    std::fs::write(&m, edited).unwrap();
    let mut cmd = bin();
    run_args(&mut cmd, &m, &url, &reports);
    cmd.arg("--resume");
    let out = cmd.output().unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("cannot resume session \"changed\"")
            && err.contains("stopLossPct")
            && err.contains("\"1.5\" recorded, \"1.7\" now"),
        "{err}"
    );
    assert_eq!(before, dump(&url, "changed"), "the session is untouched");
    assert!(session_info(&url, "changed").is_unfinished());
}

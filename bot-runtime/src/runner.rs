//! Runs one session end to end: validates the data, feeds the engine from a
//! clock, and streams its records to the ledger (its own task, one
//! transaction per batch) and to the report.
//!
//! # Clock
//!
//! Replay runs as fast as the CPU allows, or paced: with `speed = 60`, one
//! minute of market time takes one second of wall time. The engine itself
//! only ever sees market time.
//!
//! # Durability
//!
//! Records are group-committed: the engine's batch is flushed every
//! [`RunOptions::batch_candles`] candles (and at the end, on Ctrl-C, on a halt
//! and on an error), each batch in one database transaction. A fill's trade
//! row, position and cash always land in the same transaction, so a crash
//! loses at most the last uncommitted batch as a whole, never part of a trade.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};
use paperbot_crds::MarketDataSource;
use tokio::sync::mpsc;

use crate::{
    analytics::{Analytics, Summary},
    config::SessionPlan,
    engine::{Engine, EngineConfig, Step},
    ledger::{
        LedgerError, LedgerStore, SqliteLedger,
        records::{LedgerBatch, SessionEnd, SessionRecord},
    },
    market::{
        csv::{CandleReader, DataError, scan_candle_file},
        merge::MergedFeed,
        simulated::{GbmParams, GbmSource},
    },
    report::{ReportFiles, ReportWriter},
    types::{Candle, Timestamp},
};

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Market-time speed-up for paced replay (`Some(60.0)` = 60× real time);
    /// `None` = as fast as possible.
    pub speed: Option<f64>,
    /// Directory for report files; the session's files go into a
    /// sub-directory named after the session id.
    pub report_dir: PathBuf,
    /// Ledger database: a SQLite file path or `sqlite::memory:`.
    pub ledger: String,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Flush the engine's records every this many candles.
    pub batch_candles: u64,
    /// Market time between snapshots, milliseconds.
    pub snapshot_interval_ms: i64,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            speed: None,
            report_dir: PathBuf::from("reports"),
            ledger: "paperbot.db".into(),
            progress: false,
            batch_candles: 8192,
            snapshot_interval_ms: 3_600_000,
        }
    }
}

/// A session that could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad market data (file:line: reason).
    #[error(transparent)]
    Data(#[from] DataError),
    /// The ledger failed.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// The report could not be written.
    #[error("report: {0}")]
    Report(#[from] crate::report::ReportError),
    /// Anything else (bad simulated settings, a crashed task).
    #[error("{0}")]
    Other(String),
}

/// What a finished session produced.
#[derive(Debug)]
pub struct RunOutcome {
    /// Ledger session id.
    pub session_id: String,
    /// Final phase: `Completed`, `Halted` or `Stopped`.
    pub phase: String,
    /// Summary figures.
    pub summary: Summary,
    /// Report files written.
    pub files: ReportFiles,
}

/// The candle source of a session.
enum Feed {
    Replay(MergedFeed<CandleReader>),
    Simulated(GbmSource),
}

impl Iterator for Feed {
    type Item = Result<Candle, DataError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Feed::Replay(m) => m.next(),
            Feed::Simulated(g) => g.next().map(Ok),
        }
    }
}

/// Validate every replay file (in parallel threads) before anything trades.
/// Returns the feed and the number of candles expected (None if unbounded).
fn open_feed(plan: &SessionPlan) -> Result<(Feed, Option<u64>), RunError> {
    match plan.session.market_data.source {
        MarketDataSource::Replay => {
            let scans: Vec<_> = std::thread::scope(|scope| {
                let handles: Vec<_> = plan
                    .replay
                    .iter()
                    .map(|r| scope.spawn(move || scan_candle_file(&r.path, r.interval_ms)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("scan thread"))
                    .collect()
            });
            let mut readers = Vec::new();
            let mut total = 0;
            for (r, scan) in plan.replay.iter().zip(scans) {
                let summary = scan?;
                total += summary.rows;
                readers.push(CandleReader::open(
                    &r.path,
                    crate::types::SymbolId(r.symbol as u16),
                    summary.interval_ms,
                )?);
            }
            Ok((Feed::Replay(MergedFeed::new(readers)), Some(total)))
        }
        MarketDataSource::Simulated => {
            let spec = plan
                .session
                .market_data
                .simulated
                .as_ref()
                .ok_or_else(|| RunError::Other("simulated source without settings".into()))?;
            let params = GbmParams::from_spec(spec).map_err(RunError::Other)?;
            let total = params.candles.map(|c| c * plan.symbols.len() as u64);
            Ok((
                Feed::Simulated(GbmSource::new(params, plan.symbols.len())),
                total,
            ))
        }
    }
}

/// Run one session to its end (data exhausted, `stopAfter`, halt, or `stop`
/// set by Ctrl-C), recording into the SQLite ledger at `opts.ledger`.
///
/// The data is validated before the ledger is opened, so bad input leaves no
/// ledger file and no report behind.
pub async fn run_session(
    plan: &SessionPlan,
    opts: &RunOptions,
    stop: Arc<AtomicBool>,
) -> Result<RunOutcome, RunError> {
    let feed = open_feed(plan)?;
    let mut ledger = SqliteLedger::open(&opts.ledger).await?;
    run_session_on(plan, opts, stop, feed, &mut ledger).await
}

/// Run one session on an opened feed into any ledger backend.
async fn run_session_on<L: LedgerStore>(
    plan: &SessionPlan,
    opts: &RunOptions,
    stop: Arc<AtomicBool>,
    (feed, total): (Feed, Option<u64>),
    ledger: &mut L,
) -> Result<RunOutcome, RunError> {
    let session_id = ledger.next_session_id(&plan.name).await?;
    let report = ReportWriter::create(&opts.report_dir.join(&session_id), &session_id)?;
    let (tx, mut rx) = mpsc::channel::<LedgerBatch>(16);

    let cfg = EngineConfig::from_plan(plan, opts.snapshot_interval_ms);
    let stop_after_ms = plan.session.stop_after.map(|d| d.as_millis_i64());
    let opts_c = opts.clone();
    let initial = cfg.initial_cash;

    // The engine runs on a blocking thread (CPU-bound); batches go to the
    // ledger task through a bounded channel.
    let engine_task = tokio::task::spawn_blocking(move || {
        drive(
            feed,
            cfg,
            report,
            tx,
            total,
            stop_after_ms,
            &opts_c,
            stop,
            initial,
        )
    });

    let session = SessionRecord {
        id: session_id.clone(),
        name: plan.name.clone(),
        account: plan.account_name.clone(),
        strategy: plan.strategy_name.clone(),
        base_currency: plan.account.base_currency.clone(),
        initial_cash: plan.session.allocation.get(),
        config_json: plan.to_json(),
        started_at: Timestamp(0),
    };
    let mut started = false;
    let mut ledger_result: Result<(), LedgerError> = Ok(());
    while let Some(batch) = rx.recv().await {
        if !started {
            let mut s = session.clone();
            s.started_at = batch.time;
            if let Err(e) = ledger.start_session(&s, "bot-runtime").await {
                ledger_result = Err(e);
                break;
            }
            started = true;
        }
        if let Err(e) = ledger.write_batch(&batch, "{}").await {
            ledger_result = Err(e);
            break;
        }
    }
    drop(rx);
    let driven = engine_task
        .await
        .map_err(|e| RunError::Other(format!("engine task failed: {e}")))?;
    ledger_result?;
    let d = driven?;
    if !started {
        ledger.start_session(&session, "bot-runtime").await?;
    }
    ledger
        .finish_session(&SessionEnd {
            phase: d.phase.clone(),
            ended_at: d.end,
            cash: d.cash,
            equity: d.equity,
            summary_json: serde_json::to_string(&d.summary).unwrap_or_default(),
        })
        .await?;
    if let Some(e) = d.error {
        return Err(e);
    }
    Ok(RunOutcome {
        session_id,
        phase: d.phase,
        summary: d.summary,
        files: d.files,
    })
}

/// What the engine thread hands back: the end state, and the error that
/// ended the run early, if any (the session is still closed in the ledger).
struct Driven {
    phase: String,
    summary: Summary,
    files: ReportFiles,
    end: Timestamp,
    cash: rust_decimal::Decimal,
    equity: rust_decimal::Decimal,
    error: Option<RunError>,
}

#[allow(clippy::too_many_arguments)]
fn drive(
    feed: Feed,
    cfg: EngineConfig,
    mut report: ReportWriter,
    tx: mpsc::Sender<LedgerBatch>,
    total: Option<u64>,
    stop_after_ms: Option<i64>,
    opts: &RunOptions,
    stop: Arc<AtomicBool>,
    initial: rust_decimal::Decimal,
) -> Result<Driven, RunError> {
    let mut engine = Engine::new(cfg);
    let mut analytics = Analytics::new(initial, opts.snapshot_interval_ms);
    let bar = if opts.progress {
        let pb = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::no_length(),
        };
        pb.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} candles ({per_sec}, eta {eta}) {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    } else {
        ProgressBar::hidden()
    };
    let wall_start = Instant::now();
    let mut first_time: Option<Timestamp> = None;
    let mut n: u64 = 0;
    let mut phase = "Completed";
    let flush = |engine: &mut Engine,
                 analytics: &mut Analytics,
                 report: &mut ReportWriter|
     -> Result<(), RunError> {
        let batch = engine.take_batch();
        analytics.on_batch(&batch);
        report.write_batch(&batch)?;
        // A closed channel means the ledger task failed; its error is reported by the caller.
        let _ = tx.blocking_send(batch);
        Ok(())
    };
    let mut error = None;
    let mut last_flush = Instant::now();
    for item in feed {
        let c = match item {
            Ok(c) => c,
            Err(e) => {
                error = Some(RunError::Data(e));
                phase = "Failed";
                break;
            }
        };
        let t0 = *first_time.get_or_insert(c.open_time);
        if let Some(limit) = stop_after_ms
            && c.open_time.millis() - t0.millis() >= limit
        {
            break;
        }
        if let Some(speed) = opts.speed {
            let due = Duration::from_secs_f64(
                (c.close_time().millis() - t0.millis()) as f64 / 1000.0 / speed,
            );
            let elapsed = wall_start.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
        let step = engine.on_candle(&c);
        n += 1;
        // Group commit: every batch_candles candles, when records pile up, and
        // at least every second of wall time (paced runs commit every candle).
        if n.is_multiple_of(opts.batch_candles)
            || engine.pending_records() > 20_000
            || opts.speed.is_some()
            || (n.is_multiple_of(1024) && last_flush.elapsed() >= Duration::from_secs(1))
        {
            flush(&mut engine, &mut analytics, &mut report)?;
            last_flush = Instant::now();
            bar.set_position(n);
            bar.set_message(format!(
                "equity {}",
                engine.portfolio().equity().round_dp(2)
            ));
        }
        if step == Step::Halted {
            phase = "Halted";
            break;
        }
        if stop.load(Ordering::Relaxed) {
            phase = "Stopped";
            break;
        }
    }
    engine.finish();
    flush(&mut engine, &mut analytics, &mut report)?;
    bar.set_position(n);
    bar.finish_and_clear();
    drop(tx);
    let st = engine.state();
    let summary = analytics.summary(&st, phase);
    let files = report.finish(&summary)?;
    Ok(Driven {
        phase: phase.to_string(),
        summary,
        files,
        end: st.now,
        cash: st.cash,
        equity: st.equity,
        error,
    })
}

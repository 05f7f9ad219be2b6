//! Runs one session end to end: opens the validated feed, starts or resumes
//! the session in the ledger, feeds the engine from a clock, and commits its
//! records batch by batch with a checkpoint; the report is written from what
//! the ledger committed.
//!
//! # Pipeline
//!
//! ```text
//! engine thread ──(batch, checkpoint, state)──▶ ledger task ──(committed batch)──▶ report thread
//!  feed + clock        bounded channel          one tx per batch,                analytics, CSVs,
//!  pauses while                                 retries with backoff             chart points
//!  the ledger is down
//! ```
//!
//! The report thread only ever sees batches the ledger has committed, so the
//! report is never ahead of the ledger; after a crash the report is rebuilt
//! from the ledger ([`crate::rebuild`]) before the run continues.
//!
//! # Clock
//!
//! Replay runs as fast as the CPU allows, or paced: with `speed = 60`, one
//! minute of market time takes one second of wall time. The engine itself
//! only ever sees market time. A stop request wakes a paced run at once.
//!
//! # Durability
//!
//! Records are group-committed: the engine's batch is flushed every
//! [`RunOptions::batch_candles`] candles, at least once a second of wall
//! time, on every paced candle, and at every stop, each batch in one database
//! transaction together with the [`Checkpoint`] of the engine after it. A
//! crash therefore loses at most the uncommitted tail, which the resumed run
//! computes again identically: the engine is deterministic and the feed is
//! replayed from the stored position.
//!
//! # Ends
//!
//! | end | ledger | report phase |
//! |---|---|---|
//! | data exhausted / `stopAfter` | finished `Completed` | `Completed` |
//! | kill switch | finished `Halted` | `Halted` |
//! | value out of the engine's range, bad data mid-stream | finished `Failed` | `Failed` |
//! | SIGTERM / SIGINT | `Interrupted` (resumable) | `Interrupted` |
//! | ledger unavailable past the retry budget | left unfinished (resumable) | `Interrupted` |
//! | `kill -9`, OOM | left `Running` (resumable) | as of the last commit |

mod checkpoint;
pub mod control;
mod drive;
mod feed;
pub mod live;
pub mod stop;
pub mod warmup;
pub mod writer;

use std::{path::PathBuf, sync::Arc};

use tokio::sync::mpsc;

pub use checkpoint::{CHECKPOINT_VERSION, Checkpoint, CheckpointError};
pub use drive::snapshot_of;
pub use feed::{Feed, PreparedSession, prepare, prepare_with_start};
pub use stop::StopSignal;
pub use writer::{LedgerHealth, RetryPolicy};

use control::ReloadedStrategy;

use crate::{
    analytics::{Analytics, Summary},
    config::SessionPlan,
    engine::{Engine, EngineConfig, EngineState},
    ledger::{
        LedgerError, LedgerStore,
        records::{SessionEnd, SessionRecord},
        store::INTERRUPTED_PHASE,
    },
    market::csv::DataError,
    rebuild,
    report::{ReportFiles, ReportWriter},
    types::Timestamp,
};

use drive::{Ending, Flush};

/// How to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Market-time speed-up for paced replay (`Some(60.0)` = 60× real time);
    /// `None` = as fast as possible. Validated by the CLI (0.001 to 1e6).
    /// Changes no record: a session may resume at another speed.
    pub speed: Option<f64>,
    /// Directory for report files; the session's files go into a
    /// sub-directory named after the session id.
    pub report_dir: PathBuf,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Flush the engine's records every this many candles.
    pub batch_candles: u64,
    /// Market time between snapshots, milliseconds.
    pub snapshot_interval_ms: i64,
    /// Resume the newest unfinished run of the session instead of starting a
    /// new one (a new one is started when there is none).
    pub resume: bool,
    /// How this process names itself as the session's writer (shown to a
    /// second writer that is refused).
    pub writer: String,
    /// Retries of failing commits.
    pub retry: RetryPolicy,
    /// On resume, accept a manifest whose StrategyConfig differs from the
    /// one in force (the manifest's, or a hot-reloaded one) when nothing else
    /// differs, and put the manifest's strategy in force as a hot reload
    /// (recorded with the first commit). Off: such a resume is refused.
    pub adopt_manifest_strategy: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            speed: None,
            report_dir: PathBuf::from("reports"),
            progress: false,
            batch_candles: 8192,
            snapshot_interval_ms: 3_600_000,
            resume: false,
            writer: default_writer(),
            retry: RetryPolicy::default(),
            adopt_manifest_strategy: false,
        }
    }
}

/// `pod/<POD_NAME> pid <pid>` in a pod, `<hostname> pid <pid>` elsewhere.
pub fn default_writer() -> String {
    let pid = std::process::id();
    match std::env::var("POD_NAME") {
        Ok(pod) if !pod.is_empty() => format!("pod/{pod} pid {pid}"),
        _ => {
            let host = hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into());
            format!("{host} pid {pid}")
        }
    }
}

/// A session that could not run (or could not run to its end).
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
    /// The unfinished session in the ledger cannot be resumed with these inputs.
    #[error("cannot resume session {session_id:?}: {reason}")]
    Resume {
        /// The ledger session.
        session_id: String,
        /// Why, and what to do.
        reason: String,
    },
    /// The engine stopped the session (e.g. a value out of its range).
    #[error("session {session_id:?} failed: {reason}")]
    Engine {
        /// The ledger session.
        session_id: String,
        /// The engine's reason.
        reason: String,
    },
    /// Anything else (bad simulated settings, a crashed task).
    #[error("{0}")]
    Other(String),
}

/// What a run produced.
#[derive(Debug)]
pub struct RunOutcome {
    /// Ledger session id.
    pub session_id: String,
    /// `Completed`, `Halted`, `Stopped`, `Failed` or `Interrupted`.
    pub phase: String,
    /// Whether this run resumed an unfinished session.
    pub resumed: bool,
    /// Summary figures (of what the ledger committed).
    pub summary: Summary,
    /// Report files written.
    pub files: ReportFiles,
    /// The stop request that ended the session (phase `Stopped`), to answer
    /// once the end is published.
    pub stop_reply: Option<control::Reply>,
}

/// Run one prepared session into `ledger` until its end, a halt, a stop
/// request or a ledger failure (see the module docs for what each leaves).
///
/// # Errors
/// [`RunError::Resume`] when `opts.resume` finds an unfinished run that does
/// not match the plan; [`RunError::Ledger`] when the ledger refuses the
/// session (e.g. another live writer) or fails past the retry budget;
/// [`RunError::Engine`] / [`RunError::Data`] when the session failed (it is
/// recorded as `Failed` first); [`RunError::Report`] for report files.
pub async fn run_session<L: LedgerStore>(
    prepared: PreparedSession,
    opts: &RunOptions,
    stop: Arc<StopSignal>,
    ledger: &mut L,
) -> Result<RunOutcome, RunError> {
    run_session_live(prepared, opts, stop, ledger, None).await
}

/// [`run_session`] for a serving session (`bot-runtime serve`): `live`
/// brings control requests to the engine thread (see [`control`]) and takes
/// every committed batch to its observer. A stop request ends the session
/// as `Stopped` (final snapshot, `finish_session`, final report).
///
/// # Errors
/// As [`run_session`].
pub async fn run_session_live<L: LedgerStore>(
    prepared: PreparedSession,
    opts: &RunOptions,
    stop: Arc<StopSignal>,
    ledger: &mut L,
    live: Option<control::Live>,
) -> Result<RunOutcome, RunError> {
    let PreparedSession {
        plan,
        mut feed,
        total,
        ..
    } = prepared;
    let first_open = feed.first_open();

    // Defence in depth: the id (the name, plus `-N` for a re-run) becomes a
    // directory name under the report directory.
    crate::config::check_dns1123_label(&plan.name)
        .map_err(|e| RunError::Other(format!("BotSession name {:?}: {e}", plan.name)))?;

    // 1. Start a new session or take over an unfinished one.
    let start = open_session(&plan, opts, ledger, first_open).await?;
    let session_id = start.session_id.clone();
    // A hot reload recorded in the checkpoint replaces the manifest's
    // strategy; an adopted manifest strategy replaces the one in force after
    // the engine is restored with it.
    let mut reloaded = start.checkpoint.as_ref().and_then(|c| c.strategy.clone());
    let in_force = match (&start.adopt_from, &reloaded) {
        (Some(spec), _) if start.checkpoint.is_some() => Some((spec.clone(), None)),
        (Some(_), _) => None, // nothing to restore: the manifest's strategy from the start
        (None, Some(r)) => Some((r.spec.clone(), r.revision.clone())),
        (None, None) => None,
    };
    let adopted_plan = start.adopt_from.as_ref().map(|_| plan.clone());
    let plan =
        match &in_force {
            None => plan,
            Some((spec, revision)) => control::reload_plan(&plan, spec, revision.as_deref())
                .map_err(|e| RunError::Resume {
                    session_id: session_id.clone(),
                    reason: format!("the strategy in force in its ledger is not valid: {e}"),
                })?,
        };
    if let Some(p) = &adopted_plan {
        reloaded = Some(ReloadedStrategy {
            spec: p.strategy.clone(),
            revision: None,
        });
    }
    let cfg = EngineConfig::from_plan(&plan, opts.snapshot_interval_ms);
    let initial = cfg.initial_cash;
    let dir = opts.report_dir.join(&session_id);
    let mut report = ReportWriter::create(&dir, &session_id)?;
    report.set_risk_levels(
        cfg.params.tunable.stop_loss_pct,
        cfg.params.tunable.take_profit_pct,
    );
    let mut market = crate::charts::MarketSeries::new(plan.symbols.clone());
    let mut analytics = Analytics::new(initial, opts.snapshot_interval_ms);
    analytics.set_identity(crate::analytics::SessionIdentity {
        session_id: session_id.clone(),
        name: plan.name.clone(),
        strategy: plan.strategy_name.clone(),
        symbols: plan.symbols.clone(),
        currency: plan.account.base_currency.clone(),
    });
    // The benchmark's inputs: from the checkpoint on a resume (a checkpoint
    // of an older runtime has none: its first prices are lost, so the
    // session gets no benchmark rather than a wrong one), else none yet.
    let benchmark = match &start.checkpoint {
        Some(c) => c.benchmark.clone().unwrap_or_default(),
        None => crate::figures::BenchmarkPrices::new(
            plan.symbols.clone(),
            crate::execution::ExecutionModel::from_spec(
                &plan.session.execution,
                &plan.volume_units,
            )
            .fee_rate(),
        ),
    };
    if start.checkpoint.is_some() {
        analytics.set_benchmark_prices(Some(benchmark.clone()));
    }

    // 2. Rebuild the engine, the feed position and the report from the ledger.
    let (mut engine, progress, last_state) = match &start.checkpoint {
        None => (Engine::new(cfg), drive::Progress::fresh(), None),
        Some(cp) => {
            // The feed skips the candles already traded on a blocking thread
            // while the report is rebuilt from the ledger.
            let n = cp.feed_items;
            // The skipped candles go into the price charts' series, so a
            // resumed run's charts equal an uninterrupted run's.
            let mut skipped_market = std::mem::take(&mut market);
            let skipping = tokio::task::spawn_blocking(move || {
                let t0 = std::time::Instant::now();
                feed.skip_items(n, &mut skipped_market)
                    .map(|()| (feed, skipped_market, t0.elapsed()))
            });
            let t0 = std::time::Instant::now();
            rebuild::replay_records(ledger, &session_id, &mut analytics, Some(&mut report)).await?;
            let rebuilt = t0.elapsed();
            let (skipped_feed, skipped_market, skipped) = skipping
                .await
                .map_err(|e| RunError::Other(format!("feed skip thread failed: {e}")))??;
            feed = skipped_feed;
            market = skipped_market;
            let state = cp.engine.state();
            let engine = Engine::restore(cfg, cp.engine.clone()).map_err(|e| RunError::Resume {
                session_id: session_id.clone(),
                reason: format!("the stored engine state does not fit the plan: {e}"),
            })?;
            let progress = drive::Progress {
                feed_items: cp.feed_items,
                candles: cp.candles,
                first_open: cp.first_open,
            };
            tracing::info!(
                session = %session_id,
                candles = cp.candles,
                at = %state.now,
                report_rebuilt_ms = rebuilt.as_millis() as u64,
                feed_skipped_ms = skipped.as_millis() as u64,
                "resuming from the ledger's last checkpoint"
            );
            (engine, progress, Some(state))
        }
    };

    // A new live session with `warmUp: Klines` warms its indicators up on
    // the exchange's recent candles before the first live one (see
    // `warmup`); a resumed one has them in its checkpoint.
    if start.checkpoint.is_none()
        && feed.is_live()
        && let Some(live_plan) = plan.live.as_ref()
        && live_plan.warm_up == paperbot_crds::WarmUp::Klines
        && let Some(first) = first_open
    {
        warm_up_from_klines(&mut engine, &plan, live_plan, first, &session_id).await;
    }

    if let Some(p) = &adopted_plan
        && start.checkpoint.is_some()
    {
        engine
            .reload(EngineConfig::from_plan(p, opts.snapshot_interval_ms))
            .map_err(|e| RunError::Resume {
                session_id: session_id.clone(),
                reason: format!("the manifest's StrategyConfig cannot be put in force: {e}"),
            })?;
    }

    // A change made at the start (an adopted strategy, a manifest that
    // pauses) is committed at once, before the first candle.
    let mut flush_at_start = adopted_plan.is_some() && start.checkpoint.is_some();

    // 3. Run the pipeline.
    let (live_drive, mut observer, health) = match live {
        None => (None, None, Arc::new(LedgerHealth::default())),
        Some(live) => {
            if live.start_paused && engine.set_paused(true) {
                // A new run's pause is the manifest's: nothing to record yet.
                flush_at_start |= start.checkpoint.is_some();
            }
            (
                Some(drive::LiveDrive {
                    inbox: live.inbox,
                    decision_latency: live.decision_latency,
                    wall_clock: live.wall_clock,
                }),
                Some(live.observer),
                live.health,
            )
        }
    };
    if let Some(o) = observer.as_mut() {
        let candles = start.checkpoint.as_ref().map_or(0, |c| c.candles);
        let snapshot = drive::snapshot_of(&engine, candles, reloaded.as_ref());
        let state = last_state
            .clone()
            .unwrap_or_else(|| initial_state(initial, first_open));
        o.started(&session_id, start.resumed, &state, &snapshot, &analytics);
    }
    let (tx, mut rx) = mpsc::channel::<Flush>(4);
    let (report_tx, report_rx) = std::sync::mpsc::sync_channel::<(Flush, f64)>(4);
    let report_thread = std::thread::spawn(move || -> Result<_, RunError> {
        let mut last = last_state;
        for (flush, commit_seconds) in report_rx {
            analytics.on_batch(&flush.batch);
            analytics.set_benchmark_prices(Some(flush.benchmark.clone()));
            report.write_batch(&flush.batch)?;
            if let (Some(o), Some(snapshot)) = (observer.as_mut(), &flush.snapshot) {
                o.committed(control::Committed {
                    batch: &flush.batch,
                    state: &flush.state,
                    snapshot,
                    analytics: &analytics,
                    commit_seconds,
                    replies: flush.replies,
                });
            }
            last = Some(flush.state);
        }
        Ok((analytics, report, last))
    });
    let engine_task = {
        let ctx = drive::DriveContext {
            speed: opts.speed,
            batch_candles: opts.batch_candles.max(1),
            snapshot_interval_ms: opts.snapshot_interval_ms,
            stop_after_ms: plan.session.stop_after.map(|d| d.as_millis_i64()),
            progress_bar: opts.progress,
            total,
            stop: stop.clone(),
            health: health.clone(),
            reloaded,
            live: live_drive,
            flush_at_start,
            benchmark,
            market,
        };
        tokio::task::spawn_blocking(move || drive::drive(engine, feed, progress, ctx, tx))
    };

    let mut ledger_error: Option<LedgerError> = None;
    while let Some(flush) = rx.recv().await {
        let t0 = std::time::Instant::now();
        let result = writer::commit(
            ledger,
            &flush.batch,
            &flush.checkpoint,
            &opts.retry,
            &health,
            &stop,
        )
        .await;
        match result {
            Ok(()) => {
                let seconds = t0.elapsed().as_secs_f64();
                if report_tx.send((flush, seconds)).is_err() {
                    break; // the report thread failed; its error is reported below
                }
            }
            Err(e) => {
                for (reply, _) in flush.replies {
                    let _ = reply.send(Err(control::ControlError::Unavailable(format!(
                        "the change could not be recorded: ledger: {e}"
                    ))));
                }
                ledger_error = Some(e);
                break;
            }
        }
    }
    drop(rx); // the engine thread sees a closed channel and ends
    drop(report_tx);
    let (ending, market): (Ending, _) = engine_task
        .await
        .map_err(|e| RunError::Other(format!("engine thread failed: {e}")))?;
    let (analytics, mut report, last_state) = report_thread
        .join()
        .map_err(|_| RunError::Other("report thread panicked".into()))??;
    report.set_market(market);

    // 4. Close the session in the ledger as its end says, then the report.
    let committed = last_state.unwrap_or_else(|| initial_state(initial, first_open));
    if let Some(e) = ledger_error {
        // Nothing more can be recorded; the ledger keeps the session unfinished
        // and resumable. The report shows what was committed.
        let summary = analytics.summary(&committed, INTERRUPTED_PHASE);
        let _ = report.finish(&summary);
        return Err(RunError::Ledger(e));
    }
    let mut stop_reply = None;
    let (phase, error) = match ending {
        Ending::Completed => ("Completed", None),
        Ending::Halted => ("Halted", None),
        Ending::Stopped(reply) => {
            stop_reply = Some(reply);
            ("Stopped", None)
        }
        Ending::Failed(reason) => (
            "Failed",
            Some(RunError::Engine {
                session_id: session_id.clone(),
                reason,
            }),
        ),
        Ending::DataError(e) => ("Failed", Some(RunError::Data(e))),
        Ending::Interrupted => (INTERRUPTED_PHASE, None),
    };
    let summary = analytics.summary(&committed, phase);
    if phase == INTERRUPTED_PHASE {
        ledger.interrupt_session(committed.now).await?;
    } else {
        ledger
            .finish_session(&SessionEnd {
                phase: phase.to_string(),
                ended_at: committed.now,
                cash: committed.cash,
                equity: committed.equity,
                summary_json: serde_json::to_string(&summary).unwrap_or_default(),
            })
            .await?;
    }
    let files = report.finish(&summary)?;
    if let Some(e) = error {
        return Err(e);
    }
    Ok(RunOutcome {
        session_id,
        phase: phase.to_string(),
        resumed: start.resumed,
        summary,
        files,
        stop_reply,
    })
}

/// The figures of a session before its first candle: all cash, no candle,
/// at market time `at` (the first candle's open time, when known).
pub fn initial_state(initial_cash: rust_decimal::Decimal, at: Option<Timestamp>) -> EngineState {
    let at = at.unwrap_or_default();
    EngineState {
        start: at,
        now: at,
        bars: 0,
        cash: initial_cash,
        equity: initial_cash,
        realized_pnl: rust_decimal::Decimal::ZERO,
        unrealized_pnl: rust_decimal::Decimal::ZERO,
        max_drawdown_pct: rust_decimal::Decimal::ZERO,
        open_positions: 0,
        holds: 0,
        fills: 0,
        rejected_ticks: 0,
    }
}

/// The session a run writes, and where it starts from.
struct Start {
    session_id: String,
    resumed: bool,
    checkpoint: Option<Checkpoint>,
    /// With [`RunOptions::adopt_manifest_strategy`], the strategy in force
    /// in the ledger when the manifest brings another one (to be adopted).
    adopt_from: Option<paperbot_crds::StrategyConfigSpec>,
}

/// Find the session to write: the newest unfinished run when resuming (its
/// stored configuration must equal the plan's), else a new `name[-N]`.
async fn open_session<L: LedgerStore>(
    plan: &SessionPlan,
    opts: &RunOptions,
    ledger: &mut L,
    first_open: Option<Timestamp>,
) -> Result<Start, RunError> {
    let config_json = plan.to_json();
    let unfinished = ledger.find_unfinished(&plan.name).await?;
    if opts.resume
        && let Some(info) = unfinished
    {
        // A hot reload since the start is in the checkpoint: the manifest must
        // carry the reloaded strategy (read without taking the lock).
        let reloaded = match ledger.checkpoint(&info.id).await? {
            Some(text) => {
                Checkpoint::from_json(&text)
                    .map_err(|e| RunError::Resume {
                        session_id: info.id.clone(),
                        reason: e.to_string(),
                    })?
                    .strategy
            }
            None => None,
        };
        let mut adopt_from = None;
        if let Some(diff) = resume_difference(&info.config_json, &config_json, reloaded.as_ref())
            && opts.adopt_manifest_strategy
            && strategy_only_difference(&info.config_json, &config_json)
        {
            let in_force = match &reloaded {
                Some(r) => Some(r.spec.clone()),
                None => serde_json::from_str::<serde_json::Value>(&info.config_json)
                    .ok()
                    .and_then(|v| serde_json::from_value(v["strategy"]["spec"].clone()).ok()),
            };
            let Some(in_force) = in_force else {
                return Err(RunError::Resume {
                    session_id: info.id,
                    reason: "the strategy recorded in the ledger cannot be read".into(),
                });
            };
            tracing::warn!(
                session = %info.id,
                difference = %diff,
                "the manifest brings another StrategyConfig: putting it in force as a hot reload"
            );
            adopt_from = Some(in_force);
        } else if let Some(diff) =
            resume_difference(&info.config_json, &config_json, reloaded.as_ref())
        {
            let reload_note = match &reloaded {
                Some(r) => format!(
                    "; its strategy was hot-reloaded (revision {}): the manifest must carry the \
                     reloaded StrategyConfig",
                    r.revision.as_deref().unwrap_or("none")
                ),
                None => String::new(),
            };
            return Err(RunError::Resume {
                session_id: info.id,
                reason: format!(
                    "the manifest no longer matches what the ledger recorded ({diff}){reload_note}; \
                     run without --resume to start a new run, or close the old one with \
                     `bot-runtime sessions close`"
                ),
            });
        }
        let point = ledger.resume_session(&info.id, &opts.writer).await?;
        let checkpoint = match &point.checkpoint {
            None => None,
            Some(text) => {
                let cp = Checkpoint::from_json(text).map_err(|e| RunError::Resume {
                    session_id: info.id.clone(),
                    reason: e.to_string(),
                })?;
                if cp.snapshot_interval_ms != opts.snapshot_interval_ms {
                    return Err(RunError::Resume {
                        session_id: info.id.clone(),
                        reason: format!(
                            "it was recorded with --snapshot-interval {} ms, this run asks for {} ms",
                            cp.snapshot_interval_ms, opts.snapshot_interval_ms
                        ),
                    });
                }
                Some(cp)
            }
        };
        return Ok(Start {
            session_id: info.id,
            resumed: true,
            checkpoint,
            adopt_from,
        });
    }
    if let Some(info) = unfinished {
        tracing::warn!(
            session = %info.id,
            phase = %info.phase,
            "an earlier run of this session is unfinished; resume it with --resume \
             or close it with `bot-runtime sessions close`; starting a new run"
        );
    }
    let id = ledger.next_session_id(&plan.name).await?;
    let record = SessionRecord {
        id: id.clone(),
        name: plan.name.clone(),
        account: plan.account_name.clone(),
        strategy: plan.strategy_name.clone(),
        base_currency: plan.account.base_currency.clone(),
        initial_cash: plan.session.allocation.get(),
        config_json,
        started_at: first_open.unwrap_or_default(),
    };
    ledger.start_session(&record, &opts.writer).await?;
    Ok(Start {
        session_id: id,
        resumed: false,
        checkpoint: None,
        adopt_from: None,
    })
}

/// Settings a resumed session may change: they decide how it is run, not
/// what it records (`desiredState` is a control request, `speed` the pace,
/// `runtime` the pod).
const RESUMABLE_CHANGES: [&[&str]; 3] = [
    &["session", "spec", "desiredState"],
    &["session", "spec", "marketData", "speed"],
    &["session", "spec", "runtime"],
];

/// The first difference between the configuration a session recorded and
/// the one a resume brings, ignoring [`RESUMABLE_CHANGES`]; with a hot
/// reload in the checkpoint, the recorded strategy is the reloaded one.
fn resume_difference(
    recorded: &str,
    now: &str,
    reloaded: Option<&ReloadedStrategy>,
) -> Option<String> {
    compare_for_resume(recorded, now, reloaded, false)
}

/// Whether two configurations differ in nothing but the strategy (and the
/// effective parameters that follow from it), [`RESUMABLE_CHANGES`] aside.
fn strategy_only_difference(recorded: &str, now: &str) -> bool {
    compare_for_resume(recorded, now, None, true).is_none()
}

fn compare_for_resume(
    recorded: &str,
    now: &str,
    reloaded: Option<&ReloadedStrategy>,
    ignore_strategy: bool,
) -> Option<String> {
    use serde_json::Value;
    // With a reload, the effective parameters are left out on both sides:
    // they follow from the strategy and the account, and the engine's own
    // fingerprint checks them on restore.
    let prepare = |text: &str, strategy: Option<&paperbot_crds::StrategyConfigSpec>| -> String {
        let mut v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        for path in RESUMABLE_CHANGES {
            let Some((last, parents)) = path.split_last() else {
                continue;
            };
            let mut node = Some(&mut v);
            for p in parents {
                node = node.and_then(|n| n.get_mut(*p));
            }
            if let Some(Value::Object(o)) = node {
                o.remove(*last);
            }
        }
        if let Value::Object(o) = &mut v
            && ignore_strategy
        {
            o.remove("effective");
            if let Some(Value::Object(s)) = o.get_mut("strategy") {
                s.remove("spec");
            }
        }
        if let Value::Object(o) = &mut v
            && reloaded.is_some()
        {
            o.remove("effective");
            if let (Some(spec), Some(Value::Object(s))) = (strategy, o.get_mut("strategy")) {
                s.insert(
                    "spec".into(),
                    serde_json::to_value(spec).unwrap_or(Value::Null),
                );
            }
        }
        v.to_string()
    };
    config_difference(
        &prepare(recorded, reloaded.map(|r| &r.spec)),
        &prepare(now, None),
    )
}

/// The first JSON path at which two configurations differ, e.g.
/// `strategy.spec.risk.stopLossPct: "2" recorded, "3" now`; `None` if equal.
fn config_difference(recorded: &str, now: &str) -> Option<String> {
    use serde_json::Value;
    fn walk(path: &str, a: &Value, b: &Value) -> Option<String> {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                keys.into_iter().find_map(|k| {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(
                        &p,
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                    )
                })
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
                .iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (a, b))| walk(&format!("{path}[{i}]"), a, b)),
            _ if a == b => None,
            _ => Some(format!("{path}: {a} recorded, {b} now")),
        }
    }
    let a: Value = serde_json::from_str(recorded).unwrap_or(Value::Null);
    let b: Value = serde_json::from_str(now).unwrap_or(Value::Null);
    walk("", &a, &b)
}

/// Fetch the klines of a new live session and warm `engine`'s signals up
/// on them; every outcome is logged, none stops the session (a symbol
/// without history warms up on live candles, as with `Record`).
async fn warm_up_from_klines(
    engine: &mut Engine,
    plan: &crate::config::SessionPlan,
    live_plan: &crate::config::LivePlan,
    first_open: crate::types::Timestamp,
    session_id: &str,
) {
    let bars = warmup::bars_needed(&plan.strategy.signals);
    if bars == 0 {
        return;
    }
    match warmup::fetch_klines(live_plan, &plan.symbols, bars, first_open).await {
        Ok(history) => {
            let used = engine.warm_up(&history.candles);
            for (symbol, outcome) in &history.per_symbol {
                match outcome {
                    Ok(n) => tracing::info!(
                        session = %session_id, symbol, candles = n, needed = bars,
                        source = %history.source,
                        "warmed the indicators up on recent klines"
                    ),
                    Err(e) => tracing::warn!(
                        session = %session_id, symbol, source = %history.source, error = %e,
                        "no klines for the warm-up: this symbol warms up on live candles (as with Record)"
                    ),
                }
            }
            tracing::info!(session = %session_id, candles = used, source = %history.source, "klines warm-up done");
        }
        Err(e) => tracing::warn!(session = %session_id, error = %e, "klines warm-up skipped"),
    }
}

#[cfg(test)]
mod tests {
    use super::{ReloadedStrategy, config_difference, resume_difference};

    #[test]
    fn resume_ignores_how_a_session_is_run_and_follows_a_reload() {
        let recorded = r#"{"session":{"name":"a","spec":{"desiredState":"Running","marketData":{"source":"Simulated"}}},
            "strategy":{"name":"s","spec":{"risk":{"stopLossPct":"2"}}},"effective":{"x":1}}"#;
        // Pace, desired state and pod overrides may change on a resume.
        let now = r#"{"session":{"name":"a","spec":{"desiredState":"Paused","runtime":{"image":"i"},
            "marketData":{"source":"Simulated","speed":"60"}}},
            "strategy":{"name":"s","spec":{"risk":{"stopLossPct":"2"}}},"effective":{"x":1}}"#;
        assert_eq!(resume_difference(recorded, now, None), None);
        // Anything else is refused, naming the path.
        let other = now.replace(r#""source":"Simulated""#, r#""source":"Replay""#);
        assert_eq!(
            resume_difference(recorded, &other, None).as_deref(),
            Some(r#"session.spec.marketData.source: "Simulated" recorded, "Replay" now"#)
        );
        // After a hot reload the manifest must carry the reloaded strategy.
        let reloaded: ReloadedStrategy = serde_json::from_str(
            r#"{"spec":{"signals":{"rsi":{}},"risk":{"stopLossPct":"3"}},"revision":"7"}"#,
        )
        .unwrap();
        let mut with_reload: serde_json::Value = serde_json::from_str(now).unwrap();
        with_reload["strategy"]["spec"] = serde_json::to_value(&reloaded.spec).unwrap();
        with_reload["effective"] = serde_json::json!({"x": 2});
        assert_eq!(
            resume_difference(recorded, &with_reload.to_string(), Some(&reloaded)),
            None,
            "effective parameters left to the engine's fingerprint"
        );
        assert!(
            resume_difference(recorded, now, Some(&reloaded))
                .unwrap()
                .starts_with("strategy.spec.")
        );
    }

    #[test]
    fn config_difference_names_the_first_differing_path() {
        let a = r#"{"strategy":{"spec":{"risk":{"stopLossPct":"2"}}},"session":{"name":"a"}}"#;
        let b = r#"{"strategy":{"spec":{"risk":{"stopLossPct":"3"}}},"session":{"name":"a"}}"#;
        assert_eq!(
            config_difference(a, b).as_deref(),
            Some(r#"strategy.spec.risk.stopLossPct: "2" recorded, "3" now"#)
        );
        assert_eq!(config_difference(a, a), None);
    }
}

//! The engine thread: candles from the feed, paced by the wall clock when
//! asked, into the engine; batches with their checkpoints out to the ledger;
//! control requests of a serving session taken between two candles.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use indicatif::{ProgressBar, ProgressStyle};
use paperbot_crds::{
    BreakerState,
    runtime_api::{ControlResponse, PositionStatus, RuntimePhase},
};
use rust_decimal::Decimal;
use tokio::sync::mpsc;

use crate::{
    engine::{Engine, EngineState, Step},
    figures::BenchmarkPrices,
    ledger::records::LedgerBatch,
    market::csv::DataError,
    types::Timestamp,
};

use super::{
    checkpoint::{CHECKPOINT_VERSION, Checkpoint},
    control::{Command, ControlError, Inbox, LastCandle, LiveSnapshot, ReloadedStrategy, Reply},
    feed::Feed,
    live::LiveFeedStats,
    stop::{StopSignal, Wake},
    writer::LedgerHealth,
};

/// Flush when this many records are waiting, whatever the candle count.
const MAX_PENDING_RECORDS: usize = 20_000;

/// A paced run commits what it traded before it waits this long or longer
/// for its next candle.
const FLUSH_BEFORE_WAIT: Duration = Duration::from_millis(1);

/// One batch on its way to the ledger, with the checkpoint after it and the
/// engine's figures at that point (for the report).
pub(super) struct Flush {
    pub batch: LedgerBatch,
    pub checkpoint: String,
    pub state: EngineState,
    /// The benchmark's inputs after the batch (also in the checkpoint).
    pub benchmark: BenchmarkPrices,
    /// What a serving session publishes with the batch (`None` for `run`).
    pub snapshot: Option<LiveSnapshot>,
    /// Requests this batch carries the change of, with their answers.
    pub replies: Vec<(Reply, ControlResponse)>,
}

/// How far the session has come (part of the checkpoint).
#[derive(Clone, Copy, Debug)]
pub(super) struct Progress {
    pub feed_items: u64,
    pub candles: u64,
    pub first_open: Option<Timestamp>,
}

impl Progress {
    pub fn fresh() -> Self {
        Self {
            feed_items: 0,
            candles: 0,
            first_open: None,
        }
    }
}

/// What a serving session adds to the engine thread.
pub(super) struct LiveDrive {
    pub inbox: Arc<Inbox>,
    pub decision_latency: Option<prometheus::Histogram>,
    pub wall_clock: bool,
}

/// Settings of the engine thread.
pub(super) struct DriveContext {
    pub speed: Option<f64>,
    pub batch_candles: u64,
    pub snapshot_interval_ms: i64,
    pub stop_after_ms: Option<i64>,
    pub progress_bar: bool,
    pub total: Option<u64>,
    pub stop: Arc<StopSignal>,
    pub health: Arc<LedgerHealth>,
    /// The strategy of the last hot reload, carried into every checkpoint.
    pub reloaded: Option<ReloadedStrategy>,
    pub live: Option<LiveDrive>,
    /// Commit the engine's state before the first candle (it was changed at
    /// the start: paused by the manifest, a strategy adopted).
    pub flush_at_start: bool,
    /// The benchmark's inputs so far (from the checkpoint on a resume):
    /// each symbol's first accepted candle is added as it comes, the last
    /// ones at every batch.
    pub benchmark: BenchmarkPrices,
    /// Every candle traded, folded for the report's price charts (bounded;
    /// on a resume it already holds the skipped candles).
    pub market: crate::charts::MarketSeries,
}

/// Why the engine thread stopped.
pub(super) enum Ending {
    /// Data exhausted or `stopAfter` reached (a final snapshot was taken).
    Completed,
    /// The account kill switch halted the session.
    Halted,
    /// The engine stopped the session (e.g. a value out of its range).
    Failed(String),
    /// A data row failed mid-stream (the file changed after validation).
    DataError(DataError),
    /// A stop was requested, or the ledger stopped taking batches.
    Interrupted,
    /// Ended for good by a stop request (a final snapshot was taken); the
    /// request is answered once the end is recorded.
    Stopped(Reply),
}

/// Milliseconds since the Unix epoch by the wall clock (0 if it is before
/// the epoch).
pub(super) fn now_epoch_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Maps market time to wall time for paced runs: the candle closing at
/// market time `t` is due at `wall0 + (t − market0) / speed`. The anchor is
/// the first candle traded (nothing is waited out twice after a resume or
/// an outage), or, on the wall clock, now: market time `now` is due now, so
/// at speed 1 a candle is due when the wall clock reaches its close, and a
/// candle whose close has passed is due at once.
struct Pacer {
    speed: f64,
    wall_clock: bool,
    market0: Option<i64>,
    wall0: Instant,
}

impl Pacer {
    fn new(speed: f64, wall_clock: bool) -> Self {
        let mut p = Self {
            speed,
            wall_clock,
            market0: None,
            wall0: Instant::now(),
        };
        p.reanchor();
        p
    }

    /// Anchor again from now (after an outage: pacing resumes from now
    /// instead of racing to catch up, except on the wall clock).
    fn reanchor(&mut self) {
        self.wall0 = Instant::now();
        self.market0 = self.wall_clock.then(now_epoch_ms);
    }

    /// When the candle closing at `close` is due, or `None` if too far out to
    /// represent (then it is due at once).
    fn due(&mut self, close: Timestamp) -> Option<Instant> {
        let market0 = *self.market0.get_or_insert(close.millis());
        let ahead_ms = close.millis().saturating_sub(market0).max(0) as f64;
        let secs = ahead_ms / 1000.0 / self.speed;
        let d = Duration::try_from_secs_f64(secs).ok()?;
        self.wall0.checked_add(d)
    }
}

/// The engine thread's state.
struct Driver {
    engine: Engine,
    progress: Progress,
    ctx: DriveContext,
    tx: mpsc::Sender<Flush>,
    bar: ProgressBar,
    /// Candles traded when the last batch went out.
    flushed_candles: u64,
    last_flush: Instant,
    replies: Vec<(Reply, ControlResponse)>,
    /// Latest `(close time, close)` of each symbol since the last batch (serving only).
    prices: Vec<Option<(Timestamp, Decimal)>>,
    last_candle: Option<LastCandle>,
    latency: Option<prometheus::local::LocalHistogram>,
    /// Symbols whose first candle the benchmark still lacks.
    bench_missing: usize,
}

/// Run the engine over the feed until its end, a halt, a stop request or a
/// closed ledger channel. Every batch goes out with its checkpoint.
pub(super) fn drive(
    engine: Engine,
    mut feed: Feed,
    progress: Progress,
    ctx: DriveContext,
    tx: mpsc::Sender<Flush>,
) -> (Ending, crate::charts::MarketSeries) {
    let bar = progress_bar(&ctx);
    bar.set_position(progress.candles);
    let latency = ctx
        .live
        .as_ref()
        .and_then(|l| l.decision_latency.as_ref())
        .map(prometheus::Histogram::local);
    let prices = vec![None; engine.symbols().len()];
    let bench_missing = ctx.benchmark.missing_first();
    let mut d = Driver {
        engine,
        progress,
        flushed_candles: progress.candles,
        ctx,
        tx,
        bar,
        last_flush: Instant::now(),
        replies: Vec::new(),
        prices,
        last_candle: None,
        latency,
        bench_missing,
    };
    let ending = d.run(&mut feed);
    // A real end takes a final snapshot; an interruption does not, so that
    // the resumed run records exactly what an uninterrupted one would.
    if !matches!(ending, Ending::Interrupted) {
        d.engine.finish();
    }
    d.send();
    d.bar.set_position(d.progress.candles);
    d.bar.finish_and_clear();
    (ending, std::mem::take(&mut d.ctx.market))
}

impl Driver {
    fn run(&mut self, feed: &mut Feed) -> Ending {
        // A paced run starts its clock at the first candle it trades (a resumed
        // run at the candle after its checkpoint): nothing is waited out twice.
        let wall_clock = self.ctx.live.as_ref().is_some_and(|l| l.wall_clock);
        let mut pacer = self.ctx.speed.map(|speed| Pacer::new(speed, wall_clock));
        let inbox = self.ctx.live.as_ref().map(|l| l.inbox.clone());
        let pending = || inbox.as_ref().is_some_and(|i| i.has_pending());
        let mut paused_logged = false;
        let live_feed = feed.live_stats();
        if self.ctx.flush_at_start && !self.send() {
            return Ending::Interrupted;
        }
        loop {
            // Never trade ahead of a ledger that is not taking commits.
            while self.ctx.health.is_down()
                && !self.ctx.health.has_failed()
                && !self.ctx.stop.is_requested()
            {
                if !paused_logged {
                    self.bar.set_message("paused: ledger unavailable");
                    paused_logged = true;
                }
                self.refuse_requests_while_down();
                self.ctx
                    .stop
                    .sleep_until_or(Instant::now() + Duration::from_millis(50), pending);
            }
            if paused_logged && !self.ctx.health.is_down() {
                paused_logged = false;
                self.bar.set_message("");
                if let Some(p) = pacer.as_mut() {
                    p.reanchor();
                }
            }
            if self.ctx.stop.is_requested() || self.ctx.health.has_failed() || self.tx.is_closed() {
                return Ending::Interrupted;
            }
            if pending()
                && let Err(end) = self.take_requests()
            {
                return end;
            }
            if let Some(stats) = &live_feed {
                self.check_stale_prices(stats);
            }
            // A live feed: wait for the next closed candle while answering
            // requests and honouring stops; commit what was traded first.
            if feed.is_live() && !feed.wait_ready(Duration::ZERO) {
                if self.unflushed() && !self.send() {
                    return Ending::Interrupted;
                }
                if !feed.wait_ready(Duration::from_millis(100)) {
                    continue;
                }
            }
            let Some(item) = feed.next() else {
                return Ending::Completed;
            };
            let c = match item {
                Ok(c) => c,
                Err(e) => return Ending::DataError(e),
            };
            let t0 = *self.progress.first_open.get_or_insert(c.open_time);
            if let Some(limit) = self.ctx.stop_after_ms
                && c.open_time.millis().saturating_sub(t0.millis()) >= limit
            {
                return Ending::Completed;
            }
            if let Some(due) = pacer.as_mut().and_then(|p| p.due(c.close_time())) {
                // Commit what was traded before waiting for the clock: the
                // ledger (and the status) never lag a paced run by a wait.
                if Instant::now() + FLUSH_BEFORE_WAIT <= due && self.unflushed() && !self.send() {
                    return Ending::Interrupted;
                }
                loop {
                    match self.ctx.stop.sleep_until_or(due, pending) {
                        Wake::Deadline => break,
                        // This candle was not traded, so it is not counted;
                        // the resumed run reads it again.
                        Wake::Stop => return Ending::Interrupted,
                        Wake::Woken => {
                            if let Err(end) = self.take_requests() {
                                return end;
                            }
                        }
                    }
                }
            }
            self.progress.feed_items += 1;
            self.ctx.market.observe(&c);
            let started = self.latency.is_some().then(Instant::now);
            let step = self.engine.on_candle(&c);
            if let (Some(h), Some(t)) = (&self.latency, started) {
                h.observe(t.elapsed().as_secs_f64());
            }
            if self.bench_missing > 0 {
                // The benchmark buys at each symbol's first accepted candle.
                let i = c.symbol.idx();
                if let Some(first) = self.engine.last_candle(i)
                    && self.ctx.benchmark.set_first(i, first.open_time, first.open)
                {
                    self.bench_missing -= 1;
                }
            }
            self.progress.candles += 1;
            if self.ctx.live.is_some() {
                if let Some(slot) = self.prices.get_mut(c.symbol.idx()) {
                    *slot = Some((c.close_time(), c.close));
                }
                self.last_candle = Some(LastCandle {
                    close_time: c.close_time(),
                    interval_ms: c.interval_ms,
                    traded_at: Instant::now(),
                });
            }
            let n = self.progress.candles;
            let due_flush = n.is_multiple_of(self.ctx.batch_candles)
                || self.engine.pending_records() > MAX_PENDING_RECORDS
                || ((pacer.is_some() || n.is_multiple_of(1024))
                    && self.last_flush.elapsed() >= Duration::from_secs(1));
            match step {
                Step::Continue => {}
                Step::Halted => return Ending::Halted,
                Step::Failed => {
                    return Ending::Failed(
                        self.engine
                            .failure()
                            .unwrap_or("value out of the engine's range")
                            .to_owned(),
                    );
                }
            }
            if due_flush && !self.send() {
                return Ending::Interrupted;
            }
        }
    }

    /// Live prices older than `maxAge` by the wall clock trip the
    /// `priceFeed` breaker at once (between candles), instead of as a data
    /// gap at the next candle; the trip goes out with the next batch.
    fn check_stale_prices(&mut self, stats: &LiveFeedStats) {
        let snap = stats.snapshot();
        let now = Timestamp(now_epoch_ms());
        let stale = snap.stale_at(now);
        if !stale.is_empty() && self.engine.on_stale_prices(now, &stale, snap.max_age_ms) {
            tracing::warn!(
                symbols = ?stale.iter().map(|s| s.symbol.as_str()).collect::<Vec<_>>(),
                max_age_ms = snap.max_age_ms,
                "live prices are stale: the priceFeed breaker is open"
            );
        }
    }

    /// Whether anything was traded or changed since the last batch.
    fn unflushed(&self) -> bool {
        self.progress.candles != self.flushed_candles
            || self.engine.pending_records() > 0
            || !self.replies.is_empty()
    }

    /// While the ledger is down nothing can be recorded: requests are refused.
    fn refuse_requests_while_down(&mut self) {
        let Some(live) = &self.ctx.live else { return };
        while let Some(cmd) = live.inbox.pop() {
            let why = self
                .ctx
                .health
                .reason()
                .unwrap_or_else(|| "ledger unavailable".into());
            cmd.answer(Err(ControlError::Unavailable(format!(
                "{why}: trading waits for the ledger and nothing can be recorded; retry later"
            ))));
        }
    }

    fn phase(&self) -> RuntimePhase {
        if self.engine.paused() {
            RuntimePhase::Paused
        } else {
            RuntimePhase::Running
        }
    }

    fn answer(&self, message: String) -> ControlResponse {
        ControlResponse {
            phase: self.phase(),
            message,
            effective_parameters: BTreeMap::new(),
        }
    }

    /// Apply every waiting request. One that changes the session is answered
    /// after the batch carrying the change is committed (sent at once);
    /// one that changes nothing is answered now. A stop ends the loop.
    fn take_requests(&mut self) -> Result<(), Ending> {
        let Some(inbox) = self.ctx.live.as_ref().map(|l| l.inbox.clone()) else {
            return Ok(());
        };
        if self.ctx.health.is_down() {
            self.refuse_requests_while_down();
            return Ok(());
        }
        while let Some(cmd) = inbox.pop() {
            match cmd {
                Command::Pause(r) => {
                    if self.engine.set_paused(true) {
                        let a = self.answer(
                            "paused: no new entries; exits (stop-loss, take-profit, trailing \
                             stop, max hold time, sell signals) still run"
                                .into(),
                        );
                        self.replies.push((r, a));
                    } else {
                        let _ = r.send(Ok(self.answer("already paused: nothing to do".into())));
                    }
                }
                Command::Resume(r) => {
                    if self.engine.set_paused(false) {
                        let a = self.answer("resumed: new entries allowed".into());
                        self.replies.push((r, a));
                    } else {
                        let _ = r.send(Ok(self.answer("not paused: nothing to do".into())));
                    }
                }
                Command::Stop(r) => return Err(Ending::Stopped(r)),
                Command::ResetBreaker(kind, r) => match self.engine.reset_breaker(kind) {
                    Ok(BreakerState::Closed) => {
                        let a = self.answer(format!(
                            "breaker {} is Closed: nothing to reset",
                            kind.name()
                        ));
                        let _ = r.send(Ok(a));
                    }
                    Ok(was) => {
                        let a = self.answer(format!("breaker {} reset (was {was:?})", kind.name()));
                        self.replies.push((r, a));
                    }
                    Err(message) if kind.is_kill_switch() => {
                        let _ = r.send(Err(ControlError::Conflict(message)));
                    }
                    Err(message) => {
                        let names: Vec<String> = self
                            .engine
                            .breakers()
                            .statuses()
                            .into_iter()
                            .map(|b| b.name)
                            .collect();
                        let _ = r.send(Err(ControlError::NotFound {
                            message: format!(
                                "{message}: the configured breakers are {}",
                                names.join(", ")
                            ),
                        }));
                    }
                },
                Command::Reload(reload, r) => {
                    let reload = *reload;
                    match self.engine.reload(reload.config) {
                        Ok(_) => {
                            self.ctx.reloaded = Some(ReloadedStrategy {
                                spec: reload.strategy,
                                revision: reload.revision.clone(),
                            });
                            let mut a = self.answer(match &reload.revision {
                                Some(rev) => format!("strategy reloaded (revision {rev})"),
                                None => "strategy reloaded".into(),
                            });
                            a.effective_parameters = self
                                .engine
                                .autopilot()
                                .status()
                                .effective_parameters
                                .into_iter()
                                .map(|(k, v)| (k, v.get()))
                                .collect();
                            self.replies.push((r, a));
                        }
                        Err(message) => {
                            let _ = r.send(Err(ControlError::BadRequest {
                                field: "strategy".into(),
                                message,
                            }));
                        }
                    }
                }
            }
        }
        if !self.replies.is_empty() && !self.send() {
            return Err(Ending::Interrupted);
        }
        Ok(())
    }

    /// What a serving session publishes with a batch.
    fn snapshot(&mut self) -> LiveSnapshot {
        let prices = self
            .prices
            .iter_mut()
            .zip(self.engine.symbols())
            .filter_map(|(slot, symbol)| slot.take().map(|(t, close)| (symbol.clone(), t, close)))
            .collect();
        LiveSnapshot {
            last_candle: self.last_candle,
            prices,
            ..snapshot_of(
                &self.engine,
                self.progress.candles,
                self.ctx.reloaded.as_ref(),
            )
        }
    }

    /// Take the engine's batch and send it with its checkpoint. Returns `false`
    /// when the ledger task has stopped taking batches.
    fn send(&mut self) -> bool {
        let batch = self.engine.take_batch();
        for i in 0..self.ctx.benchmark.symbols.len() {
            if let Some(c) = self.engine.last_candle(i) {
                self.ctx.benchmark.set_last(i, c.close_time(), c.close);
            }
        }
        let checkpoint = Checkpoint {
            version: CHECKPOINT_VERSION,
            snapshot_interval_ms: self.ctx.snapshot_interval_ms,
            feed_items: self.progress.feed_items,
            candles: self.progress.candles,
            first_open: self.progress.first_open,
            engine: self.engine.checkpoint(),
            strategy: self.ctx.reloaded.clone(),
            benchmark: Some(self.ctx.benchmark.clone()),
        };
        let checkpoint = match checkpoint.to_json() {
            Ok(text) => text,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the checkpoint; stopping");
                return false;
            }
        };
        if let Some(h) = &self.latency {
            h.flush();
        }
        let snapshot = self.ctx.live.is_some().then(|| self.snapshot());
        let flush = Flush {
            batch,
            checkpoint,
            state: self.engine.state(),
            benchmark: self.ctx.benchmark.clone(),
            snapshot,
            replies: std::mem::take(&mut self.replies),
        };
        self.flushed_candles = self.progress.candles;
        self.last_flush = Instant::now();
        self.bar.set_position(self.progress.candles);
        self.bar.set_message(format!(
            "equity {}",
            self.engine.portfolio().equity().round_dp(2)
        ));
        self.tx.blocking_send(flush).is_ok()
    }
}

/// What a serving session publishes of `engine` after `candles` candles
/// (without prices or a last candle), `reloaded` the strategy in force.
pub fn snapshot_of(
    engine: &Engine,
    candles: u64,
    reloaded: Option<&ReloadedStrategy>,
) -> LiveSnapshot {
    let positions = engine
        .portfolio()
        .positions()
        .iter()
        .zip(engine.symbols())
        .filter(|(p, _)| p.is_open())
        .map(|(p, symbol)| PositionStatus {
            symbol: symbol.clone(),
            quantity: p.quantity,
            entry_price: p.avg_entry_price(),
            mark_price: p.last_price,
            unrealized_pnl: p.market_value.saturating_sub(p.cost_basis),
            opened_at: p.opened_at.map(Timestamp::to_rfc3339).unwrap_or_default(),
        })
        .collect();
    let state = engine.state();
    LiveSnapshot {
        paused: engine.paused(),
        drawdown_pct: engine.drawdown_pct(),
        positions,
        breakers: engine.breakers().statuses(),
        autopilot: engine.autopilot().status(),
        candles,
        last_candle: None,
        prices: Vec::new(),
        strategy_revision: reloaded.and_then(|r| r.revision.clone()),
        rejected_ticks: state.rejected_ticks,
        holds: state.holds,
    }
}

fn progress_bar(ctx: &DriveContext) -> ProgressBar {
    if !ctx.progress_bar {
        return ProgressBar::hidden();
    }
    let pb = match ctx.total {
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
}

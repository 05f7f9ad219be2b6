//! The engine thread: candles from the feed, paced by the wall clock when
//! asked, into the engine; batches with their checkpoints out to the ledger.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use crate::{
    engine::{Engine, EngineState, Step},
    ledger::records::LedgerBatch,
    market::csv::DataError,
    types::Timestamp,
};

use super::{
    checkpoint::{CHECKPOINT_VERSION, Checkpoint},
    feed::Feed,
    stop::StopSignal,
    writer::LedgerHealth,
};

/// Flush when this many records are waiting, whatever the candle count.
const MAX_PENDING_RECORDS: usize = 20_000;

/// One batch on its way to the ledger, with the checkpoint after it and the
/// engine's figures at that point (for the report).
pub(super) struct Flush {
    pub batch: LedgerBatch,
    pub checkpoint: String,
    pub state: EngineState,
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
}

/// Maps market time to wall time for paced runs: the candle closing at
/// market time `t` is due at `wall0 + (t − market0) / speed`.
struct Pacer {
    speed: f64,
    market0: Option<i64>,
    wall0: Instant,
}

impl Pacer {
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

/// Run the engine over the feed until its end, a halt, a stop request or a
/// closed ledger channel. Every batch goes out with its checkpoint.
pub(super) fn drive(
    mut engine: Engine,
    mut feed: Feed,
    mut progress: Progress,
    ctx: DriveContext,
    tx: mpsc::Sender<Flush>,
) -> Ending {
    let bar = progress_bar(&ctx);
    bar.set_position(progress.candles);
    // A paced run starts its clock at the first candle it trades (a resumed
    // run at the candle after its checkpoint): nothing is waited out twice.
    let mut pacer = ctx.speed.map(|speed| Pacer {
        speed,
        market0: None,
        wall0: Instant::now(),
    });
    let mut last_flush = Instant::now();
    let mut paused_logged = false;

    let ending = loop {
        // Never trade ahead of a ledger that is not taking commits.
        while ctx.health.is_down() && !ctx.health.has_failed() && !ctx.stop.is_requested() {
            if !paused_logged {
                bar.set_message("paused: ledger unavailable");
                paused_logged = true;
            }
            ctx.stop.sleep(Duration::from_millis(50));
        }
        if paused_logged && !ctx.health.is_down() {
            paused_logged = false;
            bar.set_message("");
            // Resume pacing from now instead of racing to catch up.
            if let Some(p) = pacer.as_mut() {
                p.market0 = None;
                p.wall0 = Instant::now();
            }
        }
        if ctx.stop.is_requested() || ctx.health.has_failed() || tx.is_closed() {
            break Ending::Interrupted;
        }
        let Some(item) = feed.next() else {
            break Ending::Completed;
        };
        let c = match item {
            Ok(c) => c,
            Err(e) => break Ending::DataError(e),
        };
        let t0 = *progress.first_open.get_or_insert(c.open_time);
        if let Some(limit) = ctx.stop_after_ms
            && c.open_time.millis().saturating_sub(t0.millis()) >= limit
        {
            break Ending::Completed;
        }
        if let Some(p) = pacer.as_mut()
            && let Some(due) = p.due(c.close_time())
            && ctx.stop.sleep_until(due)
        {
            // Woken by a stop request: this candle was not traded, so it is
            // not counted; the resumed run reads it again.
            break Ending::Interrupted;
        }
        progress.feed_items += 1;
        let step = engine.on_candle(&c);
        progress.candles += 1;
        let n = progress.candles;
        let due_flush = n.is_multiple_of(ctx.batch_candles)
            || engine.pending_records() > MAX_PENDING_RECORDS
            || ctx.speed.is_some()
            || (n.is_multiple_of(1024) && last_flush.elapsed() >= Duration::from_secs(1));
        match step {
            Step::Continue => {}
            Step::Halted => break Ending::Halted,
            Step::Failed => {
                break Ending::Failed(
                    engine
                        .failure()
                        .unwrap_or("value out of the engine's range")
                        .to_owned(),
                );
            }
        }
        if due_flush {
            if !send(&mut engine, &progress, &ctx, &tx) {
                break Ending::Interrupted;
            }
            last_flush = Instant::now();
            bar.set_position(n);
            bar.set_message(format!(
                "equity {}",
                engine.portfolio().equity().round_dp(2)
            ));
        }
    };
    // A real end takes a final snapshot; an interruption does not, so that
    // the resumed run records exactly what an uninterrupted one would.
    if !matches!(ending, Ending::Interrupted) {
        engine.finish();
    }
    send(&mut engine, &progress, &ctx, &tx);
    bar.set_position(progress.candles);
    bar.finish_and_clear();
    ending
}

/// Take the engine's batch and send it with its checkpoint. Returns `false`
/// when the ledger task has stopped taking batches.
fn send(
    engine: &mut Engine,
    progress: &Progress,
    ctx: &DriveContext,
    tx: &mpsc::Sender<Flush>,
) -> bool {
    let batch = engine.take_batch();
    let checkpoint = Checkpoint {
        version: CHECKPOINT_VERSION,
        snapshot_interval_ms: ctx.snapshot_interval_ms,
        feed_items: progress.feed_items,
        candles: progress.candles,
        first_open: progress.first_open,
        engine: engine.checkpoint(),
    };
    let checkpoint = match checkpoint.to_json() {
        Ok(text) => text,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the checkpoint; stopping");
            return false;
        }
    };
    tx.blocking_send(Flush {
        batch,
        checkpoint,
        state: engine.state(),
    })
    .is_ok()
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

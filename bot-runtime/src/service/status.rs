//! What the session side publishes: the [`RuntimeStatus`] (from committed
//! state only), the live events and the metrics.
//!
//! The [`Publisher`] is the runner's [`Observer`]: it runs on the report
//! thread after each commit (analytics folded in), builds the full status,
//! sends the batch's events, updates the metrics, and only then answers the
//! control requests the batch carried, so an `Ok` answer is visible in
//! `/v1/status`. Between commits [`Shared::refresh`] (once a second) moves
//! the data age, readiness and ledger health.
//!
//! Readiness: the ledger takes commits and the market data is fresh — the
//! last candle was traded at most `max(3 × candle interval ÷ speed, 5 s)`
//! of wall time ago (before the first candle: since trading started) — or
//! the session has ended (it then serves its final status).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use paperbot_crds::runtime_api::{
    LedgerHealthStatus, MarketDataSourceStatus, MarketDataStatus, RuntimePhase, RuntimeStatus,
    SourceState,
};
use rust_decimal::{Decimal, prelude::FromPrimitive};
use tokio::sync::{broadcast, watch};

use crate::{
    analytics::Analytics,
    engine::EngineState,
    ledger::records::LedgerBatch,
    market::live::BreakerState as LiveBreakerState,
    runner::{
        LedgerHealth,
        control::{Committed, Inbox, LastCandle, LiveSnapshot, Observer},
        live::{LiveFeedSnapshot, LiveFeedStats},
    },
    types::Timestamp,
};

use super::{RuntimeEvent, metrics::Metrics};

/// Shortest freshness limit, seconds: the status shows committed state, and
/// a fast run commits about once a second.
const MIN_FRESH_SECONDS: f64 = 5.0;

/// Where the session is, for the control loop.
#[derive(Clone, Debug)]
pub(super) enum Stage {
    /// Validating, opening the ledger, resuming: requests are refused.
    Starting,
    /// Trading: requests go to the engine thread through the inbox.
    Running(Arc<Inbox>),
    /// Ended for good with this phase: the API serves read-only.
    Ended(RuntimePhase),
    /// Stopping on a signal (or after a fatal error): requests are refused.
    ShuttingDown,
}

/// Freshness inputs.
#[derive(Debug)]
struct Fresh {
    /// When trading started (wall clock).
    since: Instant,
    last_candle: Option<LastCandle>,
    /// Candle interval before the first candle, ms.
    interval_ms: i64,
}

/// State shared by the session task, the report thread (publisher), the
/// once-a-second refresh and the control loop.
#[derive(Debug)]
pub(super) struct Shared {
    pub status: watch::Sender<RuntimeStatus>,
    pub events: broadcast::Sender<RuntimeEvent>,
    pub metrics: Metrics,
    pub health: Arc<LedgerHealth>,
    stage: Mutex<Stage>,
    fresh: Mutex<Fresh>,
    /// Multiple of real time (`None` = as fast as possible).
    speed: Option<f64>,
    /// To scrub the database password out of ledger errors.
    ledger_url: Option<String>,
    /// The manifest's strategy revision, reported until a reload brings one.
    manifest_revision: Option<String>,
    /// A live session's feed (its chain's counters and price times).
    live: Mutex<Option<LiveFeedStats>>,
}

impl Shared {
    pub fn new(
        status: watch::Sender<RuntimeStatus>,
        events: broadcast::Sender<RuntimeEvent>,
        metrics: Metrics,
        speed: Option<f64>,
        interval_ms: i64,
        ledger_url: Option<String>,
        manifest_revision: Option<String>,
    ) -> Self {
        Self {
            status,
            events,
            metrics,
            health: Arc::new(LedgerHealth::default()),
            stage: Mutex::new(Stage::Starting),
            fresh: Mutex::new(Fresh {
                since: Instant::now(),
                last_candle: None,
                interval_ms,
            }),
            speed,
            ledger_url,
            manifest_revision,
            live: Mutex::new(None),
        }
    }

    /// The session's live feed (`None` for replay and simulation): from
    /// now on the status carries `marketData` and the metrics the chain's
    /// series.
    pub fn set_live(&self, live: Option<LiveFeedStats>) {
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = live;
    }

    /// `marketData` of a live session, now; also moves its metrics.
    fn market_data(&self) -> Option<MarketDataStatus> {
        let live = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        let snap = live.snapshot();
        let now = Timestamp::from_datetime(chrono::Utc::now());
        let status = market_data_status(&snap, now);
        self.metrics.set_market_data(&snap, now, &status);
        Some(status)
    }

    /// The stage now.
    pub fn stage(&self) -> Stage {
        self.stage.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Run `f` on the stage under its lock (a request is pushed to the inbox
    /// under it, so that none is pushed after the session ended and its
    /// inbox was drained).
    pub fn with_stage<T>(&self, f: impl FnOnce(&mut Stage) -> T) -> T {
        f(&mut self.stage.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Set the stage.
    pub fn set_stage(&self, stage: Stage) {
        self.with_stage(|s| *s = stage);
    }

    /// Publish a new status made by `f` from the current one; a phase change
    /// is also sent as an event and to the metrics.
    pub fn publish(&self, f: impl FnOnce(&mut RuntimeStatus)) {
        let mut change = None;
        self.status.send_modify(|s| {
            let before = (s.phase, s.message.clone());
            f(s);
            if s.strategy_revision.is_none() {
                s.strategy_revision.clone_from(&self.manifest_revision);
            }
            self.freshness(s);
            if s.phase != before.0 {
                change = Some((s.phase, s.message.clone()));
            }
        });
        self.metrics.set_status(&self.status.borrow());
        if let Some((phase, message)) = change {
            self.metrics.set_phase(phase);
            let _ = self.events.send(RuntimeEvent::Phase { phase, message });
        }
    }

    /// Move data age, readiness and ledger health (once a second).
    pub fn refresh(&self) {
        self.status.send_modify(|s| self.freshness(s));
    }

    /// Trading starts now.
    fn trading_from_now(&self) {
        self.fresh.lock().unwrap_or_else(|p| p.into_inner()).since = Instant::now();
    }

    fn set_last_candle(&self, c: Option<LastCandle>) {
        if c.is_some() {
            self.fresh
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last_candle = c;
        }
    }

    /// Data age, readiness and ledger health of `s`, now.
    fn freshness(&self, s: &mut RuntimeStatus) {
        let ended = s.phase.is_final();
        let down = self.health.is_down() || self.health.has_failed();
        s.ledger = LedgerHealthStatus {
            reachable: !down,
            reason: down.then(|| self.ledger_reason()),
        };
        let fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
        if !ended && let Some(md) = self.market_data() {
            s.market_data = Some(md);
        }
        if !ended {
            s.data_age_seconds = fresh
                .last_candle
                .map(|c| (c.traded_at.elapsed().as_secs_f64() * 1000.0).round() / 1000.0);
        }
        let interval = fresh
            .last_candle
            .map_or(fresh.interval_ms, |c| c.interval_ms);
        let limit = match self.speed {
            Some(speed) => (3.0 * interval as f64 / 1000.0 / speed).max(MIN_FRESH_SECONDS),
            None => MIN_FRESH_SECONDS,
        };
        let age = s
            .data_age_seconds
            .unwrap_or_else(|| fresh.since.elapsed().as_secs_f64());
        s.ready = ended
            || (!down
                && matches!(s.phase, RuntimePhase::Running | RuntimePhase::Paused)
                && age <= limit);
        if !ended {
            self.metrics
                .set_freshness(s.data_age_seconds, limit, s.ready);
        } else {
            self.metrics.set_freshness(None, limit, true);
        }
        self.metrics.set_ledger(!down, self.health.errors());
    }

    fn ledger_reason(&self) -> String {
        let why = self
            .health
            .reason()
            .unwrap_or_else(|| "ledger unavailable".into());
        match &self.ledger_url {
            Some(url) => crate::ledger::url::scrub(&why, url),
            None => why,
        }
    }

    /// Poll [`refresh`](Self::refresh) once a second until the session ends.
    pub async fn refresh_every_second(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.stage() {
                Stage::Ended(_) | Stage::ShuttingDown => return,
                Stage::Starting | Stage::Running(_) => self.refresh(),
            }
        }
    }
}

/// A live session's `marketData` at `now` (wall clock) from its feed's
/// last poll: the active and preferred sources, each source's breaker
/// state and counters (failures summed over kinds, rejections over
/// reasons), and the symbols older than `maxAge`.
pub(super) fn market_data_status(snap: &LiveFeedSnapshot, now: Timestamp) -> MarketDataStatus {
    MarketDataStatus {
        active_source: snap.active_source().map(str::to_string),
        preferred_source: snap.preferred_source().unwrap_or_default().to_string(),
        sources: snap
            .chain
            .sources
            .iter()
            .map(|src| MarketDataSourceStatus {
                name: src.name.clone(),
                state: match src.breaker {
                    None | Some(LiveBreakerState::Closed) => SourceState::Closed,
                    Some(LiveBreakerState::Open) => SourceState::Open,
                    Some(LiveBreakerState::HalfOpen) => SourceState::HalfOpen,
                },
                requests: src.http_requests,
                failures: src.failures.values().sum(),
                rejected: src.rejected.values().sum(),
            })
            .collect(),
        stale_symbols: snap
            .ages_at(now)
            .into_iter()
            .filter(|a| a.stale)
            .map(|a| a.symbol)
            .collect(),
        max_age_seconds: snap.max_age_ms as f64 / 1000.0,
    }
}

/// The status figures of committed state (phase left as it is unless the
/// session runs: then Running or Paused).
pub(super) fn apply_figures(
    s: &mut RuntimeStatus,
    state: &EngineState,
    snapshot: &LiveSnapshot,
    analytics: &Analytics,
) {
    let summary = analytics.summary(state, "");
    s.cash = state.cash;
    s.equity = state.equity;
    s.realized_pnl = state.realized_pnl;
    s.unrealized_pnl = state.unrealized_pnl;
    s.roi_pct = summary.roi_pct.round_dp(4).normalize();
    s.trades = state.fills;
    s.round_trips = summary.round_trips;
    s.win_rate_pct =
        (summary.round_trips > 0).then(|| summary.win_rate_pct.round_dp(2).normalize());
    s.drawdown_pct = snapshot.drawdown_pct;
    s.max_drawdown_pct = state.max_drawdown_pct;
    s.sharpe_ratio = summary
        .sharpe_ratio
        .and_then(Decimal::from_f64)
        .map(|d| d.round_dp(4).normalize());
    s.positions = snapshot.positions.clone();
    s.breakers = snapshot.breakers.clone();
    s.autopilot = snapshot.autopilot.clone();
    s.candles = snapshot.candles;
    if state.bars > 0 || snapshot.candles > 0 {
        s.last_candle_time = Some(state.now.to_rfc3339());
    }
    s.strategy_revision = snapshot.strategy_revision.clone();
}

/// The phase and message of a running session.
pub(super) fn running_phase(s: &mut RuntimeStatus, paused: bool) {
    if paused {
        s.phase = RuntimePhase::Paused;
        s.message = Some(
            "paused by request: no new entries; exits (stop-loss, take-profit, trailing stop, \
             max hold time, sell signals) still run"
                .into(),
        );
    } else {
        s.phase = RuntimePhase::Running;
        s.message = None;
    }
}

/// A batch's records as events, in market-time order (decisions before the
/// fills they cause at the same time, then breaker transitions, adjustments,
/// outcomes; each symbol's latest close last).
pub(super) fn batch_events(batch: &LedgerBatch, snapshot: &LiveSnapshot) -> Vec<RuntimeEvent> {
    let mut events: Vec<(Timestamp, u8, RuntimeEvent)> = Vec::with_capacity(
        batch.decisions.len()
            + batch.trades.len()
            + batch.breaker_events.len()
            + batch.adjustments.len()
            + batch.adjustment_outcomes.len()
            + snapshot.prices.len(),
    );
    events.extend(
        batch
            .decisions
            .iter()
            .map(|d| (d.time, 0, RuntimeEvent::Decision(d.clone()))),
    );
    events.extend(
        batch
            .trades
            .iter()
            .map(|t| (t.time, 1, RuntimeEvent::Fill(t.clone()))),
    );
    events.extend(
        batch
            .breaker_events
            .iter()
            .map(|b| (b.time, 2, RuntimeEvent::Breaker(b.clone()))),
    );
    events.extend(
        batch
            .adjustments
            .iter()
            .map(|a| (a.time, 3, RuntimeEvent::Adjustment(a.clone()))),
    );
    events.extend(
        batch
            .adjustment_outcomes
            .iter()
            .map(|o| (o.time, 4, RuntimeEvent::AdjustmentOutcome(o.clone()))),
    );
    events.extend(snapshot.prices.iter().map(|(symbol, time, close)| {
        (
            *time,
            5,
            RuntimeEvent::Price {
                symbol: symbol.clone(),
                time: *time,
                close: *close,
            },
        )
    }));
    events.sort_by_key(|(t, k, _)| (*t, *k));
    events.into_iter().map(|(_, _, e)| e).collect()
}

/// The runner's observer of a serving session.
pub(super) struct Publisher {
    pub shared: Arc<Shared>,
    pub inbox: Arc<Inbox>,
    /// Engine counters at the last commit (for the metrics' increments).
    last_candles: u64,
    last_holds: u64,
    last_rejected: u64,
}

impl Publisher {
    pub fn new(shared: Arc<Shared>, inbox: Arc<Inbox>) -> Self {
        Self {
            shared,
            inbox,
            last_candles: 0,
            last_holds: 0,
            last_rejected: 0,
        }
    }
}

impl Observer for Publisher {
    fn started(
        &mut self,
        session_id: &str,
        _resumed: bool,
        state: &EngineState,
        snapshot: &LiveSnapshot,
        analytics: &Analytics,
    ) {
        self.last_candles = snapshot.candles;
        self.last_holds = snapshot.holds;
        self.last_rejected = snapshot.rejected_ticks;
        self.shared.trading_from_now();
        self.shared.publish(|s| {
            s.session_id = session_id.to_string();
            apply_figures(s, state, snapshot, analytics);
            running_phase(s, snapshot.paused);
        });
        self.shared.set_stage(Stage::Running(self.inbox.clone()));
    }

    fn committed(&mut self, c: Committed<'_>) {
        let snap = c.snapshot;
        self.shared.set_last_candle(snap.last_candle);
        let m = &self.shared.metrics;
        m.observe_commit(c.commit_seconds);
        m.count(
            c.batch,
            snap.candles.saturating_sub(self.last_candles),
            snap.holds.saturating_sub(self.last_holds),
            snap.rejected_ticks.saturating_sub(self.last_rejected),
        );
        self.last_candles = snap.candles;
        self.last_holds = snap.holds;
        self.last_rejected = snap.rejected_ticks;
        // Events of the batch first, then the status (a phase change is sent
        // as an event after the records that led to it).
        if self.shared.events.receiver_count() > 0 {
            for e in batch_events(c.batch, snap) {
                let _ = self.shared.events.send(e);
            }
        }
        self.shared.publish(|s| {
            apply_figures(s, c.state, snap, c.analytics);
            running_phase(s, snap.paused);
        });
        for (reply, answer) in c.replies {
            let _ = reply.send(Ok(answer));
        }
    }
}

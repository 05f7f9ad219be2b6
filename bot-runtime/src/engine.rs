//! The engine: one candle in, decisions, fills and records out.
//!
//! The engine is synchronous and deterministic. It never reads the wall
//! clock: market time is the time of the candle it is given, so replay,
//! paced replay, simulation and (later) live trading all drive the same code.
//!
//! # Per candle, in order
//!
//! 1. Time: UTC-day rollover, breaker cooldowns.
//! 2. Feed check: prices with more than [`MAX_PRICE_DP`] decimal places are
//!    rounded to 12; the candle is validated (a bad tick — including a value
//!    outside the ranges of [`crate::types`] or an unknown symbol — is
//!    skipped and counted; gaps are measured); the price-feed breaker sees
//!    both.
//! 3. A pending market order of the symbol fills on this candle (see
//!    [`crate::execution`] for the price rules).
//! 4. Stop-loss / trailing stop / take-profit levels are checked against the
//!    candle's low and high.
//! 5. The symbol is marked at the close; equity, peak and drawdown update; the
//!    breakers see the new equity; the account kill switch may halt the session
//!    (positions are liquidated at the close).
//! 6. Max-hold-time exits are queued.
//! 7. Signals update with the close; a decision is made and, for Buy/Sell, a
//!    market order is queued for the next candle (decision time + latency).
//! 8. A performance snapshot is taken when the snapshot interval has passed.
//!
//! Long-only: Buy opens a position when flat, Sell closes it. A buy signal
//! while long and a sell signal while flat are Holds. The confidence threshold
//! applies to entries and signal exits; circuit breakers block entries only,
//! never exits.
//!
//! # Range
//!
//! No candle the feed guard accepts and no configuration makes the engine
//! panic. Quantities computed by sizing are capped at
//! [`MAX_ORDER_QUANTITY`]; products that can outgrow a `Decimal` are
//! checked; the books refuse any figure beyond [`crate::types::MAX_MONEY`] or
//! beyond what a `Decimal` holds exactly (see [`crate::portfolio`]). When a
//! figure would leave that range the engine stops: [`Engine::on_candle`]
//! returns [`Step::Failed`] from then on and [`Engine::failure`] says what
//! and where, e.g. `BTC-USD at 2024-01-01T00:05:00Z: market value 1e22
//! exceeds the engine's range (1e20)`. The books stay as they were before
//! the refused operation, so the accounting identity still holds.
//!
//! # Checkpoints
//!
//! [`Engine::checkpoint`] captures everything that influences future records
//! ([`EngineCheckpoint`]); [`Engine::restore`] rebuilds an engine that
//! continues *exactly* as the original would have: feeding both the same
//! candles gives identical records and [`EngineState`]. A checkpoint is
//! taken right after [`Engine::take_batch`] (or with
//! [`Engine::take_batch_and_checkpoint`]), when no record is pending; one
//! taken with records pending is refused by `restore`.

use paperbot_crds::{ExecutionSpec, SignalsSpec, VolumeUnit};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::{
    autopilot::{Autopilot, AutopilotCheckpoint},
    breakers::{BreakersCheckpoint, CircuitBreakers},
    execution::{ExecutionCheckpoint, ExecutionModel},
    ledger::records::{
        Action, DecisionRecord, FillReason, FillStatus, LedgerBatch, PositionRecord, RoundTrip,
        SnapshotRecord, TradeRecord,
    },
    market::guard::{FeedGuard, FeedVerdict, GuardCheckpoint, check_prices},
    params::{EffectiveParams, TunableParams},
    portfolio::{Portfolio, PortfolioCheckpoint},
    signals::{SignalSet, SignalsCheckpoint, combine, explain},
    types::{
        Candle, MAX_PRICE_DP, MAX_VOLUME, RangeError, Side, SymbolId, Timestamp, checked_div,
        checked_mul,
    },
};

/// Decimal places of quantities computed by percent sizing (rounded down).
pub const QUANTITY_DP: u32 = 8;

/// Largest quantity sizing computes (percent of equity, or what the cash
/// allows), base units: 1e18, the largest candle volume accepted. Only a
/// tiny price with a huge equity comes near it.
pub const MAX_ORDER_QUANTITY: Decimal = MAX_VOLUME;

/// Reason of the Skip recorded for a Buy signal while the session is paused.
pub const PAUSED_SKIP: &str = "session paused: new entries blocked";

/// Version of the [`EngineCheckpoint`] format; `restore` refuses others.
pub const CHECKPOINT_VERSION: u32 = 1;

/// Everything the engine needs to know about a session.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Symbol names; index = [`SymbolId`].
    pub symbols: Vec<String>,
    /// Starting cash (the session's allocation), quote currency.
    pub initial_cash: Decimal,
    /// Resolved strategy parameters.
    pub params: EffectiveParams,
    /// Signal generators.
    pub signals: SignalsSpec,
    /// Execution realism.
    pub execution: ExecutionSpec,
    /// Volume unit per symbol.
    pub volume_units: Vec<VolumeUnit>,
    /// Market time between performance snapshots, milliseconds.
    pub snapshot_interval_ms: i64,
    /// Record Hold decisions (they are always counted).
    pub record_holds: bool,
}

impl EngineConfig {
    /// The engine configuration of a planned session.
    pub fn from_plan(plan: &crate::config::SessionPlan, snapshot_interval_ms: i64) -> Self {
        Self {
            symbols: plan.symbols.clone(),
            initial_cash: plan.session.allocation.get(),
            params: plan.params.clone(),
            signals: plan.strategy.signals.clone(),
            execution: plan.session.execution.clone(),
            volume_units: plan.volume_units.clone(),
            snapshot_interval_ms,
            record_holds: plan.session.record_holds,
        }
    }

    /// The configuration as JSON, as a checkpoint records it (camelCase
    /// names; decimals as strings).
    fn fingerprint(&self) -> serde_json::Value {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Fingerprint<'a> {
            symbols: &'a [String],
            initial_cash: Decimal,
            params: &'a EffectiveParams,
            signals: &'a SignalsSpec,
            execution: &'a ExecutionSpec,
            volume_units: &'a [VolumeUnit],
            snapshot_interval_ms: i64,
            record_holds: bool,
        }
        serde_json::to_value(Fingerprint {
            symbols: &self.symbols,
            initial_cash: self.initial_cash,
            params: &self.params,
            signals: &self.signals,
            execution: &self.execution,
            volume_units: &self.volume_units,
            snapshot_interval_ms: self.snapshot_interval_ms,
            record_holds: self.record_holds,
        })
        .unwrap_or_default()
    }
}

/// What the runner should do after a candle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Keep feeding candles.
    Continue,
    /// The account kill switch tripped: positions were liquidated; stop.
    Halted,
    /// A figure left the engine's range: the session must stop (nothing
    /// more is processed); [`Engine::failure`] says why. The records up to
    /// the failure are consistent with the books.
    Failed,
}

#[derive(Clone, Debug)]
struct PendingOrder {
    side: Side,
    quantity: Decimal,
    decision_seq: u64,
    decision_time: Timestamp,
    fill_time: Timestamp,
    reason: FillReason,
}

/// A pending order in a checkpoint (`reason` as [`FillReason::as_str`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PendingOrderCheckpoint {
    side: Side,
    quantity: Decimal,
    decision_seq: u64,
    decision_time: Timestamp,
    fill_time: Timestamp,
    reason: String,
}

const FILL_REASONS: [FillReason; 6] = [
    FillReason::Signal,
    FillReason::StopLoss,
    FillReason::TakeProfit,
    FillReason::TrailingStop,
    FillReason::MaxHoldTime,
    FillReason::Liquidation,
];

/// Per-symbol state.
struct SymbolState {
    name: String,
    signals: SignalSet,
    pending: Option<PendingOrder>,
    /// Cached exit levels of the open position (recomputed on entry and when
    /// the autopilot changes the parameters).
    stop_price: Option<Decimal>,
    take_profit_price: Option<Decimal>,
    trail_price: Option<Decimal>,
    levels_version: u64,
    dirty: bool,
    /// The last accepted candle.
    last_candle: Option<Candle>,
}

/// One symbol's state in a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SymbolCheckpoint {
    name: String,
    signals: SignalsCheckpoint,
    pending: Option<PendingOrderCheckpoint>,
    stop_price: Option<Decimal>,
    take_profit_price: Option<Decimal>,
    trail_price: Option<Decimal>,
    levels_version: u64,
    last_candle: Option<Candle>,
}

/// Figures at the end of a run (and at any time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineState {
    /// First candle's open time.
    pub start: Timestamp,
    /// Latest market time seen.
    pub now: Timestamp,
    /// Candles processed.
    pub bars: u64,
    /// Cash.
    pub cash: Decimal,
    /// Equity.
    pub equity: Decimal,
    /// Realized P&L.
    pub realized_pnl: Decimal,
    /// Unrealized P&L.
    pub unrealized_pnl: Decimal,
    /// Largest drawdown seen, percent (4 dp).
    pub max_drawdown_pct: Decimal,
    /// Open positions.
    pub open_positions: u32,
    /// Hold decisions (counted even when not recorded).
    pub holds: u64,
    /// Fills so far.
    pub fills: u64,
    /// Candles rejected by the feed check.
    pub rejected_ticks: u64,
}

/// Why [`Engine::restore`] refused a checkpoint. Every case names what was
/// wrong and what was expected; a checkpoint comes from a database, so it
/// is checked like any input.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The text is not a checkpoint (syntax, a missing or unknown field, a
    /// wrong type), with serde's line and column.
    #[error("the checkpoint is not valid checkpoint JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Written by a runtime with another checkpoint format.
    #[error(
        "checkpoint format version {found} is not supported: this runtime reads version {expected}"
    )]
    Version {
        /// The checkpoint's version.
        found: u32,
        /// [`CHECKPOINT_VERSION`].
        expected: u32,
    },
    /// The session's configuration is not the one the checkpoint was taken
    /// with: the first difference, e.g. `execution.seed was 7, now 8`.
    #[error("the session's configuration changed since the checkpoint: {0}")]
    ConfigChanged(String),
    /// Taken with records not yet handed over by [`Engine::take_batch`].
    #[error(
        "the checkpoint was taken with {0} records not yet handed over by take_batch(): resuming from it would lose them"
    )]
    Unflushed(u64),
    /// A value is inconsistent or out of range (hand-edited or damaged).
    #[error("corrupt checkpoint: {0}")]
    Corrupt(String),
}

/// The complete state of an [`Engine`] between two candles, as JSON text
/// (serde; decimals as strings with their scale, `f64` indicator state as
/// IEEE-754 bits, random streams as word positions), so that
/// [`Engine::restore`] continues exactly.
///
/// It holds: the format [`CHECKPOINT_VERSION`]; the configuration it was
/// taken with (checked on restore); candles consumed; cash, realized P&L and
/// every position (quantity, cost basis, entry figures, last price, market
/// value, opening time, highest price); pending orders; cached exit levels;
/// breaker states (state, trips, since, reason, failure/loss/invalid-tick
/// runs, day counters, drawdown reference, halt); the autopilot (current
/// parameters, the open window's sums, the set awaiting its verdict, the
/// negative run, daily count, next id, recent adjustments, enabled flag);
/// daily counters and day-start equity; decision and trade sequence
/// numbers; snapshot timing; equity peak and the largest drawdown's peak and
/// trough; the feed guard's last times and invalid counts; every signal's
/// buffers and running sums; the random streams' positions; the last
/// accepted candle of each symbol; and a failure reason or halt.
///
/// Size: about 2 KB of configuration plus, per symbol, its position and
/// signal buffers (a few KB for periods of tens of bars).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EngineCheckpoint {
    version: u32,
    config: serde_json::Value,
    candles: u64,
    unflushed_records: u64,
    bars: u64,
    holds: u64,
    fills: u64,
    rejected: u64,
    decision_seq: u64,
    trade_seq: u64,
    start: Option<Timestamp>,
    now: Timestamp,
    day: i64,
    day_start_equity: Decimal,
    entries_today: u32,
    last_equity: Decimal,
    peak_equity: Decimal,
    worst_peak: Decimal,
    worst_trough: Decimal,
    next_snapshot: Timestamp,
    last_snapshot: Option<Timestamp>,
    params_version: u64,
    halted: bool,
    /// Paused by request: no new entries (absent = false, as written before pausing existed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    paused: bool,
    failure: Option<String>,
    portfolio: PortfolioCheckpoint,
    symbols: Vec<SymbolCheckpoint>,
    breakers: BreakersCheckpoint,
    autopilot: AutopilotCheckpoint,
    feed_guard: GuardCheckpoint,
    execution: ExecutionCheckpoint,
}

impl EngineCheckpoint {
    /// The checkpoint as JSON text.
    ///
    /// # Errors
    ///
    /// Only if serde_json fails, which it does not for this type (every map
    /// key is a string, every number finite).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// Parse a checkpoint from JSON text (structure only; [`Engine::restore`]
    /// checks the values).
    ///
    /// # Errors
    ///
    /// [`RestoreError::Json`] with serde's line, column and reason.
    pub fn from_json(text: &str) -> Result<Self, RestoreError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Format version ([`CHECKPOINT_VERSION`] when written by this runtime).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Candles handed to [`Engine::on_candle`] before the checkpoint
    /// (rejected ones included): the feed items a resumed run skips.
    pub fn candles_consumed(&self) -> u64 {
        self.candles
    }

    /// Latest market time seen.
    pub fn time(&self) -> Timestamp {
        self.now
    }

    /// The last accepted candle of each symbol, by symbol index.
    pub fn last_candles(&self) -> impl Iterator<Item = Option<&Candle>> {
        self.symbols.iter().map(|s| s.last_candle.as_ref())
    }

    /// Why the engine had stopped, if it had failed (see [`Step::Failed`]).
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Whether the account kill switch had halted the session.
    pub fn halted(&self) -> bool {
        self.halted
    }

    /// Whether the session was paused (no new entries).
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// The figures [`Engine::state`] gave when the checkpoint was taken,
    /// computed from the checkpoint alone (for a report regenerated from the
    /// ledger). Sums saturate instead of overflowing on a damaged checkpoint.
    pub fn state(&self) -> EngineState {
        let pf = &self.portfolio;
        let open = pf.positions.iter().filter(|p| !p.quantity.is_zero());
        let position_value = pf
            .positions
            .iter()
            .fold(Decimal::ZERO, |a, p| a.saturating_add(p.market_value));
        let unrealized = open.clone().fold(Decimal::ZERO, |a, p| {
            a.saturating_add(p.market_value.saturating_sub(p.cost_basis))
        });
        EngineState {
            start: self.start.unwrap_or(self.now),
            now: self.now,
            bars: self.bars,
            cash: pf.cash,
            equity: pf.cash.saturating_add(position_value),
            realized_pnl: pf.realized_pnl,
            unrealized_pnl: unrealized,
            max_drawdown_pct: max_drawdown_pct(self.worst_peak, self.worst_trough),
            open_positions: u32::try_from(open.count()).unwrap_or(u32::MAX),
            holds: self.holds,
            fills: self.fills,
            rejected_ticks: self.rejected,
        }
    }
}

/// The first place where two JSON values differ, as `path was A, now B`.
fn first_difference(
    path: &str,
    old: &serde_json::Value,
    new: &serde_json::Value,
) -> Option<String> {
    use serde_json::Value;
    let at = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, va) in a {
                match b.get(k) {
                    Some(vb) => {
                        if let Some(d) = first_difference(&at(k), va, vb) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{} was {va}, now absent", at(k))),
                }
            }
            b.iter()
                .find(|(k, _)| !a.contains_key(*k))
                .map(|(k, vb)| format!("{} was absent, now {vb}", at(k)))
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (va, vb))| first_difference(&format!("{path}[{i}]"), va, vb)),
        _ if old == new => None,
        _ => Some(format!(
            "{} was {old}, now {new}",
            if path.is_empty() {
                "configuration"
            } else {
                path
            }
        )),
    }
}

/// The trading engine of one session.
pub struct Engine {
    cfg: EngineConfig,
    syms: Vec<SymbolState>,
    portfolio: Portfolio,
    exec: ExecutionModel,
    breakers: CircuitBreakers,
    autopilot: Autopilot,
    guard: FeedGuard,
    batch: LedgerBatch,
    /// The configuration as a checkpoint records it.
    fingerprint: serde_json::Value,
    candles: u64,
    decision_seq: u64,
    trade_seq: u64,
    fills: u64,
    bars: u64,
    holds: u64,
    rejected: u64,
    start: Option<Timestamp>,
    now: Timestamp,
    day: i64,
    day_start_equity: Decimal,
    entries_today: u32,
    last_equity: Decimal,
    peak_equity: Decimal,
    /// Peak and trough of the largest drawdown so far (compared without division).
    worst_peak: Decimal,
    worst_trough: Decimal,
    next_snapshot: Timestamp,
    last_snapshot: Option<Timestamp>,
    params_version: u64,
    halted: bool,
    paused: bool,
    failure: Option<String>,
}

fn symbol_state(name: &str, signals: &SignalsSpec) -> SymbolState {
    SymbolState {
        name: name.to_string(),
        signals: SignalSet::new(signals),
        pending: None,
        stop_price: None,
        take_profit_price: None,
        trail_price: None,
        levels_version: 0,
        dirty: false,
        last_candle: None,
    }
}

impl Engine {
    /// A fresh engine (flat, all cash). An initial cash outside the engine's
    /// range makes the first [`on_candle`](Self::on_candle) return
    /// [`Step::Failed`] with the reason.
    pub fn new(cfg: EngineConfig) -> Self {
        let syms = cfg
            .symbols
            .iter()
            .map(|name| symbol_state(name, &cfg.signals))
            .collect();
        let n = cfg.symbols.len();
        let portfolio = Portfolio::new(cfg.initial_cash, n);
        let failure = portfolio
            .range_check()
            .err()
            .map(|e| format!("allocation: {e}"));
        Self {
            portfolio,
            exec: ExecutionModel::from_spec(&cfg.execution, &cfg.volume_units),
            breakers: CircuitBreakers::new(&cfg.params.breakers),
            autopilot: Autopilot::new(&cfg.params.autopilot, cfg.params.tunable.clone()),
            guard: FeedGuard::new(n),
            batch: LedgerBatch::default(),
            fingerprint: cfg.fingerprint(),
            candles: 0,
            decision_seq: 0,
            trade_seq: 0,
            fills: 0,
            bars: 0,
            holds: 0,
            rejected: 0,
            start: None,
            now: Timestamp(0),
            day: i64::MIN,
            day_start_equity: cfg.initial_cash,
            entries_today: 0,
            last_equity: cfg.initial_cash,
            peak_equity: cfg.initial_cash,
            worst_peak: cfg.initial_cash,
            worst_trough: cfg.initial_cash,
            next_snapshot: Timestamp(i64::MIN),
            last_snapshot: None,
            params_version: 1,
            halted: false,
            paused: false,
            failure,
            syms,
            cfg,
        }
    }

    /// The state between two candles, for [`restore`](Self::restore). Take
    /// it right after [`take_batch`](Self::take_batch) (or use
    /// [`take_batch_and_checkpoint`](Self::take_batch_and_checkpoint)): a
    /// checkpoint taken with records still pending says so and `restore`
    /// refuses it.
    pub fn checkpoint(&self) -> EngineCheckpoint {
        let b = &self.batch;
        let unflushed = b.decisions.len()
            + b.trades.len()
            + b.snapshots.len()
            + b.round_trips.len()
            + b.breaker_events.len()
            + b.adjustments.len()
            + b.adjustment_outcomes.len()
            + b.positions.len()
            + self.syms.iter().filter(|s| s.dirty).count();
        EngineCheckpoint {
            version: CHECKPOINT_VERSION,
            config: self.fingerprint.clone(),
            candles: self.candles,
            unflushed_records: unflushed as u64,
            bars: self.bars,
            holds: self.holds,
            fills: self.fills,
            rejected: self.rejected,
            decision_seq: self.decision_seq,
            trade_seq: self.trade_seq,
            start: self.start,
            now: self.now,
            day: self.day,
            day_start_equity: self.day_start_equity,
            entries_today: self.entries_today,
            last_equity: self.last_equity,
            peak_equity: self.peak_equity,
            worst_peak: self.worst_peak,
            worst_trough: self.worst_trough,
            next_snapshot: self.next_snapshot,
            last_snapshot: self.last_snapshot,
            params_version: self.params_version,
            halted: self.halted,
            paused: self.paused,
            failure: self.failure.clone(),
            portfolio: self.portfolio.checkpoint(),
            symbols: self
                .syms
                .iter()
                .map(|s| SymbolCheckpoint {
                    name: s.name.clone(),
                    signals: s.signals.checkpoint(),
                    pending: s.pending.as_ref().map(|o| PendingOrderCheckpoint {
                        side: o.side,
                        quantity: o.quantity,
                        decision_seq: o.decision_seq,
                        decision_time: o.decision_time,
                        fill_time: o.fill_time,
                        reason: o.reason.as_str().to_string(),
                    }),
                    stop_price: s.stop_price,
                    take_profit_price: s.take_profit_price,
                    trail_price: s.trail_price,
                    levels_version: s.levels_version,
                    last_candle: s.last_candle,
                })
                .collect(),
            breakers: self.breakers.checkpoint(),
            autopilot: self.autopilot.checkpoint(),
            feed_guard: self.guard.checkpoint(),
            execution: self.exec.checkpoint(),
        }
    }

    /// [`take_batch`](Self::take_batch) and the checkpoint right after it,
    /// to store in one transaction.
    pub fn take_batch_and_checkpoint(&mut self) -> (LedgerBatch, EngineCheckpoint) {
        let batch = self.take_batch();
        let cp = self.checkpoint();
        (batch, cp)
    }

    /// An engine for `cfg` in the state of `cp`: fed the candles after the
    /// checkpoint's it produces exactly the records and state the original
    /// engine would have.
    ///
    /// # Errors
    ///
    /// [`RestoreError::Version`] for another format,
    /// [`RestoreError::ConfigChanged`] naming the first setting that differs
    /// from the one the checkpoint was taken with,
    /// [`RestoreError::Unflushed`] for a checkpoint taken with records
    /// pending, and [`RestoreError::Corrupt`] naming the inconsistent value
    /// (wrong number of symbols or buffer lengths, the accounting identity
    /// broken, figures out of range, inconsistent counters...). Never panics.
    pub fn restore(cfg: EngineConfig, cp: EngineCheckpoint) -> Result<Self, RestoreError> {
        use RestoreError::Corrupt;
        if cp.version != CHECKPOINT_VERSION {
            return Err(RestoreError::Version {
                found: cp.version,
                expected: CHECKPOINT_VERSION,
            });
        }
        let fingerprint = cfg.fingerprint();
        if let Some(diff) = first_difference("", &cp.config, &fingerprint) {
            return Err(RestoreError::ConfigChanged(diff));
        }
        if cp.unflushed_records != 0 {
            return Err(RestoreError::Unflushed(cp.unflushed_records));
        }
        let n = cfg.symbols.len();
        if cp.symbols.len() != n || cp.portfolio.positions.len() != n {
            return Err(Corrupt(format!(
                "it has {} symbol states and {} positions for a session of {n} symbols",
                cp.symbols.len(),
                cp.portfolio.positions.len()
            )));
        }
        let portfolio = Portfolio::restore(cfg.initial_cash, cp.portfolio).map_err(Corrupt)?;
        let breakers =
            CircuitBreakers::restore(&cfg.params.breakers, cp.breakers).map_err(Corrupt)?;
        let autopilot = Autopilot::restore(&cfg.params.autopilot, cp.autopilot).map_err(Corrupt)?;
        let guard = FeedGuard::restore(n, cp.feed_guard).map_err(Corrupt)?;
        let mut exec = ExecutionModel::from_spec(&cfg.execution, &cfg.volume_units);
        exec.restore(&cp.execution).map_err(Corrupt)?;
        let mut syms = Vec::with_capacity(n);
        for (i, (name, sc)) in cfg.symbols.iter().zip(cp.symbols).enumerate() {
            let at = |field: &str| format!("symbols[{i}].{field}");
            if sc.name != *name {
                return Err(Corrupt(format!(
                    "{} is {:?}, expected {name:?}",
                    at("name"),
                    sc.name
                )));
            }
            let mut st = symbol_state(name, &cfg.signals);
            st.signals
                .restore(sc.signals)
                .map_err(|e| Corrupt(format!("{}: {e}", at("signals"))))?;
            st.pending = match sc.pending {
                None => None,
                Some(o) => {
                    let reason = FILL_REASONS
                        .into_iter()
                        .find(|r| r.as_str() == o.reason)
                        .ok_or_else(|| {
                            Corrupt(format!(
                                "{} {:?} is not a fill reason (signal, stop_loss, take_profit, trailing_stop, max_hold_time, liquidation)",
                                at("pending.reason"),
                                o.reason
                            ))
                        })?;
                    if o.quantity <= Decimal::ZERO || o.decision_seq > cp.decision_seq {
                        return Err(Corrupt(format!(
                            "{} has quantity {} and decision {} (expected a positive quantity and a decision already made, at most {})",
                            at("pending"),
                            o.quantity,
                            o.decision_seq,
                            cp.decision_seq
                        )));
                    }
                    Some(PendingOrder {
                        side: o.side,
                        quantity: o.quantity,
                        decision_seq: o.decision_seq,
                        decision_time: o.decision_time,
                        fill_time: o.fill_time,
                        reason,
                    })
                }
            };
            if sc.levels_version > cp.params_version {
                return Err(Corrupt(format!(
                    "{} {} is ahead of paramsVersion {}",
                    at("levelsVersion"),
                    sc.levels_version,
                    cp.params_version
                )));
            }
            if let Some(c) = &sc.last_candle
                && c.symbol.idx() != i
            {
                return Err(Corrupt(format!(
                    "{} belongs to symbol {}",
                    at("lastCandle"),
                    c.symbol.0
                )));
            }
            st.stop_price = sc.stop_price;
            st.take_profit_price = sc.take_profit_price;
            st.trail_price = sc.trail_price;
            st.levels_version = sc.levels_version;
            st.last_candle = sc.last_candle;
            syms.push(st);
        }
        if cp.fills > cp.trade_seq
            || cp.bars.saturating_add(cp.rejected) > cp.candles
            || cp.start.is_some() != (cp.candles > 0)
            || cp.params_version == 0
        {
            return Err(Corrupt(format!(
                "counters disagree: {} fills for {} trades, {} bars and {} rejected ticks for {} candles, start {:?}, paramsVersion {}",
                cp.fills,
                cp.trade_seq,
                cp.bars,
                cp.rejected,
                cp.candles,
                cp.start.map(Timestamp::to_rfc3339),
                cp.params_version
            )));
        }
        if cp.halted && breakers.halted().is_none() {
            return Err(Corrupt(
                "halted is true but no kill-switch breaker halted the session".into(),
            ));
        }
        Ok(Self {
            cfg,
            syms,
            portfolio,
            exec,
            breakers,
            autopilot,
            guard,
            batch: LedgerBatch::default(),
            fingerprint,
            candles: cp.candles,
            decision_seq: cp.decision_seq,
            trade_seq: cp.trade_seq,
            fills: cp.fills,
            bars: cp.bars,
            holds: cp.holds,
            rejected: cp.rejected,
            start: cp.start,
            now: cp.now,
            day: cp.day,
            day_start_equity: cp.day_start_equity,
            entries_today: cp.entries_today,
            last_equity: cp.last_equity,
            peak_equity: cp.peak_equity,
            worst_peak: cp.worst_peak,
            worst_trough: cp.worst_trough,
            next_snapshot: cp.next_snapshot,
            last_snapshot: cp.last_snapshot,
            params_version: cp.params_version,
            halted: cp.halted,
            paused: cp.paused,
            failure: cp.failure,
        })
    }

    /// Current tunable parameters (autopilot may have moved them).
    pub fn params(&self) -> &TunableParams {
        self.autopilot.params()
    }

    /// The last accepted candle of symbol index `i` (`None` before its
    /// first, or for an index out of range).
    pub fn last_candle(&self, i: usize) -> Option<&Candle> {
        self.syms.get(i).and_then(|s| s.last_candle.as_ref())
    }

    /// The portfolio.
    pub fn portfolio(&self) -> &Portfolio {
        &self.portfolio
    }

    /// The breakers.
    pub fn breakers(&self) -> &CircuitBreakers {
        &self.breakers
    }

    /// The autopilot.
    pub fn autopilot(&self) -> &Autopilot {
        &self.autopilot
    }

    /// Why the engine stopped with [`Step::Failed`]: the symbol, the market
    /// time and the figure that left the range (`None` while it runs).
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Whether the session is paused: no new entries (a Buy signal is
    /// recorded as a Skip saying so); every exit still runs — stop-loss,
    /// take-profit, trailing stop, max hold time and Sell signals — so open
    /// positions stay protected while paused. An entry decided before the
    /// pause still fills (it was ordered already).
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Pause (`true`) or resume (`false`) new entries; returns whether the
    /// state changed. Kept in the checkpoint.
    pub fn set_paused(&mut self, paused: bool) -> bool {
        let changed = self.paused != paused;
        self.paused = paused;
        changed
    }

    /// The session's configuration (with the parameters of the last
    /// [`reload`](Self::reload)).
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Current fall of equity from its peak, percent (4 dp; 0 at the peak).
    pub fn drawdown_pct(&self) -> Decimal {
        if self.peak_equity <= Decimal::ZERO {
            return Decimal::ZERO;
        }
        pct4(
            self.peak_equity
                .saturating_sub(self.portfolio.equity())
                .max(Decimal::ZERO)
                .checked_div(self.peak_equity)
                .unwrap_or(Decimal::ZERO),
        )
    }

    /// Symbol names, index = [`SymbolId`].
    pub fn symbols(&self) -> &[String] {
        &self.cfg.symbols
    }

    /// Close circuit breaker `kind` by request at the current market time
    /// (see [`CircuitBreakers::reset`]): the transition is recorded in the
    /// next batch, so the checkpoint committed with it has the breaker
    /// closed. Returns the state it had (`Closed`: nothing was done).
    ///
    /// # Errors
    /// As [`CircuitBreakers::reset`]: a kill switch, or a breaker that is not
    /// configured.
    pub fn reset_breaker(
        &mut self,
        kind: crate::breakers::BreakerKind,
    ) -> Result<paperbot_crds::BreakerState, String> {
        self.breakers
            .reset(kind, self.now, &mut self.batch.breaker_events)
    }

    /// Live market data went stale between candles (see
    /// [`CircuitBreakers::on_stale_prices`]): trip the `priceFeed` breaker
    /// now, recorded in the next batch at `wall` (the wall-clock time of the
    /// check; never before the engine's market time). No price, position or
    /// cash changes: only the breaker moves, so new entries stop until it
    /// recovers by its normal rule. Nothing happens once the session has
    /// halted or failed, or while the breaker is already open. Returns
    /// whether it tripped.
    pub fn on_stale_prices(
        &mut self,
        wall: Timestamp,
        stale: &[crate::breakers::StalePrice],
        max_age_ms: i64,
    ) -> bool {
        if self.halted || self.failure.is_some() {
            return false;
        }
        let at = wall.max(self.now);
        self.breakers
            .on_stale_prices(at, stale, max_age_ms, &mut self.batch.breaker_events)
    }

    /// Replace the strategy in place (a hot reload): `cfg` must be this
    /// session's configuration with other strategy parameters (symbols,
    /// allocation, execution, volume units, snapshot interval and
    /// `record_holds` unchanged). Cash, positions, pending orders, breaker
    /// states, history and counters are kept; from the next candle on:
    ///
    /// - risk limits, token lists and breaker limits are the new ones
    ///   ([`CircuitBreakers::reconfigure`]: a breaker no longer configured is
    ///   closed, with a recorded transition, and disappears);
    /// - the tunable parameters and the autopilot follow
    ///   [`Autopilot::reconfigure`] (an edited parameter takes its new value,
    ///   others keep their tuned value within the new bounds);
    /// - exit levels of open positions are recomputed from the new
    ///   parameters (stop-loss and take-profit from the average entry, the
    ///   trailing stop from the highest price since entry);
    /// - each signal generator whose settings (other than its weight) are
    ///   unchanged keeps its warm state; a changed or new one warms up again
    ///   over its look-back, during which it gives no reading
    ///   ([`SignalSet::reconfigure`]).
    ///
    /// Returns the effective tunable parameters now in force.
    ///
    /// # Errors
    /// A message naming the first setting outside the strategy that differs,
    /// or when the session has halted or failed (nothing is changed then).
    pub fn reload(&mut self, cfg: EngineConfig) -> Result<TunableParams, String> {
        if self.halted || self.failure.is_some() {
            return Err("the session has ended: nothing to reload".into());
        }
        let fixed = |c: &EngineConfig| {
            let mut v = c.fingerprint();
            if let Some(o) = v.as_object_mut() {
                o.remove("params");
                o.remove("signals");
            }
            v
        };
        if let Some(diff) = first_difference("", &fixed(&self.cfg), &fixed(&cfg)) {
            return Err(format!("only the strategy can be reloaded: {diff}"));
        }
        let old = std::mem::replace(&mut self.cfg, cfg);
        self.breakers.reconfigure(
            &self.cfg.params.breakers,
            self.now,
            &mut self.batch.breaker_events,
        );
        self.autopilot.reconfigure(
            &old.params.autopilot,
            &self.cfg.params.autopilot,
            &old.params.tunable,
            &self.cfg.params.tunable,
        );
        for st in &mut self.syms {
            let signals =
                std::mem::replace(&mut st.signals, SignalSet::new(&SignalsSpec::default()));
            st.signals = signals.reconfigure(&old.signals, &self.cfg.signals);
            st.trail_price = None;
        }
        self.params_version += 1;
        self.fingerprint = self.cfg.fingerprint();
        Ok(self.autopilot.params().clone())
    }

    /// Candles handed to [`on_candle`](Self::on_candle) and processed
    /// (rejected ones included; not those after a halt or failure).
    pub fn candles_consumed(&self) -> u64 {
        self.candles
    }

    /// Records produced since the last call, with the latest state of every
    /// position that changed, the cash and the market time.
    pub fn take_batch(&mut self) -> LedgerBatch {
        // Every symbol's position, every batch: the stored positions are then
        // the state at the last commit whatever the batch boundaries were (a
        // resumed run batches differently from an uninterrupted one).
        for (i, s) in self.syms.iter_mut().enumerate() {
            s.dirty = false;
            let p = self.portfolio.position(SymbolId(i as u16));
            self.batch.positions.push(PositionRecord {
                symbol: s.name.clone(),
                quantity: p.quantity,
                cost_basis: p.cost_basis,
                last_price: p.last_price,
                opened_at: p.opened_at,
                updated_at: self.now,
            });
        }
        self.batch.cash = self.portfolio.cash();
        self.batch.time = self.now;
        std::mem::take(&mut self.batch)
    }

    /// Number of records waiting in the current batch (the runner flushes
    /// when this grows large).
    pub fn pending_records(&self) -> usize {
        let b = &self.batch;
        b.decisions.len()
            + b.trades.len()
            + b.snapshots.len()
            + b.round_trips.len()
            + b.breaker_events.len()
    }

    /// Figures now.
    pub fn state(&self) -> EngineState {
        EngineState {
            start: self.start.unwrap_or(self.now),
            now: self.now,
            bars: self.bars,
            cash: self.portfolio.cash(),
            equity: self.portfolio.equity(),
            realized_pnl: self.portfolio.realized_pnl(),
            unrealized_pnl: self.portfolio.unrealized_pnl(),
            max_drawdown_pct: max_drawdown_pct(self.worst_peak, self.worst_trough),
            open_positions: self.portfolio.open_positions(),
            holds: self.holds,
            fills: self.fills,
            rejected_ticks: self.rejected,
        }
    }

    /// Take a final snapshot (end of data, stop, halt or failure) unless one
    /// was just taken at this time.
    pub fn finish(&mut self) {
        if self.last_snapshot != Some(self.now) {
            self.snapshot();
        }
    }

    /// Warm the signal generators up on history from before the session's
    /// first candle (a live session's recent exchange klines): each candle's
    /// close goes to its symbol's generators, in the order given, and to
    /// nothing else — no decision, order, fill, mark, snapshot, breaker,
    /// feed-guard or ledger record comes of it, and the equity curve still
    /// starts at the first candle given to [`on_candle`](Self::on_candle).
    /// The warmed generators are part of the next checkpoint, so a resumed
    /// session does not warm up again.
    ///
    /// Candles of a symbol outside this session, candles whose prices fail
    /// the feed's checks (non-positive, high below low, …) and every candle
    /// once the engine has processed one are skipped. Prices with more than
    /// [`MAX_PRICE_DP`] decimal places are rounded as in `on_candle`.
    ///
    /// Returns the number of candles used.
    pub fn warm_up(&mut self, history: &[Candle]) -> usize {
        if self.start.is_some() || self.halted || self.failure.is_some() {
            return 0;
        }
        let mut used = 0;
        for c in history {
            let Some(st) = self.syms.get_mut(c.symbol.idx()) else {
                continue;
            };
            if check_prices(c).is_some() {
                continue;
            }
            let close = if c.close.scale() > MAX_PRICE_DP {
                quantize(c).close
            } else {
                c.close
            };
            st.signals.update(close);
            used += 1;
        }
        used
    }

    /// Process one candle. After [`Step::Halted`] or [`Step::Failed`] the
    /// engine ignores further candles and returns the same step.
    pub fn on_candle(&mut self, c: &Candle) -> Step {
        if self.halted {
            return Step::Halted;
        }
        if self.failure.is_some() {
            return Step::Failed;
        }
        self.candles += 1;
        let quantized;
        let c = if [c.open, c.high, c.low, c.close]
            .iter()
            .any(|p| p.scale() > MAX_PRICE_DP)
        {
            quantized = quantize(c);
            &quantized
        } else {
            c
        };
        match self.process(c) {
            Ok(step) => step,
            Err(e) => {
                let name = self
                    .syms
                    .get(c.symbol.idx())
                    .map_or("?", |s| s.name.as_str());
                self.failure = Some(format!("{name} at {}: {e}", c.close_time()));
                Step::Failed
            }
        }
    }

    fn process(&mut self, c: &Candle) -> Result<Step, RangeError> {
        let sym = c.symbol;
        let s = sym.idx();
        let t_open = c.open_time;
        if self.start.is_none() {
            // The starting point of the equity curve (and of the first return).
            self.start = Some(t_open);
            self.now = t_open;
            self.snapshot();
            self.next_snapshot = self.next_snapshot_after(t_open);
        }
        self.now = self.now.max(c.close_time());
        let day = t_open.utc_day();
        if day != self.day {
            self.day = day;
            self.day_start_equity = self.portfolio.equity();
            self.entries_today = 0;
        }
        self.breakers.tick(t_open, &mut self.batch.breaker_events);

        // A symbol id outside this session's table is a bad tick like any other.
        let accepted = match self.syms.get(s).map(|_| self.guard.check(c)) {
            Some(FeedVerdict::Accept { gap_ms }) => Some(gap_ms),
            Some(FeedVerdict::Reject(_)) | None => None,
        };
        match accepted {
            Some(gap_ms) => {
                self.breakers.on_feed(
                    t_open,
                    true,
                    gap_ms,
                    c.interval_ms,
                    &mut self.batch.breaker_events,
                );
            }
            None => {
                self.rejected += 1;
                self.breakers.on_feed(
                    t_open,
                    false,
                    None,
                    c.interval_ms,
                    &mut self.batch.breaker_events,
                );
                return Ok(Step::Continue);
            }
        }
        self.bars += 1;
        let fills_before = self.fills;

        // 3. Pending market order.
        if let Some(o) = self.syms[s].pending.take() {
            if o.fill_time < c.close_time() {
                self.execute(o, c)?;
            } else {
                self.syms[s].pending = Some(o);
            }
        }
        // 4. Resting exits.
        if self.portfolio.position(sym).is_open() && self.syms[s].pending.is_none() {
            self.check_exits(c)?;
        }
        // 5. Mark, equity, breakers.
        self.portfolio.mark(sym, c.close)?;
        self.syms[s].last_candle = Some(*c);
        if self.portfolio.position(sym).is_open() {
            let before = self.portfolio.position(sym).highest_price;
            self.portfolio.note_high(sym, c.high);
            if self.portfolio.position(sym).highest_price != before {
                self.syms[s].trail_price = None; // recomputed lazily
            }
        }
        // Equity can only have moved if this candle filled something or marked
        // an open position; skip the arithmetic otherwise (most candles).
        let equity = if self.fills != fills_before || self.portfolio.position(sym).is_open() {
            self.portfolio.equity()
        } else {
            self.last_equity
        };
        if equity != self.last_equity {
            self.last_equity = equity;
            if equity > self.peak_equity {
                self.peak_equity = equity;
            } else if deeper(self.peak_equity, equity, self.worst_peak, self.worst_trough) {
                self.worst_peak = self.peak_equity;
                self.worst_trough = equity;
            }
        }
        self.breakers.on_equity(
            c.close_time(),
            equity,
            self.peak_equity,
            self.day_start_equity,
            &mut self.batch.breaker_events,
        );
        if self.breakers.halted().is_some() {
            self.liquidate(c.close_time())?;
            self.snapshot();
            self.halted = true;
            return Ok(Step::Halted);
        }
        // 6. Max hold time.
        if let Some(max_hold) = self.cfg.params.risk.max_hold_ms {
            let p = self.portfolio.position(sym);
            if let Some(opened) = p.opened_at
                && self.syms[s].pending.is_none()
                && c.close_time().millis().saturating_sub(opened.millis()) >= max_hold
            {
                let q = p.quantity;
                let latency = self.exec.next_latency_ms();
                self.syms[s].pending = Some(PendingOrder {
                    side: Side::Sell,
                    quantity: q,
                    decision_seq: 0,
                    decision_time: c.close_time(),
                    fill_time: c.close_time().plus_ms(latency),
                    reason: FillReason::MaxHoldTime,
                });
            }
        }
        // 7. Signals and decision.
        self.decide(c);
        // 8. Snapshot.
        if c.close_time() >= self.next_snapshot {
            self.snapshot();
            self.next_snapshot = self.next_snapshot_after(c.close_time());
        }
        Ok(Step::Continue)
    }

    /// The first multiple of the snapshot interval after `t`.
    fn next_snapshot_after(&self, t: Timestamp) -> Timestamp {
        let iv = self.cfg.snapshot_interval_ms.max(1);
        Timestamp(
            t.millis()
                .div_euclid(iv)
                .saturating_add(1)
                .saturating_mul(iv),
        )
    }

    fn snapshot(&mut self) {
        self.last_snapshot = Some(self.now);
        let equity = self.portfolio.equity();
        let drawdown = if self.peak_equity > Decimal::ZERO {
            pct4(
                (self.peak_equity - equity)
                    .checked_div(self.peak_equity)
                    .unwrap_or(Decimal::ZERO),
            )
        } else {
            Decimal::ZERO
        };
        self.batch.snapshots.push(SnapshotRecord {
            time: self.now,
            cash: self.portfolio.cash(),
            position_value: self.portfolio.position_value(),
            equity,
            realized_pnl: self.portfolio.realized_pnl(),
            unrealized_pnl: self.portfolio.unrealized_pnl(),
            drawdown_pct: drawdown,
            open_positions: self.portfolio.open_positions(),
            trades: self.fills,
        });
    }

    fn refresh_levels(&mut self, s: usize) {
        let sym = SymbolId(s as u16);
        let p = self.portfolio.position(sym);
        let st = &mut self.syms[s];
        // A level beyond a decimal's range (an absurd take-profit) is never reached: None.
        let level = |base: Decimal, pct: Decimal, sign: Decimal| {
            let factor =
                Decimal::ONE.saturating_add(sign.saturating_mul(pct / Decimal::ONE_HUNDRED));
            base.checked_mul(factor).map(round8)
        };
        if st.levels_version != self.params_version {
            let avg = p.avg_entry_price();
            let t = self.autopilot.params();
            st.stop_price = t
                .stop_loss_pct
                .and_then(|pct| level(avg, pct, Decimal::NEGATIVE_ONE));
            st.take_profit_price = t
                .take_profit_pct
                .and_then(|pct| level(avg, pct, Decimal::ONE));
            st.levels_version = self.params_version;
        }
        if st.trail_price.is_none()
            && let Some(pct) = self.cfg.params.risk.trailing_stop_pct
        {
            st.trail_price = level(p.highest_price, pct, Decimal::NEGATIVE_ONE);
        }
    }

    fn check_exits(&mut self, c: &Candle) -> Result<(), RangeError> {
        let s = c.symbol.idx();
        self.refresh_levels(s);
        let st = &self.syms[s];
        let (stop, reason) = match (st.stop_price, st.trail_price) {
            (Some(a), Some(b)) if b > a => (Some(b), FillReason::TrailingStop),
            (Some(a), _) => (Some(a), FillReason::StopLoss),
            (None, Some(b)) => (Some(b), FillReason::TrailingStop),
            (None, None) => (None, FillReason::StopLoss),
        };
        let hit = if let Some(stop) = stop
            && c.low <= stop
        {
            Some((c.open.min(stop), reason))
        } else if let Some(tp) = st.take_profit_price
            && c.high >= tp
        {
            Some((c.open.max(tp), FillReason::TakeProfit))
        } else {
            None
        };
        if let Some((level, reason)) = hit {
            let q = self.portfolio.position(c.symbol).quantity;
            let time = if level == c.open {
                c.open_time
            } else {
                c.close_time()
            };
            self.fill(c, Side::Sell, q, level, time, 0, 0, reason)?;
        }
        Ok(())
    }

    fn liquidate(&mut self, time: Timestamp) -> Result<(), RangeError> {
        for s in 0..self.syms.len() {
            let sym = SymbolId(s as u16);
            self.syms[s].pending = None;
            let p = self.portfolio.position(sym);
            if p.is_open() {
                let (q, price) = (p.quantity, p.last_price);
                let c = Candle {
                    symbol: sym,
                    open_time: time,
                    interval_ms: 1,
                    open: price,
                    high: price,
                    low: price,
                    close: price,
                    volume: Decimal::ZERO,
                };
                self.fill(
                    &c,
                    Side::Sell,
                    q,
                    price,
                    time,
                    0,
                    0,
                    FillReason::Liquidation,
                )?;
            }
        }
        Ok(())
    }

    /// Execute a market order on candle `c`.
    fn execute(&mut self, o: PendingOrder, c: &Candle) -> Result<(), RangeError> {
        let time = o.fill_time.max(c.open_time);
        let latency = time.millis().saturating_sub(o.decision_time.millis());
        if self.exec.next_order_fails() {
            self.trade_seq += 1;
            let reference = ExecutionModel::reference_price(c, o.fill_time);
            let p = self.portfolio.position(c.symbol);
            self.batch.trades.push(TradeRecord {
                seq: self.trade_seq,
                decision_seq: o.decision_seq,
                time,
                symbol: self.syms[c.symbol.idx()].name.clone(),
                side: o.side,
                quantity: o.quantity,
                reference_price: reference,
                fill_price: Decimal::ZERO,
                fee: Decimal::ZERO,
                gas: Decimal::ZERO,
                slippage_cost: Decimal::ZERO,
                latency_ms: latency,
                realized_pnl: Decimal::ZERO,
                reason: o.reason,
                status: FillStatus::Failed,
                cash_after: self.portfolio.cash(),
                position_after: p.quantity,
                cost_basis_after: p.cost_basis,
            });
            self.breakers
                .on_execution(time, false, &mut self.batch.breaker_events);
            return Ok(());
        }
        let reference = ExecutionModel::reference_price(c, o.fill_time);
        let mut quantity = o.quantity;
        if o.side == Side::Buy {
            // Prices move between decision and fill: never spend more than the cash.
            let slip = self.exec.slippage_fraction(quantity, reference, c);
            let unit = checked_mul(
                "cost per unit",
                ExecutionModel::apply_slippage(Side::Buy, reference, slip)?,
                Decimal::ONE.saturating_add(self.exec.fee_rate()),
            )?;
            let spendable = self.portfolio.cash().saturating_sub(self.exec.gas());
            if unit > Decimal::ZERO
                && quantity
                    .checked_mul(unit)
                    .is_none_or(|cost| cost > spendable)
            {
                quantity = size(spendable, unit, self.quantity_dp(reference));
            }
            if quantity <= Decimal::ZERO {
                return Ok(());
            }
        } else {
            quantity = quantity.min(self.portfolio.position(c.symbol).quantity);
            if quantity <= Decimal::ZERO {
                return Ok(());
            }
        }
        self.fill(
            c,
            o.side,
            quantity,
            reference,
            time,
            latency,
            o.decision_seq,
            o.reason,
        )?;
        self.breakers
            .on_execution(time, true, &mut self.batch.breaker_events);
        Ok(())
    }

    /// Apply a fill at `reference` (before slippage) and record it. Every
    /// figure that can leave the range is computed before the books change:
    /// on an error nothing was applied or recorded.
    #[allow(clippy::too_many_arguments)]
    fn fill(
        &mut self,
        c: &Candle,
        side: Side,
        quantity: Decimal,
        reference: Decimal,
        time: Timestamp,
        latency_ms: i64,
        decision_seq: u64,
        reason: FillReason,
    ) -> Result<(), RangeError> {
        let sym = c.symbol;
        let s = sym.idx();
        let slip = self.exec.slippage_fraction(quantity, reference, c);
        let price = ExecutionModel::apply_slippage(side, reference, slip)?;
        let fee = self.exec.fee(quantity, price)?;
        let gas = self.exec.gas();
        let costs = fee.checked_add(gas).ok_or_else(|| {
            RangeError(format!("fee {fee} + gas {gas} exceeds a decimal's range"))
        })?;
        let slippage_cost = checked_mul("slippage cost", (price - reference).abs(), quantity)?;
        let mut realized = Decimal::ZERO;
        match side {
            Side::Buy => {
                self.portfolio.buy(sym, quantity, price, costs, time)?;
                self.entries_today = self.entries_today.saturating_add(1);
                self.breakers.on_entry(time, &mut self.batch.breaker_events);
                self.syms[s].levels_version = 0;
                self.syms[s].trail_price = None;
            }
            Side::Sell => {
                // A sell that closes the position releases all of its entry
                // figures: compute the round trip's before the books change.
                let held = self.portfolio.position(sym);
                let closes = quantity >= held.quantity;
                let entry_price = if closes {
                    checked_div("average entry price", held.entry_notional, quantity)?
                } else {
                    Decimal::ZERO
                };
                let round_trip_fees = held.entry_costs.checked_add(costs).ok_or_else(|| {
                    RangeError(format!(
                        "round-trip fees {} + {costs} exceed a decimal's range",
                        held.entry_costs
                    ))
                })?;
                let out = self.portfolio.sell(sym, quantity, price, costs)?;
                realized = out.realized_pnl;
                if let Some(opened) = out.closed_opened_at {
                    let rt = RoundTrip {
                        symbol: self.syms[s].name.clone(),
                        entry_time: opened,
                        entry_price: entry_price.normalize(),
                        exit_time: time,
                        exit_price: price.normalize(),
                        quantity,
                        pnl: out.realized_pnl,
                        fees: round_trip_fees,
                        return_pct: if out.released_cost.is_zero() {
                            Decimal::ZERO
                        } else {
                            pct4(
                                out.realized_pnl
                                    .checked_div(out.released_cost)
                                    .unwrap_or(Decimal::MAX),
                            )
                        },
                        exit_reason: reason,
                    };
                    self.breakers
                        .on_round_trip(time, rt.pnl, &mut self.batch.breaker_events);
                    let before = self.batch.adjustments.len();
                    self.autopilot.on_round_trip(
                        time,
                        &rt,
                        &mut self.batch.adjustments,
                        &mut self.batch.adjustment_outcomes,
                    );
                    if self.batch.adjustments.len() != before {
                        self.params_version += 1;
                    }
                    self.batch.round_trips.push(rt);
                    self.syms[s].stop_price = None;
                    self.syms[s].take_profit_price = None;
                    self.syms[s].trail_price = None;
                }
            }
        }
        self.fills += 1;
        self.trade_seq += 1;
        self.syms[s].dirty = true;
        let p = self.portfolio.position(sym);
        self.batch.trades.push(TradeRecord {
            seq: self.trade_seq,
            decision_seq,
            time,
            symbol: self.syms[s].name.clone(),
            side,
            quantity,
            reference_price: reference,
            fill_price: price,
            fee,
            gas,
            slippage_cost: slippage_cost.normalize(),
            latency_ms,
            realized_pnl: realized,
            reason,
            status: FillStatus::Filled,
            cash_after: self.portfolio.cash(),
            position_after: p.quantity,
            cost_basis_after: p.cost_basis,
        });
        Ok(())
    }

    fn decide(&mut self, c: &Candle) {
        let sym = c.symbol;
        let s = sym.idx();
        let readings = self.syms[s].signals.update(c.close);
        let combined = combine(readings);
        let Some(direction) = combined.direction else {
            self.hold(c, "no signal", combined.confidence);
            return;
        };
        let open = self.portfolio.position(sym).is_open();
        let pending = self.syms[s].pending.is_some();
        match direction {
            Side::Buy if open || pending => {
                self.hold(
                    c,
                    "buy signal while already long (no pyramiding)",
                    combined.confidence,
                );
                return;
            }
            Side::Sell if !open || pending => {
                self.hold(c, "sell signal while flat (long-only)", combined.confidence);
                return;
            }
            _ => {}
        }
        let readings = self.syms[s].signals.last();
        let (positive, negative) = explain(readings, direction);
        let params = self.autopilot.params().clone();
        let equity = self.portfolio.equity();
        let confidence = combined.confidence;
        let mut skip: Option<String> = None;
        let mut quantity = Decimal::ZERO;
        if confidence < params.confidence_threshold {
            skip = Some(format!(
                "confidence {confidence} is below the threshold {}",
                params.confidence_threshold.normalize()
            ));
        }
        if direction == Side::Buy && skip.is_none() {
            let risk = &self.cfg.params.risk;
            let open_or_pending = self.portfolio.open_positions()
                + self
                    .syms
                    .iter()
                    .filter(|x| x.pending.as_ref().is_some_and(|o| o.side == Side::Buy))
                    .count() as u32;
            if !risk.symbol_allowed(&self.syms[s].name) {
                skip = Some(format!(
                    "{} is not allowed by the token allow/block lists",
                    self.syms[s].name
                ));
            } else if self.paused {
                skip = Some(PAUSED_SKIP.into());
            } else if let Some(kind) = self.breakers.entry_block() {
                skip = Some(format!(
                    "circuit breaker {} is open: new entries blocked",
                    kind.name()
                ));
            } else if let Some(max) = risk.max_concurrent_positions
                && open_or_pending >= max
            {
                skip = Some(format!(
                    "{open_or_pending} positions open: maxConcurrentPositions is {max}"
                ));
            } else if let Some(max) = risk.max_daily_trades
                && self.entries_today >= max
            {
                skip = Some(format!(
                    "{} entries today: maxDailyTrades is {max}",
                    self.entries_today
                ));
            } else {
                quantity = match risk.fixed_quantity {
                    Some(q) => q,
                    // equity × pct is at most 2e20 × 100: the division is the step that can overflow.
                    None => size(
                        equity * params.max_position_size_pct.min(crate::types::MAX_PCT)
                            / Decimal::ONE_HUNDRED,
                        c.close,
                        self.quantity_dp(c.close),
                    ),
                };
                let unit = c
                    .close
                    .saturating_mul(Decimal::ONE.saturating_add(self.exec.fee_rate()));
                let gas = self.exec.gas();
                let cash = self.portfolio.cash();
                let needed = quantity.checked_mul(unit).and_then(|x| x.checked_add(gas));
                if quantity <= Decimal::ZERO {
                    skip = Some("position size rounds to zero".into());
                } else if needed.is_none_or(|n| n > cash) {
                    if risk.fixed_quantity.is_some() {
                        skip = Some(format!(
                            "insufficient cash: {} needed, {} available",
                            needed.map_or_else(
                                || "more than a decimal holds".to_string(),
                                |n| n.round_dp(2).to_string()
                            ),
                            cash.round_dp(2)
                        ));
                    } else {
                        quantity = size(
                            cash.saturating_sub(gas).max(Decimal::ZERO),
                            unit,
                            self.quantity_dp(c.close),
                        );
                        if quantity <= Decimal::ZERO {
                            skip = Some("insufficient cash".into());
                        }
                    }
                }
                if skip.is_none()
                    && let Some(max_slip) = risk.max_slippage_pct
                {
                    let est = self
                        .exec
                        .slippage_fraction(quantity, c.close, c)
                        .saturating_mul(Decimal::ONE_HUNDRED);
                    if est > max_slip {
                        skip = Some(format!(
                            "estimated slippage {}% exceeds maxSlippagePct {}%",
                            est.round_dp(4).normalize(),
                            max_slip.normalize()
                        ));
                    }
                }
            }
        } else if direction == Side::Sell {
            quantity = self.portfolio.position(sym).quantity;
        }
        let risk_assessment = self.risk_text(quantity, c.close, equity);
        self.decision_seq += 1;
        let action = match (&skip, direction) {
            (Some(_), _) => Action::Skip,
            (None, Side::Buy) => Action::Buy,
            (None, Side::Sell) => Action::Sell,
        };
        let reason = match &skip {
            Some(why) => format!("{} signal not taken: {why}", direction.as_str()),
            None => format!(
                "{} {} {}: confidence {confidence} >= threshold {}",
                direction.as_str(),
                quantity.normalize(),
                self.syms[s].name,
                params.confidence_threshold.normalize()
            ),
        };
        self.batch.decisions.push(DecisionRecord {
            seq: self.decision_seq,
            time: c.close_time(),
            symbol: self.syms[s].name.clone(),
            action,
            confidence,
            price: c.close,
            quantity: (action != Action::Skip).then_some(quantity),
            positive_signals: positive,
            negative_signals: negative,
            risk_assessment,
            reason,
        });
        if skip.is_none() {
            let latency = self.exec.next_latency_ms();
            self.syms[s].pending = Some(PendingOrder {
                side: direction,
                quantity,
                decision_seq: self.decision_seq,
                decision_time: c.close_time(),
                fill_time: c.close_time().plus_ms(latency),
                reason: FillReason::Signal,
            });
        }
    }

    /// Decimal places of a quantity sized at about `price`: [`QUANTITY_DP`],
    /// fewer when the notional (equity digits + quantity places + fill-price
    /// places, at least 8 after slippage) would come within two digits of
    /// what the books hold exactly — only for very large equity or very
    /// precise prices (e.g. 5 places for an equity of 1e12 at 8-place
    /// prices). Keeps large accounts trading instead of stopping at the
    /// first fill.
    fn quantity_dp(&self, price: Decimal) -> u32 {
        let equity = self.portfolio.equity().abs().trunc();
        let digits = equity
            .mantissa()
            .unsigned_abs()
            .checked_ilog10()
            .map_or(1, |d| d + 1);
        let price_dp = price.scale().max(crate::execution::PRICE_DP);
        self.portfolio
            .exact_digits()
            .saturating_sub(2 + digits + price_dp)
            .min(QUANTITY_DP)
    }

    fn risk_text(&self, quantity: Decimal, price: Decimal, equity: Decimal) -> String {
        let notional = quantity.checked_mul(price);
        let pct = match notional {
            Some(n) if equity > Decimal::ZERO => n
                .checked_div(equity)
                .and_then(|x| x.checked_mul(Decimal::ONE_HUNDRED))
                .map_or(Decimal::MAX, |x| x.round_dp(2)),
            _ => Decimal::ZERO,
        };
        let risk = &self.cfg.params.risk;
        let fmt_max = |m: Option<u32>| m.map_or("unlimited".to_string(), |m| m.to_string());
        let breakers = match self.breakers.entry_block() {
            Some(k) => format!("{} open", k.name()),
            None => "closed".into(),
        };
        let size = if quantity.is_zero() {
            format!("not sized (equity {})", equity.round_dp(2).normalize())
        } else {
            format!(
                "notional {} = {pct}% of equity {}",
                notional.map_or_else(
                    || "beyond a decimal's range".to_string(),
                    |n| n.round_dp(2).normalize().to_string()
                ),
                equity.round_dp(2).normalize()
            )
        };
        format!(
            "{size}; positions {}/{}; entries today {}/{}; breakers {breakers}",
            self.portfolio.open_positions(),
            fmt_max(risk.max_concurrent_positions),
            self.entries_today,
            fmt_max(risk.max_daily_trades),
        )
    }

    fn hold(&mut self, c: &Candle, why: &str, confidence: Decimal) {
        self.holds += 1;
        if self.cfg.record_holds {
            self.decision_seq += 1;
            let s = c.symbol.idx();
            self.batch.decisions.push(DecisionRecord {
                seq: self.decision_seq,
                time: c.close_time(),
                symbol: self.syms[s].name.clone(),
                action: Action::Hold,
                confidence,
                price: c.close,
                quantity: None,
                positive_signals: String::new(),
                negative_signals: String::new(),
                risk_assessment: String::new(),
                reason: format!("hold: {why}"),
            });
        }
    }
}

/// `c` with every price of more than [`MAX_PRICE_DP`] decimal places rounded
/// to that many (half to even, trailing zeros dropped).
fn quantize(c: &Candle) -> Candle {
    let q = |p: Decimal| {
        if p.scale() > MAX_PRICE_DP {
            p.round_dp_with_strategy(MAX_PRICE_DP, RoundingStrategy::MidpointNearestEven)
                .normalize()
        } else {
            p
        }
    };
    Candle {
        open: q(c.open),
        high: q(c.high),
        low: q(c.low),
        close: q(c.close),
        ..*c
    }
}

/// `amount / unit_price` rounded down to `dp` places, capped at
/// [`MAX_ORDER_QUANTITY`] (a quotient beyond a decimal's range is capped
/// too; a non-positive amount sizes nothing).
fn size(amount: Decimal, unit_price: Decimal, dp: u32) -> Decimal {
    match amount.checked_div(unit_price) {
        Some(q) => q
            .round_dp_with_strategy(dp, RoundingStrategy::ToZero)
            .min(MAX_ORDER_QUANTITY),
        None if amount > Decimal::ZERO && unit_price > Decimal::ZERO => MAX_ORDER_QUANTITY,
        None => Decimal::ZERO,
    }
}

/// Whether the drawdown `peak − equity` (of `peak`) is deeper, as a
/// fraction, than `worst_peak − worst_trough` (of `worst_peak`): compared
/// without division (`dd × worst_peak > worst × peak`), or by the two
/// fractions when those products leave a decimal's range.
fn deeper(peak: Decimal, equity: Decimal, worst_peak: Decimal, worst_trough: Decimal) -> bool {
    // Equity figures are within MAX_MONEY: their differences cannot overflow.
    let dd = peak - equity;
    let worst = worst_peak - worst_trough;
    match (dd.checked_mul(worst_peak), worst.checked_mul(peak)) {
        (Some(a), Some(b)) => a > b,
        _ => match (dd.checked_div(peak), worst.checked_div(worst_peak)) {
            (Some(a), Some(b)) => a > b,
            _ => false,
        },
    }
}

/// Largest drawdown as a percent with 4 decimal places.
fn max_drawdown_pct(worst_peak: Decimal, worst_trough: Decimal) -> Decimal {
    if worst_peak <= Decimal::ZERO {
        return Decimal::ZERO;
    }
    pct4(
        worst_peak
            .saturating_sub(worst_trough)
            .checked_div(worst_peak)
            .unwrap_or(Decimal::ZERO),
    )
}

fn round8(v: Decimal) -> Decimal {
    crate::execution::round_price(v)
}

/// A fraction as a percent with 4 decimal places (saturating).
fn pct4(fraction: Decimal) -> Decimal {
    fraction
        .saturating_mul(Decimal::ONE_HUNDRED)
        .round_dp_with_strategy(4, RoundingStrategy::MidpointNearestEven)
        .normalize()
}

#[cfg(test)]
mod control_tests {
    //! Pause, breaker reset and hot reload on a handful of hand-made candles.

    use std::path::Path;

    use paperbot_crds::BreakerState;
    use rust_decimal_macros::dec;

    use super::*;
    use crate::breakers::{BreakerKind, RESET_REASON};

    const T0: i64 = 1_640_995_200_000;
    const MIN: i64 = 60_000;

    fn strategy(extra: &str) -> String {
        format!(
            "  mode: Custom\n  signals:\n    smaCrossover: {{fastPeriod: 1, slowPeriod: 2}}\n  \
             risk:\n    fixedQuantity: \"1\"\n    confidenceThreshold: \"0\"\n    \
             stopLossPct: \"5\"\n{extra}"
        )
    }

    fn config(strategy_spec: &str) -> EngineConfig {
        let yaml = format!(
            "apiVersion: paperbot.io/v1alpha1\nkind: PaperAccount\nmetadata: {{name: a}}\n\
             spec: {{initialBalance: \"10000\"}}\n---\n\
             apiVersion: paperbot.io/v1alpha1\nkind: StrategyConfig\nmetadata: {{name: s}}\n\
             spec:\n{strategy_spec}\n---\n\
             apiVersion: paperbot.io/v1alpha1\nkind: BotSession\nmetadata: {{name: b}}\n\
             spec:\n  accountRef: {{name: a}}\n  strategyRef: {{name: s}}\n  allocation: \"10000\"\n  \
             symbols: [X]\n  marketData: {{source: Simulated, simulated: {{seed: 1, candles: 10}}}}\n"
        );
        let m = crate::config::parse_manifests(&yaml, Path::new("t.yaml")).unwrap();
        let plan = crate::config::plan_sessions(&m).unwrap().remove(0);
        EngineConfig::from_plan(&plan, 3_600_000)
    }

    /// Candle `i` (one a minute) with open, low, close; high = max(open, close).
    fn candle(i: i64, open: Decimal, low: Decimal, close: Decimal) -> Candle {
        Candle {
            symbol: SymbolId(0),
            open_time: Timestamp(T0 + i * MIN),
            interval_ms: MIN,
            open,
            high: open.max(close),
            low,
            close,
            volume: dec!(1000),
        }
    }

    /// Candles 0-3: a cross up at candle 2 buys 1 at the open of candle 3.
    fn opening(e: &mut Engine) {
        for (i, (o, l, c)) in [
            (dec!(100), dec!(100), dec!(100)),
            (dec!(100), dec!(99), dec!(99)),
            (dec!(99), dec!(99), dec!(101)),
            (dec!(101), dec!(100.5), dec!(101.5)),
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(e.on_candle(&candle(i as i64, o, l, c)), Step::Continue);
        }
        assert_eq!(e.portfolio().open_positions(), 1);
    }

    /// History before the first candle warms the SMA crossover up: the
    /// first candle then decides (a cross up buys), where a cold engine
    /// could not; warm-up writes nothing to the ledger, the equity curve
    /// starts at the first candle, and warming after a candle does nothing.
    #[test]
    fn warm_up_history_feeds_the_signals_only() {
        let history = [
            candle(-3, dec!(100), dec!(100), dec!(100)),
            candle(-2, dec!(100), dec!(99), dec!(99)),
            // A symbol outside the session and a bad candle are skipped.
            Candle {
                symbol: SymbolId(7),
                ..candle(-2, dec!(1), dec!(1), dec!(1))
            },
            Candle {
                low: dec!(-1),
                ..candle(-2, dec!(99), dec!(99), dec!(99))
            },
            candle(-1, dec!(99), dec!(99), dec!(99)),
        ];
        let mut warm = Engine::new(config(&strategy("")));
        assert_eq!(warm.warm_up(&history), 3);
        assert_eq!(
            warm.take_batch().decisions.len(),
            0,
            "warm-up records nothing"
        );
        assert_eq!(warm.candles_consumed(), 0);
        let first = candle(0, dec!(99), dec!(99), dec!(101));
        warm.on_candle(&first);
        let b = warm.take_batch();
        let buy = b.decisions.iter().find(|d| d.action == Action::Buy);
        assert!(
            buy.is_some(),
            "warm engine should buy on the cross up: {:?}",
            b.decisions
        );
        assert_eq!(
            b.snapshots[0].time, first.open_time,
            "equity curve starts at the first candle"
        );

        let mut cold = Engine::new(config(&strategy("")));
        cold.on_candle(&first);
        let b = cold.take_batch();
        assert!(
            b.decisions.iter().all(|d| d.action == Action::Hold),
            "a cold engine cannot decide on its first candle: {:?}",
            b.decisions
        );
        assert_eq!(cold.warm_up(&history), 0, "no warm-up once trading started");
    }

    #[test]
    fn paused_blocks_entries_but_the_stop_loss_still_exits() {
        let mut e = Engine::new(config(&strategy("")));
        opening(&mut e);
        e.take_batch();
        assert!(e.set_paused(true));
        assert!(
            !e.set_paused(true),
            "pausing a paused engine changes nothing"
        );
        // The stop (101 × 0.95 = 95.95) is hit while paused: the exit runs.
        e.on_candle(&candle(4, dec!(101), dec!(95), dec!(96)));
        let b = e.take_batch();
        assert_eq!(b.trades.len(), 1);
        assert_eq!(b.trades[0].reason, FillReason::StopLoss);
        assert_eq!(b.trades[0].side, Side::Sell);
        assert_eq!(e.portfolio().open_positions(), 0);
        // A new cross up while paused is recorded as a skip, and nothing fills.
        e.on_candle(&candle(5, dec!(96), dec!(94), dec!(94)));
        e.on_candle(&candle(6, dec!(94), dec!(94), dec!(97)));
        e.on_candle(&candle(7, dec!(97), dec!(97), dec!(98)));
        let b = e.take_batch();
        assert!(b.trades.is_empty(), "{:?}", b.trades);
        let skip = b
            .decisions
            .iter()
            .find(|d| d.action == Action::Skip)
            .unwrap();
        assert!(skip.reason.ends_with(PAUSED_SKIP), "{}", skip.reason);
        // Paused survives a checkpoint; resumed, the next cross up buys.
        let cp = e.checkpoint();
        assert!(cp.paused());
        let mut e = Engine::restore(config(&strategy("")), cp).unwrap();
        assert!(e.paused());
        assert!(e.set_paused(false));
        e.on_candle(&candle(8, dec!(98), dec!(90), dec!(90)));
        e.on_candle(&candle(9, dec!(90), dec!(90), dec!(95)));
        e.on_candle(&candle(10, dec!(95), dec!(95), dec!(96)));
        let b = e.take_batch();
        assert!(
            b.trades.iter().any(|t| t.side == Side::Buy),
            "{:?}",
            b.decisions
        );
        assert!(!e.checkpoint().paused());
    }

    #[test]
    fn a_breaker_reset_is_recorded_and_survives_a_checkpoint() {
        let spec = strategy("  circuitBreakers:\n    maxConsecutiveLosses: 1\n    cooldown: 24h\n");
        let mut e = Engine::new(config(&spec));
        opening(&mut e);
        e.on_candle(&candle(4, dec!(101), dec!(95), dec!(96))); // stop-loss: a loss
        let kind = BreakerKind::ConsecutiveLosses;
        assert_eq!(e.breakers().state_of(kind), BreakerState::Open);
        e.take_batch();
        assert_eq!(e.reset_breaker(kind), Ok(BreakerState::Open));
        assert_eq!(
            e.reset_breaker(kind),
            Ok(BreakerState::Closed),
            "nothing to reset"
        );
        let b = e.take_batch();
        assert_eq!(b.breaker_events.len(), 1);
        let ev = &b.breaker_events[0];
        assert_eq!(
            (
                ev.breaker.as_str(),
                ev.from_state.as_str(),
                ev.to_state.as_str(),
                ev.reason.as_str()
            ),
            ("consecutiveLosses", "Open", "Closed", RESET_REASON)
        );
        assert_eq!(ev.time, e.state().now);
        let restored = Engine::restore(config(&spec), e.checkpoint()).unwrap();
        assert_eq!(restored.breakers().state_of(kind), BreakerState::Closed);
        assert!(
            e.reset_breaker(BreakerKind::MinBalance).is_err(),
            "not configured"
        );
    }

    #[test]
    fn stale_live_prices_trip_the_price_feed_breaker_at_once_and_it_recovers_by_its_rule() {
        use crate::breakers::StalePrice;
        let spec = strategy("  circuitBreakers:\n    cooldown: 2m\n");
        let mut e = Engine::new(config(&spec));
        opening(&mut e);
        e.take_batch();
        let before = e.state();
        let kind = BreakerKind::PriceFeed;
        let stale = [StalePrice {
            symbol: "X".into(),
            age_ms: Some(95_000),
        }];
        // Nothing stale: nothing happens.
        assert!(!e.on_stale_prices(Timestamp(T0 + 5 * MIN), &[], 60_000));
        // Stale between candles: Open at once, at the wall time given.
        let wall = Timestamp(T0 + 5 * MIN + 30_000);
        assert!(e.on_stale_prices(wall, &stale, 60_000));
        assert_eq!(e.breakers().state_of(kind), BreakerState::Open);
        // Still stale on the next check: no second event.
        assert!(!e.on_stale_prices(Timestamp(wall.millis() + 1000), &stale, 60_000));
        let b = e.take_batch();
        assert!(b.trades.is_empty() && b.decisions.is_empty() && b.snapshots.is_empty());
        assert_eq!(b.breaker_events.len(), 1);
        let ev = &b.breaker_events[0];
        assert_eq!(
            (
                ev.time,
                ev.breaker.as_str(),
                ev.from_state.as_str(),
                ev.to_state.as_str()
            ),
            (wall, "priceFeed", "Closed", "Open")
        );
        assert_eq!(ev.reason, "stale price: X last price 1m35s old > maxAge 1m");
        // The trip moved no money and no position.
        let after = e.state();
        assert_eq!(
            (after.cash, after.equity, after.fills, after.now),
            (before.cash, before.equity, before.fills, before.now)
        );
        // It survives a checkpoint.
        let restored = Engine::restore(config(&spec), e.checkpoint()).unwrap();
        assert_eq!(restored.breakers().state_of(kind), BreakerState::Open);
        // Fresh candles again: after the 2 m cooldown (from the trip) the
        // breaker half-opens and the next valid candle closes it.
        for i in 4..=8 {
            e.on_candle(&candle(i, dec!(101.5), dec!(101), dec!(101.5)));
        }
        let b = e.take_batch();
        let moves: Vec<(&str, &str, &str)> = b
            .breaker_events
            .iter()
            .map(|ev| {
                (
                    ev.from_state.as_str(),
                    ev.to_state.as_str(),
                    ev.reason.as_str(),
                )
            })
            .collect();
        assert_eq!(
            moves,
            [
                ("Open", "HalfOpen", "cooldown 2m elapsed"),
                ("HalfOpen", "Closed", "valid tick within the data-gap limit"),
            ]
        );
        assert_eq!(b.breaker_events[0].time, Timestamp(T0 + 8 * MIN));
        assert_eq!(e.breakers().state_of(kind), BreakerState::Closed);
    }

    #[test]
    fn a_reload_keeps_cash_and_positions_and_restores_under_the_new_strategy() {
        let old = strategy("  circuitBreakers:\n    maxConsecutiveLosses: 3\n");
        let mut e = Engine::new(config(&old));
        opening(&mut e);
        e.take_batch();
        let (cash, qty) = (
            e.portfolio().cash(),
            e.portfolio().position(SymbolId(0)).quantity,
        );
        // Tighter stop, a new signal generator, the losses breaker removed.
        let new = "  mode: Custom\n  signals:\n    smaCrossover: {fastPeriod: 1, slowPeriod: 2, weight: \"2\"}\n    \
                   rsi: {period: 3}\n  risk:\n    fixedQuantity: \"1\"\n    confidenceThreshold: \"0\"\n    \
                   stopLossPct: \"1\"\n";
        let params = e.reload(config(new)).unwrap();
        assert_eq!(params.stop_loss_pct, Some(dec!(1)));
        assert_eq!(e.portfolio().cash(), cash);
        assert_eq!(e.portfolio().position(SymbolId(0)).quantity, qty);
        assert!(
            e.breakers()
                .statuses()
                .iter()
                .all(|b| b.name != "consecutiveLosses")
        );
        // A restore must be given the new strategy: the old one is refused.
        let cp = e.checkpoint();
        let err = Engine::restore(config(&old), cp.clone()).err().unwrap();
        assert!(matches!(err, RestoreError::ConfigChanged(_)), "{err}");
        let mut twin = Engine::restore(config(new), cp).unwrap();
        // Both continue identically; the new 1 % stop (99.99 from the 101
        // entry) exits on a dip the 5 % stop would have ridden out.
        let dip = candle(4, dec!(101.2), dec!(99.5), dec!(101));
        e.on_candle(&dip);
        twin.on_candle(&dip);
        let (a, b) = (e.take_batch(), twin.take_batch());
        assert_eq!(a, b);
        assert_eq!(a.trades.len(), 1);
        assert_eq!(a.trades[0].reason, FillReason::StopLoss);
        assert_eq!(a.trades[0].reference_price, dec!(99.99));
        // Settings outside the strategy cannot be reloaded.
        let mut other = config(new);
        other.initial_cash = dec!(1);
        let err = e.reload(other).unwrap_err();
        assert!(
            err.contains("only the strategy can be reloaded: initialCash"),
            "{err}"
        );
    }
}

//! Rows the engine records. The engine appends them to a [`LedgerBatch`]; the
//! runner hands each batch to the ledger store (one database transaction per
//! batch) and to the report writer.
//!
//! Every record carries market time only, never the wall clock, so the same
//! inputs and seed give the same rows.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::types::{Side, Timestamp};

/// What a decision chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Action {
    /// Open a long position.
    Buy,
    /// Close (or reduce) a long position.
    Sell,
    /// A signal asked to trade but a threshold, limit or breaker refused it.
    Skip,
    /// Nothing to do (no signal, or a signal that does not apply to the position).
    Hold,
}

impl Action {
    /// `"buy"`, `"sell"`, `"skip"` or `"hold"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Buy => "buy",
            Action::Sell => "sell",
            Action::Skip => "skip",
            Action::Hold => "hold",
        }
    }

    /// The action named by [`as_str`](Self::as_str)'s text, if any.
    pub fn parse(s: &str) -> Option<Self> {
        [Action::Buy, Action::Sell, Action::Skip, Action::Hold]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// One decision with the reasoning behind it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DecisionRecord {
    /// Sequence number within the session, from 1.
    pub seq: u64,
    /// Market time of the decision (close time of the candle it was made on).
    pub time: Timestamp,
    /// Symbol name.
    pub symbol: String,
    /// What was chosen.
    pub action: Action,
    /// Confidence, 0-100, two decimal places.
    pub confidence: Decimal,
    /// Close price the decision saw.
    pub price: Decimal,
    /// Quantity to trade (Buy/Sell), base units.
    pub quantity: Option<Decimal>,
    /// Signals in favour of the action, e.g. `sma_crossover: fast 46810.2 crossed above slow 46795.1`.
    pub positive_signals: String,
    /// Signals against it.
    pub negative_signals: String,
    /// Risk assessment, e.g. `position 9.8% of equity, 1/3 positions, breakers closed`.
    pub risk_assessment: String,
    /// One readable sentence: why this action.
    pub reason: String,
}

impl DecisionRecord {
    /// Column names, in field order: the `decisions` table and `decisions.csv`.
    pub const COLUMNS: [&'static str; 11] = [
        "seq",
        "time",
        "symbol",
        "action",
        "confidence",
        "price",
        "quantity",
        "positive_signals",
        "negative_signals",
        "risk_assessment",
        "reason",
    ];
}

/// Why a fill happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum FillReason {
    /// A Buy/Sell decision.
    Signal,
    /// Stop-loss level touched.
    StopLoss,
    /// Take-profit level touched.
    TakeProfit,
    /// Trailing stop touched.
    TrailingStop,
    /// Position held longer than `maxHoldTime`.
    MaxHoldTime,
    /// Closed by the account kill switch or at session end on request.
    Liquidation,
}

impl FillReason {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FillReason::Signal => "signal",
            FillReason::StopLoss => "stop_loss",
            FillReason::TakeProfit => "take_profit",
            FillReason::TrailingStop => "trailing_stop",
            FillReason::MaxHoldTime => "max_hold_time",
            FillReason::Liquidation => "liquidation",
        }
    }

    /// The reason named by [`as_str`](Self::as_str)'s text, if any.
    pub fn parse(s: &str) -> Option<Self> {
        [
            FillReason::Signal,
            FillReason::StopLoss,
            FillReason::TakeProfit,
            FillReason::TrailingStop,
            FillReason::MaxHoldTime,
            FillReason::Liquidation,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// Whether an order executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum FillStatus {
    /// Filled in full.
    Filled,
    /// The simulated venue rejected it (random failure); nothing changed.
    Failed,
}

impl FillStatus {
    /// `"filled"` or `"failed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FillStatus::Filled => "filled",
            FillStatus::Failed => "failed",
        }
    }

    /// The status named by [`as_str`](Self::as_str)'s text, if any.
    pub fn parse(s: &str) -> Option<Self> {
        [FillStatus::Filled, FillStatus::Failed]
            .into_iter()
            .find(|f| f.as_str() == s)
    }
}

/// One executed (or failed) order, with the position and cash after it. The
/// trade row, its position change and its cash change are written in one
/// transaction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TradeRecord {
    /// Sequence number of fills within the session, from 1.
    pub seq: u64,
    /// Decision that caused it (0 for automatic exits).
    pub decision_seq: u64,
    /// Market time of the fill (decision time + latency; touch time for stops).
    pub time: Timestamp,
    /// Symbol name.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// Quantity, base units.
    pub quantity: Decimal,
    /// Price before slippage (interpolated per the fill rules).
    pub reference_price: Decimal,
    /// Price after slippage; the price the fill settled at.
    pub fill_price: Decimal,
    /// Fee paid, quote currency.
    pub fee: Decimal,
    /// Fixed per-fill cost paid, quote currency.
    pub gas: Decimal,
    /// Cost of slippage, quote currency: |fill − reference| × quantity.
    pub slippage_cost: Decimal,
    /// Delay from decision to fill, milliseconds.
    pub latency_ms: i64,
    /// Realized P&L of this fill (sells), quote currency, fees included.
    pub realized_pnl: Decimal,
    /// Why.
    pub reason: FillReason,
    /// Filled or failed.
    pub status: FillStatus,
    /// Session cash after the fill.
    pub cash_after: Decimal,
    /// Position quantity in this symbol after the fill.
    pub position_after: Decimal,
    /// Position cost basis (entry notional + entry fees) after the fill.
    pub cost_basis_after: Decimal,
}

impl TradeRecord {
    /// Column names, in field order: the `trades` table and `trades.csv`.
    pub const COLUMNS: [&'static str; 18] = [
        "seq",
        "decision_seq",
        "time",
        "symbol",
        "side",
        "quantity",
        "reference_price",
        "fill_price",
        "fee",
        "gas",
        "slippage_cost",
        "latency_ms",
        "realized_pnl",
        "reason",
        "status",
        "cash_after",
        "position_after",
        "cost_basis_after",
    ];
}

/// A closed position (entry to full exit), as in the parity reference file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoundTrip {
    /// Symbol name.
    pub symbol: String,
    /// Time of the first entry fill.
    pub entry_time: Timestamp,
    /// Average entry price (cost basis without fees / quantity).
    pub entry_price: Decimal,
    /// Time of the closing fill.
    pub exit_time: Timestamp,
    /// Average exit price of the closing fills.
    pub exit_price: Decimal,
    /// Quantity closed.
    pub quantity: Decimal,
    /// Net P&L, fees and slippage included.
    pub pnl: Decimal,
    /// Fees and gas paid on entry and exit.
    pub fees: Decimal,
    /// `pnl` as a percent of the entry cost.
    pub return_pct: Decimal,
    /// Why it closed.
    pub exit_reason: FillReason,
}

/// A circuit breaker changed state.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BreakerEventRecord {
    /// Market time.
    pub time: Timestamp,
    /// Breaker name (camelCase, as in `BotSession.status.breakers[].name`).
    pub breaker: String,
    /// `Closed`, `Open` or `HalfOpen`.
    pub from_state: String,
    /// `Closed`, `Open` or `HalfOpen`.
    pub to_state: String,
    /// Why, with the measured value and the limit.
    pub reason: String,
}

/// Performance figures over one autopilot evaluation window. Stored as JSON
/// (decimals as strings, scale kept).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowMetrics {
    /// Round trips in the window.
    pub trades: u32,
    /// Winning round trips / trades, percent.
    pub win_rate_pct: Decimal,
    /// Sum of round-trip P&L, quote currency.
    pub pnl: Decimal,
    /// Mean round-trip return, percent.
    pub avg_return_pct: Decimal,
    /// Gross profit / gross loss (`None` when there was no loss).
    pub profit_factor: Option<Decimal>,
}

/// Outcome of an adjustment, judged after the next window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Outcome {
    /// The next window did better.
    Positive,
    /// About the same.
    Neutral,
    /// Worse.
    Negative,
}

impl Outcome {
    /// `"positive"`, `"neutral"` or `"negative"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Positive => "positive",
            Outcome::Neutral => "neutral",
            Outcome::Negative => "negative",
        }
    }

    /// The verdict named by [`as_str`](Self::as_str)'s text, if any.
    pub fn parse(s: &str) -> Option<Self> {
        [Outcome::Positive, Outcome::Neutral, Outcome::Negative]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// One autopilot parameter change.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AdjustmentRecord {
    /// Id within the session, from 1.
    pub id: u64,
    /// Market time.
    pub time: Timestamp,
    /// camelCase parameter name, as in `spec.risk`.
    pub parameter: String,
    /// Value before.
    pub old_value: Decimal,
    /// Value after.
    pub new_value: Decimal,
    /// Why.
    pub reason: String,
    /// The window that led to it.
    pub metrics_before: WindowMetrics,
}

/// The later judgement of an adjustment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AdjustmentOutcomeRecord {
    /// [`AdjustmentRecord::id`].
    pub id: u64,
    /// Market time of the judgement.
    pub time: Timestamp,
    /// The verdict.
    pub outcome: Outcome,
    /// The window after the adjustment.
    pub metrics_after: WindowMetrics,
}

/// Periodic performance snapshot (every snapshot interval of market time,
/// and at the end).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SnapshotRecord {
    /// Market time.
    pub time: Timestamp,
    /// Cash, quote currency.
    pub cash: Decimal,
    /// Marked value of open positions.
    pub position_value: Decimal,
    /// cash + position_value.
    pub equity: Decimal,
    /// Realized P&L so far.
    pub realized_pnl: Decimal,
    /// Unrealized P&L now.
    pub unrealized_pnl: Decimal,
    /// Drawdown from the equity peak, percent.
    pub drawdown_pct: Decimal,
    /// Open positions.
    pub open_positions: u32,
    /// Fills so far.
    pub trades: u64,
}

/// Current state of one position (upserted).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PositionRecord {
    /// Symbol name.
    pub symbol: String,
    /// Quantity held, base units (0 when flat).
    pub quantity: Decimal,
    /// Entry notional plus entry fees of what is held.
    pub cost_basis: Decimal,
    /// Last marked price.
    pub last_price: Decimal,
    /// When the position was opened (None when flat).
    pub opened_at: Option<Timestamp>,
    /// Market time of this state.
    pub updated_at: Timestamp,
}

/// Everything recorded since the previous batch. Written in one transaction.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LedgerBatch {
    /// Decisions (Hold only when the session records holds).
    pub decisions: Vec<DecisionRecord>,
    /// Fills and failed orders.
    pub trades: Vec<TradeRecord>,
    /// Closed positions.
    pub round_trips: Vec<RoundTrip>,
    /// Breaker state changes.
    pub breaker_events: Vec<BreakerEventRecord>,
    /// Autopilot parameter changes.
    pub adjustments: Vec<AdjustmentRecord>,
    /// Verdicts on earlier adjustments.
    pub adjustment_outcomes: Vec<AdjustmentOutcomeRecord>,
    /// Performance snapshots.
    pub snapshots: Vec<SnapshotRecord>,
    /// Positions whose state changed (latest state per symbol).
    pub positions: Vec<PositionRecord>,
    /// Session cash at the end of the batch.
    pub cash: Decimal,
    /// Market time at the end of the batch.
    pub time: Timestamp,
}

impl LedgerBatch {
    /// Append `later`'s records to this batch (cash and time become
    /// `later`'s), as if both had been one batch.
    pub fn append(&mut self, later: LedgerBatch) {
        self.decisions.extend(later.decisions);
        self.trades.extend(later.trades);
        self.round_trips.extend(later.round_trips);
        self.breaker_events.extend(later.breaker_events);
        self.adjustments.extend(later.adjustments);
        self.adjustment_outcomes.extend(later.adjustment_outcomes);
        self.snapshots.extend(later.snapshots);
        self.positions.extend(later.positions);
        self.cash = later.cash;
        self.time = later.time;
    }

    /// True when nothing but cash/time is in it.
    pub fn is_empty(&self) -> bool {
        self.decisions.is_empty()
            && self.trades.is_empty()
            && self.round_trips.is_empty()
            && self.breaker_events.is_empty()
            && self.adjustments.is_empty()
            && self.adjustment_outcomes.is_empty()
            && self.snapshots.is_empty()
            && self.positions.is_empty()
    }
}

/// What the ledger stores about a session when it starts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SessionRecord {
    /// Session id (the BotSession name, plus a run number when re-run).
    pub id: String,
    /// BotSession name.
    pub name: String,
    /// PaperAccount name.
    pub account: String,
    /// StrategyConfig name.
    pub strategy: String,
    /// Base currency.
    pub base_currency: String,
    /// Allocation = starting cash.
    pub initial_cash: Decimal,
    /// The resolved configuration (account, strategy, session) as JSON.
    pub config_json: String,
    /// Market time of the first candle.
    pub started_at: Timestamp,
}

/// How a session ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SessionEnd {
    /// Final phase: `Completed`, `Halted`, `Stopped` or `Failed`.
    pub phase: String,
    /// Market time of the end.
    pub ended_at: Timestamp,
    /// Final cash.
    pub cash: Decimal,
    /// Final equity.
    pub equity: Decimal,
    /// The summary (as in the report's `summary.json`).
    pub summary_json: String,
}

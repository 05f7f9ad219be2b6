//! The JSON shapes of ledger rows and live events: camelCase fields, exact
//! decimals as JSON strings (scale kept: `"0.10"`), times as RFC 3339 UTC
//! market time, enums as their lower-case ledger text.

use paperbot_crds::runtime_api::RuntimePhase;
use rust_decimal::Decimal;
use schemars::JsonSchema;
use serde::Serialize;

use crate::ledger::records::{
    AdjustmentOutcomeRecord, AdjustmentRecord, BreakerEventRecord, DecisionRecord, RoundTrip,
    TradeRecord, WindowMetrics,
};
use crate::types::Timestamp;

/// One page of a history (`GET /v1/trades` and friends).
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "{T}Page")]
pub struct Page<T> {
    /// The rows, oldest first (in ledger order).
    pub items: Vec<T>,
    /// Opaque cursor of the next page (pass it as `?cursor=` with the same
    /// filters); absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// An executed (or failed) order, with the position and cash after it.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fill {
    /// Sequence number of fills in the session, from 1.
    pub seq: u64,
    /// The decision that caused it (0 for automatic exits).
    pub decision_seq: u64,
    /// RFC 3339 market time of the fill.
    pub time: String,
    /// Symbol, e.g. `BTC-USD`.
    pub symbol: String,
    /// `buy` or `sell`.
    #[schemars(extend("enum" = ["buy", "sell"]))]
    pub side: String,
    /// Quantity, base asset units.
    #[schemars(with = "String")]
    pub quantity: Decimal,
    /// Price before slippage, quote currency.
    #[schemars(with = "String")]
    pub reference_price: Decimal,
    /// Price after slippage (the settled price), quote currency.
    #[schemars(with = "String")]
    pub fill_price: Decimal,
    /// Fee paid, quote currency.
    #[schemars(with = "String")]
    pub fee: Decimal,
    /// Fixed per-fill cost paid, quote currency.
    #[schemars(with = "String")]
    pub gas: Decimal,
    /// Cost of slippage, quote currency: |fill − reference| × quantity.
    #[schemars(with = "String")]
    pub slippage_cost: Decimal,
    /// Delay from decision to fill, milliseconds.
    pub latency_ms: i64,
    /// Realized P&L of this fill (sells), quote currency, fees included.
    #[schemars(with = "String")]
    pub realized_pnl: Decimal,
    /// Why it happened.
    #[schemars(extend("enum" = ["signal", "stop_loss", "take_profit", "trailing_stop", "max_hold_time", "liquidation"]))]
    pub reason: String,
    /// `filled`, or `failed` (the simulated venue rejected it; nothing changed).
    #[schemars(extend("enum" = ["filled", "failed"]))]
    pub status: String,
    /// Session cash after the fill, quote currency.
    #[schemars(with = "String")]
    pub cash_after: Decimal,
    /// Position quantity in this symbol after the fill, base units.
    #[schemars(with = "String")]
    pub position_after: Decimal,
    /// Position cost basis (entry notional + entry fees) after the fill, quote currency.
    #[schemars(with = "String")]
    pub cost_basis_after: Decimal,
}

impl From<&TradeRecord> for Fill {
    fn from(t: &TradeRecord) -> Self {
        Self {
            seq: t.seq,
            decision_seq: t.decision_seq,
            time: t.time.to_rfc3339(),
            symbol: t.symbol.clone(),
            side: t.side.as_str().to_owned(),
            quantity: t.quantity,
            reference_price: t.reference_price,
            fill_price: t.fill_price,
            fee: t.fee,
            gas: t.gas,
            slippage_cost: t.slippage_cost,
            latency_ms: t.latency_ms,
            realized_pnl: t.realized_pnl,
            reason: t.reason.as_str().to_owned(),
            status: t.status.as_str().to_owned(),
            cash_after: t.cash_after,
            position_after: t.position_after,
            cost_basis_after: t.cost_basis_after,
        }
    }
}

/// A decision with the reasoning behind it.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// Sequence number of decisions in the session, from 1.
    pub seq: u64,
    /// RFC 3339 market time (close time of the candle it was made on).
    pub time: String,
    /// Symbol, e.g. `BTC-USD`.
    pub symbol: String,
    /// What was chosen.
    #[schemars(extend("enum" = ["buy", "sell", "skip", "hold"]))]
    pub action: String,
    /// Confidence, percent 0–100.
    #[schemars(with = "String")]
    pub confidence: Decimal,
    /// Close price the decision saw, quote currency.
    #[schemars(with = "String")]
    pub price: Decimal,
    /// Quantity to trade (buy/sell), base units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub quantity: Option<Decimal>,
    /// Signals in favour of the action.
    pub positive_signals: String,
    /// Signals against it.
    pub negative_signals: String,
    /// Risk assessment at the time.
    pub risk_assessment: String,
    /// One readable sentence: why this action.
    pub reason: String,
}

impl From<&DecisionRecord> for Decision {
    fn from(d: &DecisionRecord) -> Self {
        Self {
            seq: d.seq,
            time: d.time.to_rfc3339(),
            symbol: d.symbol.clone(),
            action: d.action.as_str().to_owned(),
            confidence: d.confidence,
            price: d.price,
            quantity: d.quantity,
            positive_signals: d.positive_signals.clone(),
            negative_signals: d.negative_signals.clone(),
            risk_assessment: d.risk_assessment.clone(),
            reason: d.reason.clone(),
        }
    }
}

/// A closed position (first entry to full exit). Open positions, with their
/// marks and unrealized P&L, are in `GET /v1/status` (`positions`).
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClosedPosition {
    /// Sequence number of closed positions in the session, from 1.
    pub seq: u64,
    /// Symbol, e.g. `BTC-USD`.
    pub symbol: String,
    /// RFC 3339 market time of the first entry fill.
    pub entry_time: String,
    /// Average entry price, quote currency.
    #[schemars(with = "String")]
    pub entry_price: Decimal,
    /// RFC 3339 market time of the closing fill.
    pub exit_time: String,
    /// Average exit price, quote currency.
    #[schemars(with = "String")]
    pub exit_price: Decimal,
    /// Quantity closed, base units.
    #[schemars(with = "String")]
    pub quantity: Decimal,
    /// Net P&L, quote currency, fees and slippage included.
    #[schemars(with = "String")]
    pub pnl: Decimal,
    /// Fees and gas paid on entry and exit, quote currency.
    #[schemars(with = "String")]
    pub fees: Decimal,
    /// `pnl` as a percent of the entry cost.
    #[schemars(with = "String")]
    pub return_pct: Decimal,
    /// Why it closed.
    #[schemars(extend("enum" = ["signal", "stop_loss", "take_profit", "trailing_stop", "max_hold_time", "liquidation"]))]
    pub exit_reason: String,
}

impl ClosedPosition {
    /// The round trip numbered `seq` by the ledger.
    pub fn new(seq: u64, r: &RoundTrip) -> Self {
        Self {
            seq,
            symbol: r.symbol.clone(),
            entry_time: r.entry_time.to_rfc3339(),
            entry_price: r.entry_price,
            exit_time: r.exit_time.to_rfc3339(),
            exit_price: r.exit_price,
            quantity: r.quantity,
            pnl: r.pnl,
            fees: r.fees,
            return_pct: r.return_pct,
            exit_reason: r.exit_reason.as_str().to_owned(),
        }
    }
}

/// A circuit breaker changed state.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakerEvent {
    /// Sequence number of breaker events in the session, from 1; absent on
    /// the live stream (the ledger numbers the row when it commits it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// RFC 3339 market time.
    pub time: String,
    /// Breaker name (camelCase), e.g. `dailyLoss`.
    pub breaker: String,
    /// State before.
    #[schemars(extend("enum" = ["Closed", "Open", "HalfOpen"]))]
    pub from_state: String,
    /// State after.
    #[schemars(extend("enum" = ["Closed", "Open", "HalfOpen"]))]
    pub to_state: String,
    /// Why, with the measured value and the limit.
    pub reason: String,
}

impl BreakerEvent {
    /// The event numbered `seq` by the ledger (`None` on the live stream).
    pub fn new(seq: Option<u64>, b: &BreakerEventRecord) -> Self {
        Self {
            seq,
            time: b.time.to_rfc3339(),
            breaker: b.breaker.clone(),
            from_state: b.from_state.clone(),
            to_state: b.to_state.clone(),
            reason: b.reason.clone(),
        }
    }
}

/// Performance over one autopilot evaluation window.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowFigures {
    /// Closed round trips in the window.
    pub trades: u32,
    /// Winning round trips / trades × 100, percent.
    #[schemars(with = "String")]
    pub win_rate_pct: Decimal,
    /// Sum of round-trip P&L, quote currency.
    #[schemars(with = "String")]
    pub pnl: Decimal,
    /// Mean round-trip return, percent.
    #[schemars(with = "String")]
    pub avg_return_pct: Decimal,
    /// Gross profit / gross loss; absent when there was no loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub profit_factor: Option<Decimal>,
}

impl From<&WindowMetrics> for WindowFigures {
    fn from(m: &WindowMetrics) -> Self {
        Self {
            trades: m.trades,
            win_rate_pct: m.win_rate_pct,
            pnl: m.pnl,
            avg_return_pct: m.avg_return_pct,
            profit_factor: m.profit_factor,
        }
    }
}

/// The autopilot's later verdict on an adjustment.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdjustmentOutcome {
    /// Id of the adjustment judged.
    pub id: u64,
    /// RFC 3339 market time of the verdict.
    pub time: String,
    /// The verdict.
    #[schemars(extend("enum" = ["positive", "neutral", "negative"]))]
    pub outcome: String,
    /// The window after the adjustment.
    pub metrics_after: WindowFigures,
}

impl From<&AdjustmentOutcomeRecord> for AdjustmentOutcome {
    fn from(o: &AdjustmentOutcomeRecord) -> Self {
        Self {
            id: o.id,
            time: o.time.to_rfc3339(),
            outcome: o.outcome.as_str().to_owned(),
            metrics_after: (&o.metrics_after).into(),
        }
    }
}

/// One autopilot parameter change.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Adjustment {
    /// Id of the adjustment in the session, from 1.
    pub id: u64,
    /// RFC 3339 market time.
    pub time: String,
    /// camelCase parameter name, as in the StrategyConfig's `spec.risk`.
    pub parameter: String,
    /// Value before.
    #[schemars(with = "String")]
    pub old_value: Decimal,
    /// Value after.
    #[schemars(with = "String")]
    pub new_value: Decimal,
    /// Why.
    pub reason: String,
    /// The window that led to it.
    pub metrics_before: WindowFigures,
    /// The verdict, once the next window has been judged; absent while
    /// pending and on the live stream (see the `adjustmentOutcome` event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<AdjustmentOutcome>,
}

impl Adjustment {
    /// The adjustment with its verdict, if one is known.
    pub fn new(a: &AdjustmentRecord, outcome: Option<&AdjustmentOutcomeRecord>) -> Self {
        Self {
            id: a.id,
            time: a.time.to_rfc3339(),
            parameter: a.parameter.clone(),
            old_value: a.old_value,
            new_value: a.new_value,
            reason: a.reason.clone(),
            metrics_before: (&a.metrics_before).into(),
            outcome: outcome.map(Into::into),
        }
    }
}

/// Event `price`: a candle closed.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PriceUpdate {
    /// Symbol, e.g. `BTC-USD`.
    pub symbol: String,
    /// RFC 3339 close time (market time).
    pub time: String,
    /// Close price, quote currency.
    #[schemars(with = "String")]
    pub close: Decimal,
}

impl PriceUpdate {
    /// From the event's fields.
    pub fn new(symbol: &str, time: Timestamp, close: Decimal) -> Self {
        Self {
            symbol: symbol.to_owned(),
            time: time.to_rfc3339(),
            close,
        }
    }
}

/// Event `phase`: the session's phase changed.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseChange {
    /// The new phase.
    pub phase: RuntimePhase,
    /// Why, when there is more to say (a halt's or failure's reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Event `lagged`: this subscriber fell behind and missed events.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Lagged {
    /// How many events were dropped for this subscriber.
    pub missed: u64,
    /// What to do: re-read the histories (`/v1/trades`, ...) for what was missed.
    pub message: String,
}

/// `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Liveness {
    /// Always `ok`.
    pub status: String,
}

/// `GET /readyz` when ready.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Readiness {
    /// Always true (a runtime that is not ready answers 503 with an error).
    pub ready: bool,
    /// The session's phase.
    pub phase: RuntimePhase,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::records::{FillReason, FillStatus};
    use crate::types::Side;

    #[test]
    fn fills_keep_decimal_scale_and_use_rfc3339() {
        let t = TradeRecord {
            seq: 3,
            decision_seq: 2,
            time: Timestamp(1_522_800_060_250),
            symbol: "BTC-USD".into(),
            side: Side::Sell,
            quantity: Decimal::new(10, 2),
            reference_price: Decimal::new(700_012, 2),
            fill_price: Decimal::new(699_900, 2),
            fee: Decimal::new(70, 2),
            gas: Decimal::ZERO,
            slippage_cost: Decimal::new(1120, 4),
            latency_ms: 250,
            realized_pnl: Decimal::new(-150, 2),
            reason: FillReason::StopLoss,
            status: FillStatus::Filled,
            cash_after: Decimal::new(5_000_000, 2),
            position_after: Decimal::new(0, 2),
            cost_basis_after: Decimal::ZERO,
        };
        let json = serde_json::to_value(Fill::from(&t)).unwrap();
        assert_eq!(json["time"], "2018-04-04T00:01:00.250Z");
        assert_eq!(json["quantity"], "0.10");
        assert_eq!(json["positionAfter"], "0.00");
        assert_eq!(json["realizedPnl"], "-1.50");
        assert_eq!(json["reason"], "stop_loss");
        assert_eq!(json["side"], "sell");
    }
}

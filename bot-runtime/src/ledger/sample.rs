//! Deterministic, realistic sample records with running sequence numbers,
//! for the ledger's tests and benchmarks (and any test that needs stored
//! sessions without running the engine).
//!
//! Values look like a BTC/ETH session on USDT: prices around 46,810 with two
//! decimals, quantities with eight, fees with four, a failed order every
//! seventh trade, decisions of every action. Decimals carry varied scales
//! (`0.50`, `2.0`) so that storage must keep them exactly.

use rust_decimal::Decimal;

use super::records::{
    Action, AdjustmentOutcomeRecord, AdjustmentRecord, BreakerEventRecord, DecisionRecord,
    FillReason, FillStatus, LedgerBatch, Outcome, PositionRecord, RoundTrip, SessionEnd,
    SessionRecord, SnapshotRecord, TradeRecord, WindowMetrics,
};
use crate::types::{Side, Timestamp};

/// 2022-01-01T00:00:00Z, market time of the first sample record (ms).
pub const T0: i64 = 1_640_995_200_000;

/// One minute (ms): the sample's candle interval.
pub const MINUTE: i64 = 60_000;

/// `n × 10^-scale` (a shorthand for exact decimal literals).
fn d(n: i64, scale: u32) -> Decimal {
    Decimal::new(n, scale)
}

/// A session starting at [`T0`] with 10,000.00 USDT; its BotSession name is
/// the part of `id` before the first `-`.
pub fn session(id: &str) -> SessionRecord {
    SessionRecord {
        id: id.to_owned(),
        name: id.split('-').next().unwrap_or(id).to_owned(),
        account: "paper-main".into(),
        strategy: "sma-cross".into(),
        base_currency: "USDT".into(),
        initial_cash: d(1_000_000, 2),
        config_json: r#"{"risk":{"maxPositionPct":"10"}}"#.into(),
        started_at: Timestamp(T0),
    }
}

/// A `Completed` end 1,000 minutes after [`T0`] with final `cash` and
/// equity `cash + 12.5`.
pub fn end(cash: Decimal) -> SessionEnd {
    SessionEnd {
        phase: "Completed".into(),
        ended_at: Timestamp(T0 + 1000 * MINUTE),
        cash,
        equity: cash + d(125, 1),
        summary_json: r#"{"trades":2}"#.into(),
    }
}

/// Window metrics with `trades` round trips and profit factor `pf`.
pub fn metrics(trades: u32, pf: Option<Decimal>) -> WindowMetrics {
    WindowMetrics {
        trades,
        win_rate_pct: d(5550, 2),
        pnl: d(-12_345, 3),
        avg_return_pct: d(10, 2),
        profit_factor: pf,
    }
}

/// Generator of records; each call advances market time by one minute.
#[derive(Clone, Debug, Default)]
pub struct Gen {
    /// Last decision seq handed out.
    pub decision_seq: u64,
    /// Last trade seq handed out.
    pub trade_seq: u64,
    /// Last adjustment id handed out.
    pub adjustment_id: u64,
    /// Minutes after [`T0`] of the last record.
    pub minute: i64,
}

impl Gen {
    /// The next market time.
    pub fn time(&mut self) -> Timestamp {
        self.minute += 1;
        Timestamp(T0 + self.minute * MINUTE)
    }

    /// The next decision (actions cycle; Buy/Sell carry a quantity).
    pub fn decision(&mut self) -> DecisionRecord {
        self.decision_seq += 1;
        let n = self.decision_seq;
        let k = n as i64;
        let action = [Action::Buy, Action::Sell, Action::Skip, Action::Hold][(n % 4) as usize];
        DecisionRecord {
            seq: n,
            time: self.time(),
            symbol: if n.is_multiple_of(3) {
                "ETHUSDT"
            } else {
                "BTCUSDT"
            }
            .into(),
            action,
            confidence: d(5000 + k % 5000, 2),
            price: d(4_681_020 + k, 2),
            quantity: matches!(action, Action::Buy | Action::Sell).then(|| d(2_130_000 + k, 8)),
            positive_signals: format!(
                "sma_crossover: fast 46810.2 crossed above slow 46795.1; rsi 41.{n}"
            ),
            negative_signals: "volume below 20-bar mean (0.82x)".into(),
            risk_assessment: "position 9.8% of equity, 1/3 positions, breakers closed".into(),
            reason: format!(
                "buy: crossover with confidence {}.00 above threshold 60 (decision {n})",
                50 + n % 50
            ),
        }
    }

    /// The next trade (every 7th failed, every 5th an automatic exit).
    pub fn trade(&mut self) -> TradeRecord {
        self.trade_seq += 1;
        let n = self.trade_seq;
        let k = n as i64;
        let even = n.is_multiple_of(2);
        TradeRecord {
            seq: n,
            decision_seq: if n.is_multiple_of(5) { 0 } else { n },
            time: self.time().plus_ms(250),
            symbol: "BTCUSDT".into(),
            side: if even { Side::Sell } else { Side::Buy },
            quantity: d(2_130_000 + k, 8),
            reference_price: d(4_681_020 + k, 2),
            fill_price: d(4_681_254 + k, 2),
            fee: d(997, 4),
            gas: d(50, 2),
            slippage_cost: d(498, 4),
            latency_ms: 250,
            realized_pnl: if even { d(-321, 2) } else { Decimal::ZERO },
            reason: [
                FillReason::Signal,
                FillReason::StopLoss,
                FillReason::TakeProfit,
            ][(n % 3) as usize],
            status: if n.is_multiple_of(7) {
                FillStatus::Failed
            } else {
                FillStatus::Filled
            },
            cash_after: d(1_000_000 - k, 2),
            position_after: if even { Decimal::ZERO } else { d(213, 4) },
            cost_basis_after: d(99_715, 2),
        }
    }

    /// The next round trip (30 minutes long, closed by the trailing stop).
    pub fn round_trip(&mut self) -> RoundTrip {
        let t = self.time();
        RoundTrip {
            symbol: "BTCUSDT".into(),
            entry_time: Timestamp(t.0 - 30 * MINUTE),
            entry_price: d(4_681_020, 2),
            exit_time: t,
            exit_price: d(4_699_075, 2),
            quantity: d(213, 4),
            pnl: d(27_416, 4),
            fees: d(11_994, 4),
            return_pct: d(27, 2),
            exit_reason: FillReason::TrailingStop,
        }
    }

    /// The next breaker event (dailyLoss opens).
    pub fn breaker_event(&mut self) -> BreakerEventRecord {
        BreakerEventRecord {
            time: self.time(),
            breaker: "dailyLoss".into(),
            from_state: "Closed".into(),
            to_state: "Open".into(),
            reason: "daily loss 3.2% > limit 3%".into(),
        }
    }

    /// The next autopilot adjustment (stopLossPct 2.0 → 2.50).
    pub fn adjustment(&mut self) -> AdjustmentRecord {
        self.adjustment_id += 1;
        AdjustmentRecord {
            id: self.adjustment_id,
            time: self.time(),
            parameter: "stopLossPct".into(),
            old_value: d(20, 1),
            new_value: d(250, 2),
            reason: "win rate 38% < 45%: widen the stop".into(),
            metrics_before: metrics(12, None),
        }
    }

    /// A verdict on adjustment `id`.
    pub fn outcome(&mut self, id: u64, outcome: Outcome) -> AdjustmentOutcomeRecord {
        AdjustmentOutcomeRecord {
            id,
            time: self.time(),
            outcome,
            metrics_after: metrics(9, Some(d(85, 2))),
        }
    }

    /// The next snapshot.
    pub fn snapshot(&mut self) -> SnapshotRecord {
        SnapshotRecord {
            time: self.time(),
            cash: d(900_110, 2),
            position_value: d(99_700, 2),
            equity: d(999_810, 2),
            realized_pnl: d(-190, 2),
            unrealized_pnl: d(0, 2),
            drawdown_pct: d(19, 3),
            open_positions: 1,
            trades: self.trade_seq,
        }
    }

    /// A batch with `decisions` decisions, `trades` trades, `round_trips`
    /// round trips, `snapshots` snapshots and one BTCUSDT position update;
    /// cash follows the last trade.
    pub fn batch(
        &mut self,
        decisions: usize,
        trades: usize,
        round_trips: usize,
        snapshots: usize,
    ) -> LedgerBatch {
        let mut b = LedgerBatch {
            decisions: (0..decisions).map(|_| self.decision()).collect(),
            trades: (0..trades).map(|_| self.trade()).collect(),
            round_trips: (0..round_trips).map(|_| self.round_trip()).collect(),
            snapshots: (0..snapshots).map(|_| self.snapshot()).collect(),
            ..LedgerBatch::default()
        };
        let time = self.time();
        b.positions.push(PositionRecord {
            symbol: "BTCUSDT".into(),
            quantity: d(213, 4),
            cost_basis: d(99_715, 2),
            last_price: d(4_699_075, 2),
            opened_at: Some(Timestamp(T0)),
            updated_at: time,
        });
        b.cash = d(1_000_000 - self.trade_seq as i64, 2);
        b.time = time;
        b
    }
}

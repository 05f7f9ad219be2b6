//! Run analytics: running totals over the ledger batches of a session and the
//! end-of-run [`Summary`] (the content of the report's `summary.json` and of
//! the terminal table).
//!
//! [`Analytics`] is incremental: each [`LedgerBatch`] is folded into counters
//! and sums, and nothing of the batch is kept, so memory does not grow with
//! the length of the run. The snapshot returns used for the Sharpe and
//! Sortino ratios are folded into running accumulators too (Welford's
//! online mean/variance, plus a running sum of squared negative returns),
//! together with the market time the returns span, which gives the sampling
//! period the ratios are annualised by (see [`Summary::return_period_ms`]).
//!
//! Money figures are [`Decimal`] in the quote currency and are never rounded
//! here except where a quotient is formed (see [`QUOTIENT_DP`]). Sums
//! saturate at the largest `Decimal` (about 7.9e28) instead of panicking;
//! the engine keeps money far below that. Risk statistics (Sharpe, Sortino)
//! are `f64`, because they involve square roots and are not money.

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Serialize, Serializer};

use crate::engine::EngineState;
use crate::figures::{BenchmarkPrices, FigureSet, Figures};
use crate::ledger::records::{Action, FillStatus, LedgerBatch};
use crate::types::{MS_PER_DAY, Timestamp};

/// Decimal places kept for the quotients in a [`Summary`] (ROI, win rate,
/// averages, profit factor), rounded half away from zero. Sums and
/// differences of money are exact and never rounded.
pub const QUOTIENT_DP: u32 = 8;

/// Days in the year used for annualisation: crypto markets trade every day,
/// so a year is 365 days of 86,400,000 ms (not 252 trading days).
pub const DAYS_PER_YEAR: i64 = 365;

/// Incremental statistics of one run, fed with every [`LedgerBatch`].
///
/// Memory is O(1): counters, money sums and the return accumulators; no
/// record is retained.
#[derive(Clone, Debug)]
pub struct Analytics {
    initial_equity: Decimal,
    snapshot_interval_ms: i64,
    fills: u64,
    failed_orders: u64,
    fees_paid: Decimal,
    gas_paid: Decimal,
    slippage_paid: Decimal,
    round_trips: u64,
    wins: u64,
    losses: u64,
    sum_pnl: Decimal,
    gross_profit: Decimal,
    gross_loss: Decimal,
    largest_win: Decimal,
    largest_loss: Decimal,
    decisions: DecisionCounts,
    breaker_trips: u64,
    adjustments: u64,
    last_snapshot: Option<(Timestamp, Decimal)>,
    returns: ReturnStats,
    /// Market time covered by the returns in `returns`, ms: the sum over
    /// every return of the time between its two snapshots.
    return_span_ms: i128,
    /// Benchmark, exposure, durations, breakdowns (see [`crate::figures`]).
    figures: Figures,
    identity: SessionIdentity,
    prices: Option<BenchmarkPrices>,
}

/// Who a summary is about (copied into [`Summary`]); empty strings when
/// unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionIdentity {
    /// Session id (the BotSession name, plus `-N` for a re-run).
    pub session_id: String,
    /// BotSession name.
    pub name: String,
    /// StrategyConfig name.
    pub strategy: String,
    /// Symbols traded, in the session's order.
    pub symbols: Vec<String>,
    /// Quote (base) currency of the account, e.g. `USD`.
    pub currency: String,
}

/// Online accumulators of simple snapshot-to-snapshot returns (fractions,
/// not percent): Welford's running mean and sum of squared deviations, and
/// the sum of squared negative returns for the downside deviation.
#[derive(Clone, Copy, Debug, Default)]
struct ReturnStats {
    n: u64,
    mean: f64,
    m2: f64,
    downside_sq_sum: f64,
    negatives: u64,
}

impl ReturnStats {
    fn push(&mut self, r: f64) {
        // Welford (1962), "Note on a method for calculating corrected sums of
        // squares and products".
        self.n += 1;
        let delta = r - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (r - self.mean);
        if r < 0.0 {
            self.downside_sq_sum += r * r;
            self.negatives += 1;
        }
    }
}

/// Counts of decisions per action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DecisionCounts {
    /// Buy decisions.
    pub buy: u64,
    /// Sell decisions.
    pub sell: u64,
    /// Skipped trades (a signal refused by a threshold, limit or breaker).
    pub skip: u64,
    /// Hold decisions (see [`Analytics::summary`] for how they are counted).
    pub hold: u64,
}

/// End-of-run summary: the content of `summary.json` and of the terminal
/// table.
///
/// In JSON, every [`Decimal`] is a string holding its exact normalized value
/// (e.g. `"1234.5"`), times are RFC 3339 strings with a `Z` suffix, and an
/// absent ratio is `null`. Field names are snake_case as below.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Equity at the start (the allocation), quote currency.
    #[serde(serialize_with = "ser_dec")]
    pub initial_equity: Decimal,
    /// Equity at the end (cash + marked positions), quote currency.
    #[serde(serialize_with = "ser_dec")]
    pub final_equity: Decimal,
    /// Cash at the end, quote currency.
    #[serde(serialize_with = "ser_dec")]
    pub final_cash: Decimal,
    /// Realized P&L, quote currency, fees included (from the engine).
    #[serde(serialize_with = "ser_dec")]
    pub realized_pnl: Decimal,
    /// Unrealized P&L of open positions at the end, quote currency.
    #[serde(serialize_with = "ser_dec")]
    pub unrealized_pnl: Decimal,
    /// Total P&L = `final_equity − initial_equity`, quote currency. Equals
    /// realized + unrealized when the engine's books balance.
    #[serde(serialize_with = "ser_dec")]
    pub total_pnl: Decimal,
    /// Return on investment, percent (0-100 scale, may be negative):
    /// `total_pnl / initial_equity × 100`; 0 when the initial equity is 0.
    #[serde(serialize_with = "ser_dec")]
    pub roi_pct: Decimal,
    /// Orders that filled.
    pub fills: u64,
    /// Orders the simulated venue rejected.
    pub failed_orders: u64,
    /// Closed positions (entry to full exit).
    pub round_trips: u64,
    /// Round trips with P&L > 0.
    pub wins: u64,
    /// Round trips with P&L < 0 (P&L exactly 0 counts as neither).
    pub losses: u64,
    /// `wins / round_trips × 100`, percent 0-100; 0 with no round trip.
    #[serde(serialize_with = "ser_dec")]
    pub win_rate_pct: Decimal,
    /// Mean round-trip P&L, quote currency; 0 with no round trip.
    #[serde(serialize_with = "ser_dec")]
    pub avg_pnl_per_round_trip: Decimal,
    /// Mean P&L of winning round trips, quote currency (≥ 0); 0 with no win.
    #[serde(serialize_with = "ser_dec")]
    pub avg_win: Decimal,
    /// Mean P&L of losing round trips, quote currency (≤ 0, a negative
    /// number); 0 with no loss.
    #[serde(serialize_with = "ser_dec")]
    pub avg_loss: Decimal,
    /// Largest round-trip profit, quote currency; 0 with no win.
    #[serde(serialize_with = "ser_dec")]
    pub largest_win: Decimal,
    /// Largest round-trip loss as a negative P&L, quote currency; 0 with no
    /// loss.
    #[serde(serialize_with = "ser_dec")]
    pub largest_loss: Decimal,
    /// Profit factor = gross profit / gross loss (sum of winning round-trip
    /// P&L over the absolute sum of losing round-trip P&L); `None` when
    /// there was no loss.
    #[serde(serialize_with = "ser_opt_dec")]
    pub profit_factor: Option<Decimal>,
    /// Largest peak-to-trough drawdown of equity, percent (0-100).
    #[serde(serialize_with = "ser_dec")]
    pub max_drawdown_pct: Decimal,
    /// Annualised Sharpe ratio (Sharpe 1966, "Mutual Fund Performance";
    /// Sharpe 1994, "The Sharpe Ratio") of the simple returns between
    /// consecutive snapshots, risk-free rate 0: mean / sample standard
    /// deviation (n − 1) × √(periods per year), periods per year =
    /// 365 × 86,400,000 / [`return_period_ms`](Self::return_period_ms)
    /// (the square-root-of-time scaling of Sharpe 1994, which assumes
    /// independent returns; Lo 2002, "The Statistics of Sharpe Ratios",
    /// discusses its limits). f64 (a statistic, not money). `None` with
    /// fewer than 2 returns or zero variance.
    pub sharpe_ratio: Option<f64>,
    /// Annualised Sortino ratio (Sortino & Price 1994, "Performance
    /// Measurement in a Downside Risk Framework") of the same returns,
    /// target 0: mean / √(Σ min(r, 0)² / n) × √(periods per year), n = all
    /// returns, periods per year as for the Sharpe ratio. f64. `None` when
    /// no return was negative.
    pub sortino_ratio: Option<f64>,
    /// Snapshot-to-snapshot returns behind the two ratios.
    pub return_periods: u64,
    /// The sampling period the two ratios are annualised by, milliseconds
    /// of market time: the **mean** time between the two snapshots of each
    /// return, (Σ (t_i − t_{i−1})) / n over the n returns; `None` without a
    /// return.
    ///
    /// This is the period actually sampled, not the configured
    /// [`snapshot_interval_ms`](Self::snapshot_interval_ms): a snapshot is
    /// taken at the first candle close at or after each interval boundary,
    /// so with 4-hour candles and a 1-hour interval the snapshots are 4
    /// hours apart, and annualising by the hour would overstate both ratios
    /// by √4 = 2. The mean, rather than the median, is used because
    /// 365 days / mean spacing is exactly the number of returns observed per
    /// year (the count the √-of-time rule scales by), it needs O(1) memory,
    /// and one long data gap moves it only by gap / n.
    pub return_period_ms: Option<i64>,
    /// The configured market time between snapshots, milliseconds (the
    /// shortest possible sampling period; see
    /// [`return_period_ms`](Self::return_period_ms)).
    pub snapshot_interval_ms: i64,
    /// Fees paid on filled orders, quote currency.
    #[serde(serialize_with = "ser_dec")]
    pub fees_paid: Decimal,
    /// Fixed per-fill costs ("gas") paid on filled orders, quote currency.
    #[serde(serialize_with = "ser_dec")]
    pub gas_paid: Decimal,
    /// Slippage cost of filled orders, quote currency (Σ |fill − reference| ×
    /// quantity).
    #[serde(serialize_with = "ser_dec")]
    pub slippage_paid: Decimal,
    /// Circuit-breaker trips: state changes into `Open`.
    pub breaker_trips: u64,
    /// Autopilot parameter changes.
    pub autopilot_adjustments: u64,
    /// Decisions per action.
    pub decisions: DecisionCounts,
    /// Candles processed.
    pub bars: u64,
    /// Market time of the first candle.
    #[serde(serialize_with = "ser_time")]
    pub start: Timestamp,
    /// Market time of the end of the run.
    #[serde(serialize_with = "ser_time")]
    pub end: Timestamp,
    /// Final phase: `Completed`, `Halted`, `Stopped` or `Failed`.
    pub phase: String,
    /// Positions still open at the end.
    pub open_positions: u32,
    /// Session id (the BotSession name, plus `-N` for a re-run); empty when
    /// unknown.
    pub session_id: String,
    /// BotSession name; empty when unknown.
    pub session_name: String,
    /// StrategyConfig name; empty when unknown.
    pub strategy: String,
    /// Symbols traded; empty when unknown.
    pub symbols: Vec<String>,
    /// Quote currency of every money figure, e.g. `USD`; empty when
    /// unknown. The period is [`start`](Self::start) to [`end`](Self::end).
    pub currency: String,
    /// The trader's figures and breakdowns ([`FigureSet`]), flattened into
    /// the same JSON object.
    #[serde(flatten)]
    pub figures: FigureSet,
}

fn ser_dec<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&d.normalize())
}

fn ser_opt_dec<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.collect_str(&d.normalize()),
        None => s.serialize_none(),
    }
}

fn ser_time<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&t.to_rfc3339())
}

/// `num / den` rounded to [`QUOTIENT_DP`] places; `None` when `den` is 0.
fn quotient(num: Decimal, den: Decimal) -> Option<Decimal> {
    num.checked_div(den)
        .map(|q| q.round_dp_with_strategy(QUOTIENT_DP, RoundingStrategy::MidpointAwayFromZero))
}

impl Analytics {
    /// Starts a run with `initial_equity` (quote currency) and the configured
    /// snapshot interval in milliseconds of market time (reported in the
    /// summary; Sharpe and Sortino are annualised by the spacing of the
    /// snapshots actually received, see [`Summary::return_period_ms`]).
    pub fn new(initial_equity: Decimal, snapshot_interval_ms: i64) -> Self {
        Self {
            initial_equity,
            snapshot_interval_ms,
            fills: 0,
            failed_orders: 0,
            fees_paid: Decimal::ZERO,
            gas_paid: Decimal::ZERO,
            slippage_paid: Decimal::ZERO,
            round_trips: 0,
            wins: 0,
            losses: 0,
            sum_pnl: Decimal::ZERO,
            gross_profit: Decimal::ZERO,
            gross_loss: Decimal::ZERO,
            largest_win: Decimal::ZERO,
            largest_loss: Decimal::ZERO,
            decisions: DecisionCounts::default(),
            breaker_trips: 0,
            adjustments: 0,
            last_snapshot: None,
            returns: ReturnStats::default(),
            return_span_ms: 0,
            figures: Figures::default(),
            identity: SessionIdentity::default(),
            prices: None,
        }
    }

    /// Sets who the summary is about.
    pub fn set_identity(&mut self, identity: SessionIdentity) {
        self.identity = identity;
    }

    /// Sets the benchmark's inputs as of the latest committed batch (the
    /// runner passes them with every batch; a rebuild takes them from the
    /// checkpoint). Without them the summary has no benchmark.
    pub fn set_benchmark_prices(&mut self, prices: Option<BenchmarkPrices>) {
        self.prices = prices;
    }

    /// Folds one batch in:
    ///
    /// - trades: filled orders add their fee, gas and slippage cost to the
    ///   totals; failed orders are only counted (they cost nothing);
    /// - round trips: wins (P&L > 0), losses (P&L < 0), gross profit and
    ///   loss, largest win and loss, P&L sum;
    /// - decisions: counted per action (Hold only appears when the session
    ///   records holds);
    /// - snapshots: the simple return `equity_t / equity_{t−1} − 1` between
    ///   consecutive snapshots. A snapshot not later than the previous one is
    ///   ignored, and no return is formed from a previous equity ≤ 0;
    /// - breaker events: a trip is a change into state `Open`;
    /// - adjustments: counted.
    pub fn on_batch(&mut self, b: &LedgerBatch) {
        self.figures.on_batch(b);
        for t in &b.trades {
            match t.status {
                FillStatus::Filled => {
                    self.fills += 1;
                    self.fees_paid = self.fees_paid.saturating_add(t.fee);
                    self.gas_paid = self.gas_paid.saturating_add(t.gas);
                    self.slippage_paid = self.slippage_paid.saturating_add(t.slippage_cost);
                }
                FillStatus::Failed => self.failed_orders += 1,
            }
        }
        for rt in &b.round_trips {
            self.round_trips += 1;
            self.sum_pnl = self.sum_pnl.saturating_add(rt.pnl);
            if rt.pnl > Decimal::ZERO {
                self.wins += 1;
                self.gross_profit = self.gross_profit.saturating_add(rt.pnl);
                self.largest_win = self.largest_win.max(rt.pnl);
            } else if rt.pnl < Decimal::ZERO {
                self.losses += 1;
                self.gross_loss = self.gross_loss.saturating_sub(rt.pnl);
                self.largest_loss = self.largest_loss.min(rt.pnl);
            }
        }
        for d in &b.decisions {
            match d.action {
                Action::Buy => self.decisions.buy += 1,
                Action::Sell => self.decisions.sell += 1,
                Action::Skip => self.decisions.skip += 1,
                Action::Hold => self.decisions.hold += 1,
            }
        }
        for s in &b.snapshots {
            match self.last_snapshot {
                Some((t, _)) if s.time <= t => continue,
                Some((t, prev)) if prev > Decimal::ZERO => {
                    let r = s
                        .equity
                        .checked_div(prev)
                        .and_then(|q| q.checked_sub(Decimal::ONE))
                        .and_then(|r| r.to_f64());
                    if let Some(r) = r.filter(|r| r.is_finite()) {
                        self.returns.push(r);
                        self.return_span_ms += i128::from(s.time.0) - i128::from(t.0);
                    }
                }
                _ => {}
            }
            self.last_snapshot = Some((s.time, s.equity));
        }
        self.breaker_trips += b
            .breaker_events
            .iter()
            .filter(|e| e.to_state == "Open" && e.from_state != "Open")
            .count() as u64;
        self.adjustments += b.adjustments.len() as u64;
    }

    /// Mean market time between the two snapshots of a return, ms (see
    /// [`Summary::return_period_ms`]); `None` without a return.
    fn mean_return_period_ms(&self) -> Option<f64> {
        (self.returns.n > 0 && self.return_span_ms > 0)
            .then(|| self.return_span_ms as f64 / self.returns.n as f64)
    }

    /// Periods per year for annualisation: 365 × 86,400,000 / mean return
    /// period ms; `None` without a return.
    fn periods_per_year(&self) -> Option<f64> {
        self.mean_return_period_ms()
            .map(|p| (DAYS_PER_YEAR * MS_PER_DAY) as f64 / p)
    }

    /// Annualised Sharpe ratio, see [`Summary::sharpe_ratio`].
    fn sharpe(&self) -> Option<f64> {
        let r = &self.returns;
        if r.n < 2 {
            return None;
        }
        let sd = (r.m2 / (r.n - 1) as f64).sqrt();
        if sd.is_nan() || sd <= 0.0 {
            return None;
        }
        let v = r.mean / sd * self.periods_per_year()?.sqrt();
        v.is_finite().then_some(v)
    }

    /// Annualised Sortino ratio, see [`Summary::sortino_ratio`].
    fn sortino(&self) -> Option<f64> {
        let r = &self.returns;
        if r.negatives == 0 {
            return None;
        }
        let dd = (r.downside_sq_sum / r.n as f64).sqrt();
        if dd.is_nan() || dd <= 0.0 {
            return None;
        }
        let v = r.mean / dd * self.periods_per_year()?.sqrt();
        v.is_finite().then_some(v)
    }

    /// The summary of the run so far, completed with what only the engine
    /// knows at the end.
    ///
    /// Holds: the engine counts every Hold in [`EngineState::holds`], while
    /// batches carry Hold decisions only when the session records them; the
    /// summary reports the larger of the two counts, so recorded holds are
    /// not counted twice.
    pub fn summary(&self, end: &EngineState, phase: &str) -> Summary {
        let hundred = Decimal::ONE_HUNDRED;
        let total_pnl = end.equity.saturating_sub(self.initial_equity);
        let rts = Decimal::from(self.round_trips);
        let mut decisions = self.decisions;
        decisions.hold = decisions.hold.max(end.holds);
        let roi_pct = total_pnl
            .checked_mul(hundred)
            .and_then(|p| quotient(p, self.initial_equity))
            .unwrap_or_default();
        let id = &self.identity;
        let figures = self.figures.finish(
            self.initial_equity,
            end.equity,
            end.start,
            end.now,
            end.unrealized_pnl,
            end.max_drawdown_pct,
            roi_pct,
            self.prices.as_ref(),
            crate::report::currency_decimals(&id.currency)
                .unwrap_or(crate::report::UNKNOWN_CURRENCY_DP),
        );
        Summary {
            initial_equity: self.initial_equity,
            final_equity: end.equity,
            final_cash: end.cash,
            realized_pnl: end.realized_pnl,
            unrealized_pnl: end.unrealized_pnl,
            total_pnl,
            roi_pct,
            fills: self.fills,
            failed_orders: self.failed_orders,
            round_trips: self.round_trips,
            wins: self.wins,
            losses: self.losses,
            win_rate_pct: quotient(Decimal::from(self.wins) * hundred, rts).unwrap_or_default(),
            avg_pnl_per_round_trip: quotient(self.sum_pnl, rts).unwrap_or_default(),
            avg_win: quotient(self.gross_profit, Decimal::from(self.wins)).unwrap_or_default(),
            avg_loss: quotient(-self.gross_loss, Decimal::from(self.losses)).unwrap_or_default(),
            largest_win: self.largest_win,
            largest_loss: self.largest_loss,
            profit_factor: quotient(self.gross_profit, self.gross_loss),
            max_drawdown_pct: end.max_drawdown_pct,
            sharpe_ratio: self.sharpe(),
            sortino_ratio: self.sortino(),
            return_periods: self.returns.n,
            return_period_ms: self.mean_return_period_ms().map(|p| p.round() as i64),
            snapshot_interval_ms: self.snapshot_interval_ms,
            fees_paid: self.fees_paid,
            gas_paid: self.gas_paid,
            slippage_paid: self.slippage_paid,
            breaker_trips: self.breaker_trips,
            autopilot_adjustments: self.adjustments,
            decisions,
            bars: end.bars,
            start: end.start,
            end: end.now,
            phase: phase.to_string(),
            open_positions: end.open_positions,
            session_id: id.session_id.clone(),
            session_name: id.name.clone(),
            strategy: id.strategy.clone(),
            symbols: id.symbols.clone(),
            currency: id.currency.clone(),
            figures,
        }
    }
}

/// Builders of ledger records shared by the analytics and report tests.
#[cfg(test)]
pub(crate) mod test_records {
    use rust_decimal::Decimal;

    use crate::ledger::records::*;
    use crate::types::{Side, Timestamp};

    /// 2022-01-01T00:00:00Z.
    pub const T0: i64 = 1_640_995_200_000;
    /// One hour in ms.
    pub const HOUR: i64 = 3_600_000;

    pub fn snapshot(time: Timestamp, equity: Decimal, drawdown_pct: Decimal) -> SnapshotRecord {
        SnapshotRecord {
            time,
            cash: equity,
            position_value: Decimal::ZERO,
            equity,
            realized_pnl: Decimal::ZERO,
            unrealized_pnl: Decimal::ZERO,
            drawdown_pct,
            open_positions: 0,
            trades: 0,
        }
    }

    pub fn round_trip(pnl: Decimal) -> RoundTrip {
        RoundTrip {
            symbol: "BTC-PERP".into(),
            entry_time: Timestamp(T0),
            entry_price: Decimal::from(100),
            exit_time: Timestamp(T0 + HOUR),
            exit_price: Decimal::from(100),
            quantity: Decimal::ONE,
            pnl,
            fees: Decimal::ZERO,
            return_pct: pnl,
            exit_reason: FillReason::Signal,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn trade(
        seq: u64,
        side: Side,
        status: FillStatus,
        fee: Decimal,
        gas: Decimal,
        slippage_cost: Decimal,
    ) -> TradeRecord {
        TradeRecord {
            seq,
            decision_seq: seq,
            time: Timestamp(T0 + 60_000 * seq as i64),
            symbol: "BTC-PERP".into(),
            side,
            quantity: Decimal::new(1, 1),
            reference_price: Decimal::from(46752),
            fill_price: Decimal::from(46752),
            fee,
            gas,
            slippage_cost,
            latency_ms: 250,
            realized_pnl: Decimal::ZERO,
            reason: FillReason::Signal,
            status,
            cash_after: Decimal::from(1000),
            position_after: Decimal::new(1, 1),
            cost_basis_after: Decimal::from(4675),
        }
    }

    pub fn decision(seq: u64, action: Action) -> DecisionRecord {
        DecisionRecord {
            seq,
            time: Timestamp(T0 + 60_000 * seq as i64),
            symbol: "BTC-PERP".into(),
            action,
            confidence: Decimal::new(7250, 2),
            price: Decimal::from(46752),
            quantity: None,
            positive_signals: String::new(),
            negative_signals: String::new(),
            risk_assessment: String::new(),
            reason: "why".into(),
        }
    }

    pub fn breaker(from: &str, to: &str) -> BreakerEventRecord {
        BreakerEventRecord {
            time: Timestamp(T0),
            breaker: "dailyLoss".into(),
            from_state: from.into(),
            to_state: to.into(),
            reason: "loss 5.1% > 5%".into(),
        }
    }

    pub fn adjustment(id: u64) -> AdjustmentRecord {
        AdjustmentRecord {
            id,
            time: Timestamp(T0),
            parameter: "stopLossPct".into(),
            old_value: Decimal::from(3),
            new_value: Decimal::from(2),
            reason: "losses".into(),
            metrics_before: WindowMetrics::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_records::*;
    use super::*;
    use crate::ledger::records::*;
    use crate::types::Side;
    use rust_decimal_macros::dec;

    fn final_state(equity: Decimal) -> EngineState {
        EngineState {
            start: Timestamp(T0),
            now: Timestamp(T0 + 24 * HOUR),
            bars: 1440,
            cash: equity,
            equity,
            realized_pnl: Decimal::ZERO,
            unrealized_pnl: Decimal::ZERO,
            max_drawdown_pct: dec!(10),
            open_positions: 0,
            holds: 0,
            fills: 0,
            rejected_ticks: 0,
        }
    }

    fn batch_of_snapshots(equities: &[Decimal], interval: i64) -> LedgerBatch {
        LedgerBatch {
            snapshots: equities
                .iter()
                .enumerate()
                .map(|(i, e)| snapshot(Timestamp(T0 + interval * i as i64), *e, Decimal::ZERO))
                .collect(),
            ..Default::default()
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn sharpe_and_sortino_match_hand_computed_values() {
        // Equity 100 → 110 → 99 → 108.9: returns +0.1, −0.1, +0.1.
        // mean = 1/30; sample variance = (2·(1/15)² + (2/15)²) / 2 = 1/75,
        // sd = 0.2/√3, so the per-period Sharpe is (1/30)/(0.2/√3) = √3/6.
        // Downside deviation = √(0.01/3) = 0.1/√3, per-period Sortino = √3/3.
        // Daily snapshots: 365 periods per year.
        let mut a = Analytics::new(dec!(100), MS_PER_DAY);
        a.on_batch(&batch_of_snapshots(
            &[dec!(100), dec!(110), dec!(99), dec!(108.9)],
            MS_PER_DAY,
        ));
        let s = a.summary(&final_state(dec!(108.9)), "Completed");
        assert_eq!(s.return_periods, 3);
        let sharpe = s.sharpe_ratio.unwrap();
        let sortino = s.sortino_ratio.unwrap();
        let expected_sharpe = 3f64.sqrt() / 6.0 * 365f64.sqrt();
        let expected_sortino = 3f64.sqrt() / 3.0 * 365f64.sqrt();
        assert!(
            close(sharpe, expected_sharpe),
            "{sharpe} vs {expected_sharpe}"
        );
        assert!(
            close(sortino, expected_sortino),
            "{sortino} vs {expected_sortino}"
        );
    }

    #[test]
    fn hourly_snapshots_annualise_by_root_8760() {
        // Same returns split across two batches, hourly: periods per year =
        // 365 × 24 = 8760.
        let mut a = Analytics::new(dec!(100), HOUR);
        let all = batch_of_snapshots(&[dec!(100), dec!(110), dec!(99), dec!(108.9)], HOUR);
        let (first, second) = all.snapshots.split_at(2);
        a.on_batch(&LedgerBatch {
            snapshots: first.to_vec(),
            ..Default::default()
        });
        a.on_batch(&LedgerBatch {
            snapshots: second.to_vec(),
            ..Default::default()
        });
        let s = a.summary(&final_state(dec!(108.9)), "Completed");
        let expected = 3f64.sqrt() / 6.0 * 8760f64.sqrt();
        assert!(close(s.sharpe_ratio.unwrap(), expected));
    }

    #[test]
    fn ratios_are_annualised_by_the_spacing_of_the_snapshots_received() {
        // 4h candles with the default 1h snapshot interval: the engine takes a
        // snapshot at every candle close, 4 hours apart. The same returns as
        // above, so per period Sharpe = √3/6 and Sortino = √3/3; periods per
        // year = 365 × 24 / 4 = 2190, not 8760.
        let mut a = Analytics::new(dec!(100), HOUR);
        a.on_batch(&batch_of_snapshots(
            &[dec!(100), dec!(110), dec!(99), dec!(108.9)],
            4 * HOUR,
        ));
        let s = a.summary(&final_state(dec!(108.9)), "Completed");
        assert_eq!(s.return_period_ms, Some(4 * HOUR));
        assert_eq!(s.snapshot_interval_ms, HOUR);
        let sharpe = s.sharpe_ratio.unwrap();
        let expected = 3f64.sqrt() / 6.0 * 2190f64.sqrt();
        assert!(close(sharpe, expected), "{sharpe} vs {expected}");
        let sortino = s.sortino_ratio.unwrap();
        let expected = 3f64.sqrt() / 3.0 * 2190f64.sqrt();
        assert!(close(sortino, expected), "{sortino} vs {expected}");

        // Uneven spacing (1h, 2h, 6h): the mean, 3h, gives 2920 periods a year.
        let mut uneven = Analytics::new(dec!(100), HOUR);
        uneven.on_batch(&LedgerBatch {
            snapshots: [
                (0, dec!(100)),
                (1, dec!(110)),
                (3, dec!(99)),
                (9, dec!(108.9)),
            ]
            .into_iter()
            .map(|(h, e)| snapshot(Timestamp(T0 + h * HOUR), e, Decimal::ZERO))
            .collect(),
            ..Default::default()
        });
        let s = uneven.summary(&final_state(dec!(108.9)), "Completed");
        assert_eq!(s.return_period_ms, Some(3 * HOUR));
        let expected = 3f64.sqrt() / 6.0 * 2920f64.sqrt();
        assert!(close(s.sharpe_ratio.unwrap(), expected));
    }

    #[test]
    fn ratios_absent_without_enough_data_or_variance() {
        let mut a = Analytics::new(dec!(100), HOUR);
        a.on_batch(&batch_of_snapshots(&[dec!(100), dec!(90)], HOUR));
        let s = a.summary(&final_state(dec!(90)), "Completed");
        assert_eq!(s.return_periods, 1);
        assert_eq!(s.sharpe_ratio, None, "one return has no sample deviation");
        // Sortino is defined with one negative return: mean −0.1 over √(0.01/1).
        let expected = -(8760f64.sqrt());
        assert!(close(s.sortino_ratio.unwrap(), expected));

        let mut flat = Analytics::new(dec!(100), HOUR);
        flat.on_batch(&batch_of_snapshots(
            &[dec!(100), dec!(101), dec!(102.01), dec!(103.0301)],
            HOUR,
        ));
        let s = flat.summary(&final_state(dec!(103.0301)), "Completed");
        assert_eq!(s.return_periods, 3);
        assert_eq!(s.sharpe_ratio, None, "constant 1% returns: zero variance");
        assert_eq!(s.sortino_ratio, None, "no negative return");
    }

    #[test]
    fn repeated_snapshot_time_is_ignored() {
        let mut a = Analytics::new(dec!(100), HOUR);
        let mut b = batch_of_snapshots(&[dec!(100), dec!(110)], HOUR);
        b.snapshots
            .push(snapshot(Timestamp(T0 + HOUR), dec!(50), Decimal::ZERO));
        a.on_batch(&b);
        assert_eq!(
            a.summary(&final_state(dec!(110)), "Completed")
                .return_periods,
            1
        );
    }

    #[test]
    fn round_trip_statistics() {
        // P&L 10, −4, 6, −2, 0: wins 2 (16), losses 2 (6), one break-even.
        let mut a = Analytics::new(dec!(1000), HOUR);
        a.on_batch(&LedgerBatch {
            round_trips: [dec!(10), dec!(-4), dec!(6), dec!(-2), dec!(0)]
                .into_iter()
                .map(round_trip)
                .collect(),
            ..Default::default()
        });
        let s = a.summary(&final_state(dec!(1010)), "Completed");
        assert_eq!((s.round_trips, s.wins, s.losses), (5, 2, 2));
        assert_eq!(s.win_rate_pct, dec!(40));
        assert_eq!(s.avg_pnl_per_round_trip, dec!(2));
        assert_eq!(s.avg_win, dec!(8));
        assert_eq!(s.avg_loss, dec!(-3));
        assert_eq!(s.largest_win, dec!(10));
        assert_eq!(s.largest_loss, dec!(-4));
        // 16 / 6 = 2.666…, rounded to 8 places.
        assert_eq!(s.profit_factor, Some(dec!(2.66666667)));
        assert_eq!(s.total_pnl, dec!(10));
        assert_eq!(s.roi_pct, dec!(1));
    }

    #[test]
    fn profit_factor_none_without_losses() {
        let mut a = Analytics::new(dec!(1000), HOUR);
        a.on_batch(&LedgerBatch {
            round_trips: vec![round_trip(dec!(5)), round_trip(dec!(7))],
            ..Default::default()
        });
        let s = a.summary(&final_state(dec!(1012)), "Completed");
        assert_eq!(s.profit_factor, None);
        assert_eq!(s.win_rate_pct, dec!(100));
        assert_eq!(s.avg_loss, Decimal::ZERO);
        assert_eq!(s.largest_loss, Decimal::ZERO);
    }

    #[test]
    fn empty_run_has_zero_rates() {
        let a = Analytics::new(dec!(1000), HOUR);
        let s = a.summary(&final_state(dec!(1000)), "Completed");
        assert_eq!(s.round_trips, 0);
        assert_eq!(s.win_rate_pct, Decimal::ZERO);
        assert_eq!(s.roi_pct, Decimal::ZERO);
        assert_eq!(s.profit_factor, None);
        assert_eq!(s.sharpe_ratio, None);
        assert_eq!(s.sortino_ratio, None);
    }

    #[test]
    fn costs_counts_breakers_adjustments_and_decisions() {
        let mut a = Analytics::new(dec!(1000), HOUR);
        let b = LedgerBatch {
            trades: vec![
                trade(
                    1,
                    Side::Buy,
                    FillStatus::Filled,
                    dec!(1.5),
                    dec!(0.1),
                    dec!(0.25),
                ),
                trade(2, Side::Sell, FillStatus::Failed, dec!(9), dec!(9), dec!(9)),
                trade(
                    3,
                    Side::Sell,
                    FillStatus::Filled,
                    dec!(2),
                    dec!(0.1),
                    dec!(0.5),
                ),
            ],
            decisions: vec![
                decision(1, Action::Buy),
                decision(2, Action::Sell),
                decision(3, Action::Sell),
                decision(4, Action::Skip),
                decision(5, Action::Hold),
            ],
            breaker_events: vec![
                breaker("Closed", "Open"),
                breaker("Open", "HalfOpen"),
                breaker("HalfOpen", "Open"),
                breaker("Open", "Closed"),
            ],
            adjustments: vec![adjustment(1), adjustment(2)],
            ..Default::default()
        };
        a.on_batch(&b);
        a.on_batch(&LedgerBatch {
            adjustments: vec![adjustment(3)],
            ..Default::default()
        });
        let mut end = final_state(dec!(995.5));
        end.holds = 7;
        let s = a.summary(&end, "Completed");
        assert_eq!((s.fills, s.failed_orders), (2, 1));
        assert_eq!(s.fees_paid, dec!(3.5));
        assert_eq!(s.gas_paid, dec!(0.2));
        assert_eq!(s.slippage_paid, dec!(0.75));
        assert_eq!(s.breaker_trips, 2);
        assert_eq!(s.autopilot_adjustments, 3);
        assert_eq!(
            s.decisions,
            DecisionCounts {
                buy: 1,
                sell: 2,
                skip: 1,
                hold: 7
            }
        );
        assert_eq!(s.total_pnl, dec!(-4.5));
        assert_eq!(s.roi_pct, dec!(-0.45));
    }

    #[test]
    fn summary_json_keeps_decimals_exact_as_strings() {
        let mut a = Analytics::new(dec!(1000.00), HOUR);
        a.on_batch(&LedgerBatch {
            round_trips: vec![round_trip(dec!(0.10)), round_trip(dec!(-0.05))],
            ..Default::default()
        });
        let s = a.summary(&final_state(dec!(1000.05)), "Completed");
        let v: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(v["initial_equity"], "1000");
        assert_eq!(v["total_pnl"], "0.05");
        assert_eq!(v["profit_factor"], "2");
        assert_eq!(v["largest_loss"], "-0.05");
        assert_eq!(v["sharpe_ratio"], serde_json::Value::Null);
        assert_eq!(v["start"], "2022-01-01T00:00:00Z");
        assert_eq!(v["decisions"]["hold"], 0);
        assert_eq!(v["phase"], "Completed");
    }
}

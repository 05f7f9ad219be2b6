//! The engine: one candle in, decisions, fills and records out.
//!
//! The engine is synchronous and deterministic. It never reads the wall
//! clock: market time is the time of the candle it is given, so replay,
//! paced replay, simulation and (later) live trading all drive the same code.
//!
//! # Per candle, in order
//!
//! 1. Time: UTC-day rollover, breaker cooldowns.
//! 2. Feed check: the candle is validated (a bad tick is skipped and counted;
//!    gaps are measured); the price-feed breaker sees both.
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

use paperbot_crds::{ExecutionSpec, SignalsSpec, VolumeUnit};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::{
    autopilot::Autopilot,
    breakers::CircuitBreakers,
    execution::ExecutionModel,
    ledger::records::{
        Action, DecisionRecord, FillReason, FillStatus, LedgerBatch, PositionRecord, RoundTrip,
        SnapshotRecord, TradeRecord,
    },
    market::guard::{FeedGuard, FeedVerdict},
    params::{EffectiveParams, TunableParams},
    portfolio::Portfolio,
    signals::{SignalSet, combine, explain},
    types::{Candle, Side, SymbolId, Timestamp},
};

/// Decimal places of quantities computed by percent sizing (rounded down).
pub const QUANTITY_DP: u32 = 8;

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
}

/// What the runner should do after a candle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Keep feeding candles.
    Continue,
    /// The account kill switch tripped: positions were liquidated; stop.
    Halted,
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
    /// The last accepted candle (liquidation fills against it).
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
}

impl Engine {
    /// A fresh engine (flat, all cash).
    pub fn new(cfg: EngineConfig) -> Self {
        let syms = cfg
            .symbols
            .iter()
            .map(|name| SymbolState {
                name: name.clone(),
                signals: SignalSet::new(&cfg.signals),
                pending: None,
                stop_price: None,
                take_profit_price: None,
                trail_price: None,
                levels_version: 0,
                dirty: false,
                last_candle: None,
            })
            .collect();
        let n = cfg.symbols.len();
        Self {
            portfolio: Portfolio::new(cfg.initial_cash, n),
            exec: ExecutionModel::from_spec(&cfg.execution, &cfg.volume_units),
            breakers: CircuitBreakers::new(&cfg.params.breakers),
            autopilot: Autopilot::new(&cfg.params.autopilot, cfg.params.tunable.clone()),
            guard: FeedGuard::new(n),
            batch: LedgerBatch::default(),
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
            syms,
            cfg,
        }
    }

    /// Current tunable parameters (autopilot may have moved them).
    pub fn params(&self) -> &TunableParams {
        self.autopilot.params()
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

    /// Records produced since the last call, with the latest state of every
    /// position that changed, the cash and the market time.
    pub fn take_batch(&mut self) -> LedgerBatch {
        for (i, s) in self.syms.iter_mut().enumerate() {
            if s.dirty {
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
            max_drawdown_pct: self.max_drawdown_pct(),
            open_positions: self.portfolio.open_positions(),
            holds: self.holds,
            fills: self.fills,
            rejected_ticks: self.rejected,
        }
    }

    fn max_drawdown_pct(&self) -> Decimal {
        if self.worst_peak <= Decimal::ZERO {
            return Decimal::ZERO;
        }
        pct4((self.worst_peak - self.worst_trough) / self.worst_peak)
    }

    /// Take a final snapshot (end of data, stop or halt) unless one was just
    /// taken at this time.
    pub fn finish(&mut self) {
        if self.last_snapshot != Some(self.now) {
            self.snapshot();
        }
    }

    /// Process one candle.
    pub fn on_candle(&mut self, c: &Candle) -> Step {
        if self.halted {
            return Step::Halted;
        }
        let sym = c.symbol;
        let s = sym.idx();
        let t_open = c.open_time;
        if self.start.is_none() {
            // The starting point of the equity curve (and of the first return).
            self.start = Some(t_open);
            self.now = t_open;
            self.snapshot();
            let iv = self.cfg.snapshot_interval_ms.max(1);
            self.next_snapshot = Timestamp((t_open.millis().div_euclid(iv) + 1) * iv);
        }
        self.now = self.now.max(c.close_time());
        let day = t_open.utc_day();
        if day != self.day {
            self.day = day;
            self.day_start_equity = self.portfolio.equity();
            self.entries_today = 0;
        }
        self.breakers.tick(t_open, &mut self.batch.breaker_events);

        match self.guard.check(c) {
            FeedVerdict::Accept { gap_ms } => {
                self.breakers.on_feed(
                    t_open,
                    true,
                    gap_ms,
                    c.interval_ms,
                    &mut self.batch.breaker_events,
                );
            }
            FeedVerdict::Reject(_) => {
                self.rejected += 1;
                self.breakers.on_feed(
                    t_open,
                    false,
                    None,
                    c.interval_ms,
                    &mut self.batch.breaker_events,
                );
                return Step::Continue;
            }
        }
        self.bars += 1;
        let fills_before = self.fills;

        // 3. Pending market order.
        if let Some(o) = self.syms[s].pending.take() {
            if o.fill_time < c.close_time() {
                self.execute(o, c);
            } else {
                self.syms[s].pending = Some(o);
            }
        }
        // 4. Resting exits.
        if self.portfolio.position(sym).is_open() && self.syms[s].pending.is_none() {
            self.check_exits(c);
        }
        // 5. Mark, equity, breakers.
        self.portfolio.mark(sym, c.close);
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
            } else if (self.peak_equity - equity) * self.worst_peak
                > (self.worst_peak - self.worst_trough) * self.peak_equity
            {
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
            self.liquidate(c.close_time());
            self.snapshot();
            self.halted = true;
            return Step::Halted;
        }
        // 6. Max hold time.
        if let Some(max_hold) = self.cfg.params.risk.max_hold_ms {
            let p = self.portfolio.position(sym);
            if let Some(opened) = p.opened_at
                && self.syms[s].pending.is_none()
                && c.close_time().millis() - opened.millis() >= max_hold
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
            let iv = self.cfg.snapshot_interval_ms.max(1);
            self.next_snapshot = Timestamp((c.close_time().millis().div_euclid(iv) + 1) * iv);
        }
        Step::Continue
    }

    fn snapshot(&mut self) {
        self.last_snapshot = Some(self.now);
        let equity = self.portfolio.equity();
        let drawdown = if self.peak_equity > Decimal::ZERO {
            pct4((self.peak_equity - equity) / self.peak_equity)
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
        if st.levels_version != self.params_version {
            let avg = p.avg_entry_price();
            let t = self.autopilot.params();
            st.stop_price = t
                .stop_loss_pct
                .map(|pct| round8(avg * (Decimal::ONE - pct / Decimal::ONE_HUNDRED)));
            st.take_profit_price = t
                .take_profit_pct
                .map(|pct| round8(avg * (Decimal::ONE + pct / Decimal::ONE_HUNDRED)));
            st.levels_version = self.params_version;
        }
        if st.trail_price.is_none()
            && let Some(pct) = self.cfg.params.risk.trailing_stop_pct
        {
            st.trail_price = Some(round8(
                p.highest_price * (Decimal::ONE - pct / Decimal::ONE_HUNDRED),
            ));
        }
    }

    fn check_exits(&mut self, c: &Candle) {
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
            self.fill(c, Side::Sell, q, level, time, 0, 0, reason);
        }
    }

    fn liquidate(&mut self, time: Timestamp) {
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
                );
            }
        }
    }

    /// Execute a market order on candle `c`.
    fn execute(&mut self, o: PendingOrder, c: &Candle) {
        let time = o.fill_time.max(c.open_time);
        let latency = time.millis() - o.decision_time.millis();
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
            return;
        }
        let reference = ExecutionModel::reference_price(c, o.fill_time);
        let mut quantity = o.quantity;
        if o.side == Side::Buy {
            // Prices move between decision and fill: never spend more than the cash.
            let slip = self.exec.slippage_fraction(quantity, reference, c);
            let unit = ExecutionModel::apply_slippage(Side::Buy, reference, slip)
                * (Decimal::ONE + self.exec.fee_rate());
            let spendable = self.portfolio.cash() - self.exec.gas();
            if unit > Decimal::ZERO && quantity * unit > spendable {
                quantity = floor_qty(spendable / unit);
            }
            if quantity <= Decimal::ZERO {
                return;
            }
        } else {
            quantity = quantity.min(self.portfolio.position(c.symbol).quantity);
            if quantity <= Decimal::ZERO {
                return;
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
        );
        self.breakers
            .on_execution(time, true, &mut self.batch.breaker_events);
    }

    /// Apply a fill at `reference` (before slippage) and record it.
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
    ) {
        let sym = c.symbol;
        let s = sym.idx();
        let slip = self.exec.slippage_fraction(quantity, reference, c);
        let price = ExecutionModel::apply_slippage(side, reference, slip);
        let fee = self.exec.fee(quantity, price);
        let gas = self.exec.gas();
        let mut realized = Decimal::ZERO;
        match side {
            Side::Buy => {
                self.portfolio.buy(sym, quantity, price, fee + gas, time);
                self.entries_today += 1;
                self.breakers.on_entry(time, &mut self.batch.breaker_events);
                self.syms[s].levels_version = 0;
                self.syms[s].trail_price = None;
            }
            Side::Sell => {
                let out = self.portfolio.sell(sym, quantity, price, fee + gas);
                realized = out.realized_pnl;
                if let Some(opened) = out.closed_opened_at {
                    let rt = RoundTrip {
                        symbol: self.syms[s].name.clone(),
                        entry_time: opened,
                        entry_price: (out.released_entry_notional / quantity).normalize(),
                        exit_time: time,
                        exit_price: price.normalize(),
                        quantity,
                        pnl: out.realized_pnl,
                        fees: out.released_entry_costs + fee + gas,
                        return_pct: if out.released_cost.is_zero() {
                            Decimal::ZERO
                        } else {
                            pct4(out.realized_pnl / out.released_cost)
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
            slippage_cost: ((price - reference).abs() * quantity).normalize(),
            latency_ms,
            realized_pnl: realized,
            reason,
            status: FillStatus::Filled,
            cash_after: self.portfolio.cash(),
            position_after: p.quantity,
            cost_basis_after: p.cost_basis,
        });
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
                    None => floor_qty(
                        equity * params.max_position_size_pct / Decimal::ONE_HUNDRED / c.close,
                    ),
                };
                let unit = c.close * (Decimal::ONE + self.exec.fee_rate());
                if quantity <= Decimal::ZERO {
                    skip = Some("position size rounds to zero".into());
                } else if quantity * unit + self.exec.gas() > self.portfolio.cash() {
                    if risk.fixed_quantity.is_some() {
                        skip = Some(format!(
                            "insufficient cash: {} needed, {} available",
                            (quantity * unit + self.exec.gas()).round_dp(2),
                            self.portfolio.cash().round_dp(2)
                        ));
                    } else {
                        quantity = floor_qty(
                            (self.portfolio.cash() - self.exec.gas()).max(Decimal::ZERO) / unit,
                        );
                        if quantity <= Decimal::ZERO {
                            skip = Some("insufficient cash".into());
                        }
                    }
                }
                if skip.is_none()
                    && let Some(max_slip) = risk.max_slippage_pct
                {
                    let est =
                        self.exec.slippage_fraction(quantity, c.close, c) * Decimal::ONE_HUNDRED;
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

    fn risk_text(&self, quantity: Decimal, price: Decimal, equity: Decimal) -> String {
        let notional = quantity * price;
        let pct = if equity > Decimal::ZERO {
            (notional / equity * Decimal::ONE_HUNDRED).round_dp(2)
        } else {
            Decimal::ZERO
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
                notional.round_dp(2).normalize(),
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

/// Round down to [`QUANTITY_DP`] places.
fn floor_qty(q: Decimal) -> Decimal {
    q.round_dp_with_strategy(QUANTITY_DP, RoundingStrategy::ToZero)
}

fn round8(v: Decimal) -> Decimal {
    crate::execution::round_price(v)
}

/// A fraction as a percent with 4 decimal places.
fn pct4(fraction: Decimal) -> Decimal {
    (fraction * Decimal::ONE_HUNDRED)
        .round_dp_with_strategy(4, RoundingStrategy::MidpointNearestEven)
        .normalize()
}

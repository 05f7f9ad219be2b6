//! The trader's figures of a run, beyond the totals of [`crate::analytics`]:
//! the buy-and-hold benchmark, exposure time, CAGR, Calmar ratio, SQN,
//! expectancy, trade durations, drawdown duration, streaks, best/worst round
//! trip and day, and the per-symbol, per-exit-reason and per-day breakdowns.
//!
//! Everything is folded from the ledger's records ([`LedgerBatch`]) plus the
//! engine's end figures, so a report rebuilt from the ledger (a resumed
//! session, `bot-runtime report`) has the same figures as the uninterrupted
//! run's. The benchmark needs prices the records do not hold (each symbol's
//! first and last candle); the runner carries them in its checkpoint as
//! [`BenchmarkPrices`].
//!
//! Memory: O(symbols + UTC days of the run) — one row per symbol and per day
//! (a year of data is 365 rows), nothing per candle or per record.
//!
//! Where a figure is also in backtesting.py's `backtesting/_stats.py`
//! (`compute_stats`), its doc comment says whether the definition is the
//! same and, if not, how it differs; `tests/reference_stats.rs` checks them
//! against backtesting.py 0.6.6 itself on the parity run. Money is
//! [`Decimal`]; statistics that need powers or square roots (CAGR, Calmar,
//! SQN) are `f64` and say so.

use std::collections::BTreeMap;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize, Serializer};

use crate::analytics::{DAYS_PER_YEAR, QUOTIENT_DP};
use crate::ledger::records::{FillReason, FillStatus, LedgerBatch, RoundTrip};
use crate::types::{MS_PER_DAY, Timestamp};

/// A price of one symbol at one market time (a benchmark input).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PricePoint {
    /// Market time of the price.
    pub time: Timestamp,
    /// The price, quote currency.
    pub price: Decimal,
}

/// What the benchmark needs that the ledger records do not hold: the fee
/// rate and each symbol's first accepted candle's open and last accepted
/// candle's close. Kept in the runner's checkpoint (camelCase JSON, decimals
/// as strings) so a resumed or regenerated report has the same benchmark.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BenchmarkPrices {
    /// The session's fee rate as a fraction (0.001 = 0.1 %), paid on the
    /// benchmark's entry and exit like on every fill.
    pub fee_rate: Decimal,
    /// Symbol names, by symbol index.
    pub symbols: Vec<String>,
    /// Open time and open price of each symbol's first accepted candle.
    pub first: Vec<Option<PricePoint>>,
    /// Close time and close price of each symbol's last accepted candle.
    pub last: Vec<Option<PricePoint>>,
}

impl BenchmarkPrices {
    /// No price seen yet for `symbols`, fee rate `fee_rate` (fraction).
    pub fn new(symbols: Vec<String>, fee_rate: Decimal) -> Self {
        let n = symbols.len();
        Self {
            fee_rate,
            symbols,
            first: vec![None; n],
            last: vec![None; n],
        }
    }

    /// Symbols without a first price yet.
    pub fn missing_first(&self) -> usize {
        self.first.iter().filter(|p| p.is_none()).count()
    }

    /// Records symbol `i`'s first candle (open time, open) unless one is
    /// recorded; returns whether it was recorded now. An index out of range
    /// is ignored.
    pub fn set_first(&mut self, i: usize, time: Timestamp, price: Decimal) -> bool {
        match self.first.get_mut(i) {
            Some(slot @ None) => {
                *slot = Some(PricePoint { time, price });
                true
            }
            _ => false,
        }
    }

    /// Records symbol `i`'s latest candle (close time, close). An index out
    /// of range is ignored.
    pub fn set_last(&mut self, i: usize, time: Timestamp, price: Decimal) {
        if let Some(slot) = self.last.get_mut(i) {
            *slot = Some(PricePoint { time, price });
        }
    }
}

/// One symbol's leg of the benchmark.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchmarkLeg {
    /// The symbol.
    pub symbol: String,
    /// Open time of its first candle (the buy), `null` when it had none.
    #[serde(serialize_with = "ser_opt_time")]
    pub entry_time: Option<Timestamp>,
    /// Its first candle's open, quote currency.
    #[serde(serialize_with = "ser_opt_dec")]
    pub entry_price: Option<Decimal>,
    /// Close time of its last candle (the valuation).
    #[serde(serialize_with = "ser_opt_time")]
    pub exit_time: Option<Timestamp>,
    /// Its last candle's close, quote currency.
    #[serde(serialize_with = "ser_opt_dec")]
    pub exit_price: Option<Decimal>,
    /// Units bought: `share / (entry_price × (1 + fee_rate))`, unrounded
    /// (no lot size).
    #[serde(serialize_with = "ser_dec")]
    pub quantity: Decimal,
    /// Value at the end after the exit fee: `quantity × exit_price × (1 −
    /// fee_rate)`; the untouched share when the symbol had no price.
    #[serde(serialize_with = "ser_dec")]
    pub final_value: Decimal,
}

/// Buy-and-hold of the session's symbols over the same period.
///
/// Convention: the starting equity is split equally between the symbols;
/// each share buys the symbol at its **first candle's open**, paying the
/// session's fee rate on the notional (`quantity = share / (open × (1 +
/// f))`), and is valued at its **last candle's close** after paying the fee
/// again on the exit (`value = quantity × close × (1 − f)`). A symbol that
/// never had a candle keeps its share as cash. No slippage, gas or lot
/// sizes. backtesting.py 0.6.6's "Buy & Hold Return [%]" is the
/// single-asset, fee-free `(last close − c₀) / c₀ × 100` where c₀ is the
/// close of its first *trading* bar (the first bar after the strategy's
/// indicators warm up, e.g. the 30th bar for an SMA(30)), not the data's
/// first open; ours equals it for one symbol with fee 0 bought at that
/// close instead (checked in `tests/reference_stats.rs`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Benchmark {
    /// Always `"first_open_to_last_close"`.
    pub prices: &'static str,
    /// The fee rate paid on entry and on exit, percent (0.1 = 0.1 %).
    #[serde(serialize_with = "ser_dec")]
    pub fee_rate_pct: Decimal,
    /// Equity at the end, quote currency, rounded half away from zero to
    /// the currency's places ([`crate::report::currency_decimals`], 8 when
    /// unknown).
    #[serde(serialize_with = "ser_dec")]
    pub final_equity: Decimal,
    /// `(final − initial) / initial × 100`, percent, [`QUOTIENT_DP`] places.
    #[serde(serialize_with = "ser_dec")]
    pub return_pct: Decimal,
    /// One leg per symbol.
    pub legs: Vec<BenchmarkLeg>,
}

/// The benchmark of `prices` for `initial` equity (quote currency), money
/// rounded to `money_dp` places; `None` without symbols, with initial
/// equity ≤ 0, or when a figure leaves `Decimal`'s range.
pub fn benchmark(prices: &BenchmarkPrices, initial: Decimal, money_dp: u32) -> Option<Benchmark> {
    let n = prices.symbols.len();
    if n == 0 || initial <= Decimal::ZERO {
        return None;
    }
    let f = prices.fee_rate;
    let share = initial.checked_div(Decimal::from(n))?;
    let mut legs = Vec::with_capacity(n);
    let mut total = Decimal::ZERO;
    for (i, symbol) in prices.symbols.iter().enumerate() {
        let first = prices.first.get(i).copied().flatten();
        let last = prices.last.get(i).copied().flatten();
        let (quantity, value) = match (first, last) {
            (Some(a), Some(b)) if a.price > Decimal::ZERO => {
                let cost = a.price.checked_mul(Decimal::ONE.checked_add(f)?)?;
                let q = share.checked_div(cost)?;
                let v = q
                    .checked_mul(b.price)?
                    .checked_mul(Decimal::ONE.checked_sub(f)?)?;
                (q, v)
            }
            _ => (Decimal::ZERO, share),
        };
        total = total.checked_add(value)?;
        legs.push(BenchmarkLeg {
            symbol: symbol.clone(),
            entry_time: first.map(|p| p.time),
            entry_price: first.map(|p| p.price),
            exit_time: last.map(|p| p.time),
            exit_price: last.map(|p| p.price),
            quantity,
            final_value: round(value, money_dp),
        });
    }
    let return_pct = total
        .checked_sub(initial)?
        .checked_mul(Decimal::ONE_HUNDRED)?
        .checked_div(initial)?;
    Some(Benchmark {
        prices: "first_open_to_last_close",
        fee_rate_pct: f.checked_mul(Decimal::ONE_HUNDRED)?.normalize(),
        final_equity: round(total, money_dp),
        return_pct: round(return_pct, QUOTIENT_DP),
        legs,
    })
}

fn round(d: Decimal, dp: u32) -> Decimal {
    d.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero)
}

/// `num / den` to [`QUOTIENT_DP`] places, `None` when `den` is 0.
fn quotient(num: Decimal, den: Decimal) -> Option<Decimal> {
    num.checked_div(den).map(|q| round(q, QUOTIENT_DP))
}

pub(crate) fn ser_dec<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&d.normalize())
}

pub(crate) fn ser_opt_dec<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.collect_str(&d.normalize()),
        None => s.serialize_none(),
    }
}

pub(crate) fn ser_opt_time<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.collect_str(&t.to_rfc3339()),
        None => s.serialize_none(),
    }
}

fn ser_time<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&t.to_rfc3339())
}

/// A UTC date as `YYYY-MM-DD` from a day number (days since 1970-01-01).
pub fn utc_date(day: i64) -> String {
    Timestamp(day.saturating_mul(MS_PER_DAY))
        .to_datetime()
        .date_naive()
        .to_string()
}

/// One round trip, as the best or worst of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoundTripBrief {
    /// The symbol.
    pub symbol: String,
    /// Entry time.
    #[serde(serialize_with = "ser_time")]
    pub entry_time: Timestamp,
    /// Exit time.
    #[serde(serialize_with = "ser_time")]
    pub exit_time: Timestamp,
    /// Its P&L, quote currency, fees included.
    #[serde(serialize_with = "ser_dec")]
    pub pnl: Decimal,
    /// Its return, percent.
    #[serde(serialize_with = "ser_dec")]
    pub return_pct: Decimal,
    /// Why it was closed (`signal`, `stop_loss`, ...).
    pub exit_reason: &'static str,
}

impl RoundTripBrief {
    fn of(r: &RoundTrip) -> Self {
        Self {
            symbol: r.symbol.clone(),
            entry_time: r.entry_time,
            exit_time: r.exit_time,
            pnl: r.pnl,
            return_pct: r.return_pct,
            exit_reason: r.exit_reason.as_str(),
        }
    }
}

/// One row of `by_symbol.csv` / `summary.json`'s `by_symbol`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SymbolRow {
    /// The symbol.
    pub symbol: String,
    /// Closed round trips.
    pub round_trips: u64,
    /// Round trips with P&L > 0.
    pub wins: u64,
    /// Round trips with P&L < 0.
    pub losses: u64,
    /// `wins / round_trips × 100`, percent 0-100; 0 without a round trip.
    #[serde(serialize_with = "ser_dec")]
    pub win_rate_pct: Decimal,
    /// Σ round-trip P&L, quote currency (fees included), rounded half away
    /// from zero to the currency's places (as all sums in the breakdowns).
    #[serde(serialize_with = "ser_dec")]
    pub realized_pnl: Decimal,
    /// Σ fees of its filled orders, quote currency (including the entry fee
    /// of a position still open).
    #[serde(serialize_with = "ser_dec")]
    pub fees: Decimal,
    /// Filled orders.
    pub fills: u64,
    /// Whether a position in it was still open at the end.
    pub still_open: bool,
}

/// Header of `by_symbol.csv`.
pub const BY_SYMBOL_HEADER: [&str; 9] = [
    "symbol",
    "round_trips",
    "wins",
    "losses",
    "win_rate_pct",
    "realized_pnl",
    "fees",
    "fills",
    "still_open",
];

impl SymbolRow {
    /// The row's cells in [`BY_SYMBOL_HEADER`] order: amounts of money
    /// through `money` (exact in the CSV, the currency's places in the
    /// HTML report), other decimals normalized.
    pub fn cells(&self, money: impl Fn(Decimal) -> String) -> [String; 9] {
        [
            self.symbol.clone(),
            self.round_trips.to_string(),
            self.wins.to_string(),
            self.losses.to_string(),
            self.win_rate_pct.normalize().to_string(),
            money(self.realized_pnl),
            money(self.fees),
            self.fills.to_string(),
            self.still_open.to_string(),
        ]
    }
}

/// One row of `by_exit_reason.csv` / `summary.json`'s `by_exit_reason`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ExitReasonRow {
    /// `signal`, `stop_loss`, `take_profit`, `trailing_stop`,
    /// `max_hold_time`, `liquidation` (the account kill switch, or a close at
    /// the end on request), or `still_open`: positions open at the end of
    /// the data (the engine does not close them at the end of data).
    pub exit_reason: String,
    /// Round trips closed for this reason; for `still_open`, positions open.
    pub round_trips: u64,
    /// Of those, P&L > 0 (0 for `still_open`).
    pub wins: u64,
    /// Of those, P&L < 0 (0 for `still_open`).
    pub losses: u64,
    /// `wins / round_trips × 100`, percent; 0 without one (and for
    /// `still_open`).
    #[serde(serialize_with = "ser_dec")]
    pub win_rate_pct: Decimal,
    /// Σ P&L, quote currency; for `still_open`, the unrealized P&L.
    #[serde(serialize_with = "ser_dec")]
    pub pnl: Decimal,
    /// `pnl / round_trips` (unrounded P&L), quote currency, [`QUOTIENT_DP`]
    /// places; 0 without one.
    #[serde(serialize_with = "ser_dec")]
    pub avg_pnl: Decimal,
}

/// Header of `by_exit_reason.csv`.
pub const BY_EXIT_REASON_HEADER: [&str; 7] = [
    "exit_reason",
    "round_trips",
    "wins",
    "losses",
    "win_rate_pct",
    "pnl",
    "avg_pnl",
];

impl ExitReasonRow {
    /// The row's cells in [`BY_EXIT_REASON_HEADER`] order (money as in
    /// [`SymbolRow::cells`]).
    pub fn cells(&self, money: impl Fn(Decimal) -> String) -> [String; 7] {
        [
            self.exit_reason.clone(),
            self.round_trips.to_string(),
            self.wins.to_string(),
            self.losses.to_string(),
            self.win_rate_pct.normalize().to_string(),
            money(self.pnl),
            money(self.avg_pnl),
        ]
    }
}

/// The exit reasons in their table order (then `still_open`).
pub const EXIT_REASONS: [FillReason; 6] = [
    FillReason::Signal,
    FillReason::StopLoss,
    FillReason::TakeProfit,
    FillReason::TrailingStop,
    FillReason::MaxHoldTime,
    FillReason::Liquidation,
];

fn reason_index(r: FillReason) -> usize {
    EXIT_REASONS.iter().position(|x| *x == r).unwrap_or(0)
}

/// One row of `daily.csv` / `summary.json`'s `daily`: one UTC day.
///
/// Days are cut at 00:00 UTC. A snapshot is taken at a candle's close, so
/// an equity stamped exactly 00:00 closes the day before (it is assigned to
/// the day of `time − 1 ms`); a fill or a round trip counts on the UTC day of
/// its time. Only days with a snapshot, a fill or the run's end appear, from
/// the first candle's day on (a snapshot stamped at the very start is the
/// opening equity).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DayRow {
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    /// Equity at the start of the day: the previous row's end equity (the
    /// initial equity for the first), quote currency, rounded half away from
    /// zero to the currency's places (so the rows' P&L add up to the
    /// rounded total).
    #[serde(serialize_with = "ser_dec")]
    pub start_equity: Decimal,
    /// Equity at the last snapshot of the day (the final equity on the last
    /// day), quote currency.
    #[serde(serialize_with = "ser_dec")]
    pub end_equity: Decimal,
    /// `end_equity − start_equity`, quote currency.
    #[serde(serialize_with = "ser_dec")]
    pub pnl: Decimal,
    /// `pnl / start_equity × 100`, percent; 0 when the start equity is 0.
    #[serde(serialize_with = "ser_dec")]
    pub return_pct: Decimal,
    /// Filled orders that day.
    pub fills: u64,
    /// Round trips closed that day.
    pub round_trips: u64,
}

/// Header of `daily.csv`.
pub const DAILY_HEADER: [&str; 7] = [
    "date",
    "start_equity",
    "end_equity",
    "pnl",
    "return_pct",
    "fills",
    "round_trips",
];

impl DayRow {
    /// The row's cells in [`DAILY_HEADER`] order (money as in
    /// [`SymbolRow::cells`]).
    pub fn cells(&self, money: impl Fn(Decimal) -> String) -> [String; 7] {
        [
            self.date.clone(),
            money(self.start_equity),
            money(self.end_equity),
            money(self.pnl),
            self.return_pct.normalize().to_string(),
            self.fills.to_string(),
            self.round_trips.to_string(),
        ]
    }
}

/// The longest drawdown period.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct DrawdownPeriod {
    /// The peak the drawdown started from (time of the last equity high).
    #[serde(serialize_with = "ser_time")]
    pub start: Timestamp,
    /// When equity was back at the peak or above, or the end of the run
    /// when it never was (`recovered` false).
    #[serde(serialize_with = "ser_time")]
    pub end: Timestamp,
    /// `end − start`, milliseconds.
    pub duration_ms: i64,
    /// Whether equity got back to the peak.
    pub recovered: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct DayAcc {
    end_equity: Option<Decimal>,
    fills: u64,
    round_trips: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct DurationAcc {
    n: u64,
    sum_ms: i128,
    max_ms: i64,
}

impl DurationAcc {
    fn push(&mut self, ms: i64) {
        self.n += 1;
        self.sum_ms += i128::from(ms);
        self.max_ms = if self.n == 1 { ms } else { self.max_ms.max(ms) };
    }

    fn avg(&self) -> Option<i64> {
        // Rounded half away from zero to whole milliseconds.
        (self.n > 0).then(|| {
            let n = i128::from(self.n);
            let q = if self.sum_ms >= 0 {
                (self.sum_ms + n / 2) / n
            } else {
                (self.sum_ms - n / 2) / n
            };
            i64::try_from(q).unwrap_or(i64::MAX)
        })
    }

    fn max(&self) -> Option<i64> {
        (self.n > 0).then_some(self.max_ms)
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct ExitAcc {
    n: u64,
    wins: u64,
    losses: u64,
    pnl: Decimal,
}

#[derive(Clone, Debug, Default)]
struct SymbolAcc {
    round_trips: u64,
    wins: u64,
    losses: u64,
    pnl: Decimal,
    fees: Decimal,
    fills: u64,
    open: bool,
}

/// Incremental state of the figures (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Figures {
    // Round-trip P&L as f64, Welford's online mean and M2, for the SQN.
    pnl_n: u64,
    pnl_mean: f64,
    pnl_m2: f64,
    rts: u64,
    sum_pnl: Decimal,
    sum_return_pct: Decimal,
    win_durations: DurationAcc,
    loss_durations: DurationAcc,
    losing_streak: u64,
    longest_losing_streak: u64,
    best: Option<RoundTripBrief>,
    worst: Option<RoundTripBrief>,
    by_symbol: BTreeMap<String, SymbolAcc>,
    by_reason: [ExitAcc; 6],
    // Exposure: symbols with an open position, since when any was open,
    // and the time exposed so far.
    open_count: u64,
    open_since: Option<Timestamp>,
    exposed_ms: i128,
    // Drawdown periods from the snapshots.
    peak: Option<(Timestamp, Decimal)>,
    in_drawdown: bool,
    last_snapshot: Option<Timestamp>,
    longest_drawdown: Option<DrawdownPeriod>,
    days: BTreeMap<i64, DayAcc>,
}

fn longer(best: &mut Option<DrawdownPeriod>, start: Timestamp, end: Timestamp, recovered: bool) {
    let duration_ms = end.0.saturating_sub(start.0);
    if best.is_none_or(|b| duration_ms > b.duration_ms) {
        *best = Some(DrawdownPeriod {
            start,
            end,
            duration_ms,
            recovered,
        });
    }
}

impl Figures {
    /// Folds one batch in: filled trades (fees, fills, exposure, per-day
    /// fills), round trips (P&L statistics, durations, streaks, best/worst,
    /// per-symbol and per-reason rows, per-day counts) and snapshots
    /// (drawdown periods, per-day equity). A snapshot not later than the
    /// previous one is ignored, as in [`crate::analytics::Analytics`].
    pub fn on_batch(&mut self, b: &LedgerBatch) {
        for t in &b.trades {
            if t.status != FillStatus::Filled {
                continue;
            }
            let sym = self.by_symbol.entry(t.symbol.clone()).or_default();
            sym.fills += 1;
            sym.fees = sym.fees.saturating_add(t.fee);
            let was_open = sym.open;
            sym.open = !t.position_after.is_zero();
            match (was_open, sym.open) {
                (false, true) => {
                    if self.open_count == 0 {
                        self.open_since = Some(t.time);
                    }
                    self.open_count += 1;
                }
                (true, false) => {
                    self.open_count = self.open_count.saturating_sub(1);
                    if self.open_count == 0
                        && let Some(since) = self.open_since.take()
                    {
                        self.exposed_ms += i128::from(t.time.0.saturating_sub(since.0).max(0));
                    }
                }
                _ => {}
            }
            self.days.entry(t.time.utc_day()).or_default().fills += 1;
        }
        for r in &b.round_trips {
            self.on_round_trip(r);
        }
        for s in &b.snapshots {
            if self.last_snapshot.is_some_and(|t| s.time <= t) {
                continue;
            }
            self.last_snapshot = Some(s.time);
            self.on_equity(s.time, s.equity);
            self.days
                .entry(s.time.0.saturating_sub(1).div_euclid(MS_PER_DAY))
                .or_default()
                .end_equity = Some(s.equity);
        }
    }

    fn on_round_trip(&mut self, r: &RoundTrip) {
        // Welford (1962) for the mean and the sum of squared deviations.
        if let Some(x) = r.pnl.to_f64().filter(|x| x.is_finite()) {
            self.pnl_n += 1;
            let d = x - self.pnl_mean;
            self.pnl_mean += d / self.pnl_n as f64;
            self.pnl_m2 += d * (x - self.pnl_mean);
        }
        self.rts += 1;
        self.sum_pnl = self.sum_pnl.saturating_add(r.pnl);
        self.sum_return_pct = self.sum_return_pct.saturating_add(r.return_pct);
        let duration = r.exit_time.0.saturating_sub(r.entry_time.0);
        let win = r.pnl > Decimal::ZERO;
        let loss = r.pnl < Decimal::ZERO;
        if win {
            self.win_durations.push(duration);
        } else if loss {
            self.loss_durations.push(duration);
        }
        if loss {
            self.losing_streak += 1;
            self.longest_losing_streak = self.longest_losing_streak.max(self.losing_streak);
        } else {
            self.losing_streak = 0;
        }
        if self.best.as_ref().is_none_or(|b| r.pnl > b.pnl) {
            self.best = Some(RoundTripBrief::of(r));
        }
        if self.worst.as_ref().is_none_or(|w| r.pnl < w.pnl) {
            self.worst = Some(RoundTripBrief::of(r));
        }
        let sym = self.by_symbol.entry(r.symbol.clone()).or_default();
        sym.round_trips += 1;
        sym.pnl = sym.pnl.saturating_add(r.pnl);
        let reason = &mut self.by_reason[reason_index(r.exit_reason)];
        reason.n += 1;
        reason.pnl = reason.pnl.saturating_add(r.pnl);
        if win {
            sym.wins += 1;
            reason.wins += 1;
        } else if loss {
            sym.losses += 1;
            reason.losses += 1;
        }
        self.days
            .entry(r.exit_time.utc_day())
            .or_default()
            .round_trips += 1;
    }

    fn on_equity(&mut self, t: Timestamp, equity: Decimal) {
        match self.peak {
            None => self.peak = Some((t, equity)),
            Some((pt, pe)) => {
                if equity >= pe {
                    if self.in_drawdown {
                        longer(&mut self.longest_drawdown, pt, t, true);
                        self.in_drawdown = false;
                    }
                    self.peak = Some((t, equity));
                } else {
                    self.in_drawdown = true;
                }
            }
        }
    }

    /// The figures at the end of the run: `initial` and `final_equity` are
    /// the session's equities (quote currency), `start`/`end` its first
    /// candle's open and latest market time, `unrealized` the open
    /// positions' P&L, `max_drawdown_pct` the engine's (percent 0-100),
    /// `roi_pct` the strategy's return (percent), `prices` the benchmark's
    /// inputs and `money_dp` the currency's places.
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        &self,
        initial: Decimal,
        final_equity: Decimal,
        start: Timestamp,
        end: Timestamp,
        unrealized: Decimal,
        max_drawdown_pct: Decimal,
        roi_pct: Decimal,
        prices: Option<&BenchmarkPrices>,
        money_dp: u32,
    ) -> FigureSet {
        let hundred = Decimal::ONE_HUNDRED;
        let span_ms = end.0.saturating_sub(start.0);

        // Exposure.
        let mut exposed = self.exposed_ms;
        if let Some(since) = self.open_since
            && self.open_count > 0
        {
            exposed += i128::from(end.0.saturating_sub(since.0).max(0));
        }
        let exposure_time_pct = if span_ms > 0 {
            quotient(
                Decimal::from_i128_with_scale(exposed, 0).saturating_mul(hundred),
                Decimal::from(span_ms),
            )
            .unwrap_or_default()
            .clamp(Decimal::ZERO, hundred)
        } else {
            Decimal::ZERO
        };

        // CAGR and Calmar (f64).
        let cagr_pct = cagr_pct(initial, final_equity, span_ms);
        let calmar_ratio = match (cagr_pct, max_drawdown_pct.to_f64()) {
            (Some(c), Some(dd)) if dd > 0.0 => Some(c / dd).filter(|v| v.is_finite()),
            _ => None,
        };

        // SQN (f64).
        let sqn = if self.pnl_n >= 2 {
            let sd = (self.pnl_m2 / (self.pnl_n - 1) as f64).sqrt();
            (sd > 0.0)
                .then(|| (self.pnl_n as f64).sqrt() * self.pnl_mean / sd)
                .filter(|v| v.is_finite())
        } else {
            None
        };

        // Drawdown duration: the open period runs to the end, with the final
        // equity as a last point after the last snapshot.
        let mut longest = self.longest_drawdown;
        let mut in_dd = self.in_drawdown;
        let mut peak = self.peak;
        if self.last_snapshot.is_none_or(|t| end > t) {
            match peak {
                None => peak = Some((end, final_equity)),
                Some((pt, pe)) if final_equity >= pe => {
                    if in_dd {
                        longer(&mut longest, pt, end, true);
                    }
                    in_dd = false;
                    peak = Some((end, final_equity));
                }
                Some(_) => in_dd = true,
            }
        }
        if in_dd && let Some((pt, _)) = peak {
            let last = self.last_snapshot.map_or(end, |t| t.max(end));
            longer(&mut longest, pt, last, false);
        }

        // Per symbol.
        let by_symbol = self
            .by_symbol
            .iter()
            .map(|(s, a)| SymbolRow {
                symbol: s.clone(),
                round_trips: a.round_trips,
                wins: a.wins,
                losses: a.losses,
                win_rate_pct: quotient(Decimal::from(a.wins) * hundred, a.round_trips.into())
                    .unwrap_or_default(),
                realized_pnl: round(a.pnl, money_dp),
                fees: round(a.fees, money_dp),
                fills: a.fills,
                still_open: a.open,
            })
            .collect();

        // Per exit reason, then still open.
        let mut by_exit_reason: Vec<ExitReasonRow> = EXIT_REASONS
            .iter()
            .zip(self.by_reason.iter())
            .map(|(r, a)| ExitReasonRow {
                exit_reason: r.as_str().to_owned(),
                round_trips: a.n,
                wins: a.wins,
                losses: a.losses,
                win_rate_pct: quotient(Decimal::from(a.wins) * hundred, a.n.into())
                    .unwrap_or_default(),
                pnl: round(a.pnl, money_dp),
                avg_pnl: quotient(a.pnl, a.n.into()).unwrap_or_default(),
            })
            .collect();
        by_exit_reason.push(ExitReasonRow {
            exit_reason: "still_open".to_owned(),
            round_trips: self.open_count,
            wins: 0,
            losses: 0,
            win_rate_pct: Decimal::ZERO,
            pnl: round(unrealized, money_dp),
            avg_pnl: quotient(unrealized, self.open_count.into()).unwrap_or_default(),
        });

        // Per day: the final equity closes the day of the end.
        // A snapshot stamped at the start itself (00:00 of the first day) is
        // the opening equity, not the close of the day before: days before
        // the first candle's day are left out.
        let mut days: BTreeMap<i64, DayAcc> = self
            .days
            .range(start.utc_day()..)
            .map(|(k, v)| (*k, *v))
            .collect();
        let end_day = end.0.saturating_sub(1).div_euclid(MS_PER_DAY);
        if days.keys().next_back().is_none_or(|d| *d <= end_day) {
            days.entry(end_day).or_default().end_equity = Some(final_equity);
        }
        let mut daily = Vec::with_capacity(days.len());
        let mut prev = round(initial, money_dp);
        for (day, acc) in &days {
            let end_equity = round(acc.end_equity.unwrap_or(prev), money_dp);
            let pnl = end_equity.saturating_sub(prev);
            daily.push(DayRow {
                date: utc_date(*day),
                start_equity: prev,
                end_equity,
                pnl,
                return_pct: pnl
                    .checked_mul(hundred)
                    .and_then(|p| quotient(p, prev))
                    .unwrap_or_default(),
                fills: acc.fills,
                round_trips: acc.round_trips,
            });
            prev = end_equity;
        }
        let mut best_day: Option<DayRow> = None;
        let mut worst_day: Option<DayRow> = None;
        for d in &daily {
            if best_day.as_ref().is_none_or(|b| d.pnl > b.pnl) {
                best_day = Some(d.clone());
            }
            if worst_day.as_ref().is_none_or(|w| d.pnl < w.pnl) {
                worst_day = Some(d.clone());
            }
        }

        let benchmark = prices.and_then(|p| benchmark(p, initial, money_dp));
        let excess_return_pct = benchmark
            .as_ref()
            .and_then(|b| roi_pct.checked_sub(b.return_pct));
        let n = Decimal::from(self.rts.max(1));
        FigureSet {
            benchmark_return_pct: benchmark.as_ref().map(|b| b.return_pct),
            excess_return_pct,
            benchmark,
            exposure_time_pct,
            cagr_pct,
            calmar_ratio,
            expectancy: if self.rts == 0 {
                Decimal::ZERO
            } else {
                quotient(self.sum_pnl, self.rts.into()).unwrap_or_default()
            },
            expectancy_pct: if self.rts == 0 {
                Decimal::ZERO
            } else {
                quotient(self.sum_return_pct, n).unwrap_or_default()
            },
            sqn,
            avg_win_duration_ms: self.win_durations.avg(),
            max_win_duration_ms: self.win_durations.max(),
            avg_loss_duration_ms: self.loss_durations.avg(),
            max_loss_duration_ms: self.loss_durations.max(),
            max_drawdown_duration: longest,
            longest_losing_streak: self.longest_losing_streak,
            best_round_trip: self.best.clone(),
            worst_round_trip: self.worst.clone(),
            best_day,
            worst_day,
            by_symbol,
            by_exit_reason,
            daily,
        }
    }
}

/// Compound annual growth rate, percent, f64:
/// `((final / initial)^(1 / years) − 1) × 100`, `years = span_ms /
/// (365 × 86,400,000)` — the session's calendar span (first candle's open to
/// the latest market time), 365-day years as crypto trades every day. The
/// formula of backtesting.py 0.6.6's "CAGR [%]", which takes years of 365.25
/// days over the span from the first to the last bar's *open* time (one bar
/// shorter than ours); on a 31-day month of minutes the two differ by
/// 0.013 points at −20.4 % (checked in `tests/reference_stats.rs`).
/// (The 365-or-252-day choice of backtesting.py is for its "Return (Ann.)",
/// not its CAGR.) `None` when the span is ≤ 0, the initial equity ≤ 0 or
/// the final equity < 0; −100 when the final equity is 0.
pub fn cagr_pct(initial: Decimal, final_equity: Decimal, span_ms: i64) -> Option<f64> {
    if span_ms <= 0 || initial <= Decimal::ZERO || final_equity < Decimal::ZERO {
        return None;
    }
    let ratio = final_equity.checked_div(initial)?.to_f64()?;
    let years = span_ms as f64 / (DAYS_PER_YEAR * MS_PER_DAY) as f64;
    let v = (ratio.powf(1.0 / years) - 1.0) * 100.0;
    v.is_finite().then_some(v)
}

/// The figures of a finished run, flattened into
/// [`crate::analytics::Summary`] (and `summary.json`) under these names.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FigureSet {
    /// The buy-and-hold benchmark (see [`Benchmark`]); `null` without
    /// symbols or prices.
    pub benchmark: Option<Benchmark>,
    /// The benchmark's return, percent ([`Benchmark::return_pct`]).
    #[serde(serialize_with = "ser_opt_dec")]
    pub benchmark_return_pct: Option<Decimal>,
    /// Excess return: the strategy's ROI % − the benchmark's return %,
    /// percentage points.
    #[serde(serialize_with = "ser_opt_dec")]
    pub excess_return_pct: Option<Decimal>,
    /// Exposure time, percent 0-100: the time with at least one open
    /// position (from each position's opening fill to its closing fill, or
    /// to the end when still open; overlapping positions count once) over
    /// the session's span (first candle's open to the latest market time).
    /// backtesting.py 0.6.6's "Exposure Time [%]" counts the bars from each
    /// *closed* trade's entry bar to its exit bar **inclusive** over all
    /// bars: with next-open fills that is one bar more per trade than the
    /// time held, and a position still open at the end is not counted. On
    /// the parity run (934 round trips on 44,640 minutes, one position open
    /// for the last 3 minutes) theirs is 2.09 points higher than ours, exactly
    /// (934 − 3) / 44,640 × 100 (checked in `tests/reference_stats.rs`).
    #[serde(serialize_with = "ser_dec")]
    pub exposure_time_pct: Decimal,
    /// See [`cagr_pct`]; percent, f64.
    pub cagr_pct: Option<f64>,
    /// Calmar ratio (Young 1991, "Calmar Ratio: A Smoother Tool"): CAGR % /
    /// max drawdown % (the engine's, per candle), f64; `None` without a
    /// drawdown or a CAGR. backtesting.py divides its "Return (Ann.)" (the
    /// annualised geometric mean daily return) instead of the CAGR.
    pub calmar_ratio: Option<f64>,
    /// Expectancy per round trip, quote currency: the mean round-trip P&L
    /// (fees included), Σ pnl / n; 0 without a round trip. backtesting.py's
    /// "Expectancy [%]" is the mean trade *return*, see
    /// [`expectancy_pct`](Self::expectancy_pct).
    #[serde(serialize_with = "ser_dec")]
    pub expectancy: Decimal,
    /// Mean round-trip return, percent (backtesting.py's "Expectancy [%]",
    /// the arithmetic mean of trade returns); 0 without a round trip. The
    /// mean of the recorded `return_pct`s, which the engine rounds to 4
    /// places, so within 0.00005 of the mean of exact returns (4e-7 away
    /// from backtesting.py's on the parity run).
    #[serde(serialize_with = "ser_dec")]
    pub expectancy_pct: Decimal,
    /// System Quality Number (Van Tharp): √n × mean(P&L) / sample standard
    /// deviation (n − 1) of the n round-trip P&Ls, f64 — as backtesting.py's
    /// "SQN". `None` with fewer than 2 round trips or zero deviation.
    pub sqn: Option<f64>,
    /// Mean duration of winning round trips (exit − entry), milliseconds
    /// (rounded); `None` without a win. backtesting.py's "Avg. Trade
    /// Duration" and "Max. Trade Duration" are over all trades (no split by
    /// outcome), exit − entry time too, rounded *up* to the data's period.
    pub avg_win_duration_ms: Option<i64>,
    /// Longest winning round trip, milliseconds.
    pub max_win_duration_ms: Option<i64>,
    /// Mean duration of losing round trips, milliseconds (rounded).
    pub avg_loss_duration_ms: Option<i64>,
    /// Longest losing round trip, milliseconds.
    pub max_loss_duration_ms: Option<i64>,
    /// The longest drawdown period (peak to recovery, or to the end when
    /// not recovered), from the snapshots' equity (so to the snapshot
    /// interval's precision) and the final equity; the first of equal
    /// lengths. As backtesting.py's "Max. Drawdown Duration" (the last bar
    /// at the peak to the next bar back at it, or to the last bar): theirs
    /// stamps bars by their open, ours snapshots by the candle's close, so
    /// both ends move by one bar and the lengths are equal with 1-bar
    /// snapshots (checked in `tests/reference_stats.rs`). `None` without a
    /// drawdown.
    pub max_drawdown_duration: Option<DrawdownPeriod>,
    /// Most consecutive losing round trips (P&L < 0), in exit order; a
    /// round trip with P&L ≥ 0 ends a streak.
    pub longest_losing_streak: u64,
    /// The round trip with the highest P&L (the first of equals); `null`
    /// without one. backtesting.py's "Best Trade [%]" ranks by return %.
    pub best_round_trip: Option<RoundTripBrief>,
    /// The round trip with the lowest P&L.
    pub worst_round_trip: Option<RoundTripBrief>,
    /// The UTC day with the highest equity change ([`DayRow`]).
    pub best_day: Option<DayRow>,
    /// The UTC day with the lowest equity change.
    pub worst_day: Option<DayRow>,
    /// Per symbol, sorted by name (`by_symbol.csv`).
    pub by_symbol: Vec<SymbolRow>,
    /// Per exit reason, in [`EXIT_REASONS`] order, then `still_open`
    /// (`by_exit_reason.csv`).
    pub by_exit_reason: Vec<ExitReasonRow>,
    /// Per UTC day, in date order (`daily.csv`).
    pub daily: Vec<DayRow>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::test_records::{HOUR, T0, snapshot, trade};
    use crate::ledger::records::{SnapshotRecord, TradeRecord};
    use crate::types::Side;
    use rust_decimal_macros::dec;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    fn at(h: i64) -> Timestamp {
        Timestamp(T0 + h * HOUR)
    }

    #[allow(clippy::too_many_arguments)]
    fn rt(
        symbol: &str,
        entry_h: f64,
        exit_h: f64,
        pnl: Decimal,
        return_pct: Decimal,
        reason: FillReason,
    ) -> RoundTrip {
        RoundTrip {
            symbol: symbol.into(),
            entry_time: Timestamp(T0 + (entry_h * HOUR as f64) as i64),
            entry_price: dec!(100),
            exit_time: Timestamp(T0 + (exit_h * HOUR as f64) as i64),
            exit_price: dec!(100),
            quantity: Decimal::ONE,
            pnl,
            fees: Decimal::ZERO,
            return_pct,
            exit_reason: reason,
        }
    }

    fn fill(
        symbol: &str,
        h: i64,
        side: Side,
        position_after: Decimal,
        fee: Decimal,
    ) -> TradeRecord {
        let mut t = trade(
            0,
            side,
            FillStatus::Filled,
            fee,
            Decimal::ZERO,
            Decimal::ZERO,
        );
        t.symbol = symbol.into();
        t.time = at(h);
        t.position_after = position_after;
        t
    }

    fn finish_simple(f: &Figures, end_h: i64, final_equity: Decimal) -> FigureSet {
        f.finish(
            dec!(1000),
            final_equity,
            at(0),
            at(end_h),
            Decimal::ZERO,
            dec!(5),
            Decimal::ZERO,
            None,
            2,
        )
    }

    #[test]
    fn benchmark_two_symbols_with_fees_hand_computed() {
        // 1000 USD split in two shares of 500, fee 0.1 % on entry and exit.
        // A: bought at its first open 100 → qty = 500 / (100 × 1.001) =
        //    4.995004995…; valued at its last close 110 after the exit fee:
        //    4.995… × 110 × 0.999 = 549.45 / 1.001 = 548.9010989…
        // B: open 50, close 45: 500 × 45 × 0.999 / (50 × 1.001) = 449.55 /
        //    1.001 = 449.1008991…
        // Total 999 / 1.001 = 998.001998001998…: return −0.1998001998… %.
        let mut p = BenchmarkPrices::new(vec!["A".into(), "B".into()], dec!(0.001));
        assert!(p.set_first(0, at(0), dec!(100)));
        assert!(!p.set_first(0, at(1), dec!(999)), "the first open stays");
        p.set_first(1, at(0), dec!(50));
        p.set_last(0, at(23), dec!(105));
        p.set_last(0, at(24), dec!(110));
        p.set_last(1, at(24), dec!(45));
        assert_eq!(p.missing_first(), 0);
        let b = benchmark(&p, dec!(1000), 2).unwrap();
        assert_eq!(b.final_equity, dec!(998.00));
        assert_eq!(b.return_pct, dec!(-0.19980020));
        assert_eq!(b.fee_rate_pct, dec!(0.1));
        assert_eq!(b.legs[0].final_value, dec!(548.90));
        assert_eq!(b.legs[1].final_value, dec!(449.10));
        assert_eq!(b.legs[0].entry_price, Some(dec!(100)));
        assert_eq!(b.legs[0].exit_price, Some(dec!(110)));
        assert!((b.legs[0].quantity * dec!(100.1) - dec!(500)).abs() < dec!(0.000000000001));
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["prices"], "first_open_to_last_close");
        assert_eq!(v["legs"][1]["entry_time"], "2022-01-01T00:00:00Z");
        assert_eq!(v["legs"][1]["exit_price"], "45");

        // Through the figures: ROI +1 % → excess 1 − (−0.1998002) pp.
        let f = Figures::default().finish(
            dec!(1000),
            dec!(1010),
            at(0),
            at(24),
            Decimal::ZERO,
            Decimal::ZERO,
            dec!(1),
            Some(&p),
            2,
        );
        assert_eq!(f.benchmark_return_pct, Some(dec!(-0.19980020)));
        assert_eq!(f.excess_return_pct, Some(dec!(1.19980020)));
    }

    #[test]
    fn benchmark_one_symbol_no_fee_and_a_symbol_without_prices() {
        // One symbol, no fee: 1000 at 200 → 5 units, at 250 → 1250: +25 %.
        let mut p = BenchmarkPrices::new(vec!["A".into()], Decimal::ZERO);
        p.set_first(0, at(0), dec!(200));
        p.set_last(0, at(5), dec!(250));
        let b = benchmark(&p, dec!(1000), 2).unwrap();
        assert_eq!((b.final_equity, b.return_pct), (dec!(1250), dec!(25)));
        assert_eq!(b.legs[0].quantity, dec!(5));

        // Two symbols, B never had a candle: A's 500 → 625, B's 500 stays
        // cash: 1125, +12.5 %.
        let mut p = BenchmarkPrices::new(vec!["A".into(), "B".into()], Decimal::ZERO);
        p.set_first(0, at(0), dec!(200));
        p.set_last(0, at(5), dec!(250));
        assert_eq!(p.missing_first(), 1);
        let b = benchmark(&p, dec!(1000), 2).unwrap();
        assert_eq!((b.final_equity, b.return_pct), (dec!(1125), dec!(12.5)));
        assert_eq!(b.legs[1].final_value, dec!(500));
        assert_eq!(b.legs[1].entry_time, None);

        // No symbol or no money: no benchmark.
        assert!(benchmark(&BenchmarkPrices::default(), dec!(1000), 2).is_none());
        assert!(benchmark(&p, Decimal::ZERO, 2).is_none());
        // The checkpoint form round-trips.
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<BenchmarkPrices>(&json).unwrap(), p);
    }

    /// Seven round trips, P&L 10, −4, −2, 6, −1, −3, −5 (Σ 1).
    fn seven() -> Vec<RoundTrip> {
        use FillReason::*;
        vec![
            rt("A", 0.0, 2.0, dec!(10), dec!(2), Signal),
            rt("A", 3.0, 4.0, dec!(-4), dec!(-1), StopLoss),
            rt("B", 5.0, 8.0, dec!(-2), dec!(-0.5), StopLoss),
            rt("B", 9.0, 15.0, dec!(6), dec!(1.5), TakeProfit),
            rt("A", 16.0, 17.0, dec!(-1), dec!(-0.25), MaxHoldTime),
            rt("A", 18.0, 20.0, dec!(-3), dec!(-0.75), Signal),
            rt("B", 21.0, 21.5, dec!(-5), dec!(-1.25), TrailingStop),
        ]
    }

    #[test]
    fn round_trip_figures_hand_computed() {
        let mut f = Figures::default();
        // Split over two batches: the figures are folded incrementally.
        let all = seven();
        f.on_batch(&LedgerBatch {
            round_trips: all[..3].to_vec(),
            ..Default::default()
        });
        f.on_batch(&LedgerBatch {
            round_trips: all[3..].to_vec(),
            ..Default::default()
        });
        let s = finish_simple(&f, 24, dec!(1001));
        // Expectancy: 1 / 7 = 0.142857142… → 8 places; mean return
        // (2 − 1 − 0.5 + 1.5 − 0.25 − 0.75 − 1.25) / 7 = −0.25 / 7.
        assert_eq!(s.expectancy, dec!(0.14285714));
        assert_eq!(s.expectancy_pct, dec!(-0.03571429));
        // SQN: Σx² = 191, Σ(x − x̄)² = 191 − 7·(1/7)² = 1336/7, sample
        // variance 1336/42; SQN = √7 · (1/7) / √(1336/42) = 1 / √(7·1336/42).
        let expected = 1.0 / (7.0f64 * 1336.0 / 42.0).sqrt();
        assert!(close(s.sqn.unwrap(), expected), "{:?}", s.sqn);
        // Winners 2 h and 6 h; losers 1, 3, 1, 2, 0.5 h (Σ 7.5 h).
        assert_eq!(s.avg_win_duration_ms, Some(4 * HOUR));
        assert_eq!(s.max_win_duration_ms, Some(6 * HOUR));
        assert_eq!(s.avg_loss_duration_ms, Some(3 * HOUR / 2));
        assert_eq!(s.max_loss_duration_ms, Some(3 * HOUR));
        // W L L W L L L: three losses in a row at the end.
        assert_eq!(s.longest_losing_streak, 3);
        let best = s.best_round_trip.as_ref().unwrap();
        let worst = s.worst_round_trip.as_ref().unwrap();
        assert_eq!((best.pnl, best.symbol.as_str()), (dec!(10), "A"));
        assert_eq!((worst.pnl, worst.exit_reason), (dec!(-5), "trailing_stop"));

        // Per symbol: A = 10 − 4 − 1 − 3 = 2 (1 win of 4), B = −2 + 6 − 5 =
        // −1 (1 win of 3).
        assert_eq!(s.by_symbol.len(), 2);
        let a = &s.by_symbol[0];
        assert_eq!(
            (a.symbol.as_str(), a.round_trips, a.wins, a.losses),
            ("A", 4, 1, 3)
        );
        assert_eq!((a.realized_pnl, a.win_rate_pct), (dec!(2), dec!(25)));
        let b = &s.by_symbol[1];
        assert_eq!((b.round_trips, b.realized_pnl), (3, dec!(-1)));
        assert_eq!(b.win_rate_pct, dec!(33.33333333));

        // Per exit reason, in table order, then still_open.
        let reasons: Vec<_> = s
            .by_exit_reason
            .iter()
            .map(|r| {
                (
                    r.exit_reason.as_str(),
                    r.round_trips,
                    r.wins,
                    r.losses,
                    r.pnl,
                )
            })
            .collect();
        assert_eq!(
            reasons,
            vec![
                ("signal", 2, 1, 1, dec!(7)),
                ("stop_loss", 2, 0, 2, dec!(-6)),
                ("take_profit", 1, 1, 0, dec!(6)),
                ("trailing_stop", 1, 0, 1, dec!(-5)),
                ("max_hold_time", 1, 0, 1, dec!(-1)),
                ("liquidation", 0, 0, 0, dec!(0)),
                ("still_open", 0, 0, 0, dec!(0)),
            ]
        );
        assert_eq!(s.by_exit_reason[0].avg_pnl, dec!(3.5));
        assert_eq!(s.by_exit_reason[0].win_rate_pct, dec!(50));
        assert_eq!(s.by_exit_reason[1].avg_pnl, dec!(-3));
    }

    #[test]
    fn exposure_time_and_still_open_positions() {
        // A open 1 h–4 h, B open 2 h–5 h: exposed 1 h–5 h = 4 h (overlap
        // counted once); A again from 8 h, still open at the end (10 h):
        // 2 h more. 6 h of 10 h = 60 %.
        let mut f = Figures::default();
        let mut failed = fill("B", 6, Side::Buy, dec!(1), dec!(9));
        failed.status = FillStatus::Failed;
        f.on_batch(&LedgerBatch {
            trades: vec![
                fill("A", 1, Side::Buy, dec!(1), dec!(0.5)),
                fill("B", 2, Side::Buy, dec!(2), dec!(0.25)),
                fill("A", 4, Side::Sell, dec!(0), dec!(0.5)),
                fill("B", 5, Side::Sell, dec!(0), dec!(0.25)),
                failed,
                fill("A", 8, Side::Buy, dec!(1), dec!(0.5)),
            ],
            ..Default::default()
        });
        let s = f.finish(
            dec!(1000),
            dec!(1000),
            at(0),
            at(10),
            dec!(7.5),
            Decimal::ZERO,
            Decimal::ZERO,
            None,
            2,
        );
        assert_eq!(s.exposure_time_pct, dec!(60));
        let a = &s.by_symbol[0];
        assert_eq!((a.fills, a.fees, a.still_open), (3, dec!(1.5), true));
        let b = &s.by_symbol[1];
        assert_eq!((b.fills, b.fees, b.still_open), (2, dec!(0.5), false));
        let open = s.by_exit_reason.last().unwrap();
        assert_eq!(
            (open.exit_reason.as_str(), open.round_trips, open.pnl),
            ("still_open", 1, dec!(7.5))
        );
        assert_eq!(open.avg_pnl, dec!(7.5));
    }

    fn snaps(points: &[(i64, Decimal)]) -> Vec<SnapshotRecord> {
        points
            .iter()
            .map(|(h, e)| snapshot(at(*h), *e, Decimal::ZERO))
            .collect()
    }

    #[test]
    fn drawdown_duration_recovered_and_not() {
        // Peak 110 at 1 h, below until 111 at 4 h: 3 h, recovered. Then 108,
        // 109 up to the end at 6 h (final 109): 2 h, shorter.
        let points = [
            (0, dec!(100)),
            (1, dec!(110)),
            (2, dec!(105)),
            (3, dec!(100)),
            (4, dec!(111)),
            (5, dec!(108)),
            (6, dec!(109)),
        ];
        let mut f = Figures::default();
        f.on_batch(&LedgerBatch {
            snapshots: snaps(&points),
            ..Default::default()
        });
        let s = finish_simple(&f, 6, dec!(109));
        let d = s.max_drawdown_duration.unwrap();
        assert_eq!(
            (d.start, d.end, d.duration_ms, d.recovered),
            (at(1), at(4), 3 * HOUR, true)
        );
        // The same, but the run goes on to 10 h and ends at 107, below the
        // 4 h peak: 4 h → 10 h = 6 h, not recovered, now the longest.
        let s = finish_simple(&f, 10, dec!(107));
        let d = s.max_drawdown_duration.unwrap();
        assert_eq!(
            (d.start, d.end, d.duration_ms, d.recovered),
            (at(4), at(10), 6 * HOUR, false)
        );
        let v = serde_json::to_value(d).unwrap();
        assert_eq!(v["start"], "2022-01-01T04:00:00Z");
        // A final equity back at the peak recovers at the end: 4 h → 8 h.
        let s = finish_simple(&f, 8, dec!(111));
        let d = s.max_drawdown_duration.unwrap();
        assert_eq!((d.start, d.end, d.recovered), (at(4), at(8), true));
        // Rising equity only: no drawdown.
        let mut up = Figures::default();
        up.on_batch(&LedgerBatch {
            snapshots: snaps(&[(0, dec!(100)), (1, dec!(101))]),
            ..Default::default()
        });
        assert_eq!(finish_simple(&up, 2, dec!(102)).max_drawdown_duration, None);
    }

    #[test]
    fn daily_table_best_and_worst_day() {
        // Initial 1000 on 2022-01-01 00:00. Snapshots: 00:00 1000 (the
        // opening equity, not a 2021-12-31 row), 12:00 1010, Jan 2
        // 00:00 1020 (closes Jan 1), Jan 2 12:00 990, Jan 3 00:00 1000
        // (closes Jan 2), Jan 3 06:00 1030; the run ends Jan 3 12:00 at 1040.
        //   Jan 1: 1000 → 1020, +20, +2 %
        //   Jan 2: 1020 → 1000, −20, −1.96078431 % (−20/1020)
        //   Jan 3: 1000 → 1040, +40, +4 %
        let mut f = Figures::default();
        f.on_batch(&LedgerBatch {
            snapshots: snaps(&[
                (0, dec!(1000)),
                (12, dec!(1010)),
                (24, dec!(1020)),
                (36, dec!(990)),
                (48, dec!(1000)),
                (54, dec!(1030)),
            ]),
            trades: vec![fill("A", 34, Side::Buy, dec!(1), dec!(1))],
            round_trips: vec![rt("A", 34.0, 50.0, dec!(3), dec!(0.3), FillReason::Signal)],
            ..Default::default()
        });
        let s = finish_simple(&f, 60, dec!(1040));
        let rows: Vec<_> = s
            .daily
            .iter()
            .map(|d| {
                (
                    d.date.as_str(),
                    d.start_equity,
                    d.end_equity,
                    d.pnl,
                    d.return_pct,
                    d.fills,
                    d.round_trips,
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                (
                    "2022-01-01",
                    dec!(1000),
                    dec!(1020),
                    dec!(20),
                    dec!(2),
                    0,
                    0
                ),
                (
                    "2022-01-02",
                    dec!(1020),
                    dec!(1000),
                    dec!(-20),
                    dec!(-1.96078431),
                    1,
                    0
                ),
                (
                    "2022-01-03",
                    dec!(1000),
                    dec!(1040),
                    dec!(40),
                    dec!(4),
                    0,
                    1
                ),
            ]
        );
        assert_eq!(s.best_day.as_ref().unwrap().date, "2022-01-03");
        assert_eq!(s.worst_day.as_ref().unwrap().date, "2022-01-02");
    }

    #[test]
    fn breakdown_money_is_rounded_to_the_currency_places() {
        // Equity 1000.005 at the end of the only day: 1000.01 in USD (half
        // away from zero), exact to the satoshi in BTC (8 places).
        let mut f = Figures::default();
        f.on_batch(&LedgerBatch {
            round_trips: vec![rt(
                "A",
                0.0,
                1.0,
                dec!(0.005),
                dec!(0.1),
                FillReason::Signal,
            )],
            ..Default::default()
        });
        let usd = finish_simple(&f, 2, dec!(1000.005));
        assert_eq!(usd.daily[0].end_equity, dec!(1000.01));
        assert_eq!(usd.daily[0].pnl, dec!(0.01));
        assert_eq!(usd.by_symbol[0].realized_pnl, dec!(0.01));
        assert_eq!(usd.by_exit_reason[0].pnl, dec!(0.01));
        assert_eq!(usd.by_exit_reason[0].avg_pnl, dec!(0.005));
        let btc = f.finish(
            dec!(1000),
            dec!(1000.005),
            at(0),
            at(2),
            Decimal::ZERO,
            Decimal::ZERO,
            Decimal::ZERO,
            None,
            8,
        );
        assert_eq!(btc.daily[0].pnl, dec!(0.005));
    }

    #[test]
    fn cagr_and_calmar_hand_computed() {
        // 100 → 121 over 730 days (two 365-day years): √1.21 − 1 = 10 %.
        let two_years = 2 * DAYS_PER_YEAR * MS_PER_DAY;
        let c = cagr_pct(dec!(100), dec!(121), two_years).unwrap();
        assert!(close(c, 10.0), "{c}");
        // Half a year, 100 → 110: 1.1² − 1 = 21 %.
        let c = cagr_pct(dec!(100), dec!(110), two_years / 4).unwrap();
        assert!(close(c, 21.0), "{c}");
        assert_eq!(cagr_pct(dec!(100), dec!(0), two_years), Some(-100.0));
        assert_eq!(cagr_pct(dec!(100), dec!(110), 0), None);
        assert_eq!(cagr_pct(Decimal::ZERO, dec!(110), two_years), None);

        // Through the figures, max drawdown 5 %: Calmar = 10 / 5 = 2.
        let s = Figures::default().finish(
            dec!(100),
            dec!(121),
            Timestamp(T0),
            Timestamp(T0 + two_years),
            Decimal::ZERO,
            dec!(5),
            dec!(21),
            None,
            2,
        );
        assert!(close(s.cagr_pct.unwrap(), 10.0));
        assert!(close(s.calmar_ratio.unwrap(), 2.0));
        // No drawdown: no Calmar ratio.
        let s = Figures::default().finish(
            dec!(100),
            dec!(121),
            Timestamp(T0),
            Timestamp(T0 + two_years),
            Decimal::ZERO,
            Decimal::ZERO,
            dec!(21),
            None,
            2,
        );
        assert_eq!(s.calmar_ratio, None);
    }

    #[test]
    fn zero_trades() {
        let mut p = BenchmarkPrices::new(vec!["A".into()], dec!(0.001));
        p.set_first(0, at(0), dec!(100));
        p.set_last(0, at(24), dec!(100));
        let s = Figures::default().finish(
            dec!(1000),
            dec!(1000),
            at(0),
            at(24),
            Decimal::ZERO,
            Decimal::ZERO,
            Decimal::ZERO,
            Some(&p),
            2,
        );
        assert_eq!(s.exposure_time_pct, Decimal::ZERO);
        assert_eq!(
            (s.expectancy, s.expectancy_pct),
            (Decimal::ZERO, Decimal::ZERO)
        );
        assert_eq!(s.sqn, None);
        assert_eq!(s.avg_win_duration_ms, None);
        assert_eq!(s.longest_losing_streak, 0);
        assert!(s.best_round_trip.is_none() && s.worst_round_trip.is_none());
        assert!(s.by_symbol.is_empty());
        assert_eq!(s.by_exit_reason.len(), 7);
        assert!(s.by_exit_reason.iter().all(|r| r.round_trips == 0));
        assert!(close(s.cagr_pct.unwrap(), 0.0));
        // Flat price, fee on entry and exit: 1000 × 0.999 / 1.001 =
        // 998.002 (USD places), −0.1998002 %; the idle strategy beats it.
        let b = s.benchmark.as_ref().unwrap();
        assert_eq!(b.final_equity, dec!(998.00));
        assert_eq!(s.excess_return_pct, Some(dec!(0.19980020)));
        // One day row: the run's only day, 1000 → 1000.
        assert_eq!(s.daily.len(), 1);
        assert_eq!(
            (s.daily[0].date.as_str(), s.daily[0].pnl),
            ("2022-01-01", dec!(0))
        );
    }
}

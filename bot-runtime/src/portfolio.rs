//! Cash, positions and P&L, in exact decimals.
//!
//! # Accounting
//!
//! Long-only spot positions, one per symbol. A position carries its **cost
//! basis**: the notional paid for what is held *plus the entry fees and gas*.
//! Therefore:
//!
//! - buying `q` at `p` with costs `f` (fee + gas): `cash −= q·p + f`,
//!   `cost_basis += q·p + f`; realized P&L is unchanged;
//! - selling `q` of `Q` held at `p` with costs `f`: the released cost is
//!   `cost_basis × q / Q` (all of it when `q = Q`), `cash += q·p − f`, and
//!   `realized P&L += q·p − f − released cost`;
//! - `unrealized P&L = Σ (quantity × last price − cost basis)`.
//!
//! Fees and slippage are thus inside realized P&L once a position is closed
//! (and inside unrealized P&L while it is open), counted once. The identity
//! `cash + Σ quantity × last price = initial cash + realized P&L + unrealized P&L`
//! holds exactly after every operation; [`Portfolio::check_invariant`] tests it.
//!
//! # Exactness and range
//!
//! `Decimal` holds 96 bits of mantissa (about 28 digits) at a scale of at
//! most 28 decimal places, and silently *rounds* a result that does not fit.
//! The books must never round, so every operation here is checked and
//! [`buy`](Portfolio::buy), [`sell`](Portfolio::sell) and
//! [`mark`](Portfolio::mark) either apply completely or return a
//! [`RangeError`] and change nothing:
//!
//! - every product (`q·p`) must be exact (no rounding, no overflow);
//! - every stored figure (cash, realized P&L, position value, and per
//!   position cost basis, entry notional, entry costs, market value) must be
//!   at most [`MAX_MONEY`] (1e20) in magnitude, and small enough that any sum
//!   of the `2n + 2` figures the identity adds up (n symbols) stays exact at
//!   the largest scale the books have used so far: with `S` that scale,
//!   `|v| · 10^S ≤ (2^96 − 1) / (2n + 4)` for each figure `v`.
//!
//! The second rule makes every sum the engine and the identity compute —
//! equity, unrealized P&L, `initial + realized + unrealized` — exact without
//! checking each addition on the per-candle path. In practice: with
//! 8-decimal quantities and 8-decimal fill prices (scale 16) the books stay
//! exact up to about 1e12 of quote currency for two symbols; a session that
//! goes beyond stops cleanly (the engine's `Step::Failed`) with the reason.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::types::{
    MAX_MONEY, RangeError, SymbolId, Timestamp, checked_div, checked_mul, exact_add, exact_mul,
    exact_sub, show,
};

/// One symbol's position.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Position {
    /// Quantity held, base units (0 when flat).
    pub quantity: Decimal,
    /// Notional paid plus entry fees and gas for what is held, quote currency.
    pub cost_basis: Decimal,
    /// Notional paid (without fees) for what is held; average entry = this / quantity.
    pub entry_notional: Decimal,
    /// Entry fees and gas inside `cost_basis`.
    pub entry_costs: Decimal,
    /// Last marked price.
    pub last_price: Decimal,
    /// `quantity × last_price`, quote currency (0 when flat), kept exact.
    pub market_value: Decimal,
    /// Time of the first entry of the current position.
    pub opened_at: Option<Timestamp>,
    /// Highest price seen since entry (for the trailing stop).
    pub highest_price: Decimal,
}

impl Position {
    /// Whether anything is held.
    pub fn is_open(&self) -> bool {
        !self.quantity.is_zero()
    }

    /// Average entry price without fees (0 when flat), rounded to 8 places.
    pub fn avg_entry_price(&self) -> Decimal {
        if self.quantity.is_zero() {
            Decimal::ZERO
        } else {
            // The weighted mean of fill prices: never beyond the largest price.
            self.entry_notional
                .checked_div(self.quantity)
                .map_or(Decimal::ZERO, |p| {
                    crate::execution::round_price(p).normalize()
                })
        }
    }
}

/// Result of a sell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SellOutcome {
    /// Realized P&L of this fill, fees included.
    pub realized_pnl: Decimal,
    /// Cost released from the basis.
    pub released_cost: Decimal,
    /// Entry notional released (for the average entry price of the round trip).
    pub released_entry_notional: Decimal,
    /// Entry fees released.
    pub released_entry_costs: Decimal,
    /// Set when the sell closed the position: when it was opened.
    pub closed_opened_at: Option<Timestamp>,
}

/// Largest 96-bit mantissa.
const U96: u128 = (1 << 96) - 1;

/// `10^i` for `i` in `0..=28` (a `static`: a `const` table indexed at run
/// time may be copied to the stack at every use).
static POW10: [u128; 29] = {
    let mut t = [1u128; 29];
    let mut i = 1;
    while i < 29 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// `1e20 · 10^s` for `s` in `0..=18`: the mantissa of [`MAX_MONEY`] at scale `s`.
static MONEY_LIMIT: [u128; 19] = {
    let mut t = [0u128; 19];
    let mut i = 0;
    while i < 19 {
        t[i] = 100_000_000_000_000_000_000u128 * 10u128.pow(i as u32);
        i += 1;
    }
    t
};

/// The exactness bound of the books (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Books {
    /// Largest scale used so far (`S`).
    scale: u32,
    /// `(2^96 − 1) / (2n + 4)`.
    bound: u128,
    /// Per scale `s` of a figure, the largest mantissa it may have at the
    /// books' scale: `min(1e20 · 10^s, bound / 10^(S − s))` (0 above `S`).
    limits: [u128; 29],
}

impl Books {
    fn new(symbols: usize) -> Self {
        let mut b = Self {
            scale: 0,
            bound: U96 / (2 * symbols as u128 + 4),
            limits: [0; 29],
        };
        b.set_scale(0);
        b
    }

    /// Move to scale `scale` and recompute [`limits`](Self::limits).
    fn set_scale(&mut self, scale: u32) {
        self.scale = scale;
        for (s, l) in self.limits.iter_mut().enumerate() {
            *l = Self::limit(self.bound, scale, s as u32);
        }
    }

    /// `min(1e20 · 10^s, bound / 10^(scale − s))`, 0 when `s > scale`.
    fn limit(bound: u128, scale: u32, s: u32) -> u128 {
        if s > scale {
            return 0;
        }
        let aligned = bound / POW10[(scale - s) as usize];
        // |v| <= 1e20 ⇔ m <= 1e20 · 10^s; always true above scale 18 (m < 2^96).
        match MONEY_LIMIT.get(s as usize) {
            Some(&money) => aligned.min(money),
            None => aligned,
        }
    }

    /// Whether `v` is within [`MAX_MONEY`] and `|v| · 10^scale <= bound`.
    #[inline(always)]
    fn fits(&self, scale: u32, v: Decimal) -> bool {
        let m = v.mantissa().unsigned_abs();
        if scale == self.scale {
            // The per-candle case: one table lookup.
            return m <= self.limits[v.scale() as usize];
        }
        m <= Self::limit(self.bound, scale, v.scale())
    }

    fn refuse(&self, scale: u32, what: &str, v: Decimal) -> RangeError {
        if v.abs() > MAX_MONEY {
            RangeError(format!(
                "{what} {} exceeds the engine's range (1e20)",
                show(v)
            ))
        } else {
            RangeError(format!(
                "{what} {} cannot be kept exact with the {scale} decimal places the books use \
                 (a decimal holds 28 digits; the largest exact figure at this scale is about {})",
                show(v),
                show(Decimal::from_i128_with_scale(
                    (self.bound / POW10[scale as usize]) as i128,
                    0
                ))
            ))
        }
    }
}

/// The session's cash and positions.
#[derive(Clone, Debug)]
pub struct Portfolio {
    initial_cash: Decimal,
    cash: Decimal,
    realized_pnl: Decimal,
    positions: Vec<Position>,
    /// Σ market value, maintained incrementally.
    position_value: Decimal,
    open_positions: u32,
    books: Books,
}

/// What a [`Portfolio`] checkpoint holds: everything else is derived.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PortfolioCheckpoint {
    pub cash: Decimal,
    pub realized_pnl: Decimal,
    /// Σ market value as maintained (its scale is that of the history, so it
    /// is kept rather than recomputed).
    pub position_value: Decimal,
    pub positions: Vec<Position>,
    /// Largest scale the books have used (it decides future range checks).
    pub books_scale: u32,
}

impl Portfolio {
    /// A flat portfolio with `initial_cash` for `symbols` symbols. Call
    /// [`range_check`](Self::range_check) to learn whether `initial_cash` is
    /// within the engine's range.
    pub fn new(initial_cash: Decimal, symbols: usize) -> Self {
        let mut books = Books::new(symbols);
        books.set_scale(initial_cash.scale().min(28));
        Self {
            initial_cash,
            cash: initial_cash,
            realized_pnl: Decimal::ZERO,
            positions: vec![Position::default(); symbols],
            position_value: Decimal::ZERO,
            open_positions: 0,
            books,
        }
    }

    /// Starting cash.
    pub fn initial_cash(&self) -> Decimal {
        self.initial_cash
    }
    /// Cash now.
    pub fn cash(&self) -> Decimal {
        self.cash
    }
    /// Realized P&L so far (fees included).
    pub fn realized_pnl(&self) -> Decimal {
        self.realized_pnl
    }
    /// Marked value of all positions.
    pub fn position_value(&self) -> Decimal {
        self.position_value
    }
    /// Cash plus marked positions.
    pub fn equity(&self) -> Decimal {
        // Exact and within range: both figures passed the books' bound.
        self.cash + self.position_value
    }
    /// Positions with a non-zero quantity.
    pub fn open_positions(&self) -> u32 {
        self.open_positions
    }
    /// One symbol's position.
    pub fn position(&self, s: SymbolId) -> &Position {
        &self.positions[s.idx()]
    }
    /// All positions by symbol index.
    pub fn positions(&self) -> &[Position] {
        &self.positions
    }

    /// Unrealized P&L: Σ (market value − cost basis) over open positions.
    pub fn unrealized_pnl(&self) -> Decimal {
        // Exact: every term passed the books' bound (see the module docs).
        self.positions
            .iter()
            .filter(|p| p.is_open())
            .map(|p| p.market_value - p.cost_basis)
            .sum()
    }

    /// Significant digits a figure can have, counted at the books' largest
    /// scale, and still add up exactly with the others:
    /// `⌊log10((2^96 − 1) / (2n + 4))⌋` (27 for up to 3 symbols).
    pub fn exact_digits(&self) -> u32 {
        self.books.bound.ilog10()
    }

    /// Every stored figure with its name, for range checks.
    fn for_each_figure(
        &self,
        mut f: impl FnMut(&'static str, Decimal) -> Result<(), RangeError>,
    ) -> Result<(), RangeError> {
        f("initial cash", self.initial_cash)?;
        f("cash", self.cash)?;
        f("realized P&L", self.realized_pnl)?;
        f("position value", self.position_value)?;
        for p in &self.positions {
            f("cost basis", p.cost_basis)?;
            f("entry notional", p.entry_notional)?;
            f("entry costs", p.entry_costs)?;
            f("market value", p.market_value)?;
        }
        Ok(())
    }

    /// Check that every stored figure is within the engine's range at the
    /// books' scale (a fresh portfolio: that the initial cash is).
    ///
    /// # Errors
    ///
    /// The first figure out of range, named, with its value.
    pub fn range_check(&self) -> Result<(), RangeError> {
        let scale = self.books.scale;
        self.for_each_figure(|what, v| {
            if self.books.fits(scale, v) {
                Ok(())
            } else {
                Err(self.books.refuse(scale, what, v))
            }
        })
    }

    /// Check the figures an operation is about to store; returns the books'
    /// scale after it. When the scale grows every stored figure is checked
    /// again at the new scale (rare: at most 28 times in a session).
    fn admit(&self, new: &[(&'static str, Decimal)]) -> Result<u32, RangeError> {
        let scale = new
            .iter()
            .fold(self.books.scale, |s, (_, v)| s.max(v.scale()));
        for &(what, v) in new {
            if !self.books.fits(scale, v) {
                return Err(self.books.refuse(scale, what, v));
            }
        }
        if scale > self.books.scale {
            self.for_each_figure(|what, v| {
                if self.books.fits(scale, v) {
                    Ok(())
                } else {
                    Err(self.books.refuse(scale, what, v))
                }
            })?;
        }
        Ok(scale)
    }

    /// The position value once symbol `s`'s market value becomes `value`,
    /// checked against the books' bound at `scale`. Exact: the three figures
    /// pass the books' bound (sums of up to 2n + 2 of them do).
    #[inline]
    fn position_value_with(
        &self,
        s: SymbolId,
        scale: u32,
        value: Decimal,
    ) -> Result<Decimal, RangeError> {
        let total = self.position_value - self.positions[s.idx()].market_value + value;
        if !self.books.fits(scale, total) {
            return Err(self.books.refuse(scale, "position value", total));
        }
        Ok(total)
    }

    /// Adopt `scale` (admitted by [`admit`](Self::admit)) for later range checks.
    #[inline]
    fn commit_scale(&mut self, scale: u32) {
        if scale != self.books.scale {
            self.books.set_scale(scale);
        }
    }

    /// Mark a symbol at `price` (its latest close). O(1).
    ///
    /// # Errors
    ///
    /// The new market value or position value would leave the engine's
    /// range; nothing changed.
    #[inline]
    pub fn mark(&mut self, s: SymbolId, price: Decimal) -> Result<(), RangeError> {
        let p = &self.positions[s.idx()];
        if p.is_open() && p.last_price != price {
            let value = exact_mul("market value", p.quantity, price)?;
            // Fast path (nearly always): the scale does not grow.
            let scale =
                if value.scale() <= self.books.scale && self.books.fits(self.books.scale, value) {
                    self.books.scale
                } else {
                    self.admit(&[("market value", value)])?
                };
            let total = self.position_value_with(s, scale, value)?;
            self.commit_scale(scale);
            self.position_value = total;
            let p = &mut self.positions[s.idx()];
            p.market_value = value;
        }
        self.positions[s.idx()].last_price = price;
        Ok(())
    }

    /// Track the highest price since entry (for trailing stops).
    pub fn note_high(&mut self, s: SymbolId, high: Decimal) {
        let p = &mut self.positions[s.idx()];
        if p.is_open() && high > p.highest_price {
            p.highest_price = high;
        }
    }

    /// Buy `quantity` at `price`, paying `costs` (fee + gas). The mark moves to `price`.
    ///
    /// # Errors
    ///
    /// A figure would leave the engine's range or could not be kept exact;
    /// nothing changed.
    pub fn buy(
        &mut self,
        s: SymbolId,
        quantity: Decimal,
        price: Decimal,
        costs: Decimal,
        time: Timestamp,
    ) -> Result<(), RangeError> {
        let p = &self.positions[s.idx()];
        let notional = exact_mul("notional", quantity, price)?;
        let outlay = exact_add("notional + costs", notional, costs)?;
        let cash = exact_sub("cash", self.cash, outlay)?;
        let held = exact_add("quantity", p.quantity, quantity)?;
        let cost_basis = exact_add("cost basis", p.cost_basis, outlay)?;
        let entry_notional = exact_add("entry notional", p.entry_notional, notional)?;
        let entry_costs = exact_add("entry costs", p.entry_costs, costs)?;
        let value = exact_mul("market value", held, price)?;
        let scale = self.admit(&[
            ("cash", cash),
            ("cost basis", cost_basis),
            ("entry notional", entry_notional),
            ("entry costs", entry_costs),
            ("market value", value),
        ])?;
        let total = self.position_value_with(s, scale, value)?;
        // Commit.
        self.commit_scale(scale);
        self.cash = cash;
        self.position_value = total;
        let p = &mut self.positions[s.idx()];
        if !p.is_open() {
            self.open_positions += 1;
            p.opened_at = Some(time);
            p.highest_price = price;
        }
        p.quantity = held;
        p.cost_basis = cost_basis;
        p.entry_notional = entry_notional;
        p.entry_costs = entry_costs;
        p.last_price = price;
        p.market_value = value;
        p.highest_price = p.highest_price.max(price);
        Ok(())
    }

    /// Sell `quantity` (at most what is held) at `price`, paying `costs`.
    ///
    /// # Errors
    ///
    /// A figure would leave the engine's range or could not be kept exact;
    /// nothing changed.
    pub fn sell(
        &mut self,
        s: SymbolId,
        quantity: Decimal,
        price: Decimal,
        costs: Decimal,
    ) -> Result<SellOutcome, RangeError> {
        let p = &self.positions[s.idx()];
        let quantity = quantity.min(p.quantity);
        let full = quantity == p.quantity;
        // A partial sell releases a proportional share (a division: rounded
        // to 28 digits, the same value on both sides of the books).
        let share = |what: &str, v: Decimal| -> Result<Decimal, RangeError> {
            if full {
                Ok(v)
            } else {
                checked_div(what, checked_mul(what, v, quantity)?, p.quantity)
            }
        };
        let released_cost = share("released cost", p.cost_basis)?;
        let released_entry_notional = share("released entry notional", p.entry_notional)?;
        let released_entry_costs = share("released entry costs", p.entry_costs)?;
        let proceeds = exact_mul("proceeds", quantity, price)?;
        let net = exact_sub("proceeds − costs", proceeds, costs)?;
        let realized = exact_sub("realized P&L of the fill", net, released_cost)?;
        let cash = exact_add("cash", self.cash, net)?;
        let realized_total = exact_add("realized P&L", self.realized_pnl, realized)?;
        let held = exact_sub("quantity", p.quantity, quantity)?;
        let closed = held.is_zero();
        let (cost_basis, entry_notional, entry_costs, value) = if closed {
            (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO, Decimal::ZERO)
        } else {
            (
                exact_sub("cost basis", p.cost_basis, released_cost)?,
                exact_sub("entry notional", p.entry_notional, released_entry_notional)?,
                exact_sub("entry costs", p.entry_costs, released_entry_costs)?,
                exact_mul("market value", held, price)?,
            )
        };
        let scale = self.admit(&[
            ("cash", cash),
            ("realized P&L", realized_total),
            ("cost basis", cost_basis),
            ("entry notional", entry_notional),
            ("entry costs", entry_costs),
            ("market value", value),
        ])?;
        let total = self.position_value_with(s, scale, value)?;
        // Commit.
        self.commit_scale(scale);
        self.cash = cash;
        self.realized_pnl = realized_total;
        self.position_value = total;
        let p = &mut self.positions[s.idx()];
        p.quantity = held;
        p.cost_basis = cost_basis;
        p.entry_notional = entry_notional;
        p.entry_costs = entry_costs;
        p.last_price = price;
        p.market_value = value;
        let closed_opened_at = if closed {
            self.open_positions -= 1;
            p.highest_price = Decimal::ZERO;
            p.opened_at.take()
        } else {
            None
        };
        Ok(SellOutcome {
            realized_pnl: realized,
            released_cost,
            released_entry_notional,
            released_entry_costs,
            closed_opened_at,
        })
    }

    /// Check `cash + Σ q × last = initial + realized + unrealized` exactly, and
    /// that the incremental position value matches a full recomputation.
    /// Returns the two sides on failure.
    pub fn check_invariant(&self) -> Result<(), String> {
        let err = |e: RangeError| e.0;
        let mut recomputed = Decimal::ZERO;
        let mut unrealized = Decimal::ZERO;
        for p in &self.positions {
            let v = exact_mul("q × last", p.quantity, p.last_price).map_err(err)?;
            if v != p.market_value {
                return Err(format!(
                    "market value drifted: stored {} != quantity {} × last {} = {v}",
                    p.market_value, p.quantity, p.last_price
                ));
            }
            recomputed = exact_add("Σ q × last", recomputed, v).map_err(err)?;
            if p.is_open() {
                let u = exact_sub("unrealized", v, p.cost_basis).map_err(err)?;
                unrealized = exact_add("unrealized", unrealized, u).map_err(err)?;
            }
        }
        if recomputed != self.position_value {
            return Err(format!(
                "position value drifted: incremental {} != recomputed {recomputed}",
                self.position_value
            ));
        }
        let left = exact_add("cash + positions", self.cash, recomputed).map_err(err)?;
        let right = exact_add("initial + realized", self.initial_cash, self.realized_pnl)
            .and_then(|x| exact_add("initial + realized + unrealized", x, unrealized))
            .map_err(err)?;
        if left != right {
            return Err(format!(
                "cash {} + positions {recomputed} = {left} != initial {} + realized {} + unrealized {unrealized} = {right}",
                self.cash, self.initial_cash, self.realized_pnl,
            ));
        }
        Ok(())
    }

    /// The state a checkpoint stores.
    pub(crate) fn checkpoint(&self) -> PortfolioCheckpoint {
        PortfolioCheckpoint {
            cash: self.cash,
            realized_pnl: self.realized_pnl,
            position_value: self.position_value,
            positions: self.positions.clone(),
            books_scale: self.books.scale,
        }
    }

    /// Rebuild from a checkpoint, checking it: one position per symbol,
    /// quantities and cost figures not negative, flat positions all zero,
    /// market values equal to `quantity × last price`, every figure within
    /// range, and the identity.
    pub(crate) fn restore(initial_cash: Decimal, cp: PortfolioCheckpoint) -> Result<Self, String> {
        let n = cp.positions.len();
        if cp.books_scale > 28 {
            return Err(format!(
                "portfolio.booksScale {} is above 28 (a decimal's largest scale)",
                cp.books_scale
            ));
        }
        let mut position_value = Decimal::ZERO;
        let mut open = 0u32;
        for (i, p) in cp.positions.iter().enumerate() {
            let at = |field: &str| format!("portfolio.positions[{i}].{field}");
            for (field, v) in [
                ("quantity", p.quantity),
                ("costBasis", p.cost_basis),
                ("entryNotional", p.entry_notional),
                ("entryCosts", p.entry_costs),
                ("lastPrice", p.last_price),
                ("highestPrice", p.highest_price),
            ] {
                if v.is_sign_negative() && !v.is_zero() {
                    return Err(format!("{} must not be negative, found {v}", at(field)));
                }
            }
            let value = exact_mul("q × last", p.quantity, p.last_price)
                .map_err(|e| format!("{}: {e}", at("marketValue")))?;
            if value != p.market_value {
                return Err(format!(
                    "{} {} is not quantity {} × last price {}",
                    at("marketValue"),
                    p.market_value,
                    p.quantity,
                    p.last_price
                ));
            }
            if p.is_open() {
                open += 1;
                if p.opened_at.is_none() {
                    return Err(format!(
                        "{} is missing for an open position",
                        at("openedAt")
                    ));
                }
            } else if !(p.cost_basis.is_zero()
                && p.entry_notional.is_zero()
                && p.entry_costs.is_zero()
                && p.opened_at.is_none())
            {
                return Err(format!(
                    "portfolio.positions[{i}] is flat but keeps a cost basis, entry figures or an opening time"
                ));
            }
            position_value = exact_add("position value", position_value, value)
                .map_err(|e| format!("portfolio: {e}"))?;
        }
        if position_value != cp.position_value {
            return Err(format!(
                "portfolio.positionValue {} is not the sum of the market values ({position_value})",
                cp.position_value
            ));
        }
        let mut books = Books::new(n);
        books.set_scale(cp.books_scale);
        let pf = Self {
            initial_cash,
            cash: cp.cash,
            realized_pnl: cp.realized_pnl,
            positions: cp.positions,
            position_value: cp.position_value,
            open_positions: open,
            books,
        };
        pf.range_check().map_err(|e| format!("portfolio: {e}"))?;
        pf.check_invariant()
            .map_err(|e| format!("portfolio: the accounting identity does not hold: {e}"))?;
        Ok(pf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn round_trip_with_fees_is_exact() {
        let s = SymbolId(0);
        let mut p = Portfolio::new(dec!(1000), 1);
        p.buy(s, dec!(2), dec!(100), dec!(0.2), Timestamp(0))
            .unwrap();
        assert_eq!(p.cash(), dec!(799.8));
        assert_eq!(p.unrealized_pnl(), dec!(-0.2));
        p.mark(s, dec!(110)).unwrap();
        assert_eq!(p.equity(), dec!(1019.8));
        assert_eq!(p.unrealized_pnl(), dec!(19.8));
        p.check_invariant().unwrap();
        let out = p.sell(s, dec!(2), dec!(110), dec!(0.22)).unwrap();
        assert_eq!(out.realized_pnl, dec!(19.58));
        assert_eq!(out.closed_opened_at, Some(Timestamp(0)));
        assert_eq!(p.cash(), dec!(1019.58));
        assert_eq!(p.open_positions(), 0);
        p.check_invariant().unwrap();
    }

    #[test]
    fn partial_sells_release_cost_proportionally_and_keep_the_identity() {
        let s = SymbolId(1);
        let mut p = Portfolio::new(dec!(1000), 2);
        p.buy(s, dec!(3), dec!(10), dec!(0.1), Timestamp(5))
            .unwrap();
        p.buy(s, dec!(1), dec!(14), dec!(0.1), Timestamp(6))
            .unwrap();
        assert_eq!(p.position(s).avg_entry_price(), dec!(11));
        let out = p.sell(s, dec!(1), dec!(12), dec!(0)).unwrap();
        assert_eq!(out.released_cost, dec!(11.05));
        assert_eq!(out.realized_pnl, dec!(0.95));
        assert_eq!(out.closed_opened_at, None);
        p.mark(s, dec!(9.37)).unwrap();
        p.check_invariant().unwrap();
        p.sell(s, dec!(3), dec!(9), dec!(0.03)).unwrap();
        assert!(!p.position(s).is_open());
        p.check_invariant().unwrap();
    }

    #[test]
    fn figures_beyond_the_range_are_refused_and_change_nothing() {
        let s = SymbolId(0);
        let mut p = Portfolio::new(dec!(1000000000000000), 2); // 1e15, the largest allocation
        p.range_check().unwrap();
        // A whole-unit position at a whole price: exact at scale 0.
        p.buy(s, dec!(1000000000), dec!(1000000), dec!(0), Timestamp(0))
            .unwrap();
        p.check_invariant().unwrap();
        let before = (p.cash(), p.position(s).clone(), p.position_value());
        // Price × 1e7 takes the market value to 1e22: beyond 1e20.
        let e = p.mark(s, dec!(10000000000000)).unwrap_err();
        assert_eq!(e.0, "market value 1e22 exceeds the engine's range (1e20)");
        assert_eq!(
            before,
            (p.cash(), p.position(s).clone(), p.position_value())
        );
        // A price with 16 decimals would need 31 digits for a 1e15 market value.
        let e = p.mark(s, dec!(1000000.0000000000000001)).unwrap_err();
        assert!(
            e.0.starts_with(
                "market value = 1000000000 × 1000000.0000000000000001 needs more digits"
            ),
            "{e}"
        );
        assert_eq!(
            before,
            (p.cash(), p.position(s).clone(), p.position_value())
        );
        // A fee with many decimals raises the books' scale: cash 1e15 cannot follow.
        let e = p
            .sell(s, dec!(1000000000), dec!(1000000), dec!(0.0000000000001))
            .unwrap_err();
        assert!(
            e.0.contains("cannot be kept exact with the 13 decimal places"),
            "{e}"
        );
        assert_eq!(
            before,
            (p.cash(), p.position(s).clone(), p.position_value())
        );
        p.check_invariant().unwrap();
        // An ordinary sell still works.
        p.sell(s, dec!(1000000000), dec!(1000001), dec!(0.5))
            .unwrap();
        assert_eq!(p.realized_pnl(), dec!(999999999.5));
        p.check_invariant().unwrap();
        assert!(Portfolio::new(dec!(1e21), 1).range_check().is_err());
    }

    #[test]
    fn checkpoint_restores_the_same_books_and_refuses_corruption() {
        let s = SymbolId(1);
        let mut p = Portfolio::new(dec!(1000), 2);
        p.buy(s, dec!(3.5), dec!(10.25), dec!(0.1), Timestamp(5))
            .unwrap();
        p.mark(s, dec!(11.5)).unwrap();
        let cp = p.checkpoint();
        let json = serde_json::to_string(&cp).unwrap();
        let back: PortfolioCheckpoint = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cp);
        let r = Portfolio::restore(dec!(1000), back).unwrap();
        assert_eq!(r.cash(), p.cash());
        assert_eq!(r.cash().scale(), p.cash().scale());
        assert_eq!(
            r.position_value().to_string(),
            p.position_value().to_string()
        );
        assert_eq!(r.open_positions(), 1);
        assert_eq!(r.books, p.books);

        let mut bad = cp.clone();
        bad.cash += dec!(1);
        let e = Portfolio::restore(dec!(1000), bad).unwrap_err();
        assert!(e.contains("accounting identity does not hold"), "{e}");
        let mut bad = cp.clone();
        bad.positions[1].market_value = dec!(1);
        let e = Portfolio::restore(dec!(1000), bad).unwrap_err();
        assert!(
            e.contains("positions[1].marketValue 1 is not quantity"),
            "{e}"
        );
        let mut bad = cp.clone();
        bad.positions[0].cost_basis = dec!(-1);
        let e = Portfolio::restore(dec!(1000), bad).unwrap_err();
        assert!(
            e.contains("positions[0].costBasis must not be negative"),
            "{e}"
        );
        let mut bad = cp;
        bad.books_scale = 0;
        let e = Portfolio::restore(dec!(1000), bad).unwrap_err();
        assert!(
            e.contains("cannot be kept exact with the 0 decimal places"),
            "{e}"
        );
    }
}

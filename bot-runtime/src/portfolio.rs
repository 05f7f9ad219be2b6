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

use rust_decimal::Decimal;

use crate::types::{SymbolId, Timestamp};

/// One symbol's position.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
            crate::execution::round_price(self.entry_notional / self.quantity).normalize()
        }
    }

    /// Marked value, quote currency.
    pub fn market_value(&self) -> Decimal {
        self.quantity * self.last_price
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

/// The session's cash and positions.
#[derive(Clone, Debug)]
pub struct Portfolio {
    initial_cash: Decimal,
    cash: Decimal,
    realized_pnl: Decimal,
    positions: Vec<Position>,
    /// Σ quantity × last price, maintained incrementally.
    position_value: Decimal,
    open_positions: u32,
}

impl Portfolio {
    /// A flat portfolio with `initial_cash` for `symbols` symbols.
    pub fn new(initial_cash: Decimal, symbols: usize) -> Self {
        Self {
            initial_cash,
            cash: initial_cash,
            realized_pnl: Decimal::ZERO,
            positions: vec![Position::default(); symbols],
            position_value: Decimal::ZERO,
            open_positions: 0,
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

    /// Unrealized P&L: Σ (quantity × last − cost basis) over open positions.
    pub fn unrealized_pnl(&self) -> Decimal {
        self.positions
            .iter()
            .filter(|p| p.is_open())
            .map(|p| p.market_value() - p.cost_basis)
            .sum()
    }

    /// Mark a symbol at `price` (its latest close). O(1).
    pub fn mark(&mut self, s: SymbolId, price: Decimal) {
        let p = &mut self.positions[s.idx()];
        if p.is_open() && p.last_price != price {
            self.position_value += p.quantity * (price - p.last_price);
        }
        p.last_price = price;
    }

    /// Track the highest price since entry (for trailing stops).
    pub fn note_high(&mut self, s: SymbolId, high: Decimal) {
        let p = &mut self.positions[s.idx()];
        if p.is_open() && high > p.highest_price {
            p.highest_price = high;
        }
    }

    /// Buy `quantity` at `price`, paying `costs` (fee + gas). The mark moves to `price`.
    pub fn buy(
        &mut self,
        s: SymbolId,
        quantity: Decimal,
        price: Decimal,
        costs: Decimal,
        time: Timestamp,
    ) {
        let notional = quantity * price;
        self.cash -= notional + costs;
        let p = &mut self.positions[s.idx()];
        let old_value = if p.is_open() {
            p.quantity * p.last_price
        } else {
            Decimal::ZERO
        };
        if !p.is_open() {
            self.open_positions += 1;
            p.opened_at = Some(time);
            p.highest_price = price;
        }
        p.quantity += quantity;
        p.cost_basis += notional + costs;
        p.entry_notional += notional;
        p.entry_costs += costs;
        p.last_price = price;
        p.highest_price = p.highest_price.max(price);
        self.position_value += p.quantity * price - old_value;
    }

    /// Sell `quantity` (at most what is held) at `price`, paying `costs`.
    pub fn sell(
        &mut self,
        s: SymbolId,
        quantity: Decimal,
        price: Decimal,
        costs: Decimal,
    ) -> SellOutcome {
        let p = &mut self.positions[s.idx()];
        let quantity = quantity.min(p.quantity);
        let old_value = p.quantity * p.last_price;
        let full = quantity == p.quantity;
        let share = |v: Decimal| if full { v } else { v * quantity / p.quantity };
        let released_cost = share(p.cost_basis);
        let released_entry_notional = share(p.entry_notional);
        let released_entry_costs = share(p.entry_costs);
        let proceeds = quantity * price;
        let realized = proceeds - costs - released_cost;
        self.cash += proceeds - costs;
        self.realized_pnl += realized;
        p.quantity -= quantity;
        p.cost_basis -= released_cost;
        p.entry_notional -= released_entry_notional;
        p.entry_costs -= released_entry_costs;
        p.last_price = price;
        let closed_opened_at = if p.quantity.is_zero() {
            self.open_positions -= 1;
            let opened = p.opened_at.take();
            p.cost_basis = Decimal::ZERO;
            p.entry_notional = Decimal::ZERO;
            p.entry_costs = Decimal::ZERO;
            p.highest_price = Decimal::ZERO;
            opened
        } else {
            None
        };
        self.position_value += p.quantity * price - old_value;
        SellOutcome {
            realized_pnl: realized,
            released_cost,
            released_entry_notional,
            released_entry_costs,
            closed_opened_at,
        }
    }

    /// Check `cash + Σ q × last = initial + realized + unrealized` exactly, and
    /// that the incremental position value matches a full recomputation.
    /// Returns the two sides on failure.
    pub fn check_invariant(&self) -> Result<(), String> {
        let recomputed: Decimal = self.positions.iter().map(Position::market_value).sum();
        if recomputed != self.position_value {
            return Err(format!(
                "position value drifted: incremental {} != recomputed {recomputed}",
                self.position_value
            ));
        }
        let left = self.cash + recomputed;
        let right = self.initial_cash + self.realized_pnl + self.unrealized_pnl();
        if left != right {
            return Err(format!(
                "cash {} + positions {recomputed} = {left} != initial {} + realized {} + unrealized {} = {right}",
                self.cash,
                self.initial_cash,
                self.realized_pnl,
                self.unrealized_pnl()
            ));
        }
        Ok(())
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
        p.buy(s, dec!(2), dec!(100), dec!(0.2), Timestamp(0));
        assert_eq!(p.cash(), dec!(799.8));
        assert_eq!(p.unrealized_pnl(), dec!(-0.2));
        p.mark(s, dec!(110));
        assert_eq!(p.equity(), dec!(1019.8));
        assert_eq!(p.unrealized_pnl(), dec!(19.8));
        p.check_invariant().unwrap();
        let out = p.sell(s, dec!(2), dec!(110), dec!(0.22));
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
        p.buy(s, dec!(3), dec!(10), dec!(0.1), Timestamp(5));
        p.buy(s, dec!(1), dec!(14), dec!(0.1), Timestamp(6));
        assert_eq!(p.position(s).avg_entry_price(), dec!(11));
        let out = p.sell(s, dec!(1), dec!(12), dec!(0));
        assert_eq!(out.released_cost, dec!(11.05));
        assert_eq!(out.realized_pnl, dec!(0.95));
        assert_eq!(out.closed_opened_at, None);
        p.mark(s, dec!(9.37));
        p.check_invariant().unwrap();
        p.sell(s, dec!(3), dec!(9), dec!(0.03));
        assert!(!p.position(s).is_open());
        p.check_invariant().unwrap();
    }
}

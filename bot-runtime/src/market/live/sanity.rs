//! Per-tick sanity checks before a live price is passed on: zero, negative,
//! out of the runtime's price range, too old, or a jump beyond a band (percent
//! 0–100 of the last accepted price). Missing and non-numeric prices are found
//! by the parsers and reported with the same [`RejectReason`].

use std::collections::BTreeMap;
use std::time::Duration;

use rust_decimal::Decimal;

use crate::types::{MAX_PRICE, MIN_PRICE, Timestamp};

use super::PriceTick;

/// Why a tick was rejected. [`as_str`](Self::as_str) is a bounded counter
/// label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The symbol is absent from the response.
    Missing,
    /// The price is not a number (a word, `null`, an object).
    NonNumeric,
    /// The price is zero.
    Zero,
    /// The price is below zero.
    Negative,
    /// The price is outside the runtime's accepted range (1e-12 to 1e12).
    OutOfRange,
    /// The price's own timestamp is older than `max_age`.
    Stale,
    /// The price moved beyond the band from the last accepted price.
    Jump,
}

impl RejectReason {
    /// `missing`, `non_numeric`, `zero`, `negative`, `out_of_range`, `stale`,
    /// `jump`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::NonNumeric => "non_numeric",
            Self::Zero => "zero",
            Self::Negative => "negative",
            Self::OutOfRange => "out_of_range",
            Self::Stale => "stale",
            Self::Jump => "jump",
        }
    }
}

/// Checks ticks against the last accepted price per symbol.
///
/// A move beyond the band is rejected; when `confirmations` (>= 1) ticks in
/// a row beyond the band agree with each other (each within the band of the
/// one before), the last of them is accepted, so a real, lasting move is
/// taken after that many polls while a one-poll spike never is.
/// `confirmations == 0` never accepts a jump.
#[derive(Clone, Debug)]
pub struct TickChecker {
    band_percent: Decimal,
    confirmations: u32,
    max_age_ms: i64,
    last: BTreeMap<String, Decimal>,
    pending: BTreeMap<String, (Decimal, u32)>,
}

impl TickChecker {
    /// `band_percent`: largest accepted move vs the last accepted price, in
    /// percent (0–100 and above; 10 = 10 %). `max_age`: oldest accepted
    /// price time relative to `now`.
    pub fn new(band_percent: Decimal, confirmations: u32, max_age: Duration) -> Self {
        Self {
            band_percent,
            confirmations,
            max_age_ms: i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX),
            last: BTreeMap::new(),
            pending: BTreeMap::new(),
        }
    }

    /// The last accepted price of `symbol`.
    pub fn last_accepted(&self, symbol: &str) -> Option<Decimal> {
        self.last.get(symbol).copied()
    }

    /// Whether `time` is older than `max_age` at `now`.
    pub fn is_stale(&self, time: Timestamp, now: Timestamp) -> bool {
        now.millis().saturating_sub(time.millis()) > self.max_age_ms
    }

    /// Check one tick at `now`; on `Ok` it becomes the last accepted price.
    ///
    /// # Errors
    ///
    /// The [`RejectReason`]; the tick must not be passed on.
    pub fn check(&mut self, tick: &PriceTick, now: Timestamp) -> Result<(), RejectReason> {
        let p = tick.price;
        if p.is_zero() {
            return Err(RejectReason::Zero);
        }
        if p.is_sign_negative() {
            return Err(RejectReason::Negative);
        }
        if !(MIN_PRICE..=MAX_PRICE).contains(&p) {
            return Err(RejectReason::OutOfRange);
        }
        if self.is_stale(tick.time, now) {
            return Err(RejectReason::Stale);
        }
        if let Some(&last) = self.last.get(&tick.symbol)
            && !self.within_band(last, p)
        {
            return self.jump(tick);
        }
        self.pending.remove(&tick.symbol);
        self.last.insert(tick.symbol.clone(), p);
        Ok(())
    }

    fn jump(&mut self, tick: &PriceTick) -> Result<(), RejectReason> {
        let p = tick.price;
        let count = match self.pending.get(&tick.symbol) {
            Some(&(q, n)) if self.within_band(q, p) => n.saturating_add(1),
            _ => 1,
        };
        if self.confirmations > 0 && count >= self.confirmations {
            self.pending.remove(&tick.symbol);
            self.last.insert(tick.symbol.clone(), p);
            return Ok(());
        }
        self.pending.insert(tick.symbol.clone(), (p, count));
        Err(RejectReason::Jump)
    }

    /// `|p − reference| × 100 <= band × reference` (exact; an overflow counts
    /// as outside the band).
    fn within_band(&self, reference: Decimal, p: Decimal) -> bool {
        let diff = (p - reference).abs();
        match (
            diff.checked_mul(Decimal::ONE_HUNDRED),
            self.band_percent.checked_mul(reference),
        ) {
            (Some(lhs), Some(rhs)) => lhs <= rhs,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    const NOW: Timestamp = Timestamp(1_700_000_000_000);

    fn tick(price: Decimal) -> PriceTick {
        PriceTick {
            symbol: "BTC-USD".into(),
            price,
            time: NOW,
        }
    }

    fn checker() -> TickChecker {
        TickChecker::new(dec!(10), 3, Duration::from_secs(120))
    }

    #[test]
    fn zero_negative_and_out_of_range_are_rejected() {
        let mut c = checker();
        assert_eq!(c.check(&tick(dec!(0)), NOW), Err(RejectReason::Zero));
        assert_eq!(c.check(&tick(dec!(-1)), NOW), Err(RejectReason::Negative));
        assert_eq!(
            c.check(&tick(dec!(2000000000000)), NOW),
            Err(RejectReason::OutOfRange)
        );
        assert_eq!(c.last_accepted("BTC-USD"), None);
    }

    #[test]
    fn old_ticks_are_stale() {
        let mut c = checker();
        let mut t = tick(dec!(100));
        t.time = NOW.plus_ms(-120_000);
        assert_eq!(c.check(&t, NOW), Ok(()));
        t.time = NOW.plus_ms(-120_001);
        assert_eq!(c.check(&t, NOW), Err(RejectReason::Stale));
    }

    #[test]
    fn band_edge_is_inside_and_a_spike_is_rejected() {
        let mut c = checker();
        assert_eq!(c.check(&tick(dec!(100)), NOW), Ok(()));
        assert_eq!(c.check(&tick(dec!(110)), NOW), Ok(()));
        assert_eq!(c.check(&tick(dec!(121.01)), NOW), Err(RejectReason::Jump));
        assert_eq!(c.check(&tick(dec!(99)), NOW), Ok(()));
        assert_eq!(c.last_accepted("BTC-USD"), Some(dec!(99)));
    }

    #[test]
    fn a_lasting_move_is_accepted_after_the_confirmations() {
        let mut c = checker();
        assert_eq!(c.check(&tick(dec!(100)), NOW), Ok(()));
        assert_eq!(c.check(&tick(dec!(150)), NOW), Err(RejectReason::Jump));
        assert_eq!(c.check(&tick(dec!(151)), NOW), Err(RejectReason::Jump));
        assert_eq!(c.check(&tick(dec!(152)), NOW), Ok(()));
        assert_eq!(c.last_accepted("BTC-USD"), Some(dec!(152)));
        // A spike that does not persist never counts up.
        assert_eq!(c.check(&tick(dec!(500)), NOW), Err(RejectReason::Jump));
        assert_eq!(c.check(&tick(dec!(10)), NOW), Err(RejectReason::Jump));
        assert_eq!(c.check(&tick(dec!(500)), NOW), Err(RejectReason::Jump));
        assert_eq!(c.last_accepted("BTC-USD"), Some(dec!(152)));
    }
}

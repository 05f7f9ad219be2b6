//! Simulated execution: where a market order fills, what it costs, and
//! whether it fails.
//!
//! # Fill-price rules
//!
//! A decision is made at the close of candle *i* (time `t_d` = open time +
//! interval). The order reaches the simulated venue at `t_f = t_d + latency`
//! (+ a uniform random jitter in `[0, latencyJitter]` when configured).
//!
//! 1. **Reference price.** The fill uses the first candle of the symbol that
//!    has not closed by `t_f`:
//!    - if `t_f` is at or before that candle's open (zero latency, or a gap in
//!      the data), the reference price is the candle's **open**;
//!    - otherwise `t_f` falls inside the candle and the price is interpolated
//!      linearly between its open and close by the elapsed fraction:
//!      `open + (close − open) × (t_f − open_time) / interval`, rounded to 8
//!      decimal places. This is the price "the latency lands on" for data
//!      with no finer path than OHLC; it always lies within `[low, high]`.
//!
//!    With zero latency this is exactly "fill at the next candle's open".
//!    An order whose decision came on the last candle of the data never fills.
//! 2. **Slippage** moves the price against the order:
//!    `slip = baseBps / 10 000 + impactPct / 100 × min(1, order notional / candle notional)`,
//!    where candle notional is `volume × close` for base-unit volume or
//!    `volume` for quote-unit volume (a zero-volume candle counts as full
//!    participation). Buys fill at `reference × (1 + slip)`, sells at
//!    `reference × (1 − slip)`, rounded to 8 decimal places. The slippage cost
//!    recorded is `|fill − reference| × quantity`.
//! 3. **Fees.** `fee = fill price × quantity × feeRatePct / 100` (rounded to 8
//!    decimal places), plus the fixed `gasCost` per fill.
//! 4. **Failures.** With `failureRatePct > 0`, each order fails with that
//!    probability: nothing is filled, nothing is paid, and the failure is
//!    recorded.
//! 5. **Stops.** Stop-loss, take-profit and trailing-stop exits are resting
//!    orders at the venue: they trigger when a candle's low (stops) or high
//!    (take-profit) touches the level, and fill at the level — or at the open
//!    when the candle opened beyond it (a gap) — before slippage and fees.
//!    They never fail and have no latency. When one candle touches both the
//!    stop and the take-profit, the stop is assumed to have come first.
//!
//! # Randomness
//!
//! All randomness comes from `execution.seed` through ChaCha8 streams, one
//! stream per purpose (failures, latency jitter). A stream is drawn from only
//! when its feature is configured, so turning on one source of randomness
//! never shifts another, and a session without any randomness is independent
//! of the seed. A checkpoint keeps each stream's word position
//! ([`ExecutionModel::checkpoint`]), so a resumed session draws exactly the
//! numbers the uninterrupted one would have.
//!
//! # Range
//!
//! Prices and volumes come from candles the feed guard accepted (see
//! [`crate::types::MAX_PRICE`]), so interpolation cannot overflow. Products
//! that can (order and candle notional for slippage, fees, a slippage of
//! absurd size) are checked: participation saturates at 1, a fee or fill
//! price beyond a decimal's range is a [`RangeError`].

use paperbot_crds::{ExecutionSpec, VolumeUnit};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::{Decimal, RoundingStrategy};

use serde::{Deserialize, Serialize};

use crate::types::{Candle, RangeError, Side, Timestamp, checked_mul};

/// Decimal places of simulated prices and fees.
pub const PRICE_DP: u32 = 8;

const BPS: Decimal = Decimal::from_parts(10_000, 0, 0, false, 0);

/// Round to [`PRICE_DP`] places, half to even.
pub fn round_price(p: Decimal) -> Decimal {
    p.round_dp_with_strategy(PRICE_DP, RoundingStrategy::MidpointNearestEven)
}

/// The execution model of one session.
#[derive(Clone, Debug)]
pub struct ExecutionModel {
    /// Fee as a fraction of notional (feeRatePct / 100).
    fee_rate: Decimal,
    /// Fixed cost per fill, quote currency.
    gas: Decimal,
    /// Fixed slippage, fraction.
    base_slippage: Decimal,
    /// Impact slippage at full participation, fraction.
    impact: Decimal,
    /// Latency, milliseconds.
    latency_ms: i64,
    /// Jitter bound, milliseconds.
    jitter_ms: i64,
    /// Failure probability, 0-1.
    failure_rate: f64,
    /// Volume unit per symbol index.
    quote_volume: Vec<bool>,
    failure_rng: ChaCha8Rng,
    jitter_rng: ChaCha8Rng,
}

/// What a checkpoint keeps of the execution model: the word position of each
/// random stream (the seed and stream numbers come from the configuration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ExecutionCheckpoint {
    /// Word position of the failure stream (32-bit words since its start).
    pub failure_word_pos: u128,
    /// Word position of the latency-jitter stream.
    pub jitter_word_pos: u128,
}

/// Stream numbers of the per-purpose RNGs.
const STREAM_FAILURE: u64 = 1;
const STREAM_JITTER: u64 = 2;

impl ExecutionModel {
    /// Build from the session's execution spec and the volume unit of each
    /// symbol (by symbol index).
    pub fn from_spec(spec: &ExecutionSpec, volume_units: &[VolumeUnit]) -> Self {
        let pct = |v: Option<paperbot_crds::DecimalString>| {
            v.map(|v| v.get()).unwrap_or_default() / Decimal::ONE_HUNDRED
        };
        let slip = spec.slippage.clone().unwrap_or_default();
        let rng = |stream| {
            let mut r = ChaCha8Rng::seed_from_u64(spec.seed);
            r.set_stream(stream);
            r
        };
        Self {
            fee_rate: pct(spec.fee_rate_pct),
            gas: spec.gas_cost.map(|g| g.get()).unwrap_or_default(),
            base_slippage: slip.base_bps.map(|b| b.get()).unwrap_or_default() / BPS,
            impact: pct(slip.impact_pct),
            latency_ms: spec.latency.map(|l| l.as_millis_i64()).unwrap_or(0),
            jitter_ms: spec.latency_jitter.map(|l| l.as_millis_i64()).unwrap_or(0),
            failure_rate: f64::try_from(pct(spec.failure_rate_pct)).unwrap_or(0.0),
            quote_volume: volume_units
                .iter()
                .map(|u| *u == VolumeUnit::Quote)
                .collect(),
            failure_rng: rng(STREAM_FAILURE),
            jitter_rng: rng(STREAM_JITTER),
        }
    }

    /// The random streams' positions (see the module docs).
    pub(crate) fn checkpoint(&self) -> ExecutionCheckpoint {
        ExecutionCheckpoint {
            failure_word_pos: self.failure_rng.get_word_pos(),
            jitter_word_pos: self.jitter_rng.get_word_pos(),
        }
    }

    /// Move the random streams to a checkpoint's positions. Positions beyond
    /// a stream's 2^68-word period are refused.
    pub(crate) fn restore(&mut self, cp: &ExecutionCheckpoint) -> Result<(), String> {
        const PERIOD: u128 = 1 << 68;
        for (name, pos) in [
            ("failureWordPos", cp.failure_word_pos),
            ("jitterWordPos", cp.jitter_word_pos),
        ] {
            if pos >= PERIOD {
                return Err(format!(
                    "execution.{name} {pos} is beyond the random stream's period (2^68 words)"
                ));
            }
        }
        self.failure_rng.set_word_pos(cp.failure_word_pos);
        self.jitter_rng.set_word_pos(cp.jitter_word_pos);
        Ok(())
    }

    /// Latency of the next order in milliseconds (draws jitter only when configured).
    pub fn next_latency_ms(&mut self) -> i64 {
        if self.jitter_ms > 0 {
            self.latency_ms
                .saturating_add(self.jitter_rng.random_range(0..=self.jitter_ms))
        } else {
            self.latency_ms
        }
    }

    /// Whether the next order fails (draws only when a failure rate is configured).
    pub fn next_order_fails(&mut self) -> bool {
        self.failure_rate > 0.0 && self.failure_rng.random::<f64>() < self.failure_rate
    }

    /// Reference price of a market order arriving at `fill_time` during (or
    /// before) `candle`; see rule 1 of the module docs.
    pub fn reference_price(candle: &Candle, fill_time: Timestamp) -> Decimal {
        let elapsed = fill_time.millis().saturating_sub(candle.open_time.millis());
        if elapsed <= 0 || candle.interval_ms <= 0 {
            return candle.open;
        }
        let frac =
            Decimal::from(elapsed.min(candle.interval_ms)) / Decimal::from(candle.interval_ms);
        round_price(candle.open + (candle.close - candle.open) * frac)
    }

    /// Slippage fraction for an order of `quantity` at `price` filled in `candle`; rule 2.
    ///
    /// Never fails: an order notional beyond a decimal's range counts as
    /// full participation; a candle notional beyond it is divided in two
    /// steps (`order / volume / close`).
    pub fn slippage_fraction(&self, quantity: Decimal, price: Decimal, candle: &Candle) -> Decimal {
        if self.impact.is_zero() {
            return self.base_slippage;
        }
        let quote = self
            .quote_volume
            .get(candle.symbol.idx())
            .copied()
            .unwrap_or(false);
        let participation = match quantity.checked_mul(price) {
            _ if candle.volume <= Decimal::ZERO => Decimal::ONE,
            None => Decimal::ONE,
            Some(order) => {
                let share = if quote {
                    order.checked_div(candle.volume)
                } else {
                    match candle.volume.checked_mul(candle.close) {
                        Some(n) if n > Decimal::ZERO => order.checked_div(n),
                        _ => order
                            .checked_div(candle.volume)
                            .and_then(|x| x.checked_div(candle.close)),
                    }
                };
                share.map_or(Decimal::ONE, |x| x.min(Decimal::ONE))
            }
        };
        // impact <= 1 (a percent of at most 100), participation <= 1.
        self.base_slippage
            .saturating_add(self.impact.saturating_mul(participation))
    }

    /// Price after slippage `slip` (fraction) against an order on `side`.
    ///
    /// # Errors
    ///
    /// The price would leave a decimal's range (a slippage of absurd size).
    pub fn apply_slippage(
        side: Side,
        reference: Decimal,
        slip: Decimal,
    ) -> Result<Decimal, RangeError> {
        if slip.is_zero() {
            return Ok(reference);
        }
        let factor = match side {
            Side::Buy => Decimal::ONE.saturating_add(slip),
            Side::Sell => Decimal::ONE.saturating_sub(slip),
        };
        let price = round_price(checked_mul("fill price after slippage", reference, factor)?);
        Ok(price.max(Decimal::ZERO))
    }

    /// Fee on a fill of `quantity` at `price`, quote currency; rule 3 (without gas).
    ///
    /// # Errors
    ///
    /// `quantity × price × rate` would leave a decimal's range.
    pub fn fee(&self, quantity: Decimal, price: Decimal) -> Result<Decimal, RangeError> {
        if self.fee_rate.is_zero() {
            Ok(Decimal::ZERO)
        } else {
            let notional = checked_mul("notional for the fee", quantity, price)?;
            Ok(round_price(checked_mul("fee", notional, self.fee_rate)?))
        }
    }

    /// Fixed cost per fill, quote currency.
    pub fn gas(&self) -> Decimal {
        self.gas
    }

    /// Fee rate as a fraction (for sizing a buy so that cash covers the fee).
    pub fn fee_rate(&self) -> Decimal {
        self.fee_rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SymbolId;
    use paperbot_crds::{DecimalString, DurationString, SlippageSpec};
    use rust_decimal_macros::dec;

    fn candle() -> Candle {
        Candle {
            symbol: SymbolId(0),
            open_time: Timestamp(60_000),
            interval_ms: 60_000,
            open: dec!(100),
            high: dec!(112),
            low: dec!(99),
            close: dec!(110),
            volume: dec!(50),
        }
    }

    #[test]
    fn reference_price_is_open_without_latency_and_interpolated_with_it() {
        let c = candle();
        assert_eq!(
            ExecutionModel::reference_price(&c, Timestamp(60_000)),
            dec!(100)
        );
        assert_eq!(
            ExecutionModel::reference_price(&c, Timestamp(30_000)),
            dec!(100)
        ); // gap: before open
        assert_eq!(
            ExecutionModel::reference_price(&c, Timestamp(75_000)),
            dec!(102.5)
        );
        assert_eq!(
            ExecutionModel::reference_price(&c, Timestamp(60_250)),
            dec!(100.04166667)
        );
    }

    #[test]
    fn slippage_and_fees_move_against_the_order() {
        let spec = ExecutionSpec {
            fee_rate_pct: Some(DecimalString(dec!(0.1))),
            slippage: Some(SlippageSpec {
                base_bps: Some(DecimalString(dec!(5))),
                impact_pct: Some(DecimalString(dec!(1))),
            }),
            ..Default::default()
        };
        let m = ExecutionModel::from_spec(&spec, &[VolumeUnit::Base]);
        let c = candle(); // notional 50 × 110 = 5500
        // order notional 550 → participation 0.1 → slip = 0.0005 + 0.01 × 0.1 = 0.0015
        let slip = m.slippage_fraction(dec!(5.5), dec!(100), &c);
        assert_eq!(slip, dec!(0.0015));
        assert_eq!(
            ExecutionModel::apply_slippage(Side::Buy, dec!(100), slip),
            Ok(dec!(100.15))
        );
        assert_eq!(
            ExecutionModel::apply_slippage(Side::Sell, dec!(100), slip),
            Ok(dec!(99.85))
        );
        assert_eq!(m.fee(dec!(2), dec!(100.15)), Ok(dec!(0.2003)));
        // Notionals beyond a decimal's range: participation saturates, nothing panics.
        let mut huge = c;
        huge.volume = dec!(1000000000000000000);
        huge.close = dec!(1000000000000);
        assert_eq!(m.slippage_fraction(dec!(1), dec!(100), &huge), dec!(0.0005));
        assert_eq!(
            m.slippage_fraction(Decimal::MAX, dec!(1000000000000), &huge),
            dec!(0.0105)
        );
        assert!(m.fee(Decimal::MAX, dec!(2)).is_err());
        assert!(
            ExecutionModel::apply_slippage(Side::Buy, dec!(1000000000000), Decimal::MAX).is_err()
        );
        let quote = ExecutionModel::from_spec(&spec, &[VolumeUnit::Quote]); // notional 50
        assert_eq!(
            quote.slippage_fraction(dec!(5.5), dec!(100), &c),
            dec!(0.0105)
        );
    }

    #[test]
    fn randomness_is_seeded_and_only_drawn_when_configured() {
        let mut spec = ExecutionSpec {
            failure_rate_pct: Some(DecimalString(dec!(50))),
            seed: 7,
            ..Default::default()
        };
        let draws = |spec: &ExecutionSpec| {
            let mut m = ExecutionModel::from_spec(spec, &[]);
            (0..64).map(|_| m.next_order_fails()).collect::<Vec<_>>()
        };
        let a = draws(&spec);
        assert_eq!(a, draws(&spec));
        assert!(a.iter().any(|f| *f) && a.iter().any(|f| !*f));
        // Adding jitter does not change the failure sequence (separate streams).
        spec.latency_jitter = Some(DurationString(std::time::Duration::from_millis(100)));
        assert_eq!(a, draws(&spec));
        spec.seed = 8;
        assert_ne!(a, draws(&spec));
        // No failure rate: never fails, whatever the seed.
        let mut m = ExecutionModel::from_spec(&ExecutionSpec::default(), &[]);
        assert!((0..100).all(|_| !m.next_order_fails()));
        assert_eq!(m.next_latency_ms(), 0);
    }

    #[test]
    fn a_checkpoint_resumes_every_stream_exactly() {
        let spec = ExecutionSpec {
            failure_rate_pct: Some(DecimalString(dec!(30))),
            latency_jitter: Some(DurationString(std::time::Duration::from_millis(900))),
            seed: 11,
            ..Default::default()
        };
        let mut a = ExecutionModel::from_spec(&spec, &[]);
        for _ in 0..37 {
            a.next_order_fails();
            a.next_latency_ms();
        }
        a.next_order_fails();
        let json = serde_json::to_string(&a.checkpoint()).unwrap();
        let mut b = ExecutionModel::from_spec(&spec, &[]);
        b.restore(&serde_json::from_str(&json).unwrap()).unwrap();
        let draws = |m: &mut ExecutionModel| {
            (0..200)
                .map(|i| {
                    if i % 3 == 0 {
                        i64::from(m.next_order_fails())
                    } else {
                        m.next_latency_ms()
                    }
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(&mut a), draws(&mut b));
        let bad = ExecutionCheckpoint {
            failure_word_pos: 1 << 70,
            jitter_word_pos: 0,
        };
        assert!(b.restore(&bad).unwrap_err().contains("failureWordPos"));
    }
}

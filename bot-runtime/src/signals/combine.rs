//! Combining readings into a direction and a confidence.

use std::cmp::Ordering;

use rust_decimal::prelude::FromPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

use super::SignalReading;
use crate::types::Side;

/// The combined opinion of a set of readings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Combined {
    /// `Buy` when the weighted net score is positive, `Sell` when negative,
    /// `None` when it is zero or no reading has an opinion.
    pub direction: Option<Side>,
    /// How strongly the readings with an opinion agree on `direction`,
    /// percent 0–100, always with scale 2 (`100.00`, `5.00`; 0 when
    /// `direction` is `None`).
    pub confidence: Decimal,
    /// Weighted net score `Σ w·s` (unnormalised, in units of weight).
    pub net_score: f64,
}

/// Combines readings (scores `s` in −1..=1, weights `w` > 0).
///
/// Only readings with `s ≠ 0` have an opinion. With
/// - `net = Σ w·s` over all readings,
/// - `agree = Σ w·|s|` over the opinions with the sign of `net`,
/// - `disagree = Σ w·|s|` over the other opinions,
/// - `opinion = Σ w` over the opinions,
///
/// `direction` = sign of `net` (`None` if 0 or there are no opinions) and
/// `confidence = 100 · (agree − disagree) / opinion`, rounded half away from
/// zero to 2 decimals and clamped to 0–100. (`agree − disagree` equals
/// `|net|`: confidence is the weighted mean conviction of the opinions,
/// counting disagreement against it.) Readings with no opinion do not dilute
/// the confidence.
///
/// Examples: a lone SMA cross (+1) gives `Buy`, 100; two equal-weight
/// readings +0.6 and −0.5 give `Buy`, 100 · 0.1 / 2 = 5.
///
/// Allocation-free; this is the project's own weighting rule (no published
/// source).
pub fn combine(readings: &[SignalReading]) -> Combined {
    let (mut net, mut opinion) = (0.0, 0.0);
    for r in readings.iter().filter(|r| r.score != 0.0) {
        net += r.weight * r.score;
        opinion += r.weight;
    }
    let direction = match (opinion > 0.0, net.partial_cmp(&0.0)) {
        (true, Some(Ordering::Greater)) => Some(Side::Buy),
        (true, Some(Ordering::Less)) => Some(Side::Sell),
        _ => None, // no opinion, a balance, or NaN
    };
    let Some(dir) = direction else {
        return Combined {
            direction,
            confidence: Decimal::ZERO,
            net_score: net,
        };
    };
    let (mut agree, mut disagree) = (0.0, 0.0);
    for r in readings.iter().filter(|r| r.score != 0.0) {
        if agrees(r, dir) {
            agree += r.weight * r.score.abs();
        } else {
            disagree += r.weight * r.score.abs();
        }
    }
    let mut confidence = Decimal::from_f64(100.0 * (agree - disagree) / opinion)
        .unwrap_or_default()
        .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
        .clamp(Decimal::ZERO, Decimal::ONE_HUNDRED);
    confidence.rescale(2);
    Combined {
        direction,
        confidence,
        net_score: net,
    }
}

/// Whether a reading's score points the way of `direction`.
fn agrees(r: &SignalReading, direction: Side) -> bool {
    match direction {
        Side::Buy => r.score > 0.0,
        Side::Sell => r.score < 0.0,
    }
}

/// Texts for a decision record: the readings agreeing with `direction`
/// (score of its sign) and those disagreeing (score of the other sign), each
/// as `"; "`-separated [`SignalReading::describe`] lines, or `"none"` when
/// empty. Readings with score 0 appear in neither.
///
/// Allocates; call it only when a decision is recorded.
pub fn explain(readings: &[SignalReading], direction: Side) -> (String, String) {
    let join = |want: bool| {
        let parts: Vec<String> = readings
            .iter()
            .filter(|r| r.score != 0.0 && agrees(r, direction) == want)
            .map(SignalReading::describe)
            .collect();
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join("; ")
        }
    };
    (join(true), join(false))
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;
    use crate::signals::SignalKind;

    fn reading(kind: SignalKind, score: f64, weight: f64) -> SignalReading {
        SignalReading {
            kind,
            score,
            weight,
            ..SignalReading::EMPTY
        }
    }

    #[test]
    fn lone_cross_is_full_confidence() {
        let c = combine(&[reading(SignalKind::SmaCrossover, 1.0, 1.0)]);
        assert_eq!(c.direction, Some(Side::Buy));
        assert_eq!(c.confidence.to_string(), "100.00");
        let c = combine(&[
            reading(SignalKind::SmaCrossover, -1.0, 2.0),
            reading(SignalKind::Rsi, 0.0, 1.0), // no opinion: does not dilute
        ]);
        assert_eq!(
            (c.direction, c.confidence, c.net_score),
            (Some(Side::Sell), dec!(100), -2.0)
        );
    }

    #[test]
    fn disagreement_lowers_confidence() {
        // 100 · (0.6 − 0.5) / 2 = 5
        let c = combine(&[
            reading(SignalKind::Rsi, 0.6, 1.0),
            reading(SignalKind::Momentum, -0.5, 1.0),
        ]);
        assert_eq!(c.direction, Some(Side::Buy));
        assert_eq!(c.confidence.to_string(), "5.00");
        // weights 2 and 1: net = 2·(−0.3) + 0.9 = 0.3; 100 · (0.9 − 0.6) / 3 = 10
        let c = combine(&[
            reading(SignalKind::Rsi, -0.3, 2.0),
            reading(SignalKind::Bollinger, 0.9, 1.0),
        ]);
        assert_eq!(c.direction, Some(Side::Buy));
        assert_eq!(c.confidence, dec!(10));
        // three opinions +1, +1/3, −1/3 (weight 1): 100 · (4/3 − 1/3) / 3 = 33.33
        let c = combine(&[
            reading(SignalKind::SmaCrossover, 1.0, 1.0),
            reading(SignalKind::Rsi, 1.0 / 3.0, 1.0),
            reading(SignalKind::Momentum, -1.0 / 3.0, 1.0),
        ]);
        assert_eq!(c.confidence, dec!(33.33));
        // 100 · 2/3 / 1 = 66.666… rounds to 66.67
        let c = combine(&[reading(SignalKind::Momentum, -2.0 / 3.0, 1.0)]);
        assert_eq!((c.direction, c.confidence), (Some(Side::Sell), dec!(66.67)));
    }

    #[test]
    fn no_opinion_or_balance_gives_no_direction() {
        let c = combine(&[]);
        assert_eq!(
            (c.direction, c.confidence, c.net_score),
            (None, Decimal::ZERO, 0.0)
        );
        let c = combine(&[reading(SignalKind::Rsi, 0.0, 1.0)]);
        assert_eq!((c.direction, c.confidence), (None, Decimal::ZERO));
        let c = combine(&[
            reading(SignalKind::Rsi, 0.5, 1.0),
            reading(SignalKind::Bollinger, -0.25, 2.0),
        ]);
        assert_eq!((c.direction, c.confidence), (None, Decimal::ZERO));
    }

    #[test]
    fn explain_splits_agreeing_and_disagreeing() {
        let sma = SignalReading {
            kind: SignalKind::SmaCrossover,
            score: 1.0,
            weight: 1.0,
            values: [46810.23, 46795.14, 0.0],
            periods: [10, 30],
        };
        let rsi = SignalReading {
            kind: SignalKind::Rsi,
            score: -0.5,
            weight: 1.0,
            values: [85.0, 30.0, 70.0],
            periods: [14, 0],
        };
        let flat = reading(SignalKind::Momentum, 0.0, 1.0);
        let (pos, neg) = explain(&[sma, rsi, flat], Side::Buy);
        assert_eq!(
            pos,
            "sma_crossover +1.00: fast SMA(10) 46810.2 crossed above slow SMA(30) 46795.1"
        );
        assert_eq!(neg, "rsi -0.50: RSI(14) 85.0 above overbought 70.0");
        let (pos, neg) = explain(&[sma, rsi, flat], Side::Sell);
        assert_eq!(pos, "rsi -0.50: RSI(14) 85.0 above overbought 70.0");
        assert!(neg.starts_with("sma_crossover +1.00"));
        let (pos, neg) = explain(&[sma, sma], Side::Buy);
        assert_eq!(pos.matches("; ").count(), 1);
        assert_eq!(neg, "none");
        assert_eq!(
            explain(&[flat], Side::Buy),
            ("none".to_owned(), "none".to_owned())
        );
    }
}

//! Relative strength index with Wilder's smoothing.

use std::fmt::{self, Write};

use serde::{Deserialize, Serialize};

use super::{SignalKind, SignalReading};

/// What a checkpoint keeps of an [`Rsi`]; `f64` values as their IEEE-754 bits
/// (exact through any JSON parser).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RsiState {
    pub prev_close: u64,
    pub count: u32,
    pub avg_gain: u64,
    pub avg_loss: u64,
}

/// Relative strength index, J. Welles Wilder, *New Concepts in Technical
/// Trading Systems* (1978), on closes, in `f64` (an indicator for a
/// threshold rule; exactness is not needed).
///
/// With `n` = `period` and the close-to-close changes split into gains
/// `max(Δ, 0)` and losses `max(−Δ, 0)`:
/// - the first average gain / loss is the simple mean of the first `n`
///   changes (needs `n + 1` closes);
/// - after that, Wilder's smoothing: `avg = (avg_prev · (n − 1) + current) / n`;
/// - `RSI = 100 − 100 / (1 + avg_gain / avg_loss) = 100 · avg_gain / (avg_gain + avg_loss)`,
///   0–100 (100 when there were only gains; 50, no opinion, when the
///   closes did not move at all).
///
/// Score (mean reversion), continuous and monotone decreasing in the RSI:
/// - `rsi < oversold`: `(oversold − rsi) / oversold`, from 0 at the oversold
///   level up to +1 at RSI 0;
/// - `rsi > overbought`: `−(rsi − overbought) / (100 − overbought)`, from 0 at
///   the overbought level down to −1 at RSI 100;
/// - otherwise 0 (no opinion).
///
/// Warm-up: `period + 1` closes. Reading values: `[rsi, oversold, overbought]`.
#[derive(Clone, Debug)]
pub struct Rsi {
    period: u32,
    n: f64,
    oversold: f64,
    overbought: f64,
    weight: f64,
    prev_close: f64,
    /// Closes seen, saturating at `period + 1`.
    count: u32,
    /// Sums of gains / losses while seeding, then Wilder averages.
    avg_gain: f64,
    avg_loss: f64,
}

impl Rsi {
    /// Change the weight of its readings (a strategy reload that changed
    /// nothing else keeps the generator's state).
    pub(crate) fn set_weight(&mut self, weight: f64) {
        self.weight = weight;
    }

    /// RSI over `period` bars (raised to at least 2) with `oversold` <
    /// `overbought` levels on the 0–100 scale; `weight` as in
    /// [`combine`](super::combine).
    pub fn new(period: u32, oversold: f64, overbought: f64, weight: f64) -> Self {
        let period = period.max(2);
        Self {
            period,
            n: f64::from(period),
            oversold,
            overbought,
            weight,
            prev_close: 0.0,
            count: 0,
            avg_gain: 0.0,
            avg_loss: 0.0,
        }
    }

    /// The state a checkpoint stores.
    pub(crate) fn state(&self) -> RsiState {
        RsiState {
            prev_close: self.prev_close.to_bits(),
            count: self.count,
            avg_gain: self.avg_gain.to_bits(),
            avg_loss: self.avg_loss.to_bits(),
        }
    }

    /// Take a checkpoint's state.
    pub(crate) fn restore(&mut self, st: RsiState) -> Result<(), String> {
        if st.count > self.period + 1 {
            return Err(format!(
                "rsi state has seen {} closes, at most {} are counted",
                st.count,
                self.period + 1
            ));
        }
        self.prev_close = f64::from_bits(st.prev_close);
        self.count = st.count;
        self.avg_gain = f64::from_bits(st.avg_gain);
        self.avg_loss = f64::from_bits(st.avg_loss);
        Ok(())
    }

    /// Closes before the first reading: `period + 1`.
    pub fn warmup_bars(&self) -> u32 {
        self.period + 1
    }

    /// Feed one close; `None` until warmed up.
    #[inline]
    pub fn update(&mut self, close: f64) -> Option<SignalReading> {
        let change = close - self.prev_close;
        self.prev_close = close;
        let (gain, loss) = (change.max(0.0), (-change).max(0.0));
        if self.count <= self.period {
            self.count += 1;
            if self.count == 1 {
                return None; // first close: no change yet
            }
            self.avg_gain += gain;
            self.avg_loss += loss;
            if self.count <= self.period {
                return None;
            }
            self.avg_gain /= self.n;
            self.avg_loss /= self.n;
        } else {
            self.avg_gain = (self.avg_gain * (self.n - 1.0) + gain) / self.n;
            self.avg_loss = (self.avg_loss * (self.n - 1.0) + loss) / self.n;
        }
        let total = self.avg_gain + self.avg_loss;
        let rsi = if total > 0.0 {
            100.0 * self.avg_gain / total
        } else {
            50.0
        };
        Some(SignalReading {
            kind: SignalKind::Rsi,
            score: self.score(rsi),
            weight: self.weight,
            values: [rsi, self.oversold, self.overbought],
            periods: [self.period, 0],
        })
    }

    /// Score of an RSI value (see the type's documentation).
    pub fn score(&self, rsi: f64) -> f64 {
        if rsi < self.oversold {
            ((self.oversold - rsi) / self.oversold).min(1.0)
        } else if rsi > self.overbought {
            -((rsi - self.overbought) / (100.0 - self.overbought)).min(1.0)
        } else {
            0.0
        }
    }
}

/// Text after the `name score: ` prefix.
pub(super) fn describe(r: &SignalReading, s: &mut String) -> fmt::Result {
    let [rsi, oversold, overbought] = r.values;
    let n = r.periods[0];
    if rsi < oversold {
        write!(s, "RSI({n}) {rsi:.1} below oversold {oversold:.1}")
    } else if rsi > overbought {
        write!(s, "RSI({n}) {rsi:.1} above overbought {overbought:.1}")
    } else {
        write!(
            s,
            "RSI({n}) {rsi:.1} between oversold {oversold:.1} and overbought {overbought:.1}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(g: &mut Rsi, closes: &[f64]) -> Vec<Option<f64>> {
        closes
            .iter()
            .map(|&c| g.update(c).map(|r| r.values[0]))
            .collect()
    }

    #[test]
    fn hand_checked_period_2() {
        let mut g = Rsi::new(2, 30.0, 70.0, 1.0);
        assert_eq!(g.warmup_bars(), 3);
        // changes +1, +1: seed gain 1, loss 0 -> RSI 100
        // -1: gain (1·1 + 0)/2 = 0.5, loss (0·1 + 1)/2 = 0.5 -> RSI 50
        // +2: gain (0.5 + 2)/2 = 1.25, loss (0.5 + 0)/2 = 0.25 -> 100·1.25/1.5 = 83.33
        let got = run(&mut g, &[10.0, 11.0, 12.0, 11.0, 13.0]);
        assert_eq!(got[..4], [None, None, Some(100.0), Some(50.0)]);
        let rsi = got[4].unwrap();
        assert!((rsi - 250.0 / 3.0).abs() < 1e-12, "{rsi}");
        // 83.33 above 70: −(83.33 − 70)/30 = −0.4444
        let r = g.update(13.0).unwrap(); // gain 0.625, loss 0.125 -> 83.33 again
        assert!((r.score + 4.0 / 9.0).abs() < 1e-12, "{}", r.score);
        assert_eq!(r.describe(), "rsi -0.44: RSI(2) 83.3 above overbought 70.0");
    }

    #[test]
    fn flat_closes_have_no_opinion() {
        let mut g = Rsi::new(3, 30.0, 70.0, 1.0);
        let got = run(&mut g, &[5.0; 6]);
        assert_eq!(got, [None, None, None, Some(50.0), Some(50.0), Some(50.0)]);
        assert_eq!(g.score(50.0), 0.0);
    }

    #[test]
    fn score_ramps_linearly_outside_the_levels() {
        let g = Rsi::new(14, 30.0, 70.0, 1.0);
        let cases = [
            (0.0, 1.0),
            (15.0, 0.5),
            (30.0, 0.0),
            (50.0, 0.0),
            (70.0, 0.0),
            (85.0, -0.5),
            (100.0, -1.0),
        ];
        for (rsi, want) in cases {
            assert!(
                (g.score(rsi) - want).abs() < 1e-12,
                "rsi {rsi}: {}",
                g.score(rsi)
            );
        }
    }

    /// Against Wilder's averages written out as explicit weighted sums
    /// (seed · (1 − 1/n)^(t−n) + Σ (1/n)(1 − 1/n)^(t−j) · x_j), recomputed
    /// from scratch at every bar of a pseudo-random walk.
    #[test]
    fn matches_closed_form_wilder_averages() {
        let mut x = 100.0_f64;
        let mut state = 0x1234_5678_9abc_def1_u64;
        let closes: Vec<f64> = (0..400)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                x += ((state % 1001) as f64 - 500.0) * 0.002;
                x
            })
            .collect();
        let n = 14usize;
        let a = 1.0 / n as f64;
        let gains: Vec<f64> = closes.windows(2).map(|w| (w[1] - w[0]).max(0.0)).collect();
        let losses: Vec<f64> = closes.windows(2).map(|w| (w[0] - w[1]).max(0.0)).collect();
        // change j (0-based) is between closes j and j + 1
        let wilder = |v: &[f64], t: usize| {
            let seed = v[..n].iter().sum::<f64>() / n as f64;
            let tail: f64 = (n..=t)
                .map(|j| a * (1.0 - a).powi((t - j) as i32) * v[j])
                .sum();
            seed * (1.0 - a).powi((t + 1 - n) as i32) + tail
        };
        let mut g = Rsi::new(n as u32, 30.0, 70.0, 1.0);
        for (i, &c) in closes.iter().enumerate() {
            let r = g.update(c);
            if i < n {
                assert!(r.is_none(), "close {i}");
                continue;
            }
            let t = i - 1; // last change
            let (ag, al) = (wilder(&gains, t), wilder(&losses, t));
            let want = 100.0 * ag / (ag + al);
            let r = r.unwrap();
            assert!(
                (r.values[0] - want).abs() < 1e-9,
                "close {i}: {} vs {want}",
                r.values[0]
            );
            assert!((r.score - g.score(want)).abs() < 1e-9);
        }
    }
}

//! Bollinger bands.

use std::fmt::{self, Write};

use serde::{Deserialize, Serialize};

use super::{Price, SignalKind, SignalReading};

/// What a checkpoint keeps of a [`Bollinger`]: the ring buffer in slot order
/// with its `head`, the shift and the two sums, all `f64` as IEEE-754 bits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct BollingerState {
    pub window: Vec<u64>,
    pub head: usize,
    pub count: usize,
    pub shift: u64,
    pub sum: u64,
    pub sum_sq: u64,
}

/// Bollinger bands, John Bollinger (1980s; *Bollinger on Bollinger Bands*,
/// 2001), on closes, in `f64` (an indicator; exactness is not needed):
/// middle = SMA(n), σ = population standard deviation of the same `n` closes,
/// bands `middle ± k·σ`.
///
/// Score (mean reversion), 0 inside the bands and a linear ramp outside:
/// - below the lower band: `+min(1, (lower − close) / (k·σ))`;
/// - above the upper band: `−min(1, (close − upper) / (k·σ))`;
/// - otherwise (or when σ = 0) 0.
///
/// In terms of %b = `(close − lower) / (upper − lower)` the score is 0 for
/// 0 ≤ %b ≤ 1 and reaches ±1 at %b = −0.5 / 1.5, half a band width beyond
/// the band (2·k·σ from the middle). Continuous and monotone decreasing in
/// the close.
///
/// Numerics: rolling sums of `close − K` and `(close − K)²` with a shift `K`
/// near the mean (the shifted-data algorithm, Chan, Golub & LeVeque, "Algorithms
/// for computing the sample variance", 1983), so prices far from zero do not
/// cancel catastrophically; every `n` bars the sums and `K` are recomputed
/// exactly from the window (two passes, amortised O(1) per bar), so rounding
/// error never accumulates beyond one window.
///
/// Warm-up: `period` closes. Reading values: `[close, lower, upper]`.
#[derive(Clone, Debug)]
pub struct Bollinger {
    period: u32,
    n: f64,
    k: f64,
    weight: f64,
    /// Ring buffer of the last `period` closes; `head` is the oldest once full.
    window: Box<[f64]>,
    head: usize,
    /// Closes seen, saturating at `period`.
    count: usize,
    /// Shift `K` and the sums of `close − K` and `(close − K)²` over the window.
    shift: f64,
    sum: f64,
    sum_sq: f64,
}

impl Bollinger {
    /// Change the weight of its readings (a strategy reload that changed
    /// nothing else keeps the generator's state).
    pub(crate) fn set_weight(&mut self, weight: f64) {
        self.weight = weight;
    }

    /// Bands over `period` bars (raised to at least 2), `k` standard
    /// deviations wide (> 0); `weight` as in [`combine`](super::combine).
    pub fn new(period: u32, k: f64, weight: f64) -> Self {
        let period = period.max(2);
        Self {
            period,
            n: f64::from(period),
            k,
            weight,
            window: vec![0.0; period as usize].into_boxed_slice(),
            head: 0,
            count: 0,
            shift: 0.0,
            sum: 0.0,
            sum_sq: 0.0,
        }
    }

    /// The state a checkpoint stores.
    pub(crate) fn state(&self) -> BollingerState {
        BollingerState {
            window: self.window.iter().map(|x| x.to_bits()).collect(),
            head: self.head,
            count: self.count,
            shift: self.shift.to_bits(),
            sum: self.sum.to_bits(),
            sum_sq: self.sum_sq.to_bits(),
        }
    }

    /// Take a checkpoint's state (its buffer must have this generator's length).
    pub(crate) fn restore(&mut self, st: BollingerState) -> Result<(), String> {
        let cap = self.window.len();
        if st.window.len() != cap || st.head >= cap || st.count > cap {
            return Err(format!(
                "bollinger state has a window of {} closes (head {}, count {}), expected {cap}",
                st.window.len(),
                st.head,
                st.count
            ));
        }
        self.window = st.window.into_iter().map(f64::from_bits).collect();
        self.head = st.head;
        self.count = st.count;
        self.shift = f64::from_bits(st.shift);
        self.sum = f64::from_bits(st.sum);
        self.sum_sq = f64::from_bits(st.sum_sq);
        Ok(())
    }

    /// Closes before the first reading: `period`.
    pub fn warmup_bars(&self) -> u32 {
        self.period
    }

    /// Feed one close; `None` until warmed up.
    #[inline]
    pub fn update(&mut self, close: f64) -> Option<SignalReading> {
        if self.count == 0 {
            self.shift = close;
        }
        if self.count == self.window.len() {
            let d = self.window[self.head] - self.shift;
            self.sum -= d;
            self.sum_sq -= d * d;
        } else {
            self.count += 1;
        }
        self.window[self.head] = close;
        let d = close - self.shift;
        self.sum += d;
        self.sum_sq += d * d;
        self.head += 1;
        if self.head == self.window.len() {
            self.head = 0;
            self.recompute();
        }
        if self.count < self.window.len() {
            return None;
        }

        let mean_d = self.sum / self.n;
        let sigma = (self.sum_sq / self.n - mean_d * mean_d).max(0.0).sqrt();
        let middle = self.shift + mean_d;
        let width = self.k * sigma;
        let (lower, upper) = (middle - width, middle + width);
        Some(SignalReading {
            kind: SignalKind::Bollinger,
            score: Self::score(close, lower, upper),
            weight: self.weight,
            values: [close, lower, upper],
            periods: [self.period, 0],
        })
    }

    /// Score of a close against bands `lower..=upper` whose half-width is k·σ
    /// (see [`Bollinger`]): 0 inside, `±min(1, distance beyond the band / (k·σ))`
    /// outside, 0 when the bands have no width.
    pub fn score(close: f64, lower: f64, upper: f64) -> f64 {
        let width = (upper - lower) / 2.0;
        if width > 0.0 {
            if close < lower {
                ((lower - close) / width).min(1.0)
            } else if close > upper {
                -((close - upper) / width).min(1.0)
            } else {
                0.0
            }
        } else {
            0.0 // no width (flat window) or NaN
        }
    }

    /// Exact two-pass recomputation of the shift and the sums from the
    /// (full) window.
    #[cold]
    fn recompute(&mut self) {
        let shift = self.window.iter().sum::<f64>() / self.n;
        let (mut sum, mut sum_sq) = (0.0, 0.0);
        for &x in self.window.iter() {
            let d = x - shift;
            sum += d;
            sum_sq += d * d;
        }
        (self.shift, self.sum, self.sum_sq) = (shift, sum, sum_sq);
    }
}

/// Text after the `name score: ` prefix.
pub(super) fn describe(r: &SignalReading, s: &mut String) -> fmt::Result {
    let [close, lower, upper] = r.values;
    let n = r.periods[0];
    let (c, lo, up) = (Price(close), Price(lower), Price(upper));
    if close < lower {
        write!(
            s,
            "close {c} below the lower band {lo} of BB({n}) (upper {up})"
        )
    } else if close > upper {
        write!(
            s,
            "close {c} above the upper band {up} of BB({n}) (lower {lo})"
        )
    } else {
        write!(s, "close {c} inside BB({n}) {lo}..{up}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked_bands_and_scores() {
        let mut g = Bollinger::new(4, 1.0, 1.0);
        assert_eq!(g.warmup_bars(), 4);
        for c in [2.0, 2.0, 2.0] {
            assert!(g.update(c).is_none());
        }
        // window 2, 2, 2, 10: mean 4, variance (4+4+4+36)/4 = 12, σ = √12
        let r = g.update(10.0).unwrap();
        let s = 12f64.sqrt();
        assert!((r.values[1] - (4.0 - s)).abs() < 1e-12);
        assert!((r.values[2] - (4.0 + s)).abs() < 1e-12);
        // (10 − (4 + √12)) / √12 = 6/√12 − 1 = 0.732
        assert!((r.score + (6.0 / s - 1.0)).abs() < 1e-12, "{}", r.score);
        assert_eq!(
            r.describe(),
            "bollinger -0.73: close 10.0000 above the upper band 7.46410 of BB(4) (lower 0.535898)"
        );
        // window 2, 2, 10, −20: mean −1.5, variance (12.25·2 + 132.25 + 342.25)/4 = 124.75
        let r = g.update(-20.0).unwrap();
        let s = 124.75f64.sqrt();
        let lower = -1.5 - s;
        assert!((r.values[1] - lower).abs() < 1e-12);
        // (lower − close) / σ = 18.5/11.17 − 1 = 0.656
        assert!((r.score - (lower + 20.0) / s).abs() < 1e-12, "{}", r.score);
        // flat window: σ = 0, no opinion
        let mut g = Bollinger::new(3, 2.0, 1.0);
        let last = [7.5; 5]
            .map(|c| g.update(c))
            .into_iter()
            .flatten()
            .last()
            .unwrap();
        assert_eq!((last.score, last.values), (0.0, [7.5, 7.5, 7.5]));
    }

    #[test]
    fn band_score_ramps_to_one_half_a_band_width_outside() {
        // bands 90..110 (middle 100, k·σ = 10): ±1 at 80 and 120.
        let cases = [
            (60.0, 1.0),
            (80.0, 1.0),
            (85.0, 0.5),
            (89.0, 0.1),
            (90.0, 0.0),
            (100.0, 0.0),
            (110.0, 0.0),
            (112.5, -0.25),
            (120.0, -1.0),
            (150.0, -1.0),
        ];
        for (close, want) in cases {
            let got = Bollinger::score(close, 90.0, 110.0);
            assert!((got - want).abs() < 1e-12, "close {close}: {got}");
        }
        let mut prev = f64::INFINITY;
        for i in 0..=800 {
            let s = Bollinger::score(60.0 + f64::from(i) * 0.1, 90.0, 110.0);
            assert!(s <= prev, "not monotone at step {i}");
            prev = s;
        }
        assert_eq!(Bollinger::score(5.0, 7.0, 7.0), 0.0);
    }

    /// Rolling values against a naive two-pass recomputation at every bar, on
    /// 200,000 bars of a random walk far from zero (prices ~100,000 moving by
    /// cents), where naive rolling sums of x and x² would drift visibly.
    #[test]
    fn matches_naive_two_pass_without_drift() {
        let mut x = 100_000.0_f64;
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let closes: Vec<f64> = (0..200_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                x += ((state % 201) as f64 - 100.0) * 0.01;
                (x * 100.0).round() / 100.0
            })
            .collect();
        let (n, k) = (20usize, 2.0);
        let mut g = Bollinger::new(n as u32, k, 1.0);
        let mut worst = 0.0_f64;
        for (i, &c) in closes.iter().enumerate() {
            let r = g.update(c);
            if i + 1 < n {
                assert!(r.is_none());
                continue;
            }
            let w = &closes[i + 1 - n..=i];
            let mean = w.iter().sum::<f64>() / n as f64;
            let sigma = (w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
            let r = r.unwrap();
            let err = (r.values[1] - (mean - k * sigma))
                .abs()
                .max((r.values[2] - (mean + k * sigma)).abs());
            worst = worst.max(err);
            let want = Bollinger::score(c, mean - k * sigma, mean + k * sigma);
            assert!(
                (r.score - want).abs() < 1e-6,
                "bar {i}: {} vs {want}",
                r.score
            );
        }
        assert!(worst < 1e-8, "largest band error {worst}");
    }
}

//! Momentum: rate of change of the close over a look-back.

use std::fmt::{self, Write};

use serde::{Deserialize, Serialize};

use super::{SignalKind, SignalReading};

/// What a checkpoint keeps of a [`Momentum`]: the ring buffer (closes as
/// IEEE-754 bits) in slot order with its `head`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MomentumState {
    pub window: Vec<u64>,
    pub head: usize,
    pub count: usize,
}

/// Momentum as the rate of change (ROC), the standard technical-analysis
/// definition, in `f64` (an indicator; exactness is not needed):
///
/// `ROC = (close / close_{n bars ago} − 1) · 100`, percent.
///
/// Score (trend following): `clamp(ROC / thresholdPct, −1, 1)`, so the
/// signal reaches full strength at a move of `thresholdPct` percent, except
/// inside the dead band `|ROC| < thresholdPct / 4`, where it is 0: small
/// moves are noise, not an opinion. (The score therefore jumps from 0 to
/// ±0.25 at the edge of the dead band.) A non-positive past close gives
/// ROC 0.
///
/// Warm-up: `period + 1` closes. Reading values: `[ROC %, thresholdPct %, 0]`.
#[derive(Clone, Debug)]
pub struct Momentum {
    period: u32,
    threshold_pct: f64,
    weight: f64,
    /// Ring buffer of the last `period` closes; `head` is the oldest once full.
    window: Box<[f64]>,
    head: usize,
    /// Closes seen, saturating at `period`.
    count: usize,
}

impl Momentum {
    /// Change the weight of its readings (a strategy reload that changed
    /// nothing else keeps the generator's state).
    pub(crate) fn set_weight(&mut self, weight: f64) {
        self.weight = weight;
    }

    /// ROC over `period` bars (raised to at least 1) reaching full strength
    /// at `threshold_pct` percent (> 0); `weight` as in
    /// [`combine`](super::combine).
    pub fn new(period: u32, threshold_pct: f64, weight: f64) -> Self {
        let period = period.max(1);
        Self {
            period,
            threshold_pct,
            weight,
            window: vec![0.0; period as usize].into_boxed_slice(),
            head: 0,
            count: 0,
        }
    }

    /// The state a checkpoint stores.
    pub(crate) fn state(&self) -> MomentumState {
        MomentumState {
            window: self.window.iter().map(|x| x.to_bits()).collect(),
            head: self.head,
            count: self.count,
        }
    }

    /// Take a checkpoint's state (its buffer must have this generator's length).
    pub(crate) fn restore(&mut self, st: MomentumState) -> Result<(), String> {
        let cap = self.window.len();
        if st.window.len() != cap || st.head >= cap || st.count > cap {
            return Err(format!(
                "momentum state has a window of {} closes (head {}, count {}), expected {cap}",
                st.window.len(),
                st.head,
                st.count
            ));
        }
        self.window = st.window.into_iter().map(f64::from_bits).collect();
        self.head = st.head;
        self.count = st.count;
        Ok(())
    }

    /// Closes before the first reading: `period + 1`.
    pub fn warmup_bars(&self) -> u32 {
        self.period + 1
    }

    /// Feed one close; `None` until warmed up.
    #[inline]
    pub fn update(&mut self, close: f64) -> Option<SignalReading> {
        let full = self.count == self.window.len();
        let past = std::mem::replace(&mut self.window[self.head], close);
        self.head += 1;
        if self.head == self.window.len() {
            self.head = 0;
        }
        if !full {
            self.count += 1;
            return None;
        }
        let roc = if past > 0.0 {
            (close / past - 1.0) * 100.0
        } else {
            0.0
        };
        Some(SignalReading {
            kind: SignalKind::Momentum,
            score: self.score(roc),
            weight: self.weight,
            values: [roc, self.threshold_pct, 0.0],
            periods: [self.period, 0],
        })
    }

    /// Score of a rate of change in percent (see the type's documentation).
    pub fn score(&self, roc_pct: f64) -> f64 {
        let t = self.threshold_pct;
        if roc_pct.abs() < t / 4.0 || t <= 0.0 {
            0.0
        } else {
            (roc_pct / t).clamp(-1.0, 1.0)
        }
    }
}

/// Text after the `name score: ` prefix.
pub(super) fn describe(r: &SignalReading, s: &mut String) -> fmt::Result {
    let [roc, t, _] = r.values;
    let n = r.periods[0];
    if r.score == 0.0 {
        write!(
            s,
            "ROC({n}) {roc:+.2}% inside the dead band ±{:.2}%",
            t / 4.0
        )
    } else {
        write!(s, "ROC({n}) {roc:+.2}% (full strength at ±{t:.2}%)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_checked_rate_of_change_and_scores() {
        let mut g = Momentum::new(2, 4.0, 1.5);
        assert_eq!(g.warmup_bars(), 3);
        assert!(g.update(100.0).is_none());
        assert!(g.update(200.0).is_none());
        // 102 vs 100 two bars ago: +2 %, threshold 4 -> 0.5
        let r = g.update(102.0).unwrap();
        assert!((r.values[0] - 2.0).abs() < 1e-12);
        assert!((r.score - 0.5).abs() < 1e-12);
        assert_eq!(r.weight, 1.5);
        assert_eq!(
            r.describe(),
            "momentum +0.50: ROC(2) +2.00% (full strength at ±4.00%)"
        );
        // 150 vs 200: −25 % -> clamped to −1
        assert_eq!(g.update(150.0).unwrap().score, -1.0);
        // 102.5 vs 102: +0.49 % < 4/4 -> dead band
        let r = g.update(102.5).unwrap();
        assert_eq!(r.score, 0.0);
        assert_eq!(
            r.describe(),
            "momentum +0.00: ROC(2) +0.49% inside the dead band ±1.00%"
        );
        // edge of the dead band: exactly 1 % is an opinion of 0.25
        assert_eq!(g.score(1.0), 0.25);
        assert_eq!(g.score(-0.999), 0.0);
    }

    /// Against a naive recomputation from the whole series on a deterministic
    /// pseudo-random walk.
    #[test]
    fn matches_naive_recomputation() {
        let mut x = 1000.0_f64;
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let closes: Vec<f64> = (0..5000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                x *= 1.0 + ((state % 2001) as f64 - 1000.0) * 1e-5;
                x
            })
            .collect();
        for period in [1, 7, 30] {
            let mut g = Momentum::new(period, 0.5, 1.0);
            let p = period as usize;
            for (i, &c) in closes.iter().enumerate() {
                let r = g.update(c);
                if i < p {
                    assert!(r.is_none());
                    continue;
                }
                let roc = (closes[i] / closes[i - p] - 1.0) * 100.0;
                let want = if roc.abs() < 0.125 {
                    0.0
                } else {
                    (roc / 0.5).clamp(-1.0, 1.0)
                };
                let r = r.unwrap();
                assert_eq!(r.values[0], roc, "bar {i}");
                assert_eq!(r.score, want, "bar {i}");
            }
        }
    }
}

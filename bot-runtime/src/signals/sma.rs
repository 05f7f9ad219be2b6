//! Simple-moving-average crossover, exact in `Decimal`.

use std::cmp::Ordering;
use std::fmt::{self, Write};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Price, SignalKind, SignalReading, decimal_to_f64};

/// What a checkpoint keeps of an [`SmaCrossover`]: the ring buffer as it is
/// (slot order, `head`), the exact window sums and the last comparison.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SmaState {
    pub window: Vec<Decimal>,
    pub head: usize,
    pub count: usize,
    pub fast_sum: Decimal,
    pub slow_sum: Decimal,
    /// Sign of `fast − slow` at the previous close (−1, 0, 1), once known.
    pub prev: Option<i8>,
}

/// Crossover of a fast and a slow simple moving average of closes (the
/// classic dual-moving-average rule; SMA(n) = arithmetic mean of the last n
/// closes).
///
/// **Exact.** The last `max(fast, slow)` closes are kept in a ring buffer of
/// `Decimal`s, and the two window sums are updated by adding the new close and
/// subtracting the one leaving the window, which is exact in decimal
/// arithmetic (no drift, ever). The averages are compared without division:
/// `fast_sum / fast <=> slow_sum / slow` ⇔ `fast_sum · slow <=> slow_sum · fast`
/// (both periods are positive). The products are exact as long as they fit
/// the 96-bit `Decimal` mantissa at the sums' scale, i.e. for any real price.
///
/// With `rel[i]` the comparison of the averages at the close of bar `i`:
/// - cross up at `i` (score +1): `fast[i-1] <= slow[i-1]` and `fast[i] > slow[i]`;
/// - cross down at `i` (score −1): `fast[i-1] >= slow[i-1]` and `fast[i] < slow[i]`;
/// - otherwise score 0 (a reading with no opinion).
///
/// The non-strict `<=`/`>=` make a cross *through* a tie count (below → equal
/// → above is a cross up on the bar that leaves the tie); the BTC-PERP
/// 2022-01 parity reference has 13 exact ties and needs this rule.
///
/// Warm-up: the first comparison needs `slow` closes, a cross needs one more,
/// so the first reading comes with close number `slow + 1`.
///
/// Reading values: `[fast SMA, slow SMA, 0]` as `f64` (text only).
#[derive(Clone, Debug)]
pub struct SmaCrossover {
    fast: u32,
    slow: u32,
    fast_n: Decimal,
    slow_n: Decimal,
    /// Ring buffer of the last `window.len()` closes; `head` is the next slot
    /// to write, i.e. the oldest close once the buffer is full.
    window: Box<[Decimal]>,
    head: usize,
    /// Offsets from `head` of the closes leaving the fast and slow windows.
    fast_off: usize,
    slow_off: usize,
    /// Closes seen, saturating at `window.len()`.
    count: usize,
    fast_sum: Decimal,
    slow_sum: Decimal,
    /// `fast_avg.cmp(slow_avg)` at the previous close, once both windows were full.
    prev: Option<Ordering>,
    weight: f64,
}

impl SmaCrossover {
    /// Change the weight of its readings (a strategy reload that changed
    /// nothing else keeps the generator's state).
    pub(crate) fn set_weight(&mut self, weight: f64) {
        self.weight = weight;
    }

    /// A crossover of SMA(`fast`) over SMA(`slow`), periods in bars (raised
    /// to at least 1; `fast < slow` is expected but not required).
    /// `weight` is the reading's weight in [`combine`](super::combine).
    pub fn new(fast: u32, slow: u32, weight: f64) -> Self {
        let fast = fast.max(1);
        let slow = slow.max(1);
        let cap = fast.max(slow) as usize;
        Self {
            fast,
            slow,
            fast_n: Decimal::from(fast),
            slow_n: Decimal::from(slow),
            window: vec![Decimal::ZERO; cap].into_boxed_slice(),
            head: 0,
            fast_off: cap - fast as usize,
            slow_off: cap - slow as usize,
            count: 0,
            fast_sum: Decimal::ZERO,
            slow_sum: Decimal::ZERO,
            prev: None,
            weight,
        }
    }

    /// The state a checkpoint stores.
    pub(crate) fn state(&self) -> SmaState {
        SmaState {
            window: self.window.to_vec(),
            head: self.head,
            count: self.count,
            fast_sum: self.fast_sum,
            slow_sum: self.slow_sum,
            prev: self.prev.map(|o| o as i8),
        }
    }

    /// Take a checkpoint's state (its buffer must have this crossover's length).
    pub(crate) fn restore(&mut self, st: SmaState) -> Result<(), String> {
        let cap = self.window.len();
        if st.window.len() != cap || st.head >= cap || st.count > cap {
            return Err(format!(
                "smaCrossover state has a window of {} closes (head {}, count {}), expected {cap}",
                st.window.len(),
                st.head,
                st.count
            ));
        }
        self.prev = match st.prev {
            None => None,
            Some(-1) => Some(Ordering::Less),
            Some(0) => Some(Ordering::Equal),
            Some(1) => Some(Ordering::Greater),
            Some(x) => return Err(format!("smaCrossover prev must be -1, 0 or 1, found {x}")),
        };
        self.window = st.window.into_boxed_slice();
        self.head = st.head;
        self.count = st.count;
        self.fast_sum = st.fast_sum;
        self.slow_sum = st.slow_sum;
        Ok(())
    }

    /// Closes before the first reading: `max(fast, slow) + 1`.
    pub fn warmup_bars(&self) -> u32 {
        self.fast.max(self.slow) + 1
    }

    /// Feed one close (quote currency); `None` until warmed up, then a reading
    /// every bar (score +1 cross up, −1 cross down, 0 otherwise).
    #[inline]
    pub fn update(&mut self, close: Decimal) -> Option<SignalReading> {
        let cap = self.window.len();
        // Subtract the closes leaving the windows before their slot is reused.
        if self.count >= self.fast as usize {
            self.fast_sum -= self.window[wrap(self.head + self.fast_off, cap)];
        }
        if self.count >= self.slow as usize {
            self.slow_sum -= self.window[wrap(self.head + self.slow_off, cap)];
        }
        self.fast_sum += close;
        self.slow_sum += close;
        self.window[self.head] = close;
        self.head = wrap(self.head + 1, cap);
        if self.count < cap {
            self.count += 1;
            if self.count < cap {
                return None;
            }
        }

        let rel = match (
            self.fast_sum.checked_mul(self.slow_n),
            self.slow_sum.checked_mul(self.fast_n),
        ) {
            (Some(a), Some(b)) => a.cmp(&b),
            // Beyond a decimal's range (not with validated periods): compare the means.
            _ => (self.fast_sum / self.fast_n).cmp(&(self.slow_sum / self.slow_n)),
        };
        let prev = self.prev.replace(rel)?;
        let score = match rel {
            Ordering::Greater if prev != Ordering::Greater => 1.0,
            Ordering::Less if prev != Ordering::Less => -1.0,
            _ => 0.0,
        };
        Some(SignalReading {
            kind: SignalKind::SmaCrossover,
            score,
            weight: self.weight,
            values: [
                decimal_to_f64(self.fast_sum) / f64::from(self.fast),
                decimal_to_f64(self.slow_sum) / f64::from(self.slow),
                0.0,
            ],
            periods: [self.fast, self.slow],
        })
    }
}

/// `i mod cap` for `i < 2 · cap`.
#[inline]
fn wrap(i: usize, cap: usize) -> usize {
    if i >= cap { i - cap } else { i }
}

/// Text after the `name score: ` prefix.
pub(super) fn describe(r: &SignalReading, s: &mut String) -> fmt::Result {
    let [fast, slow, _] = r.values;
    let [fp, sp] = r.periods;
    let (fast, slow) = (Price(fast), Price(slow));
    if r.score > 0.0 {
        write!(
            s,
            "fast SMA({fp}) {fast} crossed above slow SMA({sp}) {slow}"
        )
    } else if r.score < 0.0 {
        write!(
            s,
            "fast SMA({fp}) {fast} crossed below slow SMA({sp}) {slow}"
        )
    } else {
        let rel = match r.values[0].partial_cmp(&r.values[1]) {
            Some(Ordering::Greater) => "above",
            Some(Ordering::Less) => "below",
            _ => "level with",
        };
        write!(
            s,
            "fast SMA({fp}) {fast} {rel} slow SMA({sp}) {slow}, no cross"
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::str::FromStr;

    use paperbot_crds::{SignalsSpec, SmaCrossoverSpec};
    use proptest::prelude::*;
    use rust_decimal::Decimal;
    use rust_decimal_macros::dec;

    use super::*;
    use crate::signals::SignalSet;

    fn spec(fast: u32, slow: u32) -> SignalsSpec {
        SignalsSpec {
            sma_crossover: Some(SmaCrossoverSpec {
                fast_period: fast,
                slow_period: slow,
                weight: None,
            }),
            ..Default::default()
        }
    }

    /// Naive O(n · slow) reference: window sums recomputed from scratch at
    /// every bar, compared by cross-multiplication. `strict` uses `<`/`>` for
    /// the previous bar instead of `<=`/`>=`. `None` before the first possible
    /// cross (bar index `slow`).
    fn naive_scores(closes: &[Decimal], fast: usize, slow: usize, strict: bool) -> Vec<Option<i8>> {
        let rel = |i: usize| {
            let f: Decimal = closes[i + 1 - fast..=i].iter().sum();
            let s: Decimal = closes[i + 1 - slow..=i].iter().sum();
            (f * Decimal::from(slow)).cmp(&(s * Decimal::from(fast)))
        };
        (0..closes.len())
            .map(|i| {
                if i < slow {
                    return None;
                }
                let (p, c) = (rel(i - 1), rel(i));
                let up = if strict {
                    p == Ordering::Less
                } else {
                    p != Ordering::Greater
                };
                let down = if strict {
                    p == Ordering::Greater
                } else {
                    p != Ordering::Less
                };
                Some(if up && c == Ordering::Greater {
                    1
                } else if down && c == Ordering::Less {
                    -1
                } else {
                    0
                })
            })
            .collect()
    }

    fn set_scores(closes: &[Decimal], fast: u32, slow: u32) -> Vec<Option<i8>> {
        let mut set = SignalSet::new(&spec(fast, slow));
        closes
            .iter()
            .map(|&c| match set.update(c) {
                [] => None,
                [r] => Some(r.score as i8),
                more => panic!("{} readings from one generator", more.len()),
            })
            .collect()
    }

    #[test]
    fn hand_checked_crosses_through_ties_and_warmup() {
        // fast SMA(1) = the close, slow SMA(3); comparisons by hand.
        let closes = [
            dec!(3),
            dec!(2),
            dec!(1),    // slow 6/3 = 2 > fast 1: first comparison, no reading yet
            dec!(2),    // slow 5/3 < fast 2: cross up
            dec!(1),    // slow 4/3 > fast 1: cross down
            dec!(2),    // slow 5/3 < fast 2: cross up
            dec!(1.5),  // slow 4.5/3 = 1.5 = fast: exact tie, no cross
            dec!(2.0),  // slow 5.5/3 < fast 2, previous bar a tie: cross up
            dec!(2.00), // slow 5.5/3 < fast 2, still above: no cross
        ];
        let mut g = SmaCrossover::new(1, 3, 1.0);
        assert_eq!(g.warmup_bars(), 4);
        let got: Vec<Option<f64>> = closes
            .iter()
            .map(|&c| g.update(c).map(|r| r.score))
            .collect();
        assert_eq!(
            got,
            [
                None,
                None,
                None,
                Some(1.0),
                Some(-1.0),
                Some(1.0),
                Some(0.0),
                Some(1.0),
                Some(0.0)
            ]
        );
        let r = g.update(dec!(1.25)).unwrap(); // window 2, 2, 1.25: slow 1.75 > fast
        assert_eq!(r.score, -1.0);
        assert_eq!(r.values, [1.25, 1.75, 0.0]);
        assert_eq!(r.periods, [1, 3]);
        assert_eq!(
            r.describe(),
            "sma_crossover -1.00: fast SMA(1) 1.25000 crossed below slow SMA(3) 1.75000"
        );
    }

    proptest! {
        /// Prices drawn from a few values with mixed scales produce many exact
        /// ties; the rolling exact sums must agree with the naive recomputation
        /// on every bar.
        #[test]
        fn matches_naive_recomputation(
            idx in proptest::collection::vec(0usize..6, 0..120),
            fast in 1u32..6,
            extra in 1u32..8,
        ) {
            let prices = [dec!(1), dec!(1.5), dec!(2.00), dec!(2.5), dec!(3.000), dec!(0.25)];
            let closes: Vec<Decimal> = idx.iter().map(|&i| prices[i]).collect();
            let slow = fast + extra;
            prop_assert_eq!(
                set_scores(&closes, fast, slow),
                naive_scores(&closes, fast as usize, slow as usize, false)
            );
        }
    }

    struct Bar {
        time: String,
        open: Decimal,
        close: Decimal,
    }

    fn shared_dir() -> PathBuf {
        // ../shared beside the repository (CI clones it there too).
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared"))
    }

    fn read_lines(path: PathBuf) -> Vec<String> {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (these tests need ../shared beside the repository)",
                path.display()
            )
        });
        text.lines().skip(1).map(str::to_owned).collect()
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    /// (entry time, entry price, exit time, exit price)
    type Trip = (String, Decimal, String, Decimal);

    /// Long-only trades from per-bar scores: a cross up while flat buys at the
    /// next bar's open, a cross down while long sells at the next bar's open;
    /// a signal on the last bar is not filled. Returns the round trips and the
    /// still-open entry.
    fn long_only_trades(
        bars: &[Bar],
        scores: &[Option<i8>],
    ) -> (Vec<Trip>, Option<(String, Decimal)>) {
        let mut trips = Vec::new();
        let mut entry: Option<(String, Decimal)> = None;
        let mut pending: Option<i8> = None;
        for (bar, score) in bars.iter().zip(scores) {
            match pending.take() {
                Some(1) => entry = Some((bar.time.clone(), bar.open)),
                Some(_) => {
                    let (t, p) = entry.take().expect("sell while flat");
                    trips.push((t, p, bar.time.clone(), bar.open));
                }
                None => {}
            }
            match score {
                Some(1) if entry.is_none() => pending = Some(1),
                Some(-1) if entry.is_some() => pending = Some(-1),
                _ => {}
            }
        }
        (trips, entry)
    }

    /// Signal side of the parity test: SMA(10/30) through `SignalSet` on the
    /// BTC-PERP 2022-01 minute file gives exactly the reference's 934 long-only
    /// round trips (times and prices row by row), its P&L, final cash and
    /// equity; a naive recomputation agrees on every bar, finds the 13 exact
    /// ties, and with strict comparisons gives the 921 trips the README warns of.
    #[test]
    fn parity_with_reference_btc_perp_2022_01() {
        let dir = shared_dir();
        let bars: Vec<Bar> = read_lines(dir.join("data/market/BTC-PERP_1m_ftx_2022-01.csv"))
            .iter()
            .map(|l| {
                let c: Vec<&str> = l.split(',').collect();
                Bar {
                    time: c[0].to_owned(),
                    open: d(c[1]),
                    close: d(c[4]),
                }
            })
            .collect();
        assert_eq!(bars.len(), 44_640);
        let closes: Vec<Decimal> = bars.iter().map(|b| b.close).collect();

        let scores = set_scores(&closes, 10, 30);
        assert_eq!(scores, naive_scores(&closes, 10, 30, false));
        let ties = (29..closes.len())
            .filter(|&i| {
                let f: Decimal = closes[i - 9..=i].iter().sum();
                let s: Decimal = closes[i - 29..=i].iter().sum();
                f * dec!(30) == s * dec!(10)
            })
            .count();
        assert_eq!(ties, 13);

        let (trips, open) = long_only_trades(&bars, &scores);
        let reference: Vec<Vec<String>> =
            read_lines(dir.join("bench/reference/sma-10-30_BTC-PERP_1m_ftx_2022-01.trades.csv"))
                .iter()
                .map(|l| l.split(',').map(str::to_owned).collect())
                .collect();
        assert_eq!(trips.len(), 934);
        assert_eq!(reference.len(), 934);
        let qty = dec!(0.1);
        let mut cash = dec!(100000);
        for (k, (t, r)) in trips.iter().zip(&reference).enumerate() {
            let want = (r[0].clone(), d(&r[1]), r[2].clone(), d(&r[3]));
            assert_eq!(*t, want, "round trip {k}");
            assert_eq!(d(&r[4]), qty, "round trip {k}");
            let pnl = (t.3 - t.1) * qty;
            assert_eq!(pnl, d(&r[5]), "round trip {k} pnl");
            cash += pnl;
        }
        let (_, open_price) = open.expect("one position still open");
        cash -= open_price * qty;
        assert_eq!(cash, dec!(94230.75));
        assert_eq!(cash + qty * closes[closes.len() - 1], dec!(98082.85));

        let strict = long_only_trades(&bars, &naive_scores(&closes, 10, 30, true)).0;
        assert_eq!(strict.len(), 921);
    }
}

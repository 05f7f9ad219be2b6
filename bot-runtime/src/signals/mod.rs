//! Signal generators: indicators on closes that each give a score in −1..=1.
//!
//! One [`SignalSet`] per symbol holds the configured generators of a
//! `StrategyConfig` (`spec.signals`). The engine feeds it the close of every
//! closed candle with [`SignalSet::update`] and gets back the readings of the
//! generators that are warmed up; [`combine`] turns them into a direction and
//! a confidence (0–100), and [`explain`] into the text of a decision record.
//!
//! | signal | score > 0 (bullish) | score < 0 (bearish) | first reading after |
//! |---|---|---|---|
//! | [`SmaCrossover`] | fast SMA crossed above slow: +1 | crossed below: −1 | `slow + 1` closes |
//! | [`Rsi`] (Wilder 1978) | RSI below `oversold` | RSI above `overbought` | `period + 1` closes |
//! | [`Momentum`] (rate of change) | ROC ≥ threshold / 4 | ROC ≤ −threshold / 4 | `period + 1` closes |
//! | [`Bollinger`] (Bollinger bands) | close below the lower band | close above the upper band | `period` closes |
//!
//! A score of exactly 0 means "no opinion". The SMA crossover is exact
//! (`Decimal` sums, compared without division); the other three use `f64`,
//! where a rounding error in the last digits cannot change a decision in any
//! way that matters.
//!
//! The per-candle path does not allocate: every buffer is sized in
//! [`SignalSet::new`], and readings are returned as a slice of a fixed
//! internal array. Text is built only by [`SignalReading::describe`], i.e.
//! when a decision is recorded.

mod bollinger;
mod combine;
mod momentum;
mod rsi;
mod sma;

use std::fmt;

use paperbot_crds::{DecimalString, SignalsSpec};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::types::MAX_SIGNAL_PERIOD;

pub use bollinger::Bollinger;
pub use combine::{Combined, combine, explain};
pub use momentum::Momentum;
pub use rsi::Rsi;
pub use sma::SmaCrossover;

/// Which generator produced a reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignalKind {
    /// Simple-moving-average crossover ([`SmaCrossover`]).
    SmaCrossover,
    /// Relative strength index, Wilder's smoothing ([`Rsi`]).
    Rsi,
    /// Rate of change over a look-back ([`Momentum`]).
    Momentum,
    /// Bollinger bands ([`Bollinger`]).
    Bollinger,
}

impl SignalKind {
    /// snake_case name used in decision texts: `"sma_crossover"`, `"rsi"`,
    /// `"momentum"`, `"bollinger"`.
    pub fn name(self) -> &'static str {
        match self {
            SignalKind::SmaCrossover => "sma_crossover",
            SignalKind::Rsi => "rsi",
            SignalKind::Momentum => "momentum",
            SignalKind::Bollinger => "bollinger",
        }
    }
}

impl fmt::Display for SignalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One generator's opinion on one closed candle.
///
/// Plain `Copy` data so that producing it costs no allocation; the text is
/// made later by [`describe`](Self::describe).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SignalReading {
    /// Which generator.
    pub kind: SignalKind,
    /// Opinion in −1..=1: > 0 bullish, < 0 bearish, exactly 0 = no opinion.
    pub score: f64,
    /// Weight of the generator (`spec.signals.<name>.weight`, default 1, > 0).
    pub weight: f64,
    /// Indicator values for the text only (`f64`, not for decisions):
    /// - SMA crossover: `[fast SMA, slow SMA, 0]`, quote currency;
    /// - RSI: `[rsi, oversold, overbought]`, all on the 0–100 scale;
    /// - momentum: `[ROC, thresholdPct, 0]`, percent;
    /// - Bollinger: `[close, lower band, upper band]`, quote currency.
    pub values: [f64; 3],
    /// Look-back lengths in bars, for the text: SMA crossover `[fast, slow]`;
    /// RSI, momentum and Bollinger `[period, 0]`.
    pub periods: [u32; 2],
}

impl SignalReading {
    /// A reading with no opinion; fills unused slots of fixed buffers.
    pub(crate) const EMPTY: SignalReading = SignalReading {
        kind: SignalKind::SmaCrossover,
        score: 0.0,
        weight: 0.0,
        values: [0.0; 3],
        periods: [0; 2],
    };

    /// One line of text: name, signed score with two decimals, and what the
    /// indicator saw, e.g.
    /// `sma_crossover +1.00: fast SMA(10) 46810.2 crossed above slow SMA(30) 46795.1`,
    /// `rsi +0.33: RSI(14) 20.0 below oversold 30.0`,
    /// `momentum -0.80: ROC(10) -0.80% (full strength at ±1.00%)`,
    /// `bollinger +0.25: close 46010.0 below the lower band 46100.3 of BB(20) (upper 46500.1)`.
    ///
    /// Allocates; call it only when a decision is recorded.
    pub fn describe(&self) -> String {
        use fmt::Write;
        let mut s = String::with_capacity(96);
        let _ = write!(s, "{} {:+.2}: ", self.kind.name(), self.score);
        let _ = match self.kind {
            SignalKind::SmaCrossover => sma::describe(self, &mut s),
            SignalKind::Rsi => rsi::describe(self, &mut s),
            SignalKind::Momentum => momentum::describe(self, &mut s),
            SignalKind::Bollinger => bollinger::describe(self, &mut s),
        };
        s
    }
}

/// What a checkpoint keeps of a [`SignalSet`]: the state of each configured
/// generator (absent for one that is not configured).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SignalsCheckpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sma_crossover: Option<sma::SmaState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rsi: Option<rsi::RsiState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<momentum::MomentumState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bollinger: Option<bollinger::BollingerState>,
}

/// The configured generators of one symbol.
///
/// Built once per symbol from `spec.signals`; [`update`](Self::update) is the
/// per-candle path and does not allocate.
#[derive(Clone, Debug)]
pub struct SignalSet {
    sma: Option<SmaCrossover>,
    rsi: Option<Rsi>,
    momentum: Option<Momentum>,
    bollinger: Option<Bollinger>,
    /// Readings of the last update, in the order sma, rsi, momentum, bollinger.
    out: [SignalReading; 4],
    len: usize,
}

impl SignalSet {
    /// Generators for every signal set in `spec` (none set: an empty set that
    /// never returns a reading).
    ///
    /// Expects a validated spec (`StrategyConfigSpec::validate`); out-of-range
    /// periods are raised to their minimum (SMA 1, RSI 2, momentum 1,
    /// Bollinger 2) or lowered to [`MAX_SIGNAL_PERIOD`] instead of panicking
    /// or exhausting memory.
    pub fn new(spec: &SignalsSpec) -> Self {
        let cap = |p: u32| p.min(MAX_SIGNAL_PERIOD);
        Self {
            sma: spec.sma_crossover.as_ref().map(|s| {
                SmaCrossover::new(cap(s.fast_period), cap(s.slow_period), weight(s.weight))
            }),
            rsi: spec.rsi.as_ref().map(|s| {
                Rsi::new(
                    cap(s.period),
                    s.oversold.get().as_f64(),
                    s.overbought.get().as_f64(),
                    weight(s.weight),
                )
            }),
            momentum: spec.momentum.as_ref().map(|s| {
                Momentum::new(
                    cap(s.period),
                    s.threshold_pct.get().as_f64(),
                    weight(s.weight),
                )
            }),
            bollinger: spec
                .bollinger
                .as_ref()
                .map(|s| Bollinger::new(cap(s.period), s.std_dev.get().as_f64(), weight(s.weight))),
            out: [SignalReading::EMPTY; 4],
            len: 0,
        }
    }

    /// Feed the close (quote currency) of one closed candle; returns the
    /// readings of the generators that are warmed up, in the order SMA
    /// crossover, RSI, momentum, Bollinger (at most four).
    ///
    /// The slice points into an internal fixed buffer (no allocation) and is
    /// valid until the next call.
    pub fn update(&mut self, close: Decimal) -> &[SignalReading] {
        let mut len = 0;
        if let Some(g) = &mut self.sma
            && let Some(r) = g.update(close)
        {
            self.out[len] = r;
            len += 1;
        }
        if self.rsi.is_some() || self.momentum.is_some() || self.bollinger.is_some() {
            let x = decimal_to_f64(close);
            if let Some(g) = &mut self.rsi
                && let Some(r) = g.update(x)
            {
                self.out[len] = r;
                len += 1;
            }
            if let Some(g) = &mut self.momentum
                && let Some(r) = g.update(x)
            {
                self.out[len] = r;
                len += 1;
            }
            if let Some(g) = &mut self.bollinger
                && let Some(r) = g.update(x)
            {
                self.out[len] = r;
                len += 1;
            }
        }
        self.len = len;
        &self.out[..len]
    }

    /// Closes needed before every configured generator returns a reading:
    /// the largest of SMA `slow + 1`, RSI `period + 1`, momentum `period + 1`,
    /// Bollinger `period` (0 when no generator is set). From that close on,
    /// every `update` returns one reading per generator.
    pub fn warmup_bars(&self) -> u32 {
        [
            self.sma.as_ref().map(SmaCrossover::warmup_bars),
            self.rsi.as_ref().map(Rsi::warmup_bars),
            self.momentum.as_ref().map(Momentum::warmup_bars),
            self.bollinger.as_ref().map(Bollinger::warmup_bars),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
    }

    /// The generators of `new` (a reloaded strategy), taking over the state
    /// of this set's generators whose settings other than `weight` are the
    /// same in `old` and `new` (they stay warm, with the new weight); a
    /// generator that is new or whose settings changed starts cold and warms
    /// up over its look-back (see [`warmup_bars`](Self::warmup_bars)); one
    /// `new` leaves out is dropped.
    pub fn reconfigure(self, old: &SignalsSpec, new: &SignalsSpec) -> Self {
        fn same<T: Clone + PartialEq>(
            a: &Option<T>,
            b: &Option<T>,
            unweighted: impl Fn(&mut T),
        ) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => {
                    let (mut a, mut b) = (a.clone(), b.clone());
                    unweighted(&mut a);
                    unweighted(&mut b);
                    a == b
                }
                _ => false,
            }
        }
        let mut next = Self::new(new);
        if same(&old.sma_crossover, &new.sma_crossover, |s| s.weight = None)
            && let (Some(mut g), Some(spec)) = (self.sma, &new.sma_crossover)
        {
            g.set_weight(weight(spec.weight));
            next.sma = Some(g);
        }
        if same(&old.rsi, &new.rsi, |s| s.weight = None)
            && let (Some(mut g), Some(spec)) = (self.rsi, &new.rsi)
        {
            g.set_weight(weight(spec.weight));
            next.rsi = Some(g);
        }
        if same(&old.momentum, &new.momentum, |s| s.weight = None)
            && let (Some(mut g), Some(spec)) = (self.momentum, &new.momentum)
        {
            g.set_weight(weight(spec.weight));
            next.momentum = Some(g);
        }
        if same(&old.bollinger, &new.bollinger, |s| s.weight = None)
            && let (Some(mut g), Some(spec)) = (self.bollinger, &new.bollinger)
        {
            g.set_weight(weight(spec.weight));
            next.bollinger = Some(g);
        }
        next
    }

    /// The state of every generator, for a checkpoint.
    pub(crate) fn checkpoint(&self) -> SignalsCheckpoint {
        SignalsCheckpoint {
            sma_crossover: self.sma.as_ref().map(SmaCrossover::state),
            rsi: self.rsi.as_ref().map(Rsi::state),
            momentum: self.momentum.as_ref().map(Momentum::state),
            bollinger: self.bollinger.as_ref().map(Bollinger::state),
        }
    }

    /// Take a checkpoint's state: exactly the configured generators must be
    /// present, each with buffers of its configured length.
    pub(crate) fn restore(&mut self, cp: SignalsCheckpoint) -> Result<(), String> {
        fn one<G, S>(
            name: &str,
            g: &mut Option<G>,
            st: Option<S>,
            restore: impl FnOnce(&mut G, S) -> Result<(), String>,
        ) -> Result<(), String> {
            match (g, st) {
                (Some(g), Some(st)) => restore(g, st),
                (None, None) => Ok(()),
                (Some(_), None) => Err(format!("{name} is configured but has no state")),
                (None, Some(_)) => Err(format!("{name} has a state but is not configured")),
            }
        }
        one(
            "smaCrossover",
            &mut self.sma,
            cp.sma_crossover,
            SmaCrossover::restore,
        )?;
        one("rsi", &mut self.rsi, cp.rsi, Rsi::restore)?;
        one(
            "momentum",
            &mut self.momentum,
            cp.momentum,
            Momentum::restore,
        )?;
        one(
            "bollinger",
            &mut self.bollinger,
            cp.bollinger,
            Bollinger::restore,
        )?;
        self.len = 0;
        Ok(())
    }

    /// The readings returned by the last [`update`](Self::update).
    pub fn last(&self) -> &[SignalReading] {
        &self.out[..self.len]
    }
}

/// `spec` weight as `f64` (default 1).
fn weight(w: Option<DecimalString>) -> f64 {
    w.map_or(1.0, |w| w.get().as_f64())
}

/// Powers of ten exactly as `f64` literals, `1e0..=1e28` (a `Decimal` scale
/// is at most 28).
const POW10: [f64; 29] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22, 1e23, 1e24, 1e25, 1e26, 1e27, 1e28,
];

/// `Decimal` → `f64` for indicator maths and text: mantissa / 10^scale.
///
/// When the mantissa is below 2^53 and the scale at most 22 (every realistic
/// price) both operands are exact and IEEE division rounds once, so the
/// result is the `f64` nearest to the decimal; otherwise it is within about
/// one ulp. Used instead of `Decimal::as_f64`, which divides a `u128` by
/// 10^scale and is several times slower on the per-candle path.
#[inline]
pub(crate) fn decimal_to_f64(d: Decimal) -> f64 {
    d.mantissa() as f64 / POW10[d.scale() as usize]
}

/// Formats a price with about six significant digits (1 to 10 decimals):
/// `46810.2`, `1.23450`, `0.0000123400`.
pub(crate) struct Price(pub f64);

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        let dp = if v.is_finite() && v != 0.0 {
            (5 - v.abs().log10().floor() as i32).clamp(1, 10) as usize
        } else {
            1
        };
        write!(f, "{v:.dp$}")
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::str::FromStr;

    use paperbot_crds::{BollingerSpec, MomentumSpec, RsiSpec, SmaCrossoverSpec};
    use rust_decimal_macros::dec;

    use super::*;

    /// Counts allocations of the current thread, so that a test can assert
    /// that a code path does not allocate (other test threads do not interfere).
    struct CountingAlloc;

    thread_local! {
        static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    }

    fn count_one() {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
    }

    // SAFETY: forwards every call to the system allocator unchanged.
    unsafe impl GlobalAlloc for CountingAlloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            count_one();
            // SAFETY: same contract as the caller's.
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            count_one();
            // SAFETY: same contract as the caller's.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            count_one();
            // SAFETY: same contract as the caller's.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: same contract as the caller's.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static GLOBAL: CountingAlloc = CountingAlloc;

    fn allocations() -> u64 {
        ALLOCATIONS.with(Cell::get)
    }

    fn all_four() -> SignalsSpec {
        SignalsSpec {
            sma_crossover: Some(SmaCrossoverSpec {
                fast_period: 10,
                slow_period: 30,
                weight: None,
            }),
            rsi: Some(RsiSpec {
                period: 14,
                oversold: DecimalString(dec!(30)),
                overbought: DecimalString(dec!(70)),
                weight: Some(DecimalString(dec!(0.5))),
            }),
            momentum: Some(MomentumSpec {
                period: 10,
                threshold_pct: DecimalString(dec!(1)),
                weight: None,
            }),
            bollinger: Some(BollingerSpec {
                period: 20,
                std_dev: DecimalString(dec!(2)),
                weight: Some(DecimalString(dec!(2))),
            }),
        }
    }

    /// Closes of a deterministic zig-zag walk around 100, two decimals.
    fn walk(n: usize) -> Vec<Decimal> {
        (0..n)
            .map(|i| {
                let i = i as i64;
                Decimal::new(10_000 + (i * 37 % 101) - 50 + (i / 7) % 13, 2)
            })
            .collect()
    }

    #[test]
    fn update_does_not_allocate() {
        let closes = walk(5_000);
        let mut set = SignalSet::new(&all_four());
        let before = allocations();
        let mut readings = 0usize;
        for &c in &closes {
            readings += set.update(c).len();
        }
        let after = allocations();
        assert_eq!(after - before, 0, "allocations on the per-candle path");
        // sanity: the loop did the work (4 readings per bar once warmed up)
        assert_eq!(readings, 4 * 5_000 - (31 + 15 + 11 + 20 - 4));
    }

    #[test]
    fn readings_in_fixed_order_after_each_warmup() {
        let mut set = SignalSet::new(&all_four());
        assert_eq!(set.warmup_bars(), 31);
        for (i, c) in walk(40).into_iter().enumerate() {
            let kinds: Vec<SignalKind> = set.update(c).iter().map(|r| r.kind).collect();
            let bar = i as u32 + 1; // closes seen
            let want: Vec<SignalKind> = [
                (SignalKind::SmaCrossover, 31),
                (SignalKind::Rsi, 15),
                (SignalKind::Momentum, 11),
                (SignalKind::Bollinger, 20),
            ]
            .into_iter()
            .filter(|&(_, w)| bar >= w)
            .map(|(k, _)| k)
            .collect();
            assert_eq!(kinds, want, "close {bar}");
            assert_eq!(set.last().len(), want.len());
        }
        let w: Vec<f64> = set.last().iter().map(|r| r.weight).collect();
        assert_eq!(w, [1.0, 0.5, 1.0, 2.0]);
        assert!(set.last().iter().all(|r| (-1.0..=1.0).contains(&r.score)));

        let empty = SignalSet::new(&SignalsSpec::default());
        assert_eq!(empty.warmup_bars(), 0);
    }

    #[test]
    fn a_restored_set_continues_bit_for_bit() {
        let closes = walk(300);
        for cut in [0usize, 1, 7, 19, 20, 31, 64, 199] {
            let mut a = SignalSet::new(&all_four());
            for &c in &closes[..cut] {
                a.update(c);
            }
            let json = serde_json::to_string(&a.checkpoint()).unwrap();
            let mut b = SignalSet::new(&all_four());
            b.restore(serde_json::from_str(&json).unwrap()).unwrap();
            for &c in &closes[cut..] {
                let ra = a.update(c).to_vec();
                let rb = b.update(c).to_vec();
                // Exact equality, f64 included: the state travels as IEEE-754 bits.
                assert_eq!(ra, rb, "cut {cut}");
            }
        }
    }

    #[test]
    fn restore_refuses_a_state_that_does_not_fit_the_configuration() {
        let mut full = SignalSet::new(&all_four());
        for c in walk(50) {
            full.update(c);
        }
        let cp = full.checkpoint();
        let only_sma = SignalsSpec {
            sma_crossover: all_four().sma_crossover,
            ..Default::default()
        };
        let e = SignalSet::new(&only_sma).restore(cp.clone()).unwrap_err();
        assert_eq!(e, "rsi has a state but is not configured");
        let mut shorter = all_four();
        if let Some(b) = &mut shorter.bollinger {
            b.period = 10;
        }
        let e = SignalSet::new(&shorter).restore(cp.clone()).unwrap_err();
        assert!(
            e.starts_with("bollinger state has a window of 20 closes"),
            "{e}"
        );
        let mut bad = cp;
        if let Some(s) = &mut bad.sma_crossover {
            s.prev = Some(3);
        }
        let e = SignalSet::new(&all_four()).restore(bad).unwrap_err();
        assert_eq!(e, "smaCrossover prev must be -1, 0 or 1, found 3");
    }

    #[test]
    fn describe_texts() {
        let r = SignalReading {
            kind: SignalKind::SmaCrossover,
            score: 0.0,
            weight: 1.0,
            values: [0.00001234, 0.00001301, 0.0],
            periods: [5, 20],
        };
        assert_eq!(
            r.describe(),
            "sma_crossover +0.00: fast SMA(5) 0.0000123400 below slow SMA(20) 0.0000130100, no cross"
        );
        let r = SignalReading {
            kind: SignalKind::Bollinger,
            score: 0.25,
            weight: 1.0,
            values: [46010.0, 46100.31, 46500.12],
            periods: [20, 0],
        };
        assert_eq!(
            r.describe(),
            "bollinger +0.25: close 46010.0 below the lower band 46100.3 of BB(20) (upper 46500.1)"
        );
        assert_eq!(
            SignalReading {
                kind: SignalKind::Rsi,
                score: 0.0,
                weight: 1.0,
                values: [55.04, 30.0, 70.0],
                periods: [14, 0],
            }
            .describe(),
            "rsi +0.00: RSI(14) 55.0 between oversold 30.0 and overbought 70.0"
        );
        assert_eq!(SignalKind::Momentum.to_string(), "momentum");
    }

    #[test]
    fn decimal_to_f64_is_nearest() {
        for s in [
            "46815.5",
            "0.00001234",
            "-12.345",
            "0",
            "79228162514264337593543950335",
            "1e-28",
        ] {
            let d = Decimal::from_str(s)
                .or_else(|_| Decimal::from_scientific(s))
                .unwrap();
            let want: f64 = d.to_string().parse().unwrap();
            let got = decimal_to_f64(d);
            assert!(
                got == want || ((got - want) / want).abs() <= f64::EPSILON,
                "{s}: {got} vs {want}"
            );
        }
        assert_eq!(decimal_to_f64(dec!(46815.5)), 46815.5);
        assert_eq!(decimal_to_f64(dec!(0.1)), 0.1);
    }
}

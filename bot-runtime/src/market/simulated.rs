//! Simulated market: seeded geometric Brownian motion candles.
//!
//! Each symbol follows its own GBM path, dS = μ S dt + σ S dW, sampled with the
//! exact discretisation (Glasserman, *Monte Carlo Methods in Financial
//! Engineering*, 2003, §3.2.1):
//!
//! ```text
//! S(t + dt) = S(t) · exp((μ − σ²/2)·dt + σ·√dt·Z),   Z ~ N(0, 1)
//! ```
//!
//! with `dt` in years of 365 days. A candle is [`SUBSTEPS`] such steps: open =
//! the previous close, close = the last step, high/low = the extremes of the
//! open and all steps. The path maths is done in `f64` (it is a simulation, not
//! money arithmetic); every value leaves as a `Decimal` rounded to 8 decimal
//! places, and the path continues from the rounded close, so open always equals
//! the previous close exactly.

use chrono::DateTime;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rust_decimal::{Decimal, prelude::ToPrimitive};

use crate::types::{Candle, SymbolId, Timestamp};

/// GBM steps per candle.
pub const SUBSTEPS: usize = 8;

/// Decimal places of simulated prices and volumes.
pub const DECIMALS: u32 = 8;

/// Year length used for `dt`: 365 days, in milliseconds.
const MS_PER_YEAR: f64 = 365.0 * 86_400_000.0;

/// Smallest simulated price (1e-8, one unit in the 8th decimal place): prices
/// are kept strictly positive after rounding.
const MIN_PRICE: f64 = 1e-8;

/// Largest simulated price: 1e12, the largest price the runtime accepts
/// ([`crate::types::MAX_PRICE`]); a path that would go higher is held there.
const MAX_PRICE: f64 = 1e12;

/// Median traded notional of a simulated candle, quote currency.
const VOLUME_NOTIONAL: f64 = 1_000_000.0;

/// σ of the log-normal volume multiplier.
const VOLUME_SIGMA: f64 = 0.5;

/// Default open time of the first candle, 2024-01-01T00:00:00Z, ms.
const DEFAULT_START_MS: i64 = 1_704_067_200_000;

/// Parameters of a [`GbmSource`].
#[derive(Clone, Debug, PartialEq)]
pub struct GbmParams {
    /// RNG seed; the same seed gives the same candles.
    pub seed: u64,
    /// Open price of every symbol's first candle, quote currency; 1e-8 to 1e12.
    pub initial_price: Decimal,
    /// Annualised drift μ as a fraction (0.05 = 5 % a year).
    pub annual_drift: f64,
    /// Annualised volatility σ as a fraction (0.5 = 50 %); >= 0.
    pub annual_volatility: f64,
    /// Candle length, milliseconds; > 0.
    pub interval_ms: i64,
    /// Candles per symbol; `None` = unbounded.
    pub candles: Option<u64>,
    /// Open time of the first candle.
    pub start: Timestamp,
}

impl GbmParams {
    /// Build from a `BotSession`'s `spec.marketData.simulated`.
    ///
    /// `start` is RFC 3339 (default `2024-01-01T00:00:00Z`); decimals become
    /// `f64` for μ and σ.
    ///
    /// # Errors
    ///
    /// A message naming the field when `start` is not RFC 3339, or when
    /// [`validate`](Self::validate) fails.
    pub fn from_spec(spec: &paperbot_crds::SimulatedSpec) -> Result<Self, String> {
        let start = match &spec.start {
            None => Timestamp(DEFAULT_START_MS),
            Some(s) => DateTime::parse_from_rfc3339(s.trim())
                .map(|dt| Timestamp(dt.timestamp_millis()))
                .map_err(|e| {
                    format!(
                        "simulated.start: {s:?} is not an RFC 3339 time ({e}; expected e.g. 2024-01-01T00:00:00Z)"
                    )
                })?,
        };
        let to_f64 = |name: &str, d: Decimal| {
            d.to_f64()
                .ok_or_else(|| format!("simulated.{name}: {d} cannot be used as a number"))
        };
        let p = Self {
            seed: spec.seed,
            initial_price: spec.initial_price.get(),
            annual_drift: to_f64("annualDrift", spec.annual_drift.get())?,
            annual_volatility: to_f64("annualVolatility", spec.annual_volatility.get())?,
            interval_ms: spec.interval.as_millis_i64(),
            candles: spec.candles,
            start,
        };
        p.validate()?;
        Ok(p)
    }

    /// Check the ranges documented on each field.
    ///
    /// # Errors
    ///
    /// A message naming the first out-of-range field, its value and the range.
    pub fn validate(&self) -> Result<(), String> {
        let min = Decimal::new(1, DECIMALS);
        let max = crate::types::MAX_PRICE;
        if self.initial_price < min || self.initial_price > max {
            return Err(format!(
                "simulated.initialPrice must be between {min} and {max}, found {}",
                self.initial_price
            ));
        }
        if !self.annual_drift.is_finite() {
            return Err(format!(
                "simulated.annualDrift must be a finite number, found {}",
                self.annual_drift
            ));
        }
        if !(self.annual_volatility.is_finite() && self.annual_volatility >= 0.0) {
            return Err(format!(
                "simulated.annualVolatility must be >= 0, found {}",
                self.annual_volatility
            ));
        }
        if self.interval_ms <= 0 {
            return Err(format!(
                "simulated.interval must be longer than 0 ms, found {} ms",
                self.interval_ms
            ));
        }
        Ok(())
    }
}

/// Per-symbol path state.
#[derive(Debug)]
struct Path {
    rng: ChaCha8Rng,
    /// Last close (the next open).
    close: Decimal,
    /// The same value as f64, where the path continues from.
    close_f: f64,
}

/// Endless (or `candles`-long) GBM candle stream for `symbols` symbols.
///
/// Per interval it yields one candle per symbol, in symbol order
/// (`SymbolId(0)`, `SymbolId(1)`, ...), so the stream is ordered by
/// `(open_time, symbol)` like a [`MergedFeed`](super::MergedFeed).
/// Symbol `i` draws from its own `ChaCha8Rng` seeded with
/// `ChaCha8Rng::seed_from_u64(seed)` on stream `i`, so paths are independent,
/// and adding a symbol does not change the others'.
///
/// Volume is base units: `1e6 / close · exp(0.5·Z)` (median notional 1e6
/// quote currency per candle), rounded to 8 decimals and >= 1e-8.
#[derive(Debug)]
pub struct GbmSource {
    params: GbmParams,
    /// (μ − σ²/2)·dt per sub-step.
    drift_step: f64,
    /// σ·√dt per sub-step.
    vol_step: f64,
    paths: Vec<Path>,
    next_symbol: usize,
    interval_index: u64,
    time: Timestamp,
}

impl GbmSource {
    /// A source for `symbols` symbols (ids `0..symbols`).
    ///
    /// # Panics
    ///
    /// If [`GbmParams::validate`] fails (it cannot after
    /// [`GbmParams::from_spec`]); use [`try_new`](Self::try_new) to get the
    /// message instead.
    pub fn new(params: GbmParams, symbols: usize) -> Self {
        match Self::try_new(params, symbols) {
            Ok(s) => s,
            Err(e) => panic!("invalid GBM parameters: {e}"),
        }
    }

    /// As [`new`](Self::new), returning the [`GbmParams::validate`] message on
    /// bad parameters.
    ///
    /// # Errors
    ///
    /// The validation message, or too many symbols (more than 65,536).
    pub fn try_new(params: GbmParams, symbols: usize) -> Result<Self, String> {
        params.validate()?;
        if symbols > usize::from(u16::MAX) + 1 {
            return Err(format!(
                "at most {} simulated symbols fit a SymbolId, asked for {symbols}",
                usize::from(u16::MAX) + 1
            ));
        }
        let dt = params.interval_ms as f64 / MS_PER_YEAR / SUBSTEPS as f64;
        let sigma = params.annual_volatility;
        let paths = (0..symbols)
            .map(|i| {
                let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
                rng.set_stream(i as u64);
                Path {
                    rng,
                    close: params.initial_price,
                    close_f: params.initial_price.to_f64().unwrap_or(MIN_PRICE),
                }
            })
            .collect();
        Ok(Self {
            drift_step: (params.annual_drift - sigma * sigma / 2.0) * dt,
            vol_step: sigma * dt.sqrt(),
            time: params.start,
            params,
            paths,
            next_symbol: 0,
            interval_index: 0,
        })
    }

    /// The parameters.
    pub fn params(&self) -> &GbmParams {
        &self.params
    }
}

/// `10^DECIMALS` as f64.
const SCALE: f64 = 1e8;

/// Clamp to `[MIN_PRICE, MAX_PRICE]` and round to [`DECIMALS`] places
/// (half away from zero, in f64). Returns the decimal (trailing zeros
/// removed) and the f64 of the same rounded value. Built from the integer
/// mantissa: much cheaper than `Decimal::from_f64` plus `round_dp`.
fn to_decimal(x: f64) -> (Decimal, f64) {
    let x = if x.is_nan() {
        MIN_PRICE
    } else {
        x.clamp(MIN_PRICE, MAX_PRICE)
    };
    // <= 1e23 after the clamp: well inside i128 and a Decimal's 96-bit mantissa.
    let m = ((x * SCALE).round() as i128).max(1);
    let d = Decimal::try_from_i128_with_scale(m, DECIMALS).unwrap_or(Decimal::MAX);
    (d.normalize(), m as f64 / SCALE)
}

/// One symbol's step of the path, before it is turned into a candle.
struct Draw {
    symbol: usize,
    open: Decimal,
    close: Decimal,
    close_f: f64,
    high_f: f64,
    low_f: f64,
    /// The normal draw of the volume multiplier.
    volume_z: f64,
}

impl GbmSource {
    /// Draw the next step of the current symbol's path and move the path
    /// on (the random numbers and the close, exactly as a candle would).
    #[inline]
    fn draw(&mut self) -> Option<Draw> {
        if self.paths.is_empty()
            || self
                .params
                .candles
                .is_some_and(|n| self.interval_index >= n)
        {
            return None;
        }
        let symbol = self.next_symbol;
        let path = &mut self.paths[symbol];
        let open = path.close;
        let mut s = path.close_f;
        let (mut high_f, mut low_f) = (s, s);
        for _ in 0..SUBSTEPS {
            let z: f64 = StandardNormal.sample(&mut path.rng);
            s = (s * (self.drift_step + self.vol_step * z).exp()).clamp(MIN_PRICE, MAX_PRICE);
            high_f = high_f.max(s);
            low_f = low_f.min(s);
        }
        let (close, close_f) = to_decimal(s);
        let volume_z: f64 = StandardNormal.sample(&mut path.rng);
        path.close_f = close_f;
        path.close = close;
        self.next_symbol += 1;
        if self.next_symbol == self.paths.len() {
            self.next_symbol = 0;
            self.interval_index += 1;
            self.time = self.time.plus_ms(self.params.interval_ms);
        }
        Some(Draw {
            symbol,
            open,
            close,
            close_f,
            high_f,
            low_f,
            volume_z,
        })
    }
}

impl Iterator for GbmSource {
    type Item = Candle;

    fn next(&mut self) -> Option<Candle> {
        let open_time = self.time;
        let d = self.draw()?;
        // Rounding is monotone, so these hold already; max/min make sure of it.
        let high = to_decimal(d.high_f).0.max(d.open).max(d.close);
        let low = to_decimal(d.low_f).0.min(d.open).min(d.close);
        let volume = to_decimal(VOLUME_NOTIONAL / d.close_f * (VOLUME_SIGMA * d.volume_z).exp()).0;
        Some(Candle {
            symbol: SymbolId(d.symbol as u16),
            open_time,
            interval_ms: self.params.interval_ms,
            open: d.open,
            high,
            low,
            close: d.close,
            volume,
        })
    }

    /// Skips `n` candles exactly (the same random draws and closes as
    /// `next` would make) without building them: how a resumed session
    /// skips the candles it had consumed. About twice as fast as `next`.
    fn nth(&mut self, n: usize) -> Option<Candle> {
        for _ in 0..n {
            self.draw()?;
        }
        self.next()
    }
}

#[cfg(test)]
mod tests {
    use paperbot_crds::{DecimalString, DurationString, SimulatedSpec};
    use rust_decimal_macros::dec;

    use super::*;

    fn params(seed: u64, candles: u64) -> GbmParams {
        GbmParams {
            seed,
            initial_price: dec!(100),
            annual_drift: 0.05,
            annual_volatility: 0.8,
            interval_ms: 60_000,
            candles: Some(candles),
            start: Timestamp(DEFAULT_START_MS),
        }
    }

    #[test]
    fn same_seed_same_candles_different_seed_different() {
        let a: Vec<Candle> = GbmSource::new(params(7, 500), 3).collect();
        let b: Vec<Candle> = GbmSource::new(params(7, 500), 3).collect();
        let c: Vec<Candle> = GbmSource::new(params(8, 500), 3).collect();
        assert_eq!(a.len(), 1_500);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let closes = |v: &[Candle]| v.iter().map(|c| c.close).collect::<Vec<_>>();
        assert_ne!(closes(&a[1..]), closes(&c[1..]));
    }

    #[test]
    fn symbols_have_independent_paths() {
        let one: Vec<Candle> = GbmSource::new(params(3, 200), 1).collect();
        let three: Vec<Candle> = GbmSource::new(params(3, 200), 3).collect();
        let sym = |v: &[Candle], s: u16| -> Vec<Candle> {
            v.iter()
                .filter(|c| c.symbol == SymbolId(s))
                .copied()
                .collect()
        };
        // Adding symbols does not change symbol 0's path.
        assert_eq!(sym(&three, 0), one);
        assert_ne!(
            sym(&three, 0).iter().map(|c| c.close).collect::<Vec<_>>(),
            sym(&three, 1).iter().map(|c| c.close).collect::<Vec<_>>()
        );
    }

    #[test]
    fn candles_are_ordered_consistent_and_positive() {
        let mut p = params(11, 2_000);
        p.annual_volatility = 3.0; // wild, to stress the bounds
        p.initial_price = dec!(0.001);
        let v: Vec<Candle> = GbmSource::new(p, 2).collect();
        assert_eq!(v.len(), 4_000);
        let mut last_close = [dec!(0.001); 2];
        for (i, c) in v.iter().enumerate() {
            assert_eq!(
                c.symbol,
                SymbolId((i % 2) as u16),
                "symbol order within an interval"
            );
            assert_eq!(c.open_time.0, DEFAULT_START_MS + (i / 2) as i64 * 60_000);
            assert_eq!(c.interval_ms, 60_000);
            assert_eq!(c.open, last_close[i % 2], "open = previous close");
            assert!(c.low > Decimal::ZERO && c.volume > Decimal::ZERO, "{c:?}");
            assert!(
                c.low <= c.open.min(c.close) && c.open.max(c.close) <= c.high,
                "{c:?}"
            );
            for x in [c.high, c.low, c.close, c.volume] {
                assert!(x.scale() <= DECIMALS, "{x} has more than 8 decimals");
            }
            last_close[i % 2] = c.close;
        }
    }

    #[test]
    fn zero_volatility_and_drift_keep_the_price() {
        let mut p = params(1, 50);
        p.annual_drift = 0.0;
        p.annual_volatility = 0.0;
        assert!(GbmSource::new(p, 1).all(|c| [c.open, c.high, c.low, c.close] == [dec!(100); 4]));
    }

    #[test]
    fn log_returns_have_the_gbm_variance() {
        // Var[ln(close/open)] per candle = σ²·dt_candle for GBM.
        let n = 20_000u64;
        let mut p = params(42, n);
        p.annual_drift = 0.0;
        p.annual_volatility = 0.6;
        p.interval_ms = 3_600_000;
        let r: Vec<f64> = GbmSource::new(p, 1)
            .map(|c| (c.close.to_f64().unwrap() / c.open.to_f64().unwrap()).ln())
            .collect();
        let mean = r.iter().sum::<f64>() / n as f64;
        let var = r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let expected = 0.36 * 3_600_000.0 / MS_PER_YEAR;
        assert!(
            (var / expected - 1.0).abs() < 0.05,
            "variance {var} vs {expected}"
        );
    }

    #[test]
    fn nth_skips_exactly_what_next_would_produce() {
        let mut p = params(5, 400);
        p.annual_volatility = 2.5;
        let all: Vec<Candle> = GbmSource::new(p.clone(), 3).collect();
        for n in [0usize, 1, 2, 3, 7, 299, 600, 1_199] {
            let mut src = GbmSource::new(p.clone(), 3);
            assert_eq!(src.nth(n), Some(all[n]), "nth({n})");
            let rest: Vec<Candle> = src.collect();
            assert_eq!(rest, all[n + 1..], "candles after nth({n})");
        }
        assert_eq!(GbmSource::new(p.clone(), 3).nth(1_200), None);
        // Skipping in several steps lands on the same candle.
        let mut src = GbmSource::new(p, 3);
        src.nth(10);
        src.nth(100);
        assert_eq!(src.next(), Some(all[112]));
    }

    #[test]
    fn unbounded_source_and_no_symbols() {
        let mut p = params(1, 0);
        p.candles = None;
        assert_eq!(GbmSource::new(p.clone(), 2).take(10_000).count(), 10_000);
        assert_eq!(GbmSource::new(p, 0).next(), None);
        assert_eq!(GbmSource::new(params(1, 0), 3).next(), None);
    }

    #[test]
    fn from_spec_defaults_and_errors() {
        let mut spec = SimulatedSpec {
            seed: 9,
            initial_price: DecimalString(dec!(250.5)),
            annual_drift: DecimalString(dec!(0.1)),
            annual_volatility: DecimalString(dec!(0.6)),
            interval: DurationString(std::time::Duration::from_secs(300)),
            candles: Some(10),
            start: None,
        };
        let p = GbmParams::from_spec(&spec).unwrap();
        assert_eq!(
            p,
            GbmParams {
                seed: 9,
                initial_price: dec!(250.5),
                annual_drift: 0.1,
                annual_volatility: 0.6,
                interval_ms: 300_000,
                candles: Some(10),
                start: Timestamp(DEFAULT_START_MS),
            }
        );
        assert_eq!(p.start.to_rfc3339(), "2024-01-01T00:00:00Z");
        spec.start = Some("2022-03-04T05:06:07Z".into());
        assert_eq!(
            GbmParams::from_spec(&spec).unwrap().start.to_rfc3339(),
            "2022-03-04T05:06:07Z"
        );
        spec.start = Some("yesterday".into());
        let e = GbmParams::from_spec(&spec).unwrap_err();
        assert!(
            e.starts_with("simulated.start: \"yesterday\" is not an RFC 3339 time"),
            "{e}"
        );
        spec.start = None;
        spec.annual_volatility = DecimalString(dec!(-0.1));
        assert_eq!(
            GbmParams::from_spec(&spec).unwrap_err(),
            "simulated.annualVolatility must be >= 0, found -0.1"
        );
        spec.annual_volatility = DecimalString(dec!(0.5));
        spec.initial_price = DecimalString(dec!(0));
        assert_eq!(
            GbmParams::from_spec(&spec).unwrap_err(),
            "simulated.initialPrice must be between 0.00000001 and 1000000000000, found 0"
        );
        let mut bad = params(1, 1);
        bad.interval_ms = 0;
        assert_eq!(
            GbmSource::try_new(bad, 1).unwrap_err(),
            "simulated.interval must be longer than 0 ms, found 0 ms"
        );
    }
}

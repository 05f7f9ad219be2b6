//! Guarding a candle feed at run time: a bad or out-of-order candle is
//! rejected and counted instead of reaching the strategy. Used by live-style
//! loops and also on replayed candles, so a check is a handful of comparisons
//! and never allocates (only a rejection's [`FeedReject::reason`] does).
//!
//! The value rules include the ranges of [`crate::types`]: prices within
//! [`MIN_PRICE`]..=[`MAX_PRICE`], volume at most [`MAX_VOLUME`]. They are
//! tested on the mantissa and scale (integer comparisons), not with decimal
//! arithmetic.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::types::{Candle, MAX_PRICE, MAX_VOLUME, MIN_PRICE, SymbolId, Timestamp};

use super::csv::{COLUMNS, TimestampParser, candle_from_fields};

/// Why a candle was rejected. The fields name what to show; the full text
/// comes from [`reason`](Self::reason) with the candle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedReject {
    /// A price (`column`: `"open"`, `"high"`, `"low"` or `"close"`) is <= 0.
    NonPositivePrice {
        /// Which price.
        column: &'static str,
    },
    /// Volume < 0.
    NegativeVolume,
    /// A price (`column`) is above [`MAX_PRICE`] or below [`MIN_PRICE`].
    PriceOutOfRange {
        /// Which price.
        column: &'static str,
    },
    /// Volume above [`MAX_VOLUME`].
    VolumeOutOfRange,
    /// `high < low`.
    HighBelowLow,
    /// `open` or `close` (`column`) is outside `[low, high]`.
    OutsideRange {
        /// `"open"` or `"close"`.
        column: &'static str,
    },
    /// Open time before the last accepted candle's of the same symbol.
    TimeBackwards {
        /// Open time of the last accepted candle.
        previous: Timestamp,
    },
    /// Same open time as the last accepted candle of the same symbol.
    Duplicate,
}

impl FeedReject {
    /// Readable explanation with the offending values, e.g.
    /// `candle at 2022-01-01T00:05:00Z: high 10 is below low 11`.
    pub fn reason(&self, c: &Candle) -> String {
        let t = c.open_time;
        match self {
            Self::TimeBackwards { previous } => {
                format!("time goes backwards: {t} after {previous}")
            }
            Self::Duplicate => format!("duplicate timestamp {t}"),
            _ => format!("candle at {t}: {}", self.detail(c)),
        }
    }

    /// The value part of the explanation (no time), shared with the CSV reader.
    pub(crate) fn detail(&self, c: &Candle) -> String {
        match *self {
            Self::NonPositivePrice { column } => {
                format!("{column} price must be > 0, found {}", price(c, column))
            }
            Self::NegativeVolume => format!("volume must be >= 0, found {}", c.volume),
            Self::PriceOutOfRange { column } => format!(
                "{column} price {} is outside the accepted range {MIN_PRICE} to {MAX_PRICE}",
                price(c, column)
            ),
            Self::VolumeOutOfRange => format!(
                "volume {} is above the accepted maximum {MAX_VOLUME}",
                c.volume
            ),
            Self::HighBelowLow => format!("high {} is below low {}", c.high, c.low),
            Self::OutsideRange { column } => format!(
                "{column} {} is outside [low, high] = [{}, {}]",
                price(c, column),
                c.low,
                c.high
            ),
            Self::TimeBackwards { previous } => {
                format!("time goes backwards: {} after {previous}", c.open_time)
            }
            Self::Duplicate => format!("duplicate timestamp {}", c.open_time),
        }
    }
}

fn price(c: &Candle, column: &str) -> Decimal {
    match column {
        "open" => c.open,
        "high" => c.high,
        "low" => c.low,
        _ => c.close,
    }
}

/// `10^i` for `i` in `0..=28` (a `static`: a `const` table indexed at run
/// time may be copied to the stack at every use).
static POW10: [u128; 29] = {
    let mut t = [1u128; 29];
    let mut i = 1;
    while i < 29 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// Whether a positive price is within [`MIN_PRICE`] (1e-12) ..= [`MAX_PRICE`]
/// (1e12), by integer tests on the mantissa `m` and scale `s`: `m >=
/// 10^(s − 12)` and `m <= 10^(12 + s)`.
#[inline]
pub(crate) fn price_in_range(v: Decimal) -> bool {
    let m = v.mantissa().unsigned_abs();
    let s = v.scale() as usize;
    let low_ok = s <= 12 || m >= POW10[s - 12];
    // Above scale 16, 10^(12 + s) > 2^96 > m.
    let high_ok = s > 16 || m <= POW10[12 + s];
    low_ok && high_ok
}

/// Value rules of one candle, in this order: every price > 0, volume >= 0,
/// `low <= high`, open then close inside `[low, high]`, low then high within
/// the price range, volume within range.
pub(crate) fn check_prices(c: &Candle) -> Option<FeedReject> {
    // Sign and zero tests are bit checks; only the range tests need full
    // decimal comparisons (this runs on every candle).
    for (column, v) in [
        (COLUMNS[1], c.open),
        (COLUMNS[2], c.high),
        (COLUMNS[3], c.low),
        (COLUMNS[4], c.close),
    ] {
        if v.is_sign_negative() || v.is_zero() {
            return Some(FeedReject::NonPositivePrice { column });
        }
    }
    if c.volume.is_sign_negative() && !c.volume.is_zero() {
        return Some(FeedReject::NegativeVolume);
    }
    // low <= open, close <= high implies low <= high, so high < low is only
    // tested to name the problem once a range test failed.
    if c.open < c.low || c.open > c.high || c.close < c.low || c.close > c.high {
        if c.high < c.low {
            return Some(FeedReject::HighBelowLow);
        }
        let column = if c.open < c.low || c.open > c.high {
            COLUMNS[1]
        } else {
            COLUMNS[4]
        };
        return Some(FeedReject::OutsideRange { column });
    }
    // Open and close lie in [low, high]: the range of low and high is enough.
    for (column, v) in [(COLUMNS[3], c.low), (COLUMNS[2], c.high)] {
        if !price_in_range(v) {
            return Some(FeedReject::PriceOutOfRange { column });
        }
    }
    // volume <= 1e18  ⇔  m <= 10^(18 + s); always true above scale 10 (m < 2^96 < 10^29).
    let vs = c.volume.scale();
    if vs <= 10 && c.volume.mantissa().unsigned_abs() > POW10[18 + vs as usize] {
        return Some(FeedReject::VolumeOutOfRange);
    }
    None
}

/// What [`FeedGuard::check`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedVerdict {
    /// Use the candle.
    Accept {
        /// Milliseconds since the open of the previous accepted candle of the
        /// same symbol (`None` for its first). Larger than the interval when
        /// candles are missing; gaps are reported, never filled.
        gap_ms: Option<i64>,
    },
    /// Drop the candle.
    Reject(FeedReject),
}

/// What a checkpoint keeps of a [`FeedGuard`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct GuardCheckpoint {
    pub last: Vec<Option<Timestamp>>,
    pub consecutive: Vec<u32>,
    pub invalid_total: u64,
}

/// Per-symbol feed checks: value rules and strictly increasing open time.
///
/// A rejected candle does not move the symbol's last time; accepting one
/// resets its consecutive-invalid count.
#[derive(Clone, Debug, Default)]
pub struct FeedGuard {
    last: Vec<Option<Timestamp>>,
    consecutive: Vec<u32>,
    invalid_total: u64,
}

impl FeedGuard {
    /// A guard for symbol ids `0..symbols` (larger ids are tracked too; the
    /// tables grow once on first sight).
    pub fn new(symbols: usize) -> Self {
        Self {
            last: vec![None; symbols],
            consecutive: vec![0; symbols],
            invalid_total: 0,
        }
    }

    /// Check one candle and record the outcome.
    pub fn check(&mut self, c: &Candle) -> FeedVerdict {
        let i = c.symbol.idx();
        if i >= self.last.len() {
            self.last.resize(i + 1, None);
            self.consecutive.resize(i + 1, 0);
        }
        let prev = self.last[i];
        let reject = check_prices(c).or(match prev {
            Some(p) if c.open_time == p => Some(FeedReject::Duplicate),
            Some(p) if c.open_time < p => Some(FeedReject::TimeBackwards { previous: p }),
            _ => None,
        });
        match reject {
            Some(r) => {
                self.invalid_total += 1;
                self.consecutive[i] = self.consecutive[i].saturating_add(1);
                FeedVerdict::Reject(r)
            }
            None => {
                self.last[i] = Some(c.open_time);
                self.consecutive[i] = 0;
                FeedVerdict::Accept {
                    gap_ms: prev.map(|p| c.open_time.0.saturating_sub(p.0)),
                }
            }
        }
    }

    /// The state a checkpoint stores.
    pub(crate) fn checkpoint(&self) -> GuardCheckpoint {
        GuardCheckpoint {
            last: self.last.clone(),
            consecutive: self.consecutive.clone(),
            invalid_total: self.invalid_total,
        }
    }

    /// Rebuild for `symbols` symbols from a checkpoint (its tables must have
    /// one entry per symbol).
    pub(crate) fn restore(symbols: usize, cp: GuardCheckpoint) -> Result<Self, String> {
        if cp.last.len() != symbols || cp.consecutive.len() != symbols {
            return Err(format!(
                "feedGuard has {} last times and {} invalid counts, expected {symbols} of each (one per symbol)",
                cp.last.len(),
                cp.consecutive.len()
            ));
        }
        Ok(Self {
            last: cp.last,
            consecutive: cp.consecutive,
            invalid_total: cp.invalid_total,
        })
    }

    /// Candles rejected so far, all symbols.
    pub fn invalid_total(&self) -> u64 {
        self.invalid_total
    }

    /// Candles of `symbol` rejected since its last accepted one.
    pub fn consecutive_invalid(&self, symbol: SymbolId) -> u32 {
        self.consecutive.get(symbol.idx()).copied().unwrap_or(0)
    }

    /// Open time of the last accepted candle of `symbol`.
    pub fn last_accepted(&self, symbol: SymbolId) -> Option<Timestamp> {
        self.last.get(symbol.idx()).copied().flatten()
    }
}

/// Parse a raw text tick `[timestamp, open, high, low, close, volume]` (as a
/// live feed delivers it) into a candle, with the same syntax and value rules
/// as a candle file row: RFC 3339 UTC time, plain decimals (no `NaN`, `inf`,
/// exponents), prices > 0, volume >= 0, open and close inside `[low, high]`.
/// Surrounding ASCII whitespace is ignored.
///
/// # Errors
///
/// A reason naming the column, what was found and what was expected, e.g.
/// `column "open": "abc" is not a decimal number (expected e.g. 46197.5)`.
pub fn parse_tick(symbol: SymbolId, interval_ms: i64, fields: [&str; 6]) -> Result<Candle, String> {
    if interval_ms <= 0 {
        return Err(format!(
            "candle interval must be > 0 ms, found {interval_ms} ms"
        ));
    }
    let f = fields.map(|s| s.trim().as_bytes());
    let open_time = TimestampParser::default().parse(f[0])?;
    candle_from_fields(symbol, open_time, interval_ms, &f)
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    const T0: i64 = 1_640_995_200_000; // 2022-01-01T00:00:00Z

    fn c(sym: u16, minute: i64, [o, h, l, cl, v]: [Decimal; 5]) -> Candle {
        Candle {
            symbol: SymbolId(sym),
            open_time: Timestamp(T0 + minute * 60_000),
            interval_ms: 60_000,
            open: o,
            high: h,
            low: l,
            close: cl,
            volume: v,
        }
    }

    fn ok(sym: u16, minute: i64) -> Candle {
        c(
            sym,
            minute,
            [dec!(10), dec!(11), dec!(9), dec!(10.5), dec!(2)],
        )
    }

    #[test]
    fn accepts_and_reports_gaps_per_symbol() {
        let mut g = FeedGuard::new(2);
        assert_eq!(g.check(&ok(0, 0)), FeedVerdict::Accept { gap_ms: None });
        assert_eq!(g.check(&ok(1, 0)), FeedVerdict::Accept { gap_ms: None });
        assert_eq!(
            g.check(&ok(0, 1)),
            FeedVerdict::Accept {
                gap_ms: Some(60_000)
            }
        );
        // Four missing minutes: reported, not filled.
        assert_eq!(
            g.check(&ok(0, 6)),
            FeedVerdict::Accept {
                gap_ms: Some(300_000)
            }
        );
        assert_eq!(
            g.check(&ok(1, 2)),
            FeedVerdict::Accept {
                gap_ms: Some(120_000)
            }
        );
        assert_eq!(g.invalid_total(), 0);
        assert_eq!(g.last_accepted(SymbolId(0)), Some(Timestamp(T0 + 360_000)));
    }

    #[test]
    fn rejects_each_bad_case_with_a_reason() {
        let cases = [
            (
                c(0, 10, [dec!(10), dec!(11), dec!(-3), dec!(10), dec!(1)]),
                FeedReject::NonPositivePrice { column: "low" },
                "candle at 2022-01-01T00:10:00Z: low price must be > 0, found -3",
            ),
            (
                c(0, 10, [dec!(10), dec!(11), dec!(9), dec!(10), dec!(-1)]),
                FeedReject::NegativeVolume,
                "candle at 2022-01-01T00:10:00Z: volume must be >= 0, found -1",
            ),
            (
                c(0, 10, [dec!(10.5), dec!(10), dec!(11), dec!(10.5), dec!(1)]),
                FeedReject::HighBelowLow,
                "candle at 2022-01-01T00:10:00Z: high 10 is below low 11",
            ),
            (
                c(0, 10, [dec!(12), dec!(11), dec!(9), dec!(10), dec!(1)]),
                FeedReject::OutsideRange { column: "open" },
                "candle at 2022-01-01T00:10:00Z: open 12 is outside [low, high] = [9, 11]",
            ),
            (
                c(0, 10, [dec!(10), dec!(11), dec!(9), dec!(11.5), dec!(1)]),
                FeedReject::OutsideRange { column: "close" },
                "candle at 2022-01-01T00:10:00Z: close 11.5 is outside [low, high] = [9, 11]",
            ),
            (
                ok(0, 5),
                FeedReject::Duplicate,
                "duplicate timestamp 2022-01-01T00:05:00Z",
            ),
            (
                ok(0, 4),
                FeedReject::TimeBackwards {
                    previous: Timestamp(T0 + 300_000),
                },
                "time goes backwards: 2022-01-01T00:04:00Z after 2022-01-01T00:05:00Z",
            ),
        ];
        let mut g = FeedGuard::new(2);
        assert!(matches!(g.check(&ok(0, 5)), FeedVerdict::Accept { .. }));
        for (n, (candle, reject, reason)) in cases.iter().enumerate() {
            let n = n as u32 + 1;
            assert_eq!(g.check(candle), FeedVerdict::Reject(*reject));
            assert_eq!(reject.reason(candle), *reason);
            assert_eq!(g.consecutive_invalid(SymbolId(0)), n);
            assert_eq!(g.invalid_total(), u64::from(n));
        }
        // Symbol 1 is unaffected; a rejected candle did not move symbol 0's clock.
        assert_eq!(g.consecutive_invalid(SymbolId(1)), 0);
        assert_eq!(g.last_accepted(SymbolId(0)), Some(Timestamp(T0 + 300_000)));
        // An accepted candle resets the run of invalid ones, not the total.
        assert_eq!(
            g.check(&ok(0, 7)),
            FeedVerdict::Accept {
                gap_ms: Some(120_000)
            }
        );
        assert_eq!(g.consecutive_invalid(SymbolId(0)), 0);
        assert_eq!(g.invalid_total(), cases.len() as u64);
    }

    #[test]
    fn prices_and_volumes_outside_the_accepted_ranges_are_bad_ticks() {
        let at = |o: &str, h: &str, l: &str, cl: &str, v: &str| {
            let d = |s: &str| s.parse::<Decimal>().unwrap();
            c(0, 1, [d(o), d(h), d(l), d(cl), d(v)])
        };
        let cases = [
            (
                at("10", "1000000000000.1", "9", "10", "1"),
                FeedReject::PriceOutOfRange { column: "high" },
                "high price 1000000000000.1 is outside the accepted range 0.000000000001 to 1000000000000",
            ),
            (
                at("0.0000000000009", "11", "0.0000000000009", "10", "1"),
                FeedReject::PriceOutOfRange { column: "low" },
                "low price 0.0000000000009 is outside the accepted range 0.000000000001 to 1000000000000",
            ),
            (
                at(
                    "10",
                    "1000000000000.0000000000000001",
                    "9",
                    "1000000000000.0000000000000001",
                    "1",
                ),
                FeedReject::PriceOutOfRange { column: "high" },
                "high price 1000000000000.0000000000000001 is outside the accepted range 0.000000000001 to 1000000000000",
            ),
            (
                at("10", "11", "9", "10", "1000000000000000000.5"),
                FeedReject::VolumeOutOfRange,
                "volume 1000000000000000000.5 is above the accepted maximum 1000000000000000000",
            ),
            (
                at("10", "11", "9", "10", "79228162514264337593543950335"),
                FeedReject::VolumeOutOfRange,
                "volume 79228162514264337593543950335 is above the accepted maximum 1000000000000000000",
            ),
        ];
        for (candle, reject, detail) in cases {
            assert_eq!(check_prices(&candle), Some(reject), "{candle:?}");
            assert_eq!(reject.detail(&candle), detail);
        }
        // The edges are accepted; trailing zeros beyond 12 places are fine.
        for ok in [
            at(
                "1000000000000",
                "1000000000000",
                "0.000000000001",
                "0.000000000001",
                "1000000000000000000",
            ),
            at(
                "10.00000000000000",
                "11",
                "9",
                "10",
                "0.0000000000000000000000000001",
            ),
        ] {
            assert_eq!(check_prices(&ok), None, "{ok:?}");
        }
    }

    #[test]
    fn unknown_symbol_ids_are_tracked() {
        let mut g = FeedGuard::new(0);
        assert_eq!(g.check(&ok(3, 0)), FeedVerdict::Accept { gap_ms: None });
        assert_eq!(
            g.check(&ok(3, 0)),
            FeedVerdict::Reject(FeedReject::Duplicate)
        );
        assert_eq!(g.consecutive_invalid(SymbolId(3)), 1);
        assert_eq!(g.consecutive_invalid(SymbolId(9)), 0);
    }

    #[test]
    fn parse_tick_reads_text_and_explains_failures() {
        let t = "2022-01-01T00:01:00Z";
        let good = parse_tick(SymbolId(2), 60_000, [t, "10", "11", "9", " 10.5 ", "3.25"]).unwrap();
        assert_eq!(
            good,
            c(2, 1, [dec!(10), dec!(11), dec!(9), dec!(10.5), dec!(3.25)])
        );
        let ms = parse_tick(
            SymbolId(0),
            60_000,
            ["2022-01-01T00:01:00.250Z", "1", "1", "1", "1", "0"],
        )
        .unwrap();
        assert_eq!(ms.open_time, Timestamp(T0 + 60_250));

        let err = |f: [&str; 6]| parse_tick(SymbolId(0), 60_000, f).unwrap_err();
        assert_eq!(
            err([t, "abc", "11", "9", "10", "1"]),
            "column \"open\": \"abc\" is not a decimal number (expected e.g. 46197.5)"
        );
        assert_eq!(
            err([t, "10", "NaN", "9", "10", "1"]),
            "column \"high\": \"NaN\" is not a decimal number (expected e.g. 46197.5)"
        );
        assert_eq!(
            err([t, "10", "11", "9", "inf", "1"]),
            "column \"close\": \"inf\" is not a decimal number (expected e.g. 46197.5)"
        );
        assert_eq!(
            err([t, "-5", "11", "9", "10", "1"]),
            "open price must be > 0, found -5"
        );
        assert_eq!(
            err([t, "10", "11", "9", "10", "-2"]),
            "volume must be >= 0, found -2"
        );
        assert_eq!(err([t, "10", "8", "9", "10", "1"]), "high 8 is below low 9");
        assert_eq!(
            err(["tomorrow", "10", "11", "9", "10", "1"]),
            "timestamp \"tomorrow\" is not RFC 3339 UTC (expected e.g. 2022-01-01T00:00:00Z)"
        );
        assert_eq!(
            parse_tick(SymbolId(0), 0, [t, "1", "1", "1", "1", "1"]).unwrap_err(),
            "candle interval must be > 0 ms, found 0 ms"
        );
    }
}

//! Core value types of the engine: time, symbols, candles, sides.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// A point in market time: milliseconds since the Unix epoch, UTC.
///
/// The engine never reads the wall clock; every time it sees comes from the
/// data (replay, simulation) or from the live clock that feeds it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Timestamp(pub i64);

/// Milliseconds in one day.
pub const MS_PER_DAY: i64 = 86_400_000;

impl Timestamp {
    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }
    /// This time plus `ms` milliseconds.
    pub fn plus_ms(self, ms: i64) -> Self {
        Self(self.0.saturating_add(ms))
    }
    /// UTC day number (days since 1970-01-01); used for daily limits.
    pub fn utc_day(self) -> i64 {
        self.0.div_euclid(MS_PER_DAY)
    }
    /// As a chrono UTC time.
    pub fn to_datetime(self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.0).unwrap_or_default()
    }
    /// From a chrono UTC time.
    pub fn from_datetime(dt: DateTime<Utc>) -> Self {
        Self(dt.timestamp_millis())
    }
    /// RFC 3339 text with a `Z` suffix; milliseconds only when non-zero.
    pub fn to_rfc3339(self) -> String {
        let fmt = if self.0 % 1000 == 0 {
            SecondsFormat::Secs
        } else {
            SecondsFormat::Millis
        };
        self.to_datetime().to_rfc3339_opts(fmt, true)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// Smallest candle price the runtime accepts, quote currency: 1e-12
/// (one unit in the [`MAX_PRICE_DP`]th decimal place).
///
/// # The value ranges (a contract between validation and the engine)
///
/// Validation (candle files, live ticks, manifests) refuses values outside
/// these ranges with the file, line or field and the accepted range; the
/// feed guard skips and counts a live or replayed candle outside them as a
/// bad tick. Inside them the engine never panics: its own arithmetic is
/// checked, and a session whose figures would leave the engine's range
/// ([`MAX_MONEY`], or more digits than a `Decimal` holds exactly) stops
/// cleanly with a reason instead (`Step::Failed`).
///
/// | value | accepted |
/// |---|---|
/// | candle prices (open, high, low, close) | [`MIN_PRICE`] ..= [`MAX_PRICE`]; the engine keeps [`MAX_PRICE_DP`] decimal places |
/// | candle volume | 0 ..= [`MAX_VOLUME`] |
/// | allocation, initial balance, gas cost, minimum balance | at most [`MAX_CASH`], at most [`MAX_CASH_DP`] decimal places |
/// | fixed quantity | at most [`MAX_QUANTITY`], at most 8 decimal places (`engine::QUANTITY_DP`) |
/// | percent parameters (take-profit, slippage bps...) | at most [`MAX_PCT`] |
/// | signal periods | at most [`MAX_SIGNAL_PERIOD`] bars |
pub const MIN_PRICE: Decimal = Decimal::from_parts(1, 0, 0, false, 12);

/// Largest candle price the runtime accepts, quote currency: 1e12.
pub const MAX_PRICE: Decimal = Decimal::from_parts(3_567_587_328, 232, 0, false, 0);

/// Decimal places the engine keeps of a candle price: 12. A price with more
/// (a float artifact such as `1.2147000000000001` in a data file) is rounded
/// half to even to 12 places as it enters the engine; validation accepts it.
pub const MAX_PRICE_DP: u32 = 12;

/// Largest candle volume the runtime accepts (base or quote units): 1e18.
pub const MAX_VOLUME: Decimal = Decimal::from_parts(2_808_348_672, 232_830_643, 0, false, 0);

/// Largest allocation / initial balance / money parameter, quote currency: 1e15.
pub const MAX_CASH: Decimal = Decimal::from_parts(2_764_472_320, 232_830, 0, false, 0);

/// Most decimal places of a money parameter (allocation, balance, gas cost): 8.
pub const MAX_CASH_DP: u32 = 8;

/// Largest fixed order quantity, base units: 1e15.
pub const MAX_QUANTITY: Decimal = MAX_CASH;

/// Largest percent parameter (e.g. take-profit 1,000,000 % or slippage bps): 1e6.
pub const MAX_PCT: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);

/// Longest signal look-back, bars (buffers of this many closes per symbol).
pub const MAX_SIGNAL_PERIOD: u32 = 100_000;

/// The engine's range for money (cash, equity, notional, P&L), quote
/// currency: 1e20. A session whose figures would go beyond it stops with
/// `Step::Failed` and a reason such as
/// `equity 1.2e24 exceeds the engine's range (1e20)`.
pub const MAX_MONEY: Decimal = Decimal::from_parts(1_661_992_960, 1_808_227_885, 5, false, 0);

/// A figure left the engine's range: the session stops cleanly with this
/// reason (`Step::Failed`) instead of rounding or panicking, e.g.
/// `equity 1.2e24 exceeds the engine's range (1e20)` or
/// `market value 1234.5678 × 9.87654321 needs more digits than a decimal holds exactly (28)`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RangeError(pub String);

/// A value for a message: plain below 1e15, scientific above (`1.2e24`).
pub(crate) fn show(v: Decimal) -> String {
    if v.abs() < MAX_CASH {
        return v.normalize().to_string();
    }
    let m = v.mantissa();
    let digits = m.unsigned_abs().to_string();
    let exp = digits.len() as i64 - 1 - i64::from(v.scale());
    let kept = digits.trim_end_matches('0');
    let (head, tail) = kept.split_at(1.min(kept.len()));
    let sign = if m < 0 { "-" } else { "" };
    let dot = if tail.is_empty() { "" } else { "." };
    format!("{sign}{head}{dot}{tail}e{exp}")
}

fn overflow(what: &str, a: Decimal, op: char, b: Decimal) -> RangeError {
    RangeError(format!(
        "{what} = {} {op} {} exceeds the engine's range (a decimal holds at most about 7.9e28)",
        show(a),
        show(b)
    ))
}

fn inexact(what: &str, a: Decimal, op: char, b: Decimal) -> RangeError {
    RangeError(format!(
        "{what} = {} {op} {} needs more digits than a decimal holds exactly (28)",
        show(a),
        show(b)
    ))
}

/// `a × b`, refusing an overflow. The result may be rounded to 28 digits:
/// use it for estimates and comparisons, [`exact_mul`] for money.
#[inline]
pub(crate) fn checked_mul(what: &str, a: Decimal, b: Decimal) -> Result<Decimal, RangeError> {
    a.checked_mul(b).ok_or_else(|| overflow(what, a, '×', b))
}

/// `a / b`, refusing an overflow or a zero divisor (rounded to 28 digits).
pub(crate) fn checked_div(what: &str, a: Decimal, b: Decimal) -> Result<Decimal, RangeError> {
    a.checked_div(b).ok_or_else(|| {
        if b.is_zero() {
            RangeError(format!("{what} = {} / 0 is undefined", show(a)))
        } else {
            overflow(what, a, '/', b)
        }
    })
}

/// `a × b` exactly: refuses an overflow and a product that `Decimal` would
/// have to round (more than 28 decimal places, or more than 96 bits of
/// mantissa at the operands' combined scale). Trailing zeros do not count:
/// a product that fits once they are dropped is exact.
#[inline]
pub(crate) fn exact_mul(what: &str, a: Decimal, b: Decimal) -> Result<Decimal, RangeError> {
    match a.checked_mul(b) {
        Some(r) if r.scale() == a.scale() + b.scale() || a.is_zero() || b.is_zero() => Ok(r),
        _ => exact_mul_slow(what, a, b),
    }
}

/// The rare path of [`exact_mul`]: an overflow, or a retry without trailing
/// zeros (e.g. a notional of 0.30257793550000).
#[cold]
fn exact_mul_slow(what: &str, a: Decimal, b: Decimal) -> Result<Decimal, RangeError> {
    checked_mul(what, a, b)?;
    let (a, b) = (a.normalize(), b.normalize());
    match a.checked_mul(b) {
        Some(r) if r.scale() == a.scale() + b.scale() => Ok(r),
        _ => Err(inexact(what, a, '×', b)),
    }
}

/// Whether `r`, the sum or difference of `a` and `b`, kept every digit.
#[inline(always)]
fn kept_digits(r: Decimal, a: Decimal, b: Decimal) -> bool {
    r.scale() >= a.scale().max(b.scale()) || a.is_zero() || b.is_zero()
}

/// The rare path of [`exact_add`] / [`exact_sub`]: an overflow, or a retry
/// without trailing zeros.
#[cold]
fn exact_sum_slow(what: &str, a: Decimal, b: Decimal, op: char) -> Result<Decimal, RangeError> {
    let apply = |a: Decimal, b: Decimal| {
        if op == '+' {
            a.checked_add(b)
        } else {
            a.checked_sub(b)
        }
    };
    apply(a, b).ok_or_else(|| overflow(what, a, op, b))?;
    let (a, b) = (a.normalize(), b.normalize());
    match apply(a, b) {
        Some(r) if kept_digits(r, a, b) => Ok(r),
        _ => Err(inexact(what, a, op, b)),
    }
}

/// `a + b` exactly: refuses an overflow or a rounded sum (trailing zeros of
/// the operands do not count).
#[inline]
pub(crate) fn exact_add(what: &str, a: Decimal, b: Decimal) -> Result<Decimal, RangeError> {
    match a.checked_add(b) {
        Some(r) if kept_digits(r, a, b) => Ok(r),
        _ => exact_sum_slow(what, a, b, '+'),
    }
}

/// `a − b` exactly: refuses an overflow or a rounded difference (trailing
/// zeros of the operands do not count).
#[inline]
pub(crate) fn exact_sub(what: &str, a: Decimal, b: Decimal) -> Result<Decimal, RangeError> {
    match a.checked_sub(b) {
        Some(r) if kept_digits(r, a, b) => Ok(r),
        _ => exact_sum_slow(what, a, b, '-'),
    }
}

/// Index of a symbol in the session's symbol table (`RunConfig::symbols`).
/// Keeps the per-bar path free of string hashing.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct SymbolId(pub u16);

impl SymbolId {
    /// As a vector index.
    pub fn idx(self) -> usize {
        self.0 as usize
    }
}

/// One OHLCV candle of one symbol.
///
/// Prices are in the quote currency; `volume` is in the unit the source
/// declares (see `VolumeUnit`), normalised by the engine where it matters.
/// Serialized (in engine checkpoints) with camelCase names and decimals as
/// strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Candle {
    /// Which symbol.
    pub symbol: SymbolId,
    /// Open time (start of the interval).
    pub open_time: Timestamp,
    /// Length of the interval in milliseconds (> 0).
    pub interval_ms: i64,
    /// First traded price.
    pub open: Decimal,
    /// Highest traded price.
    pub high: Decimal,
    /// Lowest traded price.
    pub low: Decimal,
    /// Last traded price.
    pub close: Decimal,
    /// Traded amount in the interval.
    pub volume: Decimal,
}

impl Candle {
    /// Time the candle closes (= open time + interval); decisions made on this
    /// candle are timestamped here.
    pub fn close_time(&self) -> Timestamp {
        self.open_time.plus_ms(self.interval_ms)
    }
}

/// Order side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Side {
    /// Buy (open or add to a long).
    Buy,
    /// Sell (reduce or close a long).
    Sell,
}

impl Side {
    /// `"buy"` or `"sell"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_and_days() {
        let t = Timestamp(1_640_995_200_000); // 2022-01-01T00:00:00Z
        assert_eq!(t.to_rfc3339(), "2022-01-01T00:00:00Z");
        assert_eq!(t.plus_ms(1500).to_rfc3339(), "2022-01-01T00:00:01.500Z");
        assert_eq!(t.utc_day(), 18993);
        assert_eq!(Timestamp(-1).utc_day(), -1);
    }

    #[test]
    fn range_constants_have_their_documented_values() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(MIN_PRICE, d("0.000000000001"));
        assert_eq!(MIN_PRICE.scale(), MAX_PRICE_DP);
        assert_eq!(MAX_PRICE, d("1000000000000"));
        assert_eq!(MAX_VOLUME, d("1000000000000000000"));
        assert_eq!(MAX_CASH, d("1000000000000000"));
        assert_eq!(MAX_PCT, d("1000000"));
        assert_eq!(MAX_MONEY, d("100000000000000000000"));
    }

    #[test]
    fn exact_operations_refuse_rounding_and_overflow() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(exact_mul("x", d("1.5"), d("2.25")), Ok(d("3.375")));
        assert_eq!(exact_mul("x", d("0"), d("2.25")), Ok(d("0")));
        assert_eq!(exact_add("x", d("0.000"), d("2.25")), Ok(d("2.25")));
        assert_eq!(exact_sub("x", d("1"), d("2.25")), Ok(d("-1.25")));
        // 1e15 with 16 decimals needs 32 digits: the product would be rounded.
        let e = exact_mul(
            "market value",
            d("123456789012345.5"),
            d("1.000000000000001"),
        )
        .unwrap_err();
        assert_eq!(
            e.0,
            "market value = 123456789012345.5 × 1.000000000000001 needs more digits than a decimal holds exactly (28)"
        );
        let e = exact_add("cash", d("1000000000000000"), d("0.0000000000000001")).unwrap_err();
        assert!(e.0.contains("needs more digits"), "{e}");
        // Trailing zeros are not digits that need keeping.
        assert_eq!(
            exact_sub("cash", d("1000000000000000"), d("0.30257793550000000000")),
            Ok(d("999999999999999.6974220645"))
        );
        assert_eq!(
            exact_mul(
                "notional",
                d("1000000000000000.000000"),
                d("1.10000000000000000000")
            ),
            Ok(d("1100000000000000"))
        );
        let e = exact_mul("notional", Decimal::MAX, d("2")).unwrap_err();
        assert!(e.0.contains("exceeds the engine's range"), "{e}");
        assert!(
            checked_div("q", d("1"), Decimal::ZERO)
                .unwrap_err()
                .0
                .ends_with("/ 0 is undefined")
        );
        assert_eq!(show(d("1200000000000000000000000")), "1.2e24");
        assert_eq!(show(d("12.50")), "12.5");
        assert_eq!(show(d("-1000000000000000")), "-1e15");
        assert_eq!(show(d("123456789012345678.9")), "1.234567890123456789e17");
    }

    proptest::proptest! {
        /// Whenever the exact operations accept, the result equals the
        /// mathematically exact one (checked in i128 on small operands).
        #[test]
        fn exact_operations_agree_with_integer_arithmetic(
            ma in -1_000_000_000_000i64..1_000_000_000_000,
            sa in 0u32..=14,
            mb in -1_000_000_000_000i64..1_000_000_000_000,
            sb in 0u32..=14,
        ) {
            let a = Decimal::new(ma, sa);
            let b = Decimal::new(mb, sb);
            let s = sa.max(sb);
            let wide = |m: i64, sc: u32| i128::from(m) * 10i128.pow(s - sc);
            let sum = exact_add("s", a, b).unwrap();
            proptest::prop_assert_eq!(sum, Decimal::from_i128_with_scale(wide(ma, sa) + wide(mb, sb), s));
            let diff = exact_sub("d", a, b).unwrap();
            proptest::prop_assert_eq!(diff, Decimal::from_i128_with_scale(wide(ma, sa) - wide(mb, sb), s));
            let prod = exact_mul("p", a, b).unwrap();
            proptest::prop_assert_eq!(prod, Decimal::from_i128_with_scale(i128::from(ma) * i128::from(mb), sa + sb));
        }
    }
}

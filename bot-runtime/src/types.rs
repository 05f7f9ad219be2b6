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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

//! Trade (tick) files aggregated into candles: a streaming reader of trade
//! rows ([`TradeReader`]), the aggregation into OHLCV candles of a given
//! interval ([`TradeCandles`]) and a full validation pass
//! ([`scan_trade_file`]).
//!
//! Format (the shared data's trade files, `data/market/README.md`):
//!
//! ```text
//! timestamp,price,quantity,side
//! 2024-08-08T23:54:15.342Z,61837.63,0.02,sell
//! ```
//!
//! * The header is exactly `timestamp,price,quantity,side` (a UTF-8
//!   byte-order mark before it is tolerated).
//! * `timestamp`: the exchange's trade time, RFC 3339 in UTC, millisecond
//!   precision at most (`2024-08-08T23:54:15.342Z`; whole seconds and a
//!   `+00:00` offset are accepted too, other offsets refused), the same
//!   parser as candle files.
//! * `price`: quote currency, a plain decimal (`[0-9]+(\.[0-9]+)?`, no
//!   exponent, no `NaN`), > 0 and within the engine's price range
//!   ([`MIN_PRICE`] 1e-12 to [`MAX_PRICE`] 1e12).
//! * `quantity`: base currency, a plain decimal, > 0 (a trade of nothing is
//!   not a trade) and at most [`MAX_VOLUME`] (1e18).
//! * `side`: the taker (aggressor) side, `buy` or `sell` (lower case).
//! * Rows are in non-decreasing time order: several trades may share a
//!   timestamp (an exchange's trade ids order them; the shared files keep
//!   that order), a row earlier than the one before is refused.
//!
//! Identical rows are **not** refused: without trade ids two trades of the
//! same price, quantity and side in the same millisecond are distinct trades
//! (the shared `ETH-USDT_trades_binance_2024-08-08.csv`, whose trade ids are
//! consecutive, has such pairs). A second header row inside the file (two
//! files joined with their headers) is refused with its own message. Every
//! error names the file, the line (1 = header) and, for a value, its column,
//! the value found and what was expected, as [`DataError`]
//! `file:line: reason`.
//!
//! # Aggregation
//!
//! Candles sit on the UTC epoch grid of the interval: a trade at time `t`
//! (ms) belongs to the candle opening at `t − t mod interval` (1m candles
//! open at whole minutes, 1h at whole hours, 1d at 00:00 UTC). Per candle:
//! open = price of its first trade in file order, high/low = highest and
//! lowest price, close = price of its last trade, volume = sum of the
//! quantities (base currency, exact `Decimal` sum). The trade count and the
//! taker side do not enter the candle.
//!
//! * An interval without trades produces **no candle**: a gap, as in the
//!   shared candle files, never a candle invented from the previous close.
//! * The first and last candles cover only the trades the file holds: when a
//!   recording starts or ends inside an interval, that candle is partial
//!   (its open, or its close and volume, are those of the recorded part).
//!   Nothing in a trade file says whether the recording ended on an
//!   interval boundary, so the last candle is always emitted and
//!   [`TradeFileSummary::last_candle_partial`] tells whether the file ends
//!   before the last candle's close time. The shared 1m candle file
//!   `XRP-ETH_1m_binance_2019-10-11_2019-10-13.csv` was made the same way
//!   (its last minute holds the trades up to the file's last trade) and
//!   this module reproduces it exactly (test `xrp_eth_trades_rebuild_the_shared_1m_candles`).
//! * A candle's volume above [`MAX_VOLUME`] is refused at the line of the
//!   trade that passed it.
//!
//! Memory: one buffered reader, one reused line buffer and one candle being
//! built, whatever the file's size.

use std::path::Path;

use rust_decimal::Decimal;

use crate::types::{Candle, MAX_PRICE, MAX_VOLUME, MIN_PRICE, Side, SymbolId, Timestamp};

use super::{
    csv::{DataError, FileSummary, LineSource, TimestampParser, parse_decimal},
    guard::price_in_range,
};

/// The only accepted header line of a trade file.
pub const TRADE_FILE_HEADER: &str = "timestamp,price,quantity,side";

/// What the messages call a trade file.
const WHAT: &str = "a trades CSV file (timestamp,price,quantity,side)";

/// One trade of a trade file, checked (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trade {
    /// Exchange trade time.
    pub time: Timestamp,
    /// Price, quote currency; within [`MIN_PRICE`]..=[`MAX_PRICE`].
    pub price: Decimal,
    /// Quantity, base currency; > 0 and at most [`MAX_VOLUME`].
    pub quantity: Decimal,
    /// Taker (aggressor) side.
    pub side: Side,
}

/// Streams the trades of a file, one row at a time, checking each row and
/// the time order. After the first error the iterator ends.
#[derive(Debug)]
pub struct TradeReader {
    src: LineSource,
    ts: TimestampParser,
    /// Previous trade's time and line.
    prev: Option<(Timestamp, u64)>,
    trades: u64,
    first: Option<Timestamp>,
    done: bool,
}

impl TradeReader {
    /// Open `path` and check its header.
    ///
    /// # Errors
    ///
    /// A [`DataError`] when the file cannot be opened, is a directory, is
    /// empty or its first line is not exactly [`TRADE_FILE_HEADER`].
    pub fn open(path: &Path) -> Result<Self, DataError> {
        Ok(Self {
            src: LineSource::open_as(path, TRADE_FILE_HEADER, WHAT, "trade rows")?,
            ts: TimestampParser::default(),
            prev: None,
            trades: 0,
            first: None,
            done: false,
        })
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.src.path
    }

    /// Line of the row last returned (1 = the header).
    pub fn line(&self) -> u64 {
        self.src.line
    }

    /// Trades returned so far.
    pub fn trades(&self) -> u64 {
        self.trades
    }

    /// Time of the first trade returned, if any.
    pub fn first_time(&self) -> Option<Timestamp> {
        self.first
    }

    /// Time of the last trade returned, if any.
    pub fn last_time(&self) -> Option<Timestamp> {
        self.prev.map(|(t, _)| t)
    }

    fn read_one(&mut self) -> Result<Option<Trade>, DataError> {
        let Some(line) = self.src.next_line()? else {
            return Ok(None);
        };
        let parsed = parse_trade(line, &mut self.ts);
        let line_no = self.src.line;
        let trade = parsed.map_err(|reason| DataError::new(&self.src.path, line_no, reason))?;
        if let Some((p, pline)) = self.prev
            && trade.time < p
        {
            return Err(DataError::new(
                &self.src.path,
                line_no,
                format!(
                    "time goes backwards: {} after {p} (line {pline}); expected trades in \
                     non-decreasing time order (several may share a timestamp)",
                    trade.time
                ),
            ));
        }
        self.prev = Some((trade.time, line_no));
        self.first.get_or_insert(trade.time);
        self.trades += 1;
        Ok(Some(trade))
    }
}

impl Iterator for TradeReader {
    type Item = Result<Trade, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.read_one().transpose();
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}

/// Split a row into its 4 fields, parse them and apply the value rules.
fn parse_trade(line: &[u8], ts: &mut TimestampParser) -> Result<Trade, String> {
    if line.is_empty() {
        return Err(format!(
            "empty line (expected 4 columns ({TRADE_FILE_HEADER}))"
        ));
    }
    if line == TRADE_FILE_HEADER.as_bytes() {
        return Err(format!(
            "a second header row \"{TRADE_FILE_HEADER}\" (expected a trade row: were two trade \
             files joined with their headers?)"
        ));
    }
    let mut f: [&[u8]; 4] = [&[]; 4];
    let mut n = 0usize;
    for field in line.split(|&b| b == b',') {
        if let Some(slot) = f.get_mut(n) {
            *slot = field;
        }
        n += 1;
    }
    if n != 4 {
        return Err(format!(
            "expected 4 columns ({TRADE_FILE_HEADER}), found {n}"
        ));
    }
    let time = ts.parse(f[0])?;
    let price = parse_decimal(f[1], "price")?;
    if price.is_sign_negative() || price.is_zero() {
        return Err(format!("price must be > 0, found {price}"));
    }
    if !price_in_range(price) {
        return Err(format!(
            "price {price} is outside the accepted range {MIN_PRICE} to {MAX_PRICE}"
        ));
    }
    let quantity = parse_decimal(f[2], "quantity")?;
    if quantity.is_sign_negative() || quantity.is_zero() {
        return Err(format!(
            "quantity must be > 0, found {quantity} (a trade of nothing is not a trade)"
        ));
    }
    if quantity > MAX_VOLUME {
        return Err(format!(
            "quantity {quantity} is above the accepted maximum {MAX_VOLUME}"
        ));
    }
    let side = match f[3] {
        b"buy" => Side::Buy,
        b"sell" => Side::Sell,
        other => {
            return Err(format!(
                "column \"side\": {:?} is not a side (expected buy or sell, the taker's side)",
                String::from_utf8_lossy(other)
            ));
        }
    };
    Ok(Trade {
        time,
        price,
        quantity,
        side,
    })
}

/// The candle being built from the trades of one interval.
#[derive(Debug)]
struct Building {
    open_time: i64,
    open: Decimal,
    high: Decimal,
    low: Decimal,
    close: Decimal,
    volume: Decimal,
}

impl Building {
    fn new(open_time: i64, t: &Trade) -> Self {
        Self {
            open_time,
            open: t.price,
            high: t.price,
            low: t.price,
            close: t.price,
            volume: t.quantity,
        }
    }

    /// Add a later trade of the same interval; `Err` when the volume
    /// would pass [`MAX_VOLUME`].
    fn add(&mut self, t: &Trade) -> Result<(), ()> {
        // Both addends are at most 1e18, so the sum cannot overflow a Decimal.
        let volume = self.volume + t.quantity;
        if volume > MAX_VOLUME {
            return Err(());
        }
        self.volume = volume;
        self.high = self.high.max(t.price);
        self.low = self.low.min(t.price);
        self.close = t.price;
        Ok(())
    }

    fn candle(&self, symbol: SymbolId, interval_ms: i64) -> Candle {
        Candle {
            symbol,
            open_time: Timestamp(self.open_time),
            interval_ms,
            open: self.open,
            high: self.high,
            low: self.low,
            close: self.close,
            volume: self.volume,
        }
    }
}

/// The candles of one trade file, in time order, built while the trades
/// stream past (rules in the [module docs](self)). After the first error
/// the iterator ends.
#[derive(Debug)]
pub struct TradeCandles {
    trades: TradeReader,
    symbol: SymbolId,
    interval_ms: i64,
    building: Option<Building>,
    done: bool,
}

impl TradeCandles {
    /// Open `path`; candles get `symbol` and last `interval_ms`
    /// milliseconds.
    ///
    /// # Errors
    ///
    /// A [`DataError`] when `interval_ms` is not positive or the file
    /// cannot be opened or has the wrong header ([`TradeReader::open`]).
    pub fn open(path: &Path, symbol: SymbolId, interval_ms: i64) -> Result<Self, DataError> {
        if interval_ms <= 0 {
            return Err(DataError::new(
                path,
                0,
                format!("candle interval must be > 0 ms, found {interval_ms} ms"),
            ));
        }
        Ok(Self {
            trades: TradeReader::open(path)?,
            symbol,
            interval_ms,
            building: None,
            done: false,
        })
    }

    /// The trades read so far (counts and first/last times).
    pub fn trades(&self) -> &TradeReader {
        &self.trades
    }

    fn read_one(&mut self) -> Result<Option<Candle>, DataError> {
        let iv = self.interval_ms;
        while let Some(t) = self.trades.next() {
            let t = t?;
            let open_time = t.time.0 - t.time.0.rem_euclid(iv);
            match &mut self.building {
                Some(b) if b.open_time == open_time => {
                    if b.add(&t).is_err() {
                        let at = Timestamp(b.open_time);
                        return Err(DataError::new(
                            self.trades.path(),
                            self.trades.line(),
                            format!(
                                "the quantities of the candle opening at {at} add up to more \
                                 than the accepted maximum volume {MAX_VOLUME} (expected a \
                                 smaller interval or correct quantities)"
                            ),
                        ));
                    }
                }
                // Trades are in time order, so a different interval is a later one.
                Some(_) => {
                    let done = self.building.replace(Building::new(open_time, &t));
                    return Ok(done.map(|b| b.candle(self.symbol, iv)));
                }
                None => self.building = Some(Building::new(open_time, &t)),
            }
        }
        Ok(self.building.take().map(|b| b.candle(self.symbol, iv)))
    }
}

impl Iterator for TradeCandles {
    type Item = Result<Candle, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.read_one().transpose();
        if !matches!(r, Some(Ok(_))) {
            self.done = true;
        }
        r
    }
}

/// What [`scan_trade_file`] learned about a valid trade file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TradeFileSummary {
    /// Trade rows (header excluded), >= 1.
    pub trades: u64,
    /// Time of the first trade.
    pub first_trade: Timestamp,
    /// Time of the last trade.
    pub last_trade: Timestamp,
    /// The candles the trades make: `rows` candles from `first` to `last`
    /// (open times), `interval_ms` long, `missing_intervals` intervals
    /// without trades between them (gaps, never filled).
    pub candles: FileSummary,
}

impl TradeFileSummary {
    /// Whether the first trade comes after the first candle's open time:
    /// the recording may have started inside that interval.
    pub fn first_candle_partial(&self) -> bool {
        self.first_trade > self.candles.first
    }

    /// Whether the last trade comes before the last candle's close time
    /// minus one millisecond: the recording may have ended inside that
    /// interval (a trade file cannot say whether the interval had more
    /// trades).
    pub fn last_candle_partial(&self) -> bool {
        self.last_trade.0 < self.candles.last.0 + self.candles.interval_ms - 1
    }
}

/// Validate a whole trade file and count the candles of `interval_ms` it
/// makes; run it before trading starts so that a bad row fails the run (with
/// file and line) before any trade is made.
///
/// # Errors
///
/// A [`DataError`] for the first problem, in file order: the interval is
/// not positive, the file cannot be opened or read, is empty, has a wrong
/// header, has no trade rows, or a row breaks a rule of the
/// [module docs](self).
pub fn scan_trade_file(path: &Path, interval_ms: i64) -> Result<TradeFileSummary, DataError> {
    aggregate_trade_file(path, interval_ms, |_| Ok::<(), DataError>(()))
}

/// Stream the candles of `interval_ms` of the trade file `path` into
/// `each` (symbol 0, in time order) and summarise them; the one pass behind
/// [`scan_trade_file`] and `bot-runtime data candles`.
///
/// # Errors
///
/// As [`scan_trade_file`] (converted into `E`), or the first error `each`
/// returns.
pub fn aggregate_trade_file<E: From<DataError>>(
    path: &Path,
    interval_ms: i64,
    mut each: impl FnMut(&Candle) -> Result<(), E>,
) -> Result<TradeFileSummary, E> {
    let mut candles = TradeCandles::open(path, SymbolId(0), interval_ms)?;
    let mut rows = 0u64;
    let mut missing = 0u64;
    let mut first = None;
    let mut last: Option<Timestamp> = None;
    for c in candles.by_ref() {
        let c = c?;
        each(&c)?;
        if let Some(p) = last {
            missing += ((c.open_time.0 - p.0) / interval_ms - 1).unsigned_abs();
        }
        first.get_or_insert(c.open_time);
        last = Some(c.open_time);
        rows += 1;
    }
    let t = candles.trades();
    match (first, last, t.first_time(), t.last_time()) {
        (Some(first), Some(last), Some(first_trade), Some(last_trade)) => Ok(TradeFileSummary {
            trades: t.trades(),
            first_trade,
            last_trade,
            candles: FileSummary {
                rows,
                first,
                last,
                interval_ms,
                missing_intervals: missing,
            },
        }),
        _ => Err(DataError::new(
            path,
            0,
            format!(
                "no trade rows after the header (expected at least one row below \
                 \"{TRADE_FILE_HEADER}\")"
            ),
        )
        .into()),
    }
}

//! Candle CSV files: a full validation pass ([`scan_candle_file`]) and a
//! streaming reader ([`CandleReader`]) that applies the same per-row rules.
//!
//! Format (see `data/market/README.md`):
//!
//! ```text
//! timestamp,open,high,low,close,volume
//! 2022-01-01T00:00:00Z,46197,46247,46195,46224,3353308.7635
//! ```
//!
//! * The header is exactly `timestamp,open,high,low,close,volume` (a UTF-8
//!   byte-order mark before it is tolerated).
//! * `timestamp` is the candle's **open** time, RFC 3339 in UTC. The exact form
//!   `YYYY-MM-DDTHH:MM:SSZ` takes a fast path; fractional seconds (down to
//!   milliseconds) and a `+00:00` offset are accepted through chrono's RFC 3339
//!   parser. Other offsets are refused: the format is UTC.
//! * Prices and volume are plain decimals (`-?[0-9]+(\.[0-9]+)?`, no exponent,
//!   no `NaN`/`inf`), kept exactly as written (`Decimal`, never `f64`).
//! * Lines end in `\n`; a `\r` before it is tolerated. Line numbers count from
//!   1 (the header); the first candle is on line 2.
//!
//! Per-row rules (both passes): 6 columns; prices > 0; volume >= 0; every
//! value inside the engine's range (below); `low <= high`; `open` and
//! `close` inside `[low, high]`; time strictly increasing; every open time a
//! whole number of intervals after the first row's. Gaps (missing intervals)
//! are legal and are never filled.
//!
//! The engine's range (the constants of [`crate::types`], shared with the
//! engine, which never panics inside it):
//!
//! | column | accepted |
//! |---|---|
//! | `open`, `high`, `low`, `close` | [`MIN_PRICE`](crate::types::MIN_PRICE) (1e-12) to [`MAX_PRICE`](crate::types::MAX_PRICE) (1e12) |
//! | `volume` | 0 to [`MAX_VOLUME`](crate::types::MAX_VOLUME) (1e18) |
//!
//! A value outside it is refused with its column, the value and the accepted
//! range, e.g. `data.csv:17: high price 10000000000000 is outside the
//! accepted range 0.000000000001 to 1000000000000`. The check is the feed
//! guard's (`check_prices`, integer tests on the mantissa and scale, a few
//! nanoseconds a candle), so a live tick goes through the same rules and is
//! skipped and counted as a bad tick instead.
//!
//! Decimal places are not limited to `MAX_PRICE_DP` (12) here: real
//! exchange exports carry binary-float artefacts such as `1.2147000000000001`
//! (16 places, Binance futures 5m candles in the shared data), and refusing
//! them would refuse real data. Any value a `Decimal` holds exactly (at most
//! 28 significant digits, checked by the parser) is accepted; the engine
//! rounds a price to `MAX_PRICE_DP` places as it enters.
//!
//! Both passes read through a buffered reader into one reused line buffer; no
//! per-row allocation happens unless a row is rejected.

use std::{
    fs::File,
    io::{self, BufRead, BufReader},
    path::{Path, PathBuf},
    time::Duration,
};

use chrono::{DateTime, NaiveDate, NaiveTime, Timelike};
use rust_decimal::Decimal;

use crate::types::{Candle, SymbolId, Timestamp};

use super::guard::check_prices;

/// The only accepted header line.
pub const HEADER: &str = "timestamp,open,high,low,close,volume";

/// Column names, in file order.
pub(crate) const COLUMNS: [&str; 6] = ["timestamp", "open", "high", "low", "close", "volume"];

/// Rows looked at when the interval is inferred.
const INFER_ROWS: usize = 100;

/// Read buffer size of both passes.
const READ_BUF: usize = 1 << 16;

/// A problem with a candle file, located by file and line.
///
/// Display: `"{file}:{line}: {reason}"`. `line` counts from 1 (the header);
/// line 0 means the whole file (not found, empty, no rows, interval cannot be
/// inferred). `reason` says what was found and what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {reason}", file.display())]
pub struct DataError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line number; 0 for whole-file problems.
    pub line: u64,
    /// What was wrong and what was expected.
    pub reason: String,
}

impl DataError {
    pub(crate) fn new(file: &Path, line: u64, reason: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line,
            reason: reason.into(),
        }
    }
}

/// What [`scan_candle_file`] learned about a valid file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileSummary {
    /// Candle rows (header excluded), >= 1.
    pub rows: u64,
    /// Open time of the first row.
    pub first: Timestamp,
    /// Open time of the last row.
    pub last: Timestamp,
    /// Candle length in milliseconds (given, or inferred), > 0.
    pub interval_ms: i64,
    /// Intervals between `first` and `last` with no row (gaps are not filled):
    /// `(last − first) / interval_ms + 1 − rows`.
    pub missing_intervals: u64,
}

/// Validate a whole candle file; run it before trading starts so that a bad
/// row fails the run (with file and line) before any trade is made.
///
/// `interval_ms`: the candle length in milliseconds; when `None` it is
/// inferred as the smallest positive difference between consecutive open times
/// among the first 100 rows.
///
/// # Errors
///
/// A [`DataError`] for the first problem found, in file order: the file
/// cannot be opened or read, is empty, has a wrong header, has no rows, a row
/// breaks a rule listed in the [module docs](self), the given interval is not
/// positive, or the interval is not given and the file has fewer than 2 rows.
pub fn scan_candle_file(path: &Path, interval_ms: Option<i64>) -> Result<FileSummary, DataError> {
    scan_candle_file_each(path, interval_ms, |_| {})
}

/// [`scan_candle_file`], calling `each` with the open time of every valid
/// row in file order (the preflight counts the rows of a time range with it
/// in the same pass).
///
/// # Errors
///
/// As [`scan_candle_file`].
pub fn scan_candle_file_each(
    path: &Path,
    interval_ms: Option<i64>,
    mut each: impl FnMut(Timestamp),
) -> Result<FileSummary, DataError> {
    let interval = match interval_ms {
        Some(i) if i <= 0 => {
            return Err(DataError::new(
                path,
                0,
                format!("candle interval must be > 0 ms, found {i} ms"),
            ));
        }
        Some(i) => Some(i),
        None => infer_interval(path)?,
    };

    let mut src = LineSource::open(path)?;
    let mut ts = TimestampParser::default();
    let mut seq = Sequence::new(interval);
    let mut rows = 0u64;
    let mut missing = 0u64;
    while let Some(line) = src.next_line()? {
        let row = parse_row(line, &mut ts, SymbolId(0), interval.unwrap_or(0))
            .map_err(|reason| DataError::new(path, src.line, reason))?;
        missing += seq
            .push(row.open_time, src.line)
            .map_err(|reason| DataError::new(path, src.line, reason))?;
        each(row.open_time);
        rows += 1;
    }
    let (Some(first), Some((last, _))) = (seq.first, seq.prev) else {
        return Err(DataError::new(
            path,
            0,
            format!(
                "no candle rows after the header (expected at least one row below \"{HEADER}\")"
            ),
        ));
    };
    let Some(interval_ms) = seq.interval_ms else {
        return Err(DataError::new(
            path,
            0,
            format!(
                "cannot infer the candle interval from {rows} row: give the interval explicitly \
                 (e.g. \"1m\") or supply at least 2 rows"
            ),
        ));
    };
    Ok(FileSummary {
        rows,
        first,
        last,
        interval_ms,
        missing_intervals: missing,
    })
}

/// Smallest positive delta between consecutive parsable open times among the
/// first [`INFER_ROWS`] rows. Unparsable rows are skipped here: the main pass
/// reports them at their line.
fn infer_interval(path: &Path) -> Result<Option<i64>, DataError> {
    let mut src = LineSource::open(path)?;
    let mut ts = TimestampParser::default();
    let mut prev: Option<i64> = None;
    let mut best: Option<i64> = None;
    for _ in 0..INFER_ROWS {
        let Some(line) = src.next_line()? else { break };
        let field = line.split(|&b| b == b',').next().unwrap_or_default();
        let Ok(t) = ts.parse(field) else { continue };
        if let Some(p) = prev {
            let d = t.0 - p;
            if d > 0 && best.is_none_or(|b| d < b) {
                best = Some(d);
            }
        }
        prev = Some(t.0);
    }
    Ok(best)
}

/// Streams the candles of one validated file, one row at a time.
///
/// Holds one buffered reader and one reused line buffer, never the file.
/// Each row gets the same checks as in [`scan_candle_file`] (values, order,
/// interval grid); after the first error the iterator ends. A file with a
/// header and no rows yields nothing.
#[derive(Debug)]
pub struct CandleReader {
    src: LineSource,
    symbol: SymbolId,
    interval_ms: i64,
    ts: TimestampParser,
    seq: Sequence,
    done: bool,
}

impl CandleReader {
    /// Open `path` and check its header. Candles get `symbol` and
    /// `interval_ms` (use the interval from [`scan_candle_file`]).
    ///
    /// # Errors
    ///
    /// A [`DataError`] when the file cannot be opened, is empty, has a wrong
    /// header, or `interval_ms` is not positive.
    pub fn open(path: &Path, symbol: SymbolId, interval_ms: i64) -> Result<Self, DataError> {
        if interval_ms <= 0 {
            return Err(DataError::new(
                path,
                0,
                format!("candle interval must be > 0 ms, found {interval_ms} ms"),
            ));
        }
        Ok(Self {
            src: LineSource::open(path)?,
            symbol,
            interval_ms,
            ts: TimestampParser::default(),
            seq: Sequence::new(Some(interval_ms)),
            done: false,
        })
    }

    fn read_one(&mut self) -> Result<Option<Candle>, DataError> {
        let Some(line) = self.src.next_line()? else {
            return Ok(None);
        };
        let parsed = parse_row(line, &mut self.ts, self.symbol, self.interval_ms);
        let (path, line_no) = (&self.src.path, self.src.line);
        let candle = parsed.map_err(|reason| DataError::new(path, line_no, reason))?;
        self.seq
            .push(candle.open_time, line_no)
            .map_err(|reason| DataError::new(path, line_no, reason))?;
        Ok(Some(candle))
    }
}

impl Iterator for CandleReader {
    type Item = Result<Candle, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.read_one() {
            Ok(Some(c)) => Some(Ok(c)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Buffered line reader with the header already checked.
#[derive(Debug)]
pub(crate) struct LineSource {
    pub(crate) path: PathBuf,
    reader: BufReader<File>,
    buf: Vec<u8>,
    /// Number of the line last returned (1 = header).
    pub(crate) line: u64,
}

impl LineSource {
    /// Open a candle file and check its header. A trade file's header
    /// gets a hint on how to use it.
    fn open(path: &Path) -> Result<Self, DataError> {
        Self::open_as(path, HEADER, "a candle CSV file", "candle rows").map_err(|mut e| {
            let trades = super::ticks::TRADE_FILE_HEADER;
            if e.line == 1 && e.reason.starts_with(&format!("header is \"{trades}\"")) {
                e.reason.push_str(
                    ": this is a trade file; replay it with format: Trades and an interval, or \
                     aggregate it with `bot-runtime data candles --interval 1m IN OUT`",
                );
            }
            e
        })
    }

    /// Open `path` and check that its first line is exactly `header`
    /// (`what`: the kind of file expected, e.g. "a candle CSV file";
    /// `rows`: what follows the header, e.g. "candle rows"; both for messages).
    pub(crate) fn open_as(
        path: &Path,
        header: &str,
        what: &str,
        rows: &str,
    ) -> Result<Self, DataError> {
        let file = File::open(path).map_err(|e| {
            let reason = match e.kind() {
                io::ErrorKind::NotFound => format!("file not found (expected {what})"),
                _ => format!("cannot open file: {e}"),
            };
            DataError::new(path, 0, reason)
        })?;
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(DataError::new(
                path,
                0,
                format!("is a directory (expected {what})"),
            ));
        }
        let mut src = Self {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(READ_BUF, file),
            buf: Vec::with_capacity(128),
            line: 0,
        };
        let found = match src.next_line()? {
            None => {
                return Err(DataError::new(
                    path,
                    0,
                    format!("empty file (expected the header \"{header}\" and {rows})"),
                ));
            }
            Some(h) => h.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(h),
        };
        if found != header.as_bytes() {
            let found = String::from_utf8_lossy(found).into_owned();
            return Err(DataError::new(
                path,
                1,
                format!("header is {found:?} (expected exactly \"{header}\")"),
            ));
        }
        Ok(src)
    }

    /// The next line without its `\n` / `\r\n`, or `None` at the end.
    pub(crate) fn next_line(&mut self) -> Result<Option<&[u8]>, DataError> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| DataError::new(&self.path, self.line + 1, format!("read error: {e}")))?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        let mut line = self.buf.as_slice();
        if let Some(l) = line.strip_suffix(b"\n") {
            line = l;
        }
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        Ok(Some(line))
    }
}

/// Split a line into its 6 fields, parse them and apply the value rules.
fn parse_row(
    line: &[u8],
    ts: &mut TimestampParser,
    symbol: SymbolId,
    interval_ms: i64,
) -> Result<Candle, String> {
    if line.is_empty() {
        return Err(format!("empty line (expected 6 columns ({HEADER}))"));
    }
    let mut f: [&[u8]; 6] = [&[]; 6];
    let mut n = 0usize;
    for field in line.split(|&b| b == b',') {
        if let Some(slot) = f.get_mut(n) {
            *slot = field;
        }
        n += 1;
    }
    if n != 6 {
        return Err(format!("expected 6 columns ({HEADER}), found {n}"));
    }
    candle_from_fields(symbol, ts.parse(f[0])?, interval_ms, &f)
}

/// Build a candle from its five value fields (`f[1..6]`: open, high, low,
/// close, volume as plain decimals) and check the value rules (signs, the
/// engine's range, low/high order: `check_prices`); shared by file rows and
/// live ticks so both follow one set of rules.
pub(crate) fn candle_from_fields(
    symbol: SymbolId,
    open_time: Timestamp,
    interval_ms: i64,
    f: &[&[u8]; 6],
) -> Result<Candle, String> {
    let c = Candle {
        symbol,
        open_time,
        interval_ms,
        open: parse_decimal(f[1], COLUMNS[1])?,
        high: parse_decimal(f[2], COLUMNS[2])?,
        low: parse_decimal(f[3], COLUMNS[3])?,
        close: parse_decimal(f[4], COLUMNS[4])?,
        volume: parse_decimal(f[5], COLUMNS[5])?,
    };
    match check_prices(&c) {
        Some(r) => Err(r.detail(&c)),
        None => Ok(c),
    }
}

/// Parse a plain decimal (`-?[0-9]+(\.[0-9]+)?`) exactly.
///
/// The syntax is checked here first because `Decimal::from_str` also takes
/// `+`, `_` separators and exponents, which the file format does not allow.
pub(crate) fn parse_decimal(field: &[u8], column: &str) -> Result<Decimal, String> {
    let body = field.strip_prefix(b"-").unwrap_or(field);
    let (int, frac) = match body.iter().position(|&b| b == b'.') {
        Some(p) => (&body[..p], Some(&body[p + 1..])),
        None => (body, None),
    };
    let plain = !int.is_empty()
        && int.iter().all(u8::is_ascii_digit)
        && frac.is_none_or(|f| !f.is_empty() && f.iter().all(u8::is_ascii_digit));
    let text = std::str::from_utf8(field)
        .ok()
        .filter(|_| plain)
        .ok_or_else(|| {
            format!(
                "column \"{column}\": {:?} is not a decimal number (expected e.g. 46197.5)",
                String::from_utf8_lossy(field)
            )
        })?;
    Decimal::from_str_exact(text).map_err(|e| {
        format!("column \"{column}\": {text:?} cannot be held exactly as a decimal ({e}; expected at most 28 significant digits)")
    })
}

/// Order and grid rules across rows.
#[derive(Debug)]
struct Sequence {
    interval_ms: Option<i64>,
    first: Option<Timestamp>,
    /// Previous row's time and line.
    prev: Option<(Timestamp, u64)>,
}

impl Sequence {
    fn new(interval_ms: Option<i64>) -> Self {
        Self {
            interval_ms,
            first: None,
            prev: None,
        }
    }

    /// Accept the row at `t` on `line`; returns the number of missing
    /// intervals between the previous row and this one.
    fn push(&mut self, t: Timestamp, line: u64) -> Result<u64, String> {
        let mut missing = 0;
        if let Some((p, pline)) = self.prev {
            if t == p {
                return Err(format!("duplicate timestamp {t} (also on line {pline})"));
            }
            if t < p {
                return Err(format!("time goes backwards: {t} after {p} (line {pline})"));
            }
        }
        let first = *self.first.get_or_insert(t);
        if let Some(iv) = self.interval_ms {
            let since_first = t.0 - first.0;
            if since_first % iv != 0 {
                let human = humantime::format_duration(Duration::from_millis(iv.unsigned_abs()));
                return Err(format!(
                    "time {t} is not on the {human} interval grid of the first row ({first}): \
                     expected a whole number of {iv} ms intervals after it"
                ));
            }
            if let Some((p, _)) = self.prev {
                missing = ((t.0 - p.0) / iv - 1) as u64;
            }
        }
        self.prev = Some((t, line));
        Ok(missing)
    }
}

/// RFC 3339 UTC timestamp parser with a fast path for
/// `YYYY-MM-DDTHH:MM:SSZ`; caches the last date so consecutive rows of the
/// same day skip the calendar computation.
#[derive(Debug, Default)]
pub(crate) struct TimestampParser {
    /// Date bytes `YYYY-MM-DD` of the cached day and its midnight in ms.
    day: Option<([u8; 10], i64)>,
}

impl TimestampParser {
    /// Parse `field` as an RFC 3339 UTC time, milliseconds precision.
    pub(crate) fn parse(&mut self, field: &[u8]) -> Result<Timestamp, String> {
        if let Some(t) = self.fast(field) {
            return Ok(Timestamp(t));
        }
        slow_timestamp(field)
    }

    fn fast(&mut self, b: &[u8]) -> Option<i64> {
        let b: &[u8; 20] = b.try_into().ok()?;
        if b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
            || b[19] != b'Z'
        {
            return None;
        }
        let date: [u8; 10] = b[..10].try_into().ok()?;
        let midnight = match self.day {
            Some((d, ms)) if d == date => ms,
            _ => {
                let y = digits(&b[0..4])?;
                let m = digits(&b[5..7])?;
                let d = digits(&b[8..10])?;
                let ms = NaiveDate::from_ymd_opt(y as i32, m, d)?
                    .and_time(NaiveTime::MIN)
                    .and_utc()
                    .timestamp_millis();
                self.day = Some((date, ms));
                ms
            }
        };
        let time = NaiveTime::from_hms_opt(
            digits(&b[11..13])?,
            digits(&b[14..16])?,
            digits(&b[17..19])?,
        )?;
        Some(midnight + i64::from(time.num_seconds_from_midnight()) * 1000)
    }
}

/// ASCII digits to a number; `None` if any byte is not a digit.
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// General RFC 3339 path through chrono: fractional seconds, `+00:00`.
fn slow_timestamp(field: &[u8]) -> Result<Timestamp, String> {
    let text = String::from_utf8_lossy(field);
    let bad =
        || format!("timestamp {text:?} is not RFC 3339 UTC (expected e.g. 2022-01-01T00:00:00Z)");
    let dt = std::str::from_utf8(field)
        .ok()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .ok_or_else(bad)?;
    if dt.offset().local_minus_utc() != 0 {
        return Err(format!(
            "timestamp {text:?} has offset {} (expected UTC: a Z or +00:00 suffix)",
            dt.offset()
        ));
    }
    if dt.timestamp_subsec_nanos() % 1_000_000 != 0 {
        return Err(format!(
            "timestamp {text:?} is finer than a millisecond (expected at most 3 fractional digits of a second)"
        ));
    }
    Ok(Timestamp(dt.timestamp_millis()))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use rust_decimal_macros::dec;

    use super::*;

    const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/market");

    /// Write `rows` below the standard header into a fresh temp file.
    fn file(dir: &tempfile::TempDir, rows: &[&str]) -> PathBuf {
        let mut text = format!("{HEADER}\n");
        for r in rows {
            text.push_str(r);
            text.push('\n');
        }
        raw(dir, &text)
    }

    fn raw(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join(format!(
            "f{}.csv",
            fs::read_dir(dir.path()).unwrap().count()
        ));
        fs::write(&p, text).unwrap();
        p
    }

    /// A valid 1m row at minute `m` of 2022-01-01.
    fn row(m: u32) -> String {
        format!("2022-01-01T00:{m:02}:00Z,10,11,9,10.5,1.25")
    }

    /// Scan must fail at `line` with exactly `reason`, and the streaming
    /// reader (with a 1m interval) must fail the same way.
    fn assert_bad(rows: &[&str], line: u64, reason: &str) {
        let dir = tempfile::tempdir().unwrap();
        let p = file(&dir, rows);
        let e = scan_candle_file(&p, None).unwrap_err();
        assert_eq!(
            (e.line, e.reason.as_str()),
            (line, reason),
            "scan of {rows:?}"
        );
        let streamed: Vec<_> = CandleReader::open(&p, SymbolId(0), 60_000)
            .unwrap()
            .collect();
        let last = streamed.last().unwrap().as_ref().unwrap_err();
        assert_eq!(
            (last.line, last.reason.as_str()),
            (line, reason),
            "stream of {rows:?}"
        );
        assert_eq!(
            streamed.len() as u64,
            line - 1,
            "rows before the bad one stream fine"
        );
    }

    #[test]
    fn bad_decimals_are_named_with_column_and_line() {
        let (r0, r1) = (row(0), row(1));
        for bad in [
            "abc", "NaN", "nan", "inf", "-inf", "1e5", "+5", "1_000", "", ".5", "5.", "1.2.3", " 5",
        ] {
            let r2 = format!("2022-01-01T00:02:00Z,{bad},11,9,10,1");
            assert_bad(
                &[&r0, &r1, &r2],
                4,
                &format!(
                    "column \"open\": {bad:?} is not a decimal number (expected e.g. 46197.5)"
                ),
            );
        }
        assert_bad(
            &[&r0, "2022-01-01T00:01:00Z,10,11,9,10,NaN"],
            3,
            "column \"volume\": \"NaN\" is not a decimal number (expected e.g. 46197.5)",
        );
    }

    #[test]
    fn value_rules_give_specific_reasons() {
        let r0 = row(0);
        let cases = [
            (
                "2022-01-01T00:01:00Z,10,11,-3,10,1",
                "low price must be > 0, found -3",
            ),
            (
                "2022-01-01T00:01:00Z,0,11,9,10,1",
                "open price must be > 0, found 0",
            ),
            (
                "2022-01-01T00:01:00Z,10.5,10,11,10.5,1",
                "high 10 is below low 11",
            ),
            (
                "2022-01-01T00:01:00Z,12,11,9,10,1",
                "open 12 is outside [low, high] = [9, 11]",
            ),
            (
                "2022-01-01T00:01:00Z,10,11,9,8.5,1",
                "close 8.5 is outside [low, high] = [9, 11]",
            ),
            (
                "2022-01-01T00:01:00Z,10,11,9,10,-0.1",
                "volume must be >= 0, found -0.1",
            ),
        ];
        for (bad, reason) in cases {
            assert_bad(&[&r0, bad], 3, reason);
        }
        // Zero volume is legal.
        let dir = tempfile::tempdir().unwrap();
        let p = file(&dir, &[&r0, "2022-01-01T00:01:00Z,10,10,10,10,0"]);
        assert_eq!(scan_candle_file(&p, None).unwrap().rows, 2);
    }

    #[test]
    fn values_outside_the_engine_range_are_refused_with_column_value_and_range() {
        let r0 = row(0);
        let price_range = "is outside the accepted range 0.000000000001 to 1000000000000";
        let huge28 = "1234567890123456789012345678"; // 28 significant digits
        let cases = [
            (
                "2022-01-01T00:01:00Z,10,10000000000000,9,10,1".to_string(),
                format!("high price 10000000000000 {price_range}"),
            ),
            (
                format!("2022-01-01T00:01:00Z,10,{huge28},9,10,1"),
                format!("high price {huge28} {price_range}"),
            ),
            (
                "2022-01-01T00:01:00Z,10,11,0.0000000000009,10,1".to_string(),
                format!("low price 0.0000000000009 {price_range}"),
            ),
            (
                format!("2022-01-01T00:01:00Z,10,11,9,10,{huge28}"),
                format!("volume {huge28} is above the accepted maximum 1000000000000000000"),
            ),
            (
                "2022-01-01T00:01:00Z,10,11,9,10,1000000000000000000.1".to_string(),
                "volume 1000000000000000000.1 is above the accepted maximum 1000000000000000000".to_string(),
            ),
            (
                // Beyond 7.9e28 a value does not fit a Decimal at all.
                "2022-01-01T00:01:00Z,10,11,9,10,123456789012345678901234567890".to_string(),
                "column \"volume\": \"123456789012345678901234567890\" cannot be held exactly as a decimal (Invalid decimal: overflow from too many digits; expected at most 28 significant digits)".to_string(),
            ),
        ];
        for (bad, reason) in &cases {
            assert_bad(&[&r0, bad], 3, reason);
        }
        // The edges of the range, and trailing zeros past 12 places, are accepted.
        let dir = tempfile::tempdir().unwrap();
        let p = file(
            &dir,
            &[
                &r0,
                "2022-01-01T00:01:00Z,0.000000000001,0.000000000001,0.000000000001,0.000000000001,0",
                "2022-01-01T00:02:00Z,1000000000000,1000000000000,1000000000000,1000000000000,1000000000000000000",
                "2022-01-01T00:03:00Z,1.2147000000000001,1.5,1.2147000000000001,1.5,0.0000000000000000000000000001",
            ],
        );
        assert_eq!(scan_candle_file(&p, None).unwrap().rows, 4);
    }

    #[test]
    fn time_backwards_and_duplicates_name_the_other_line() {
        let rows: Vec<String> = [0, 1, 2, 3, 4, 6, 5].map(row).to_vec();
        let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
        assert_bad(
            &rows,
            8,
            "time goes backwards: 2022-01-01T00:05:00Z after 2022-01-01T00:06:00Z (line 7)",
        );
        let rows: Vec<String> = [1, 2, 3, 4, 5, 5].map(row).to_vec();
        let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
        assert_bad(
            &rows,
            7,
            "duplicate timestamp 2022-01-01T00:05:00Z (also on line 6)",
        );
    }

    #[test]
    fn column_count_and_empty_lines() {
        let r0 = row(0);
        assert_bad(
            &[&r0, "2022-01-01T00:01:00Z,10,11,9,10"],
            3,
            "expected 6 columns (timestamp,open,high,low,close,volume), found 5",
        );
        assert_bad(
            &[&r0, "2022-01-01T00:01:00Z,10,11,9,10,1,7"],
            3,
            "expected 6 columns (timestamp,open,high,low,close,volume), found 7",
        );
        assert_bad(
            &[&r0, ""],
            3,
            "empty line (expected 6 columns (timestamp,open,high,low,close,volume))",
        );
    }

    #[test]
    fn bad_timestamps() {
        let r0 = row(0);
        for bad in [
            "2022-13-01T00:00:00Z",
            "2022-02-30T00:00:00Z",
            "2022-01-01T24:00:00Z",
            "1641000000",
            "2022-01-01 00:01",
        ] {
            let r = format!("{bad},10,11,9,10,1");
            assert_bad(
                &[&r0, &r],
                3,
                &format!(
                    "timestamp {bad:?} is not RFC 3339 UTC (expected e.g. 2022-01-01T00:00:00Z)"
                ),
            );
        }
        assert_bad(
            &[&r0, "2022-01-01T01:01:00+01:00,10,11,9,10,1"],
            3,
            "timestamp \"2022-01-01T01:01:00+01:00\" has offset +01:00 (expected UTC: a Z or +00:00 suffix)",
        );
    }

    #[test]
    fn slow_path_timestamps_and_crlf_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "\u{feff}{HEADER}\r\n2022-01-01T00:00:00Z,1,1,1,1,1\r\n2022-01-01T00:01:00.000Z,1,1,1,1,1\r\n\
             2022-01-01T00:02:00+00:00,1,1,1,1,1\r\n2022-01-01T00:03:00.000+00:00,1,1,1,1,1"
        );
        let p = raw(&dir, &text);
        let s = scan_candle_file(&p, None).unwrap();
        assert_eq!(s.rows, 4);
        assert_eq!(s.interval_ms, 60_000);
        assert_eq!(s.last, Timestamp(s.first.0 + 180_000));
        let times: Vec<i64> = CandleReader::open(&p, SymbolId(0), 60_000)
            .unwrap()
            .map(|c| c.unwrap().open_time.0 - s.first.0)
            .collect();
        assert_eq!(times, [0, 60_000, 120_000, 180_000]);
    }

    #[test]
    fn off_grid_rows_are_rejected() {
        let (r0, r1) = (row(0), row(1));
        assert_bad(
            &[&r0, &r1, "2022-01-01T00:02:30Z,10,11,9,10,1"],
            4,
            "time 2022-01-01T00:02:30Z is not on the 1m interval grid of the first row \
             (2022-01-01T00:00:00Z): expected a whole number of 60000 ms intervals after it",
        );
        // A given interval that does not fit the data fails on the first row off its grid.
        let dir = tempfile::tempdir().unwrap();
        let p = file(&dir, &[&r0, &r1]);
        let e = scan_candle_file(&p, Some(300_000)).unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("not on the 5m interval grid"), "{e}");
    }

    #[test]
    fn whole_file_problems_are_line_0_and_display_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.csv");
        let e = scan_candle_file(&missing, None).unwrap_err();
        assert_eq!(e.line, 0);
        assert_eq!(e.reason, "file not found (expected a candle CSV file)");
        assert_eq!(
            e.to_string(),
            format!(
                "{}:0: file not found (expected a candle CSV file)",
                missing.display()
            )
        );
        assert!(CandleReader::open(&missing, SymbolId(0), 60_000).is_err());

        let empty = raw(&dir, "");
        let e = scan_candle_file(&empty, None).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(e.reason.starts_with("empty file"), "{e}");

        let header_only = raw(&dir, &format!("{HEADER}\n"));
        let e = scan_candle_file(&header_only, Some(60_000)).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(
            e.reason.starts_with("no candle rows after the header"),
            "{e}"
        );
        assert_eq!(
            CandleReader::open(&header_only, SymbolId(0), 60_000)
                .unwrap()
                .count(),
            0
        );

        let bad_header = raw(
            &dir,
            "time,open,high,low,close,volume\n2022-01-01T00:00:00Z,1,1,1,1,1\n",
        );
        let e = scan_candle_file(&bad_header, None).unwrap_err();
        assert_eq!(e.line, 1);
        assert_eq!(
            e.reason,
            "header is \"time,open,high,low,close,volume\" (expected exactly \"timestamp,open,high,low,close,volume\")"
        );

        let one = file(&dir, &[&row(0)]);
        let e = scan_candle_file(&one, None).unwrap_err();
        assert_eq!(e.line, 0);
        assert!(
            e.reason
                .starts_with("cannot infer the candle interval from 1 row"),
            "{e}"
        );
        let s = scan_candle_file(&one, Some(60_000)).unwrap();
        assert_eq!(
            (s.rows, s.first, s.last, s.missing_intervals),
            (1, s.first, s.first, 0)
        );

        let e = scan_candle_file(&one, Some(0)).unwrap_err();
        assert_eq!(
            (e.line, e.reason.as_str()),
            (0, "candle interval must be > 0 ms, found 0 ms")
        );
    }

    #[test]
    fn gaps_are_counted_and_never_filled() {
        // Interval inferred from the smallest delta even though the file starts with a gap.
        let rows: Vec<String> = [0, 5, 6, 7, 10].map(row).to_vec();
        let rows: Vec<&str> = rows.iter().map(String::as_str).collect();
        let dir = tempfile::tempdir().unwrap();
        let p = file(&dir, &rows);
        let s = scan_candle_file(&p, None).unwrap();
        assert_eq!((s.rows, s.interval_ms, s.missing_intervals), (5, 60_000, 6));
        let minutes: Vec<i64> = CandleReader::open(&p, SymbolId(3), s.interval_ms)
            .unwrap()
            .map(|c| {
                let c = c.unwrap();
                assert_eq!((c.symbol, c.interval_ms), (SymbolId(3), 60_000));
                (c.open_time.0 - s.first.0) / 60_000
            })
            .collect();
        assert_eq!(minutes, [0, 5, 6, 7, 10]);
    }

    /// Streams `path` and checks it against its scan: same count, ends, and
    /// missing intervals recomputed from the streamed times.
    fn stream_matches_scan(path: &Path, s: &FileSummary) -> Vec<Candle> {
        let candles: Vec<Candle> = CandleReader::open(path, SymbolId(0), s.interval_ms)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(candles.len() as u64, s.rows);
        assert_eq!(candles.first().unwrap().open_time, s.first);
        assert_eq!(candles.last().unwrap().open_time, s.last);
        let missing: i64 = candles
            .windows(2)
            .map(|w| (w[1].open_time.0 - w[0].open_time.0) / s.interval_ms - 1)
            .sum();
        assert_eq!(missing as u64, s.missing_intervals);
        candles
    }

    #[test]
    fn ftx_month_scans_and_streams_complete() {
        let p = Path::new(SHARED).join("BTC-PERP_1m_ftx_2022-01.csv");
        let s = scan_candle_file(&p, None).unwrap();
        assert_eq!(s.rows, 44_640);
        assert_eq!(s.interval_ms, 60_000);
        assert_eq!(s.missing_intervals, 0);
        assert_eq!(s.first.to_rfc3339(), "2022-01-01T00:00:00Z");
        assert_eq!(s.last.to_rfc3339(), "2022-01-31T23:59:00Z");
        let c = stream_matches_scan(&p, &s);
        // First row: 2022-01-01T00:00:00Z,46197,46247,46195,46224,3353308.7635, exactly.
        assert_eq!(
            (c[0].open, c[0].high, c[0].low, c[0].close, c[0].volume),
            (
                dec!(46197),
                dec!(46247),
                dec!(46195),
                dec!(46224),
                dec!(3353308.7635)
            )
        );
        assert_eq!(c[0].volume.scale(), 4);
    }

    #[test]
    fn coinbase_gaps_are_kept() {
        let p = Path::new(SHARED).join("BTC-USD_1m_coinbase_2018-04-04_2018-04-06.csv");
        let s = scan_candle_file(&p, None).unwrap();
        assert_eq!(
            (s.rows, s.interval_ms, s.missing_intervals),
            (3_887, 60_000, 433)
        );
        // With the interval given the result is the same.
        assert_eq!(scan_candle_file(&p, Some(60_000)).unwrap(), s);
        let c = stream_matches_scan(&p, &s);
        assert_eq!(c[0].open, dec!(7424.91));
    }

    #[test]
    fn every_shared_candle_file_scans_clean_and_trade_files_are_refused() {
        let mut candles = 0;
        for entry in fs::read_dir(SHARED).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".csv") {
                continue;
            }
            let result = scan_candle_file(&p, None);
            if name.contains("_trades_") {
                let e = result.unwrap_err();
                assert_eq!(e.line, 1, "{e}");
                assert!(
                    e.reason
                        .starts_with("header is \"timestamp,price,quantity,side\""),
                    "{e}"
                );
            } else {
                let s = result.unwrap_or_else(|e| panic!("{e}"));
                assert!(s.rows > 100 && s.interval_ms >= 60_000, "{name}: {s:?}");
                candles += 1;
            }
        }
        assert_eq!(candles, 32);
    }
}

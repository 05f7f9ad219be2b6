//! Market data: candle CSV files (validated scan and streaming reader),
//! trade (tick) files aggregated into candles ([`ticks`]),
//! merging per-symbol streams by time, simulated GBM candles, and the run-time
//! feed guard; live price sources ([`live`]).
//!
//! Typical replay setup: [`scan_candle_file`] every file first (a bad row fails
//! the run with `file:line` before any trade), then stream them with one
//! [`CandleReader`] each through a [`MergedFeed`], checking each candle with a
//! [`FeedGuard`]. Gaps in the data stay gaps: nothing here invents a candle.

pub mod csv;
pub mod guard;
pub mod live;
pub mod merge;
pub mod simulated;
pub mod ticks;

pub use self::csv::{CandleReader, DataError, FileSummary, HEADER, scan_candle_file};
pub use guard::{FeedGuard, FeedReject, FeedVerdict, parse_tick};
pub use merge::MergedFeed;
pub use simulated::{GbmParams, GbmSource};
pub use ticks::{
    TRADE_FILE_HEADER, Trade, TradeCandles, TradeFileSummary, TradeReader, scan_trade_file,
};

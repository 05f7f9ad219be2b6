//! `bot-runtime data candles --interval 1m IN OUT`: a trade file aggregated
//! into a candle CSV file of the project's format (the one replay and
//! `validate` read; see [`crate::market::csv`]).
//!
//! The candles are written to a temporary file beside `OUT` and renamed over
//! it once the whole input was read without error, so a bad row never leaves
//! a half-written `OUT` behind. Memory stays constant whatever the input's
//! size (the trades and candles stream through).

use std::{
    fmt,
    fs::{self, File},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use crate::{
    market::{DataError, HEADER, TradeFileSummary, ticks::aggregate_trade_file},
    types::Timestamp,
};

/// Why `data candles` failed.
#[derive(Debug, thiserror::Error)]
pub enum DataCliError {
    /// A problem with the trade file (file, line, what was found and expected).
    #[error(transparent)]
    Data(#[from] DataError),
    /// The output could not be written.
    #[error("{}: cannot write the candle file: {source}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// `OUT` names the input file.
    #[error("{}: the output is the input file (expected another path for the candles)", path.display())]
    SameFile {
        /// The path given twice.
        path: PathBuf,
    },
}

/// What [`candles_from_trades`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CandlesWritten {
    /// The candle file written.
    pub out: PathBuf,
    /// The trades read and the candles they made.
    pub summary: TradeFileSummary,
}

impl fmt::Display for CandlesWritten {
    /// One paragraph: counts, the candles' span, gaps, and whether the first
    /// or last candle may be partial.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.summary;
        let c = &s.candles;
        let iv = humantime::format_duration(std::time::Duration::from_millis(
            c.interval_ms.unsigned_abs(),
        ));
        write!(
            f,
            "{}: {} candle(s) of {iv} from {} trade(s), opening {} to {}; {} interval(s) \
             without trades left as gaps",
            self.out.display(),
            c.rows,
            s.trades,
            c.first,
            c.last,
            c.missing_intervals
        )?;
        if s.first_candle_partial() {
            write!(
                f,
                "\n  the first candle may be partial: the trades start at {}, after its open at {}",
                s.first_trade, c.first
            )?;
        }
        if s.last_candle_partial() {
            write!(
                f,
                "\n  the last candle may be partial: the trades end at {}, before its close at {}",
                s.last_trade,
                Timestamp(c.last.0 + c.interval_ms)
            )?;
        }
        Ok(())
    }
}

/// Aggregate the trade file `input` into candles of `interval_ms` and write
/// them to `output` (header [`HEADER`], one row per candle, open time as
/// RFC 3339 UTC with milliseconds only when not whole seconds, decimals
/// exactly as summed).
///
/// # Errors
///
/// [`DataCliError::Data`] for the first bad row of `input` (nothing is
/// written then), [`DataCliError::Write`] when `output` cannot be written,
/// [`DataCliError::SameFile`] when `output` is `input`.
pub fn candles_from_trades(
    input: &Path,
    output: &Path,
    interval_ms: i64,
) -> Result<CandlesWritten, DataCliError> {
    if let (Ok(a), Ok(b)) = (fs::canonicalize(input), fs::canonicalize(output))
        && a == b
    {
        return Err(DataCliError::SameFile {
            path: output.to_path_buf(),
        });
    }
    let tmp = temp_path(output);
    let write_err = |source| DataCliError::Write {
        path: output.to_path_buf(),
        source,
    };
    let result = (|| {
        let file = File::create(&tmp).map_err(write_err)?;
        let mut w = BufWriter::with_capacity(1 << 16, file);
        writeln!(w, "{HEADER}").map_err(write_err)?;
        let summary = aggregate_trade_file(input, interval_ms, |c| {
            writeln!(
                w,
                "{},{},{},{},{},{}",
                c.open_time, c.open, c.high, c.low, c.close, c.volume
            )
            .map_err(write_err)
        })?;
        let file = w.into_inner().map_err(|e| write_err(e.into_error()))?;
        file.sync_all().map_err(write_err)?;
        Ok(summary)
    })();
    match result {
        Ok(summary) => {
            fs::rename(&tmp, output).map_err(write_err)?;
            Ok(CandlesWritten {
                out: output.to_path_buf(),
                summary,
            })
        }
        Err(e) => {
            // Best effort: the error that matters is `e`.
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// `.<name>.partial-<pid>` beside `output`.
fn temp_path(output: &Path) -> PathBuf {
    let name = output.file_name().map_or_else(
        || "candles.csv".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    output.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

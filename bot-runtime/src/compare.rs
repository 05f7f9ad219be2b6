//! `bot-runtime sessions compare`: the key figures of several sessions side
//! by side, and one chart of their equity curves.
//!
//! Every figure is the one `bot-runtime report` gives for the session: its
//! committed records are folded through [`crate::rebuild::fold`] and
//! [`crate::analytics::Analytics::summary`] exactly as the report is
//! regenerated, so the table and `compare.csv` equal each session's own
//! `summary.json`. Nothing here computes a figure of its own; the chart only
//! rescales each session's equity snapshots to percent of its initial
//! equity (f64, for plotting) so sessions with different allocations
//! compare.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use comfy_table::{CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use plotters::prelude::*;
use rust_decimal::{Decimal, prelude::ToPrimitive as _};

use crate::{
    analytics::Summary,
    ledger::{LedgerError, LedgerStore, SessionInfo},
    report::{CHART_HEIGHT, CHART_WIDTH, FONT_FAMILY, ensure_font, fmt_dp, fmt_money, fmt_ratio},
    types::Timestamp,
};

/// Fewest sessions a comparison takes.
pub const MIN_SESSIONS: usize = 2;
/// Most sessions a comparison takes (beyond that the chart's legend and the
/// table stop being readable).
pub const MAX_SESSIONS: usize = 20;
/// Name of the CSV file written into the output directory.
pub const CSV_FILE: &str = "compare.csv";
/// Name of the chart written into the output directory.
pub const PNG_FILE: &str = "compare_equity.png";

/// The figure the table's rows are sorted by (`--sort`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SortBy {
    /// ROI %, highest first.
    Roi,
    /// Excess return over buy-and-hold, percentage points, highest first
    /// (sessions without a benchmark last).
    Excess,
    /// Sharpe ratio, highest first (`n/a` last).
    Sharpe,
    /// Sortino ratio, highest first (`n/a` last).
    Sortino,
    /// Max drawdown %, smallest first.
    Drawdown,
    /// Profit factor, highest first (`n/a`, i.e. no losing trade, last).
    ProfitFactor,
    /// Win rate %, highest first.
    WinRate,
    /// Realized P&L, highest first (compared as numbers, whatever the
    /// currency).
    Realized,
    /// Round trips, most first.
    Trades,
}

/// Why a comparison could not be made. Nothing is written when one occurs.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// Fewer than [`MIN_SESSIONS`] or more than [`MAX_SESSIONS`] sessions.
    #[error(
        "sessions compare takes {MIN_SESSIONS} to {MAX_SESSIONS} session ids or names, got {0}"
    )]
    Count(usize),
    /// The same session was named twice.
    #[error(
        "session {0:?} is named twice (an id and the name of its newest run count as the same)"
    )]
    Duplicate(String),
    /// No session has this id or BotSession name.
    #[error("no session {wanted:?} in this ledger; known sessions: {known}")]
    Unknown {
        /// The id or name asked for.
        wanted: String,
        /// The ledger's session ids, newest first, comma-separated (or
        /// `none`).
        known: String,
    },
    /// A SQLite ledger file that does not exist (opening would create an
    /// empty one).
    #[error(
        "cannot open ledger {0}: no such file (expected an existing SQLite ledger file or a PostgreSQL URL)"
    )]
    NoLedgerFile(String),
    /// Reading a session from the ledger failed.
    #[error("reading session {session:?}: {source}")]
    Read {
        /// Session id.
        session: String,
        /// The cause.
        #[source]
        source: crate::runner::RunError,
    },
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Writing `compare.csv` or creating the output directory failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `compare.csv` could not be encoded.
    #[error("writing {path}: {source}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: csv::Error,
    },
    /// The chart could not be drawn.
    #[error(transparent)]
    Chart(#[from] crate::report::ReportError),
}

/// One session of a comparison.
#[derive(Debug)]
pub struct Compared {
    /// The session as the ledger lists it.
    pub info: SessionInfo,
    /// Its figures, as `bot-runtime report` computes them.
    pub summary: Summary,
    /// Its equity curve: (market time, equity in its quote currency), from
    /// its committed snapshots, preceded by the initial equity at the
    /// session's start when no snapshot is at that time.
    pub equity: Vec<(Timestamp, Decimal)>,
}

/// Check that a SQLite ledger URL names an existing file (so a typo does
/// not create an empty ledger); PostgreSQL URLs and `sqlite::memory:` pass.
///
/// # Errors
/// [`CompareError::NoLedgerFile`].
pub fn check_ledger_exists(url: &str) -> Result<(), CompareError> {
    if crate::ledger::url::backend(url) == crate::ledger::url::Backend::Postgres
        || url.contains(":memory:")
    {
        return Ok(());
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if Path::new(path).is_file() {
        Ok(())
    } else {
        Err(CompareError::NoLedgerFile(url.to_owned()))
    }
}

/// Check the number of sessions asked for.
///
/// # Errors
/// [`CompareError::Count`] outside [`MIN_SESSIONS`]..=[`MAX_SESSIONS`].
pub fn check_count(wanted: &[String]) -> Result<(), CompareError> {
    if (MIN_SESSIONS..=MAX_SESSIONS).contains(&wanted.len()) {
        Ok(())
    } else {
        Err(CompareError::Count(wanted.len()))
    }
}

/// Resolve each of `wanted` to a session: a BotSession name means its newest
/// run (the ledger lists sessions newest first); otherwise it must be a
/// session id. The first run of a re-run session has the bare name as its
/// id, which as a name means the newest run, so `NAME-1` (when no session
/// has that id or name) means the session with id `NAME`; later runs are
/// `NAME-2`, `NAME-3`, ... as the ledger numbers them.
///
/// # Errors
/// [`CompareError::Count`], [`CompareError::Unknown`] (listing the known
/// ids), [`CompareError::Duplicate`], ledger read failures.
pub async fn resolve<L: LedgerStore>(
    ledger: &L,
    wanted: &[String],
) -> Result<Vec<SessionInfo>, CompareError> {
    check_count(wanted)?;
    let sessions = ledger.list_sessions().await?;
    let mut out: Vec<SessionInfo> = Vec::with_capacity(wanted.len());
    for w in wanted {
        let found = sessions
            .iter()
            .find(|s| &s.name == w)
            .or_else(|| sessions.iter().find(|s| &s.id == w))
            .or_else(|| {
                let first = w.strip_suffix("-1")?;
                sessions.iter().find(|s| s.id == first)
            })
            .ok_or_else(|| CompareError::Unknown {
                wanted: w.clone(),
                known: if sessions.is_empty() {
                    "none".into()
                } else {
                    sessions
                        .iter()
                        .map(|s| s.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            })?;
        if out.iter().any(|s| s.id == found.id) {
            return Err(CompareError::Duplicate(found.id.clone()));
        }
        out.push(found.clone());
    }
    Ok(out)
}

/// Fold one session's committed records into its summary (as
/// [`crate::rebuild::regenerate_report`] does, without writing a report)
/// and collect its equity curve.
///
/// # Errors
/// [`CompareError::Read`] for an unreadable checkpoint or record.
pub async fn load<L: LedgerStore>(ledger: &L, info: SessionInfo) -> Result<Compared, CompareError> {
    let read_err = |source| CompareError::Read {
        session: info.id.clone(),
        source,
    };
    let checkpoint = ledger
        .checkpoint(&info.id)
        .await
        .map_err(|e| read_err(e.into()))?;
    let folded = crate::rebuild::fold(ledger, &info, checkpoint.as_deref(), None)
        .await
        .map_err(read_err)?;
    let summary = folded.analytics.summary(&folded.state, &info.phase);
    let mut equity = Vec::new();
    let mut sink = |b: crate::ledger::records::LedgerBatch| -> Result<(), LedgerError> {
        equity.extend(b.snapshots.iter().map(|s| (s.time, s.equity)));
        Ok(())
    };
    ledger
        .read_records(&info.id, 4096, &mut sink)
        .await
        .map_err(|e| read_err(e.into()))?;
    if equity.first().is_none_or(|(t, _)| *t > summary.start) {
        equity.insert(0, (summary.start, summary.initial_equity));
    }
    Ok(Compared {
        info,
        summary,
        equity,
    })
}

/// Sort `rows` by `by` (stable: ties keep the order given).
pub fn sort(rows: &mut [Compared], by: SortBy) {
    rows.sort_by(|a, b| order(&a.summary, &b.summary, by));
}

/// How two summaries rank by `by`: `Less` when `a` ranks first. Higher is
/// better for every key but drawdown (smaller first); an absent figure
/// (`n/a`) ranks last. Shared by `sessions compare` and `sweep`.
pub fn order(a: &Summary, b: &Summary, by: SortBy) -> std::cmp::Ordering {
    fn desc<T: PartialOrd>(a: Option<T>, b: Option<T>) -> std::cmp::Ordering {
        match (a, b) {
            (Some(a), Some(b)) => b.partial_cmp(&a).unwrap_or(std::cmp::Ordering::Equal),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    }
    match by {
        SortBy::Roi => desc(Some(a.roi_pct), Some(b.roi_pct)),
        SortBy::Excess => desc(a.figures.excess_return_pct, b.figures.excess_return_pct),
        SortBy::Sharpe => desc(a.sharpe_ratio, b.sharpe_ratio),
        SortBy::Sortino => desc(a.sortino_ratio, b.sortino_ratio),
        SortBy::Drawdown => a.max_drawdown_pct.cmp(&b.max_drawdown_pct),
        SortBy::ProfitFactor => desc(a.profit_factor, b.profit_factor),
        SortBy::WinRate => desc(Some(a.win_rate_pct), Some(b.win_rate_pct)),
        SortBy::Realized => desc(Some(a.realized_pnl), Some(b.realized_pnl)),
        SortBy::Trades => desc(Some(a.round_trips), Some(b.round_trips)),
    }
}

/// Column headers of the table and of `compare.csv` (after `session`).
pub const COLUMNS: [&str; 16] = [
    "session",
    "strategy",
    "period",
    "candles",
    "trades",
    "win rate %",
    "realized P&L",
    "ROI %",
    "benchmark %",
    "excess pp",
    "max drawdown %",
    "Sharpe",
    "Sortino",
    "profit factor",
    "exposure %",
    "fees",
];

fn period(s: &Summary) -> String {
    format!("{} .. {}", s.start.to_rfc3339(), s.end.to_rfc3339())
}

/// The comparison table for the terminal (comfy-table, like the run
/// summary): one row per session in `rows`' order. Percentages and ratios
/// with 2 places (`n/a` when absent), money with its currency's precision
/// and code; "trades" are round trips, "candles" the candles processed,
/// "excess pp" the ROI minus the benchmark's return in percentage points.
pub fn table(rows: &[Compared]) -> String {
    let pct = |d: Decimal| fmt_dp(d, 2);
    let opt_pct = |d: Option<Decimal>| d.map_or_else(|| "n/a".to_owned(), pct);
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header(COLUMNS);
    for r in rows {
        let s = &r.summary;
        let cur = &r.info.base_currency;
        let money = |d: Decimal| format!("{} {cur}", fmt_money(d, cur));
        t.add_row(vec![
            r.info.id.clone(),
            r.info.strategy.clone(),
            period(s),
            s.bars.to_string(),
            s.round_trips.to_string(),
            pct(s.win_rate_pct),
            money(s.realized_pnl),
            pct(s.roi_pct),
            opt_pct(s.figures.benchmark_return_pct),
            opt_pct(s.figures.excess_return_pct),
            pct(s.max_drawdown_pct),
            fmt_ratio(s.sharpe_ratio),
            fmt_ratio(s.sortino_ratio),
            s.profit_factor.map_or_else(|| "n/a".to_owned(), pct),
            pct(s.figures.exposure_time_pct),
            money(s.fees_paid),
        ]);
    }
    for i in 3..COLUMNS.len() {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.to_string()
}

/// Write `compare.csv` to `path`: a header row, then one row per session
/// with the exact figures as `summary.json` has them (decimals normalised,
/// ratios as f64, empty when absent), money in the session's `currency`
/// column; period as `start` and `end` RFC 3339 columns.
///
/// # Errors
/// [`CompareError::Csv`].
pub fn write_csv(rows: &[Compared], path: &Path) -> Result<(), CompareError> {
    let err = |source| CompareError::Csv {
        path: path.to_path_buf(),
        source,
    };
    let mut w = csv::Writer::from_path(path).map_err(err)?;
    w.write_record([
        "session",
        "name",
        "strategy",
        "currency",
        "start",
        "end",
        "candles",
        "trades",
        "win_rate_pct",
        "realized_pnl",
        "roi_pct",
        "benchmark_return_pct",
        "excess_return_pct",
        "max_drawdown_pct",
        "sharpe_ratio",
        "sortino_ratio",
        "profit_factor",
        "exposure_time_pct",
        "fees_paid",
    ])
    .map_err(err)?;
    let d = |d: Decimal| d.normalize().to_string();
    let od = |x: Option<Decimal>| x.map(d).unwrap_or_default();
    let of = |x: Option<f64>| x.map(|v| v.to_string()).unwrap_or_default();
    for r in rows {
        let s = &r.summary;
        w.write_record([
            r.info.id.clone(),
            r.info.name.clone(),
            r.info.strategy.clone(),
            r.info.base_currency.clone(),
            s.start.to_rfc3339(),
            s.end.to_rfc3339(),
            s.bars.to_string(),
            s.round_trips.to_string(),
            d(s.win_rate_pct),
            d(s.realized_pnl),
            d(s.roi_pct),
            od(s.figures.benchmark_return_pct),
            od(s.figures.excess_return_pct),
            d(s.max_drawdown_pct),
            of(s.sharpe_ratio),
            of(s.sortino_ratio),
            od(s.profit_factor),
            d(s.figures.exposure_time_pct),
            d(s.fees_paid),
        ])
        .map_err(err)?;
    }
    w.flush().map_err(|source| CompareError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Ten distinct line colours (the "tab10" palette of matplotlib/Tableau);
/// sessions beyond ten reuse them in the same order.
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// One point of a session's line: (market time, equity % of initial).
type ChartPoint = (DateTime<Utc>, f64);

/// Draw `compare_equity.png` at `path`: a [`CHART_WIDTH`] ×
/// [`CHART_HEIGHT`] PNG with one line per session, equity as percent of the
/// session's initial equity (100 = start; f64 for plotting only) over UTC
/// market time, legend = session id.
///
/// # Errors
/// [`crate::report::ReportError`] when the font or the PNG fails.
pub fn render_png(rows: &[Compared], path: &Path) -> Result<(), CompareError> {
    ensure_font()?;
    let chart_err = |e: &dyn std::fmt::Display| {
        CompareError::Chart(crate::report::ReportError::Chart {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    };
    let hundred = Decimal::ONE_HUNDRED;
    let lines: Vec<(String, Vec<ChartPoint>)> = rows
        .iter()
        .map(|r| {
            let initial = r.summary.initial_equity;
            let pts = r
                .equity
                .iter()
                .filter_map(|(t, e)| {
                    let pct = if initial.is_zero() {
                        hundred
                    } else {
                        e.checked_mul(hundred)?.checked_div(initial)?
                    };
                    Some((t.to_datetime(), pct.to_f64()?))
                })
                .collect();
            (r.info.id.clone(), pts)
        })
        .collect();
    let all = lines.iter().flat_map(|(_, p)| p.iter());
    let (t0, t1, lo, hi) = all.fold(
        (
            None::<DateTime<Utc>>,
            None::<DateTime<Utc>>,
            100.0f64,
            100.0f64,
        ),
        |(t0, t1, lo, hi), (t, v)| {
            (
                Some(t0.map_or(*t, |x| x.min(*t))),
                Some(t1.map_or(*t, |x| x.max(*t))),
                lo.min(*v),
                hi.max(*v),
            )
        },
    );
    let (t0, t1) = match (t0, t1) {
        (Some(a), Some(b)) if b > a => (a, b),
        (Some(a), _) => (a, a + chrono::Duration::hours(1)),
        _ => {
            let now = DateTime::<Utc>::UNIX_EPOCH;
            (now, now + chrono::Duration::hours(1))
        }
    };
    let span = (hi - lo).max(0.2);
    let (y0, y1) = (lo - span * 0.05, hi + span * 0.05);

    let root = BitMapBackend::new(path, (CHART_WIDTH, CHART_HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| chart_err(&e))?;
    let title = format!("Equity of {} sessions, % of initial equity", rows.len());
    let time_fmt = if (t1 - t0).num_milliseconds() > 3 * 86_400_000 {
        "%Y-%m-%d"
    } else {
        "%m-%d %H:%M"
    };
    let x_fmt = |t: &DateTime<Utc>| t.format(time_fmt).to_string();
    let mut chart = ChartBuilder::on(&root.margin(14, 0, 0, 0))
        .caption(title, (FONT_FAMILY, 26))
        .margin_left(10)
        .margin_right(30)
        .margin_top(10)
        .x_label_area_size(35)
        .y_label_area_size(80)
        .build_cartesian_2d(t0..t1, y0..y1)
        .map_err(|e| chart_err(&e))?;
    chart
        .configure_mesh()
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|v| format!("{v:.1}"))
        .y_desc("Equity, % of initial")
        .label_style((FONT_FAMILY, 15))
        .axis_desc_style((FONT_FAMILY, 17))
        .max_light_lines(4)
        .light_line_style(RGBColor(238, 238, 238))
        .draw()
        .map_err(|e| chart_err(&e))?;
    for (i, (id, pts)) in lines.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))
            .map_err(|e| chart_err(&e))?
            .label(id.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT_FAMILY, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| chart_err(&e))?;
    root.present().map_err(|e| chart_err(&e))
}

/// What `sessions compare` wrote.
#[derive(Debug)]
pub struct Written {
    /// The table printed.
    pub table: String,
    /// `compare.csv`.
    pub csv: PathBuf,
    /// `compare_equity.png`.
    pub png: PathBuf,
}

/// `sessions compare`: resolve `wanted` (2 to 20 ids or names), fold each
/// session, sort by `sort` (or keep the order given), then create `out` and
/// write [`CSV_FILE`] and [`PNG_FILE`] into it. Every session is read
/// before anything is written, so an error writes nothing.
///
/// # Errors
/// See [`CompareError`].
pub async fn compare<L: LedgerStore>(
    ledger: &L,
    wanted: &[String],
    sort_by: Option<SortBy>,
    out: &Path,
) -> Result<Written, CompareError> {
    let infos = resolve(ledger, wanted).await?;
    let mut rows = Vec::with_capacity(infos.len());
    for info in infos {
        rows.push(load(ledger, info).await?);
    }
    if let Some(by) = sort_by {
        sort(&mut rows, by);
    }
    std::fs::create_dir_all(out).map_err(|source| CompareError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let csv = out.join(CSV_FILE);
    let png = out.join(PNG_FILE);
    write_csv(&rows, &csv)?;
    render_png(&rows, &png)?;
    Ok(Written {
        table: table(&rows),
        csv,
        png,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_sqlite_file_is_refused_and_other_urls_pass() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("l.db");
        let missing = file.display().to_string();
        assert!(matches!(
            check_ledger_exists(&missing),
            Err(CompareError::NoLedgerFile(u)) if u == missing
        ));
        std::fs::write(&file, b"").unwrap();
        for url in [
            missing.clone(),
            format!("sqlite://{missing}"),
            format!("sqlite:{missing}?mode=ro"),
            "sqlite::memory:".into(),
            "postgres://u:p@127.0.0.1:1/db".into(),
        ] {
            assert!(check_ledger_exists(&url).is_ok(), "{url}");
        }
        assert!(matches!(
            check_ledger_exists(&dir.path().display().to_string()),
            Err(CompareError::NoLedgerFile(_))
        ));
    }

    #[test]
    fn two_to_twenty_sessions_are_accepted() {
        let ids = |n: usize| (0..n).map(|i| format!("s{i}")).collect::<Vec<_>>();
        for n in [0, 1, 21, 40] {
            assert!(matches!(check_count(&ids(n)), Err(CompareError::Count(m)) if m == n));
        }
        for n in [2, 3, 20] {
            assert!(check_count(&ids(n)).is_ok());
        }
    }
}

//! The run report: CSV files streamed while the run goes, then
//! `summary.json` and an `equity.png` chart at the end, plus the terminal
//! summary table.
//!
//! Files in the report directory:
//!
//! | file | content |
//! |---|---|
//! | `trades.csv` | one row per fill or failed order ([`TRADES_HEADER`]) |
//! | `round_trips.csv` | one row per closed position ([`ROUND_TRIPS_HEADER`]); the first six columns are the parity reference format |
//! | `decisions.csv` | one row per recorded decision ([`DECISIONS_HEADER`]) |
//! | `summary.json` | the [`Summary`], pretty-printed |
//! | `by_symbol.csv` | per symbol: round trips, wins, losses, win rate, realized P&L, fees, fills, still open ([`BY_SYMBOL_HEADER`]) |
//! | `by_exit_reason.csv` | per exit reason (`signal`, `stop_loss`, `take_profit`, `trailing_stop`, `max_hold_time`, `liquidation`, then `still_open`) ([`BY_EXIT_REASON_HEADER`]) |
//! | `daily.csv` | per UTC day: start/end equity, P&L, return %, fills, round trips ([`DAILY_HEADER`]) |
//! | `equity.png` | 1200 × 600 PNG: equity and buy-and-hold over time, breaker-open periods and data gaps shaded, drawdown below |
//! | `price_<SYMBOL>.png` | 1200 × 600 PNG per symbol: candles or close line, fill markers, stop levels ([`crate::charts`]) |
//! | `report.html` | everything above in one self-contained HTML file ([`crate::html`]) |
//!
//! `trades.csv`, `round_trips.csv` and `decisions.csv` are linked by stable
//! ids, the same in a resumed run, a report rebuilt from the ledger and an
//! uninterrupted run:
//!
//! - a decision's `seq` (decisions.csv) is a fill's `decision_seq`
//!   (trades.csv; 0 for automatic exits: stop-loss, take-profit, trailing
//!   stop, max hold time, liquidation);
//! - a position is named by `position_id`, the `seq` of the fill that opened
//!   it; every fill of that position carries it in trades.csv (a failed
//!   order on a flat symbol has none), and its round trip carries it in
//!   round_trips.csv with `exit_fill_seq` (the closing fill's `seq`),
//!   `entry_decision_seq` and `exit_decision_seq` (empty for an automatic
//!   exit).
//!
//! CSV conventions: times are RFC 3339 UTC with a `Z` suffix (milliseconds
//! only when non-zero), decimals are written normalized (`46752`, `-0.4`),
//! enums in snake_case, an absent value is an empty field; quoting follows
//! RFC 4180 (the `csv` crate's writer).
//!
//! Memory: rows are written as they arrive; only the snapshot points (one per
//! snapshot interval) are kept for the chart, and at most
//! [`MAX_CHART_POINTS`] of them (older points are thinned by half whenever the
//! cap is reached).

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};
use plotters::style::FontStyle;
use rust_decimal::Decimal;

use crate::analytics::Summary;
use crate::charts::{
    ChartRecords, EquityOverlay, MarketSeries, PriceChart, benchmark_equity, render_equity,
    render_price, sanitize_symbol,
};
pub use crate::figures::{BY_EXIT_REASON_HEADER, BY_SYMBOL_HEADER, DAILY_HEADER};
use crate::ledger::records::{
    DecisionRecord, FillStatus, LedgerBatch, RoundTrip, SnapshotRecord, TradeRecord,
};
use crate::types::{Candle, Timestamp};

/// Header of `trades.csv`: the ledger's trade columns
/// ([`TradeRecord::COLUMNS`]) then `position_id` (see the module docs).
pub const TRADES_HEADER: [&str; 19] = {
    let mut header = [""; 19];
    let mut i = 0;
    while i < TradeRecord::COLUMNS.len() {
        header[i] = TradeRecord::COLUMNS[i];
        i += 1;
    }
    header[18] = "position_id";
    header
};

/// Header of `round_trips.csv`. The first six columns are exactly those of
/// the parity reference trades file
/// (`entry_time,entry_price,exit_time,exit_price,quantity,pnl`).
/// The last four link it to trades.csv and decisions.csv (module docs).
pub const ROUND_TRIPS_HEADER: [&str; 14] = [
    "entry_time",
    "entry_price",
    "exit_time",
    "exit_price",
    "quantity",
    "pnl",
    "symbol",
    "fees",
    "return_pct",
    "exit_reason",
    "position_id",
    "exit_fill_seq",
    "entry_decision_seq",
    "exit_decision_seq",
];

/// Header of `decisions.csv`.
pub const DECISIONS_HEADER: [&str; 11] = DecisionRecord::COLUMNS;

/// Most snapshot points the writer keeps for the chart (the chart is 1200
/// pixels wide, so more would not show).
pub const MAX_CHART_POINTS: usize = 4096;

/// Width of `equity.png`, pixels.
pub const CHART_WIDTH: u32 = 1200;
/// Height of `equity.png`, pixels.
pub const CHART_HEIGHT: u32 = 600;

/// Font family name under which DejaVu Sans is registered with plotters.
pub(crate) const FONT_FAMILY: &str = "sans-serif";

/// Errors while writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The report directory could not be created.
    #[error("cannot create report directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file could not be created or written.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A CSV file could not be created or written.
    #[error("cannot write CSV file {path}: {source}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// Why.
        source: csv::Error,
    },
    /// The summary could not be encoded as JSON.
    #[error("cannot write summary JSON {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// The equity chart could not be drawn or encoded.
    #[error("cannot draw equity chart {path}: {message}")]
    Chart {
        /// The file.
        path: PathBuf,
        /// The plotting library's message.
        message: String,
    },
    /// The embedded DejaVu Sans font was rejected by the font loader.
    #[error("cannot load the embedded DejaVu Sans font for the chart")]
    Font,
}

/// Paths of the files a finished report wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportFiles {
    /// The report directory.
    pub dir: PathBuf,
    /// `summary.json`.
    pub summary_json: PathBuf,
    /// `trades.csv`.
    pub trades_csv: PathBuf,
    /// `round_trips.csv`.
    pub round_trips_csv: PathBuf,
    /// `decisions.csv`.
    pub decisions_csv: PathBuf,
    /// `equity.png`.
    pub equity_png: PathBuf,
    /// `by_symbol.csv`.
    pub by_symbol_csv: PathBuf,
    /// `by_exit_reason.csv`.
    pub by_exit_reason_csv: PathBuf,
    /// `daily.csv`.
    pub daily_csv: PathBuf,
    /// `price_<SYMBOL>.png`, one per symbol with prices or fills, in symbol
    /// order.
    pub price_pngs: Vec<PathBuf>,
    /// `report.html`: every table and chart in one self-contained file.
    pub report_html: PathBuf,
}

/// One CSV file being streamed.
struct CsvOut {
    path: PathBuf,
    w: csv::Writer<File>,
}

impl CsvOut {
    fn create(path: PathBuf, header: &[&str]) -> Result<Self, ReportError> {
        let mut w = csv::Writer::from_path(&path).map_err(|source| ReportError::Csv {
            path: path.clone(),
            source,
        })?;
        w.write_record(header).map_err(|source| ReportError::Csv {
            path: path.clone(),
            source,
        })?;
        Ok(Self { path, w })
    }

    fn row<I, T>(&mut self, fields: I) -> Result<(), ReportError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        self.w
            .write_record(fields)
            .map_err(|source| ReportError::Csv {
                path: self.path.clone(),
                source,
            })
    }

    fn flush(&mut self) -> Result<(), ReportError> {
        self.w.flush().map_err(|source| ReportError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Snapshot points kept for the chart, bounded by [`MAX_CHART_POINTS`]:
/// when full, every second point is dropped and from then on only every
/// `stride`-th snapshot is kept. The latest snapshot is always drawn.
struct ChartPoints {
    points: Vec<(Timestamp, Decimal, Decimal)>,
    stride: u64,
    seen: u64,
    last: Option<(Timestamp, Decimal, Decimal)>,
}

impl ChartPoints {
    fn new() -> Self {
        Self {
            points: Vec::new(),
            stride: 1,
            seen: 0,
            last: None,
        }
    }

    fn push(&mut self, p: (Timestamp, Decimal, Decimal)) {
        if self.seen.is_multiple_of(self.stride) {
            if self.points.len() >= MAX_CHART_POINTS {
                let mut i = 0;
                self.points.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.stride *= 2;
            }
            if self.seen.is_multiple_of(self.stride) {
                self.points.push(p);
            }
        }
        self.seen += 1;
        self.last = Some(p);
    }

    fn into_points(mut self) -> Vec<(Timestamp, Decimal, Decimal)> {
        if let Some(last) = self.last
            && self.points.last() != Some(&last)
        {
            self.points.push(last);
        }
        self.points
    }
}

/// Streams a run's report to a directory.
pub struct ReportWriter {
    dir: PathBuf,
    title: String,
    trades: CsvOut,
    round_trips: CsvOut,
    decisions: CsvOut,
    chart: ChartPoints,
    positions: PositionIds,
    records: ChartRecords,
    market: MarketSeries,
}

fn dec(d: Decimal) -> String {
    d.normalize().to_string()
}

fn opt_dec(d: Option<Decimal>) -> String {
    d.map(dec).unwrap_or_default()
}

fn status_str(s: FillStatus) -> &'static str {
    match s {
        FillStatus::Filled => "filled",
        FillStatus::Failed => "failed",
    }
}

fn trade_row(t: &TradeRecord, position_id: Option<u64>) -> [String; 19] {
    [
        t.seq.to_string(),
        t.decision_seq.to_string(),
        t.time.to_rfc3339(),
        t.symbol.clone(),
        t.side.as_str().to_owned(),
        dec(t.quantity),
        dec(t.reference_price),
        dec(t.fill_price),
        dec(t.fee),
        dec(t.gas),
        dec(t.slippage_cost),
        t.latency_ms.to_string(),
        dec(t.realized_pnl),
        t.reason.as_str().to_owned(),
        status_str(t.status).to_owned(),
        dec(t.cash_after),
        dec(t.position_after),
        dec(t.cost_basis_after),
        opt_seq(position_id),
    ]
}

/// A sequence number, or an empty field for none (or 0, "no decision").
fn opt_seq(seq: Option<u64>) -> String {
    seq.filter(|&s| s != 0)
        .map(|s| s.to_string())
        .unwrap_or_default()
}

fn round_trip_row(r: &RoundTrip, link: Option<ClosedPosition>) -> [String; 14] {
    [
        r.entry_time.to_rfc3339(),
        dec(r.entry_price),
        r.exit_time.to_rfc3339(),
        dec(r.exit_price),
        dec(r.quantity),
        dec(r.pnl),
        r.symbol.clone(),
        dec(r.fees),
        dec(r.return_pct),
        r.exit_reason.as_str().to_owned(),
        opt_seq(link.map(|l| l.position_id)),
        opt_seq(link.map(|l| l.exit_fill_seq)),
        opt_seq(link.map(|l| l.entry_decision_seq)),
        opt_seq(link.map(|l| l.exit_decision_seq)),
    ]
}

/// The ids of an open position: its opening fill's `seq` and decision.
#[derive(Clone, Copy, Debug)]
struct OpenPosition {
    position_id: u64,
    entry_decision_seq: u64,
}

/// The ids of a closed position, waiting for its round-trip row.
#[derive(Clone, Copy, Debug)]
struct ClosedPosition {
    position_id: u64,
    exit_fill_seq: u64,
    entry_decision_seq: u64,
    exit_decision_seq: u64,
}

/// Follows positions through the fills to give every fill and round trip
/// its `position_id` (module docs). The k-th round trip of a symbol is the
/// k-th position of that symbol to close. In the engine's batches the
/// closing fill comes first; a ledger read in chunks per record kind
/// ([`crate::ledger::LedgerStore::read_records`]) may deliver a round trip
/// before its closing fill, so round-trip rows wait, in order, until their
/// position has closed: the rows, and their order, are the same either way.
#[derive(Debug, Default)]
struct PositionIds {
    open: HashMap<String, OpenPosition>,
    /// Closed positions whose round trip has not arrived, per symbol.
    closed: HashMap<String, VecDeque<ClosedPosition>>,
    /// Round trips waiting for their position to close, in arrival order.
    waiting: VecDeque<RoundTrip>,
}

impl PositionIds {
    /// The `position_id` of fill `t`, updating the open positions.
    fn on_trade(&mut self, t: &TradeRecord) -> Option<u64> {
        let open = self.open.get(&t.symbol).copied();
        if t.status != FillStatus::Filled {
            return open.map(|p| p.position_id);
        }
        let pos = open.unwrap_or(OpenPosition {
            position_id: t.seq,
            entry_decision_seq: t.decision_seq,
        });
        if t.position_after.is_zero() {
            self.open.remove(&t.symbol);
            self.closed
                .entry(t.symbol.clone())
                .or_default()
                .push_back(ClosedPosition {
                    position_id: pos.position_id,
                    exit_fill_seq: t.seq,
                    entry_decision_seq: pos.entry_decision_seq,
                    exit_decision_seq: t.decision_seq,
                });
        } else if open.is_none() {
            self.open.insert(t.symbol.clone(), pos);
        }
        Some(pos.position_id)
    }

    /// Round trips whose rows can be written now, with their ids, in
    /// arrival order: `r` (when given) joins the waiting ones, and the
    /// oldest waiting ones whose position has closed come out. `flush`
    /// also releases the rest, without ids (a ledger whose round trips
    /// outnumber its closing fills, which the engine never writes).
    fn ready(
        &mut self,
        r: Option<&RoundTrip>,
        flush: bool,
    ) -> Vec<(RoundTrip, Option<ClosedPosition>)> {
        if let Some(r) = r {
            self.waiting.push_back(r.clone());
        }
        let mut out = Vec::new();
        while let Some(front) = self.waiting.front() {
            let link = self
                .closed
                .get_mut(&front.symbol)
                .and_then(VecDeque::pop_front);
            if link.is_none() && !flush {
                break;
            }
            if let Some(r) = self.waiting.pop_front() {
                out.push((r, link));
            }
        }
        out
    }
}

fn decision_row(d: &DecisionRecord) -> [String; 11] {
    [
        d.seq.to_string(),
        d.time.to_rfc3339(),
        d.symbol.clone(),
        d.action.as_str().to_owned(),
        dec(d.confidence),
        dec(d.price),
        opt_dec(d.quantity),
        d.positive_signals.clone(),
        d.negative_signals.clone(),
        d.risk_assessment.clone(),
        d.reason.clone(),
    ]
}

fn chart_point(s: &SnapshotRecord) -> (Timestamp, Decimal, Decimal) {
    (s.time, s.equity, s.drawdown_pct)
}

impl ReportWriter {
    /// Creates `dir` (and parents), opens trades.csv, round_trips.csv and
    /// decisions.csv for streaming and writes their headers. Existing files
    /// of the same names are truncated. `title` heads the equity chart.
    pub fn create(dir: &Path, title: &str) -> Result<Self, ReportError> {
        fs::create_dir_all(dir).map_err(|source| ReportError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            title: title.to_owned(),
            trades: CsvOut::create(dir.join("trades.csv"), &TRADES_HEADER)?,
            round_trips: CsvOut::create(dir.join("round_trips.csv"), &ROUND_TRIPS_HEADER)?,
            decisions: CsvOut::create(dir.join("decisions.csv"), &DECISIONS_HEADER)?,
            chart: ChartPoints::new(),
            positions: PositionIds::default(),
            records: ChartRecords::new(),
            market: MarketSeries::default(),
        })
    }

    /// Appends the batch's rows to the CSVs and keeps its snapshots'
    /// (time, equity, drawdown %) points for the chart.
    pub fn write_batch(&mut self, b: &LedgerBatch) -> Result<(), ReportError> {
        for t in &b.trades {
            let position_id = self.positions.on_trade(t);
            self.trades.row(trade_row(t, position_id))?;
        }
        // Fills closed in this batch release round trips waiting from an
        // earlier one.
        for (r, link) in self.positions.ready(None, false) {
            self.round_trips.row(round_trip_row(&r, link))?;
        }
        for r in &b.round_trips {
            for (r, link) in self.positions.ready(Some(r), false) {
                self.round_trips.row(round_trip_row(&r, link))?;
            }
        }
        for d in &b.decisions {
            self.decisions.row(decision_row(d))?;
        }
        for s in &b.snapshots {
            self.chart.push(chart_point(s));
        }
        self.records.on_batch(b);
        Ok(())
    }

    /// Folds a traded candle into the bounded price series of the price
    /// charts (at most [`crate::charts::MAX_PRICE_BUCKETS`] buckets per
    /// symbol) and the data-gap spans. Symbol names come from
    /// [`Self::set_symbols`] (else `symbol-N`).
    pub fn observe_candle(&mut self, c: &Candle) {
        self.market.observe(c);
    }

    /// Names the symbols by index for [`Self::observe_candle`]; clears the
    /// prices observed so far.
    pub fn set_symbols(&mut self, symbols: Vec<String>) {
        self.market = MarketSeries::new(symbols);
    }

    /// Replaces the observed prices with `market` (the runner folds candles
    /// on its engine thread and hands the series over before
    /// [`Self::finish`]).
    pub fn set_market(&mut self, market: MarketSeries) {
        self.market = market;
    }

    /// The stop-loss / take-profit distances (percent 0–100, the strategy's
    /// `stopLossPct` / `takeProfitPct`) the price charts apply to each
    /// round trip's entry price; call before the first batch.
    pub fn set_risk_levels(
        &mut self,
        stop_loss_pct: Option<Decimal>,
        take_profit_pct: Option<Decimal>,
    ) {
        self.records.set_risk_levels(stop_loss_pct, take_profit_pct);
    }

    /// Writes summary.json, the breakdown CSVs (by_symbol.csv,
    /// by_exit_reason.csv, daily.csv) and equity.png, flushes the streamed
    /// CSVs; returns the paths written.
    pub fn finish(mut self, summary: &Summary) -> Result<ReportFiles, ReportError> {
        for (r, link) in self.positions.ready(None, true) {
            self.round_trips.row(round_trip_row(&r, link))?;
        }
        self.trades.flush()?;
        self.round_trips.flush()?;
        self.decisions.flush()?;

        let f = &summary.figures;
        let mut by_symbol = CsvOut::create(self.dir.join("by_symbol.csv"), &BY_SYMBOL_HEADER)?;
        for r in &f.by_symbol {
            by_symbol.row(r.cells(dec))?;
        }
        by_symbol.flush()?;
        let mut by_reason =
            CsvOut::create(self.dir.join("by_exit_reason.csv"), &BY_EXIT_REASON_HEADER)?;
        for r in &f.by_exit_reason {
            by_reason.row(r.cells(dec))?;
        }
        by_reason.flush()?;
        let mut daily = CsvOut::create(self.dir.join("daily.csv"), &DAILY_HEADER)?;
        for r in &f.daily {
            daily.row(r.cells(dec))?;
        }
        daily.flush()?;

        let summary_json = self.dir.join("summary.json");
        write_json(&summary_json, summary)?;

        let equity_png = self.dir.join("equity.png");
        let points = std::mem::replace(&mut self.chart, ChartPoints::new()).into_points();
        let (title, subtitle) = chart_titles(summary, &self.title);
        // Without candles (a report rebuilt from a ledger) the prices are
        // the recorded decision and fill prices.
        let from_candles = !self.market.is_empty();
        let market = if from_candles {
            &self.market
        } else {
            self.records.recorded_prices()
        };
        let times: Vec<Timestamp> = points.iter().map(|p| p.0).collect();
        let overlay = EquityOverlay {
            subtitle: subtitle.clone(),
            benchmark: f
                .benchmark
                .as_ref()
                .map(|b| benchmark_equity(&times, market, b, summary.initial_equity))
                .unwrap_or_default(),
            breaker_spans: self.records.breaker_spans(summary.end),
            gap_spans: self.market.gaps(),
            currency: summary.currency.trim().to_owned(),
        };
        render_equity(&points, &overlay, &equity_png, &title)?;

        let price_pngs = self.render_prices(summary, market, from_candles)?;
        let report_html = self.dir.join("report.html");
        let mut charts = vec![("Equity and drawdown".to_owned(), equity_png.clone())];
        for p in &price_pngs {
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().trim_start_matches("price_").to_owned())
                .unwrap_or_default();
            charts.push((format!("Price: {name}"), p.clone()));
        }
        crate::html::write_report_html(&report_html, summary, &title, &subtitle, &charts)?;

        Ok(ReportFiles {
            summary_json,
            trades_csv: self.trades.path,
            round_trips_csv: self.round_trips.path,
            decisions_csv: self.decisions.path,
            equity_png,
            by_symbol_csv: by_symbol.path,
            by_exit_reason_csv: by_reason.path,
            daily_csv: daily.path,
            price_pngs,
            report_html,
            dir: self.dir,
        })
    }

    /// One `price_<SYMBOL>.png` per symbol with prices or fills.
    fn render_prices(
        &self,
        summary: &Summary,
        market: &MarketSeries,
        from_candles: bool,
    ) -> Result<Vec<PathBuf>, ReportError> {
        let mut symbols: Vec<&str> = market.symbols().map(|(s, _)| s).collect();
        for s in self.records.marked_symbols() {
            if !symbols.contains(&s) {
                symbols.push(s);
            }
        }
        let empty = crate::charts::OhlcSeries::default();
        let gaps = if from_candles {
            self.market.gaps()
        } else {
            Vec::new()
        };
        let mut used = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for symbol in symbols {
            let mut stem = sanitize_symbol(symbol);
            let mut n = 2;
            while !used.insert(stem.clone()) {
                stem = format!("{}-{n}", sanitize_symbol(symbol));
                n += 1;
            }
            let path = self.dir.join(format!("price_{stem}.png"));
            let source = if from_candles {
                "candles traded".to_owned()
            } else {
                "prices from recorded decisions and fills (no candles)".to_owned()
            };
            let (kept, seen) = self.records.marker_counts(symbol);
            let thinned = if (kept as u64) < seen {
                format!(" · {kept} of {seen} fills marked")
            } else {
                String::new()
            };
            let subtitle = format!(
                "{} · {} → {} UTC · {source}{thinned}",
                if summary.session_id.is_empty() {
                    &self.title
                } else {
                    &summary.session_id
                },
                summary.start.to_datetime().format("%Y-%m-%d %H:%M"),
                summary.end.to_datetime().format("%Y-%m-%d %H:%M"),
            );
            render_price(
                &PriceChart {
                    symbol,
                    subtitle: &subtitle,
                    series: market.get(symbol).unwrap_or(&empty),
                    markers: &self.records.markers(symbol),
                    levels: self.records.levels(symbol),
                    gap_spans: &gaps,
                    recorded: !from_candles,
                },
                &path,
            )?;
            out.push(path);
        }
        Ok(out)
    }
}

/// The equity chart's title ("session · strategy · period UTC") and
/// subtitle ("return X % vs buy-and-hold Y %"); `fallback` names the
/// session when the summary has no identity.
pub fn chart_titles(summary: &Summary, fallback: &str) -> (String, String) {
    let name = if summary.session_id.is_empty() {
        fallback
    } else {
        &summary.session_id
    };
    let mut title = name.to_owned();
    if !summary.strategy.is_empty() {
        title.push_str(" · ");
        title.push_str(&summary.strategy);
    }
    let (a, b) = (summary.start.to_datetime(), summary.end.to_datetime());
    title.push_str(&format!(
        " · {} → {} UTC",
        a.format("%Y-%m-%d"),
        b.format("%Y-%m-%d")
    ));
    let bench = summary
        .figures
        .benchmark_return_pct
        .map_or_else(|| "n/a".to_owned(), |d| format!("{} %", fmt_dp(d, 2)));
    let subtitle = format!(
        "return {} % vs buy-and-hold {bench}",
        fmt_dp(summary.roi_pct, 2)
    );
    (title, subtitle)
}

fn write_json(path: &Path, summary: &Summary) -> Result<(), ReportError> {
    let io_err = |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut w = BufWriter::new(File::create(path).map_err(io_err)?);
    serde_json::to_writer_pretty(&mut w, summary).map_err(|source| ReportError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    w.write_all(b"\n").map_err(io_err)?;
    w.flush().map_err(io_err)
}

/// A Decimal rounded half away from zero to `dp` places, with trailing
/// zeros kept (display only).
pub(crate) fn fmt_dp(d: Decimal, dp: u32) -> String {
    let r = d.round_dp_with_strategy(dp, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    format!("{r:.prec$}", prec = dp as usize)
}

/// A duration in milliseconds as `1d 2h 3m`, `2h 5m`, `45s` (whole
/// seconds; largest units first, zero units left out).
pub fn fmt_duration(ms: i64) -> String {
    let mut secs = ms.max(0) / 1000;
    let days = secs / 86_400;
    secs %= 86_400;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut parts = Vec::new();
    if days > 0 {
        parts.push(format!("{days}d"));
    }
    if h > 0 {
        parts.push(format!("{h}h"));
    }
    if m > 0 {
        parts.push(format!("{m}m"));
    }
    if s > 0 || parts.is_empty() {
        parts.push(format!("{s}s"));
    }
    parts.join(" ")
}

pub(crate) fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"))
}

/// Decimal places money in `currency` is shown with in the summary table,
/// or `None` for a currency not in the table below (shown rounded to
/// [`UNKNOWN_CURRENCY_DP`] places with trailing zeros dropped).
///
/// | places | currencies | source |
/// |---:|---|---|
/// | 0 | JPY, KRW, VND, CLP, ISK, PYG, UGX, XAF, XOF | ISO 4217 minor units |
/// | 2 | USD, EUR, GBP, CHF, CAD, AUD, NZD, SGD, HKD, CNY, INR, BRL, MXN, ZAR, SEK, NOK, DKK, PLN, CZK, HUF, TRY, ILS, AED, SAR, THB, TWD, PHP, MYR, IDR, RUB | ISO 4217 minor units (IDR and HUF have 2 in ISO 4217) |
/// | 2 | USDT, USDC, DAI, BUSD, TUSD, FDUSD, PYUSD | dollar stablecoins, shown like the dollar (cents) |
/// | 3 | BHD, KWD, OMR, JOD, TND, LYD, IQD | ISO 4217 minor units |
/// | 8 | BTC, XBT, ETH, LTC, BCH, BNB, SOL, XRP, ADA, DOGE, DOT, AVAX, LINK, XMR, ETC, TRX, MATIC | crypto quoted to the satoshi (1e-8), as exchanges show balances |
///
/// The code is compared case-insensitively and trimmed.
pub fn currency_decimals(currency: &str) -> Option<u32> {
    let code = currency.trim().to_ascii_uppercase();
    let dp = match code.as_str() {
        "JPY" | "KRW" | "VND" | "CLP" | "ISK" | "PYG" | "UGX" | "XAF" | "XOF" => 0,
        "USD" | "EUR" | "GBP" | "CHF" | "CAD" | "AUD" | "NZD" | "SGD" | "HKD" | "CNY" | "INR"
        | "BRL" | "MXN" | "ZAR" | "SEK" | "NOK" | "DKK" | "PLN" | "CZK" | "HUF" | "TRY" | "ILS"
        | "AED" | "SAR" | "THB" | "TWD" | "PHP" | "MYR" | "IDR" | "RUB" => 2,
        "USDT" | "USDC" | "DAI" | "BUSD" | "TUSD" | "FDUSD" | "PYUSD" => 2,
        "BHD" | "KWD" | "OMR" | "JOD" | "TND" | "LYD" | "IQD" => 3,
        "BTC" | "XBT" | "ETH" | "LTC" | "BCH" | "BNB" | "SOL" | "XRP" | "ADA" | "DOGE" | "DOT"
        | "AVAX" | "LINK" | "XMR" | "ETC" | "TRX" | "MATIC" => 8,
        _ => return None,
    };
    Some(dp)
}

/// Most decimal places shown for money in a currency missing from
/// [`currency_decimals`]'s table (trailing zeros dropped).
pub const UNKNOWN_CURRENCY_DP: u32 = 8;

/// Money in `currency` for the summary table: rounded half away from zero
/// to the currency's places ([`currency_decimals`]), trailing zeros kept; an
/// unknown currency to at most [`UNKNOWN_CURRENCY_DP`] places, trailing
/// zeros dropped.
pub fn fmt_money(d: Decimal, currency: &str) -> String {
    match currency_decimals(currency) {
        Some(dp) => fmt_dp(d, dp),
        None => d
            .round_dp_with_strategy(
                UNKNOWN_CURRENCY_DP,
                rust_decimal::RoundingStrategy::MidpointAwayFromZero,
            )
            .normalize()
            .to_string(),
    }
}

/// The end-of-run table for the terminal (comfy-table, UTF-8 borders, no
/// colours): one metric per row. Money is in `currency` (the account's base
/// currency, e.g. `USD` or `BTC`), named in the header and shown with that
/// currency's precision ([`currency_decimals`]: USD 2 places, JPY 0, BTC 8,
/// unknown up to 8); percentages with 2 places and a `%` sign, ratios with 2
/// (`n/a` when absent); the exact values are in `summary.json`.
pub fn summary_table(s: &Summary, currency: &str) -> String {
    let rows = summary_rows(s, currency);
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .force_no_tty()
        .set_header(vec![
            "Metric".to_owned(),
            format!("Value (money in {})", currency.trim()),
        ]);
    for (label, value) in rows {
        table.add_row(vec![label.to_owned(), value]);
    }
    if let Some(col) = table.column_mut(1) {
        col.set_cell_alignment(CellAlignment::Right);
    }
    table.to_string()
}

/// The rows of [`summary_table`] as (label, formatted value), in table order
/// (also the HTML report's summary table).
pub fn summary_rows(s: &Summary, currency: &str) -> Vec<(&'static str, String)> {
    let money = |d: Decimal| fmt_money(d, currency);
    let pct = |d: Decimal| format!("{}%", fmt_dp(d, 2));
    let f = &s.figures;
    let durations = |avg: Option<i64>, max: Option<i64>| match (avg, max) {
        (Some(a), Some(m)) => format!("{} / {}", fmt_duration(a), fmt_duration(m)),
        _ => "n/a".to_owned(),
    };
    vec![
        ("Phase", s.phase.clone()),
        ("Period", format!("{} → {}", s.start, s.end)),
        ("Bars", s.bars.to_string()),
        ("Initial equity", money(s.initial_equity)),
        ("Final equity", money(s.final_equity)),
        ("Final cash", money(s.final_cash)),
        ("Realized P&L", money(s.realized_pnl)),
        ("Unrealized P&L", money(s.unrealized_pnl)),
        ("Total P&L", money(s.total_pnl)),
        ("ROI", pct(s.roi_pct)),
        (
            "Buy & hold (benchmark)",
            f.benchmark_return_pct.map_or_else(|| "n/a".to_owned(), pct),
        ),
        (
            "Excess return vs buy & hold",
            f.excess_return_pct
                .map_or_else(|| "n/a".to_owned(), |d| format!("{} pp", fmt_dp(d, 2))),
        ),
        ("Exposure time", pct(f.exposure_time_pct)),
        (
            "CAGR",
            f.cagr_pct
                .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}%")),
        ),
        ("Calmar ratio", fmt_ratio(f.calmar_ratio)),
        ("Max drawdown", pct(s.max_drawdown_pct)),
        (
            "Max drawdown duration",
            f.max_drawdown_duration.map_or_else(
                || "n/a".to_owned(),
                |d| {
                    format!(
                        "{}{}",
                        fmt_duration(d.duration_ms),
                        if d.recovered { "" } else { " (not recovered)" }
                    )
                },
            ),
        ),
        ("Sharpe ratio (annualised)", fmt_ratio(s.sharpe_ratio)),
        ("Sortino ratio (annualised)", fmt_ratio(s.sortino_ratio)),
        (
            "Trades (fills / failed)",
            format!("{} / {}", s.fills, s.failed_orders),
        ),
        (
            "Round trips (won / lost)",
            format!("{} ({} / {})", s.round_trips, s.wins, s.losses),
        ),
        ("Win rate", pct(s.win_rate_pct)),
        ("Avg P&L per round trip", money(s.avg_pnl_per_round_trip)),
        ("Expectancy per round trip", money(f.expectancy)),
        ("SQN", fmt_ratio(f.sqn)),
        (
            "Avg / max duration, winners",
            durations(f.avg_win_duration_ms, f.max_win_duration_ms),
        ),
        (
            "Avg / max duration, losers",
            durations(f.avg_loss_duration_ms, f.max_loss_duration_ms),
        ),
        ("Longest losing streak", f.longest_losing_streak.to_string()),
        ("Avg win / avg loss", {
            format!("{} / {}", money(s.avg_win), money(s.avg_loss))
        }),
        (
            "Largest win / largest loss",
            format!("{} / {}", money(s.largest_win), money(s.largest_loss)),
        ),
        (
            "Profit factor",
            s.profit_factor
                .map_or_else(|| "n/a (no losses)".to_owned(), |p| fmt_dp(p, 2)),
        ),
        ("Fees paid", money(s.fees_paid)),
        ("Gas paid", money(s.gas_paid)),
        ("Slippage paid", money(s.slippage_paid)),
        ("Circuit-breaker trips", s.breaker_trips.to_string()),
        ("Autopilot adjustments", s.autopilot_adjustments.to_string()),
        (
            "Decisions (buy/sell/skip/hold)",
            format!(
                "{} / {} / {} / {}",
                s.decisions.buy, s.decisions.sell, s.decisions.skip, s.decisions.hold
            ),
        ),
        ("Open positions", s.open_positions.to_string()),
    ]
}

/// Registers DejaVu Sans (regular and bold, bytes from the `dejavu` crate)
/// as plotters' `sans-serif` family, once per process, so text renders
/// without any system font.
pub(crate) fn ensure_font() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, dejavu::sans::regular())
            .is_ok()
            && plotters::style::register_font(FONT_FAMILY, FontStyle::Bold, dejavu::sans::bold())
                .is_ok()
    });
    if ok { Ok(()) } else { Err(ReportError::Font) }
}

/// Draws the equity chart alone (no benchmark line, no shaded spans, no
/// subtitle) as a [`CHART_WIDTH`] × [`CHART_HEIGHT`] PNG at `path`; see
/// [`crate::charts::render_equity`] for the layout and the point shape
/// (time, equity in quote currency, drawdown percent 0-100).
///
/// # Errors
/// [`ReportError::Chart`] naming `path`, [`ReportError::Font`].
pub fn render_equity_png(
    points: &[(Timestamp, Decimal, Decimal)],
    path: &Path,
    title: &str,
) -> Result<(), ReportError> {
    crate::charts::render_equity(
        points,
        &crate::charts::EquityOverlay::default(),
        path,
        title,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::Analytics;
    use crate::analytics::test_records::*;
    use crate::engine::EngineState;
    use crate::ledger::records::{Action, FillReason, FillStatus};
    use crate::types::Side;
    use rust_decimal_macros::dec;

    /// Width and height from a PNG's IHDR chunk, after checking the 8-byte
    /// signature (PNG spec: signature, then length 13, "IHDR", width, height).
    fn png_size(path: &Path) -> (u32, u32) {
        let bytes = fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR");
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        (w, h)
    }

    fn read_lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn end_state() -> EngineState {
        EngineState {
            start: Timestamp(T0),
            now: Timestamp(T0 + 48 * HOUR),
            bars: 2880,
            cash: dec!(10012.5),
            equity: dec!(10012.5),
            realized_pnl: dec!(12.5),
            unrealized_pnl: Decimal::ZERO,
            max_drawdown_pct: dec!(1.25),
            open_positions: 0,
            holds: 2800,
            fills: 0,
            rejected_ticks: 0,
        }
    }

    /// A two-day hourly equity curve with a dip, in one batch per snapshot.
    fn hourly_batches() -> Vec<LedgerBatch> {
        let mut peak = Decimal::ZERO;
        (0..=48i64)
            .map(|h| {
                let x = Decimal::from(h);
                let equity = if h < 20 {
                    dec!(10000) + x * dec!(3)
                } else if h < 30 {
                    dec!(10057) - (x - dec!(19)) * dec!(12)
                } else {
                    dec!(9937) + (x - dec!(29)) * dec!(4)
                };
                peak = peak.max(equity);
                let dd = (peak - equity) / peak * Decimal::ONE_HUNDRED;
                LedgerBatch {
                    snapshots: vec![snapshot(Timestamp(T0 + h * HOUR), equity, dd)],
                    ..Default::default()
                }
            })
            .collect()
    }

    #[test]
    fn csv_headers_and_known_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ReportWriter::create(&dir.path().join("a/b"), "test").unwrap();
        let mut t = trade(
            1,
            Side::Buy,
            FillStatus::Filled,
            dec!(1.8700800),
            dec!(0.10),
            dec!(0.4675),
        );
        t.time = Timestamp(T0 + 4_500_250);
        let mut failed = trade(2, Side::Sell, FillStatus::Failed, dec!(0), dec!(0), dec!(0));
        failed.reason = FillReason::StopLoss;
        let mut d = decision(7, Action::Buy);
        d.quantity = Some(dec!(0.100));
        d.positive_signals = "sma_crossover: fast 46810.2 crossed above slow 46795.1".into();
        d.reason = "Buy, because \"fast\" crossed, with 72.5% confidence".into();
        w.write_batch(&LedgerBatch {
            trades: vec![t, failed],
            decisions: vec![d, decision(8, Action::Skip)],
            ..Default::default()
        })
        .unwrap();
        let files = w
            .finish(&Analytics::new(dec!(10000), HOUR).summary(&end_state(), "Completed"))
            .unwrap();

        let trades = read_lines(&files.trades_csv);
        assert_eq!(trades[0], TRADES_HEADER.join(","));
        assert_eq!(
            trades[0],
            "seq,decision_seq,time,symbol,side,quantity,reference_price,fill_price,fee,gas,\
             slippage_cost,latency_ms,realized_pnl,reason,status,cash_after,position_after,\
             cost_basis_after,position_id"
        );
        assert_eq!(
            trades[1],
            "1,1,2022-01-01T01:15:00.250Z,BTC-PERP,buy,0.1,46752,46752,1.87008,0.1,0.4675,250,\
             0,signal,filled,1000,0.1,4675,1"
        );
        // A failed order in an open position carries the position's id.
        assert!(
            trades[2].contains(",sell,")
                && trades[2].ends_with(",stop_loss,failed,1000,0.1,4675,1")
        );
        assert_eq!(trades.len(), 3);

        let decisions = read_lines(&files.decisions_csv);
        assert_eq!(
            decisions[0],
            "seq,time,symbol,action,confidence,price,quantity,positive_signals,\
             negative_signals,risk_assessment,reason"
        );
        assert_eq!(
            decisions[1],
            "7,2022-01-01T00:07:00Z,BTC-PERP,buy,72.5,46752,0.1,\
             sma_crossover: fast 46810.2 crossed above slow 46795.1,,,\
             \"Buy, because \"\"fast\"\" crossed, with 72.5% confidence\""
        );
        assert_eq!(
            decisions[2],
            "8,2022-01-01T00:08:00Z,BTC-PERP,skip,72.5,46752,,,,,why"
        );

        // Re-reading with a CSV parser gives back the exact text.
        let mut rdr = csv::Reader::from_path(&files.decisions_csv).unwrap();
        let rec = rdr.records().next().unwrap().unwrap();
        assert_eq!(
            &rec[10],
            "Buy, because \"fast\" crossed, with 72.5% confidence"
        );
    }

    #[test]
    fn round_trips_csv_matches_reference_format() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ReportWriter::create(dir.path(), "test").unwrap();
        // First row of the parity reference file:
        // 2022-01-01T01:15:00Z,46752,2022-01-01T01:43:00Z,46748,0.1,-0.4
        let mut rt = round_trip(dec!(-0.40));
        rt.entry_time = Timestamp(T0 + 75 * 60_000);
        rt.entry_price = dec!(46752.00);
        rt.exit_time = Timestamp(T0 + 103 * 60_000);
        rt.exit_price = dec!(46748.0);
        rt.quantity = dec!(0.1000);
        rt.fees = dec!(0.50);
        rt.return_pct = dec!(-0.0085557);
        rt.exit_reason = FillReason::TakeProfit;
        w.write_batch(&LedgerBatch {
            round_trips: vec![rt],
            ..Default::default()
        })
        .unwrap();
        let files = w
            .finish(&Analytics::new(dec!(10000), HOUR).summary(&end_state(), "Completed"))
            .unwrap();
        let lines = read_lines(&files.round_trips_csv);
        let reference_header = "entry_time,entry_price,exit_time,exit_price,quantity,pnl";
        assert!(lines[0].starts_with(&format!("{reference_header},")));
        assert_eq!(
            lines[0],
            "entry_time,entry_price,exit_time,exit_price,quantity,pnl,symbol,fees,return_pct,\
             exit_reason,position_id,exit_fill_seq,entry_decision_seq,exit_decision_seq"
        );
        // No fills in this report: the round trip links to none.
        assert_eq!(
            lines[1],
            "2022-01-01T01:15:00Z,46752,2022-01-01T01:43:00Z,46748,0.1,-0.4,\
             BTC-PERP,0.5,-0.0085557,take_profit,,,,"
        );
    }

    /// Positions opened in one order and closed in another, across batches,
    /// with a failed order on a flat symbol and an automatic exit: each fill
    /// and round trip gets the id of its position's opening fill.
    #[test]
    fn position_ids_link_fills_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ReportWriter::create(dir.path(), "test").unwrap();
        let fill = |seq: u64, decision_seq: u64, symbol: &str, side: Side, after: Decimal| {
            let mut t = trade(seq, side, FillStatus::Filled, dec!(0), dec!(0), dec!(0));
            t.decision_seq = decision_seq;
            t.symbol = symbol.into();
            t.position_after = after;
            t
        };
        let rt = |symbol: &str| {
            let mut r = round_trip(dec!(1));
            r.symbol = symbol.into();
            r
        };
        let mut failed = trade(3, Side::Buy, FillStatus::Failed, dec!(0), dec!(0), dec!(0));
        failed.symbol = "SOL-USD".into();
        w.write_batch(&LedgerBatch {
            trades: vec![
                fill(1, 10, "BTC-USD", Side::Buy, dec!(1)),
                fill(2, 11, "ETH-USD", Side::Buy, dec!(2)),
                failed,
            ],
            ..Default::default()
        })
        .unwrap();
        w.write_batch(&LedgerBatch {
            trades: vec![
                // ETH closes first, by a stop-loss (no decision).
                fill(4, 0, "ETH-USD", Side::Sell, dec!(0)),
                fill(5, 12, "BTC-USD", Side::Sell, dec!(0.5)),
                fill(6, 13, "BTC-USD", Side::Sell, dec!(0)),
                // BTC reopens in the same batch.
                fill(7, 14, "BTC-USD", Side::Buy, dec!(1)),
            ],
            round_trips: vec![rt("ETH-USD"), rt("BTC-USD")],
            ..Default::default()
        })
        .unwrap();
        let files = w
            .finish(&Analytics::new(dec!(10000), HOUR).summary(&end_state(), "Completed"))
            .unwrap();
        let last = |line: &str, n: usize| {
            let f: Vec<&str> = line.split(',').collect();
            f[f.len() - n..].join(",")
        };
        let trades: Vec<String> = read_lines(&files.trades_csv)[1..]
            .iter()
            .map(|l| format!("{}:{}", &l[..1], last(l, 1)))
            .collect();
        assert_eq!(trades, ["1:1", "2:2", "3:", "4:2", "5:1", "6:1", "7:7"]);
        let rts: Vec<String> = read_lines(&files.round_trips_csv)[1..]
            .iter()
            .map(|l| last(l, 4))
            .collect();
        assert_eq!(rts, ["2,4,11,", "1,6,10,13"]);

        // The same records as a chunked ledger read may deliver them: both
        // round trips before any fill, then the fills in two chunks. Same
        // rows, same order.
        let dir2 = tempfile::tempdir().unwrap();
        let mut w = ReportWriter::create(dir2.path(), "test").unwrap();
        let mut failed = trade(3, Side::Buy, FillStatus::Failed, dec!(0), dec!(0), dec!(0));
        failed.symbol = "SOL-USD".into();
        for b in [
            LedgerBatch {
                round_trips: vec![rt("ETH-USD"), rt("BTC-USD")],
                ..Default::default()
            },
            LedgerBatch {
                trades: vec![
                    fill(1, 10, "BTC-USD", Side::Buy, dec!(1)),
                    fill(2, 11, "ETH-USD", Side::Buy, dec!(2)),
                    failed,
                    fill(4, 0, "ETH-USD", Side::Sell, dec!(0)),
                ],
                ..Default::default()
            },
            LedgerBatch {
                trades: vec![
                    fill(5, 12, "BTC-USD", Side::Sell, dec!(0.5)),
                    fill(6, 13, "BTC-USD", Side::Sell, dec!(0)),
                    fill(7, 14, "BTC-USD", Side::Buy, dec!(1)),
                ],
                ..Default::default()
            },
        ] {
            w.write_batch(&b).unwrap();
        }
        let chunked = w
            .finish(&Analytics::new(dec!(10000), HOUR).summary(&end_state(), "Completed"))
            .unwrap();
        for (a, b) in [
            (&files.round_trips_csv, &chunked.round_trips_csv),
            (&files.trades_csv, &chunked.trades_csv),
        ] {
            assert_eq!(read_lines(a), read_lines(b));
        }
    }

    /// A round trip whose closing fill never comes (not something the
    /// engine writes) is still written, without ids, by `finish`.
    #[test]
    fn a_round_trip_without_its_fills_is_written_without_ids() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ReportWriter::create(dir.path(), "test").unwrap();
        w.write_batch(&LedgerBatch {
            round_trips: vec![round_trip(dec!(1))],
            ..Default::default()
        })
        .unwrap();
        let files = w
            .finish(&Analytics::new(dec!(10000), HOUR).summary(&end_state(), "Completed"))
            .unwrap();
        let lines = read_lines(&files.round_trips_csv);
        assert_eq!(lines.len(), 2);
        assert!(lines[1].ends_with(",,,,"), "{}", lines[1]);
    }

    #[test]
    fn finish_writes_all_files_and_summary_json() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ReportWriter::create(dir.path(), "sma-10-30 BTC-PERP").unwrap();
        let mut a = Analytics::new(dec!(10000), HOUR);
        for b in hourly_batches() {
            a.on_batch(&b);
            w.write_batch(&b).unwrap();
        }
        let summary = a.summary(&end_state(), "Completed");
        let files = w.finish(&summary).unwrap();
        assert_eq!(files.dir, dir.path());
        for p in [
            &files.summary_json,
            &files.trades_csv,
            &files.round_trips_csv,
            &files.decisions_csv,
            &files.equity_png,
        ] {
            assert!(p.starts_with(dir.path()) && p.is_file(), "{}", p.display());
        }
        assert_eq!(png_size(&files.equity_png), (1200, 600));
        let v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&files.summary_json).unwrap()).unwrap();
        assert_eq!(v["final_equity"], "10012.5");
        assert_eq!(v["roi_pct"], "0.125");
        assert_eq!(v["return_periods"], 48);
        assert!(v["sharpe_ratio"].is_number());
        assert_eq!(v["decisions"]["hold"], 2800);
    }

    #[test]
    fn png_of_right_size_for_many_one_and_no_points() {
        let dir = tempfile::tempdir().unwrap();
        let points: Vec<_> = hourly_batches()
            .iter()
            .map(|b| chart_point(&b.snapshots[0]))
            .collect();
        let cases = [
            ("many.png", &points[..]),
            ("one.png", &points[..1]),
            ("none.png", &points[..0]),
        ];
        for (name, pts) in cases {
            let p = dir.path().join(name);
            render_equity_png(pts, &p, "Equity").unwrap();
            assert_eq!(png_size(&p), (CHART_WIDTH, CHART_HEIGHT), "{name}");
        }
        // Flat equity over distinct times must not fail on a zero-height range.
        let flat = [
            (Timestamp(T0), dec!(100), Decimal::ZERO),
            (Timestamp(T0 + HOUR), dec!(100), Decimal::ZERO),
        ];
        let p = dir.path().join("flat.png");
        render_equity_png(&flat, &p, "Flat").unwrap();
        assert_eq!(png_size(&p), (1200, 600));
    }

    #[test]
    fn png_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing-dir/equity.png");
        let err = render_equity_png(&[], &p, "x").unwrap_err();
        assert!(matches!(err, ReportError::Chart { .. }));
        assert!(err.to_string().contains("missing-dir"), "{err}");
    }

    #[test]
    fn chart_points_are_bounded_and_keep_the_last() {
        let mut c = ChartPoints::new();
        let n = 3 * MAX_CHART_POINTS as i64 + 5;
        for i in 0..n {
            c.push((Timestamp(i), Decimal::from(i), Decimal::ZERO));
        }
        let pts = c.into_points();
        assert!(pts.len() <= MAX_CHART_POINTS + 1, "{}", pts.len());
        assert!(pts.len() >= MAX_CHART_POINTS / 2);
        assert_eq!(pts.first().unwrap().0, Timestamp(0));
        assert_eq!(pts.last().unwrap().0, Timestamp(n - 1));
        assert!(pts.windows(2).all(|w| w[0].0 < w[1].0));

        let mut small = ChartPoints::new();
        for i in 0..10 {
            small.push((Timestamp(i), Decimal::from(i), Decimal::ZERO));
        }
        assert_eq!(
            small.into_points().len(),
            10,
            "below the cap nothing is dropped"
        );
    }

    #[test]
    fn summary_table_has_key_labels_and_values() {
        let mut a = Analytics::new(dec!(10000), HOUR);
        a.on_batch(&LedgerBatch {
            round_trips: vec![round_trip(dec!(20)), round_trip(dec!(-7.5))],
            ..Default::default()
        });
        let s = a.summary(&end_state(), "Completed");
        let t = summary_table(&s, "USD");
        for label in [
            "Trades",
            "Win rate",
            "Realized P&L",
            "Unrealized P&L",
            "ROI",
            "Max drawdown",
            "Sharpe ratio",
            "Sortino ratio",
            "Profit factor",
            "Fees paid",
            "Slippage paid",
            "Circuit-breaker trips",
            "Autopilot adjustments",
            "Final equity",
        ] {
            assert!(t.contains(label), "missing {label} in\n{t}");
        }
        assert!(t.contains("10012.50"), "final equity\n{t}");
        assert!(t.contains("50.00%"), "win rate\n{t}");
        assert!(
            t.contains("0.13%"),
            "ROI 0.125 rounds half away from zero\n{t}"
        );
        assert!(t.contains("2.67"), "profit factor 20/7.5\n{t}");
        assert!(t.contains("n/a"), "no Sharpe without snapshots\n{t}");
    }

    #[test]
    fn summary_table_shows_a_btc_quoted_session_to_the_satoshi() {
        // A session funded with 1 BTC that lost 0.0215 BTC over two round
        // trips (−0.0213 and −0.0002 BTC): with 2 places the table used to
        // show equity 0.98 and average P&L 0.00 (−0.01075 rounds to −0.01,
        // −0.0002 to 0.00).
        let mut a = Analytics::new(dec!(1), HOUR);
        a.on_batch(&LedgerBatch {
            round_trips: vec![round_trip(dec!(-0.0213)), round_trip(dec!(-0.0002))],
            ..Default::default()
        });
        let mut end = end_state();
        end.cash = dec!(0.9785);
        end.equity = dec!(0.9785);
        end.realized_pnl = dec!(-0.0215);
        let s = a.summary(&end, "Completed");
        let t = summary_table(&s, "BTC");
        let row = |label: &str| -> String {
            t.lines()
                .find(|l| l.contains(label))
                .unwrap_or_else(|| panic!("no {label} row in\n{t}"))
                .to_owned()
        };
        assert!(t.contains("Value (money in BTC)"), "{t}");
        assert!(row("Final equity").contains(" 0.97850000 "), "{t}");
        assert!(row("Initial equity").contains(" 1.00000000 "), "{t}");
        assert!(row("Total P&L").contains(" -0.02150000 "), "{t}");
        assert!(
            row("Avg P&L per round trip").contains(" -0.01075000 "),
            "{t}"
        );
        assert!(
            row("Largest win / largest loss").contains(" 0.00000000 / -0.02130000 "),
            "{t}"
        );
        assert!(row("ROI").contains(" -2.15% "), "{t}");
    }

    #[test]
    fn breakdown_csvs_identity_and_benchmark_in_summary_json() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ReportWriter::create(dir.path(), "t").unwrap();
        let mut a = Analytics::new(dec!(10000), HOUR);
        a.set_identity(crate::analytics::SessionIdentity {
            session_id: "sma-2".into(),
            name: "sma".into(),
            strategy: "sma-10-30".into(),
            symbols: vec!["BTC-PERP".into(), "ETH-PERP".into()],
            currency: "USD".into(),
        });
        // Benchmark: 5000 per symbol, fee 0.1 %; BTC 100 → 110, ETH 50 → 45:
        // 10000 × 0.999 / 1.001 × (1.1 + 0.9) / 2 = 9980.01998…, −0.1998002 %.
        let mut p = crate::figures::BenchmarkPrices::new(
            vec!["BTC-PERP".into(), "ETH-PERP".into()],
            dec!(0.001),
        );
        p.set_first(0, Timestamp(T0), dec!(100));
        p.set_first(1, Timestamp(T0), dec!(50));
        p.set_last(0, Timestamp(T0 + 48 * HOUR), dec!(110));
        p.set_last(1, Timestamp(T0 + 48 * HOUR), dec!(45));
        a.set_benchmark_prices(Some(p));
        let mut win = round_trip(dec!(20));
        win.exit_time = Timestamp(T0 + 26 * HOUR);
        let mut loss = round_trip(dec!(-7.5));
        loss.symbol = "ETH-PERP".into();
        loss.exit_reason = FillReason::StopLoss;
        let batch = LedgerBatch {
            round_trips: vec![win, loss],
            trades: vec![trade(
                1,
                Side::Buy,
                FillStatus::Filled,
                dec!(1.25),
                Decimal::ZERO,
                Decimal::ZERO,
            )],
            ..Default::default()
        };
        a.on_batch(&batch);
        w.write_batch(&batch).unwrap();
        let summary = a.summary(&end_state(), "Completed");
        let files = w.finish(&summary).unwrap();

        assert_eq!(
            read_lines(&files.by_symbol_csv),
            vec![
                BY_SYMBOL_HEADER.join(","),
                "BTC-PERP,1,1,0,100,20,1.25,1,true".to_owned(),
                "ETH-PERP,1,0,1,0,-7.5,0,0,false".to_owned(),
            ]
        );
        let reasons = read_lines(&files.by_exit_reason_csv);
        assert_eq!(
            reasons[0],
            "exit_reason,round_trips,wins,losses,win_rate_pct,pnl,avg_pnl"
        );
        assert_eq!(reasons[1], "signal,1,1,0,100,20,20");
        assert_eq!(reasons[2], "stop_loss,1,0,1,0,-7.5,-7.5");
        assert_eq!(reasons[7], "still_open,1,0,0,0,0,0");
        assert_eq!(reasons.len(), 8);
        // One trade on Jan 1 (the fill), the win closed on Jan 2; no
        // snapshot, so equity only moves on the last day (end 48 h = Jan 3
        // 00:00, which closes Jan 2).
        assert_eq!(
            read_lines(&files.daily_csv),
            vec![
                "date,start_equity,end_equity,pnl,return_pct,fills,round_trips".to_owned(),
                "2022-01-01,10000,10000,0,0,1,1".to_owned(),
                "2022-01-02,10000,10012.5,12.5,0.125,0,1".to_owned(),
            ]
        );

        let v: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&files.summary_json).unwrap()).unwrap();
        assert_eq!(v["session_id"], "sma-2");
        assert_eq!(v["session_name"], "sma");
        assert_eq!(v["strategy"], "sma-10-30");
        assert_eq!(v["symbols"], serde_json::json!(["BTC-PERP", "ETH-PERP"]));
        assert_eq!(v["currency"], "USD");
        assert_eq!(v["start"], "2022-01-01T00:00:00Z");
        assert_eq!(v["benchmark_return_pct"], "-0.1998002");
        assert_eq!(v["benchmark"]["final_equity"], "9980.02");
        // ROI 0.125 % − (−0.1998002 %) = 0.3248002 pp.
        assert_eq!(v["excess_return_pct"], "0.3248002");
        assert_eq!(v["expectancy"], "6.25");
        assert_eq!(v["by_symbol"][1]["realized_pnl"], "-7.5");
        assert_eq!(v["by_exit_reason"][6]["exit_reason"], "still_open");
        assert_eq!(v["daily"][1]["end_equity"], "10012.5");
        assert_eq!(v["best_round_trip"]["pnl"], "20");
        assert_eq!(v["longest_losing_streak"], 1);
        assert!(v["cagr_pct"].is_number());
        // Existing fields are still there, unchanged in form.
        assert_eq!(v["final_equity"], "10012.5");
        assert_eq!(v["roi_pct"], "0.125");

        let t = summary_table(&summary, "USD");
        for (label, value) in [
            ("Buy & hold (benchmark)", "-0.20%"),
            ("Excess return vs buy & hold", "0.32 pp"),
            ("Exposure time", "%"),
            ("CAGR", "%"),
            ("Calmar ratio", ""),
            // √2 × 6.25 / (27.5 / √2) = 12.5 / 27.5 = 0.4545…
            ("SQN", "0.45"),
            ("Expectancy per round trip", "6.25"),
            // The win: entry T0, exit 26 h later.
            ("Avg / max duration, winners", "1d 2h / 1d 2h"),
            ("Avg / max duration, losers", "1h / 1h"),
            ("Longest losing streak", "1"),
        ] {
            let row = t
                .lines()
                .find(|l| l.contains(label))
                .unwrap_or_else(|| panic!("no {label} row in\n{t}"));
            assert!(row.contains(value), "{label}: {value} not in {row}");
        }
    }

    #[test]
    fn durations_read_as_days_hours_minutes() {
        assert_eq!(fmt_duration(0), "0s");
        assert_eq!(fmt_duration(45_000), "45s");
        assert_eq!(fmt_duration(2 * HOUR + 5 * 60_000), "2h 5m");
        assert_eq!(fmt_duration(26 * HOUR + 60_000 + 1_500), "1d 2h 1m 1s");
    }

    #[test]
    fn money_follows_the_currency_precision_table() {
        let v = dec!(1234.5678912345);
        assert_eq!(fmt_money(v, "USD"), "1234.57");
        assert_eq!(fmt_money(v, "usdt"), "1234.57");
        assert_eq!(fmt_money(v, "JPY"), "1235");
        assert_eq!(fmt_money(v, "KWD"), "1234.568");
        assert_eq!(fmt_money(v, "ETH"), "1234.56789123");
        // Unknown: up to 8 places, trailing zeros dropped.
        assert_eq!(fmt_money(v, "PEPE"), "1234.56789123");
        assert_eq!(fmt_money(dec!(2.50), "PEPE"), "2.5");
        assert_eq!(currency_decimals(" btc "), Some(8));
        assert_eq!(currency_decimals("XYZ"), None);
    }
}

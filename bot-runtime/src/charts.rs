//! The report's charts: what they need, kept bounded while a run goes, and
//! how they are drawn.
//!
//! * [`MarketSeries`]: every candle traded, folded into at most
//!   [`MAX_PRICE_BUCKETS`] OHLC buckets per symbol (when full, adjacent
//!   pairs merge and the bucket width doubles), plus the market-data gaps
//!   (at most [`MAX_BANDS`] spans, merged when exceeded).
//! * [`ChartRecords`]: what the ledger batches add: fill markers (at most
//!   [`MAX_MARKERS`] per symbol), circuit-breaker-open spans and the round
//!   trips' stop-loss / take-profit levels (at most [`MAX_LEVELS`] per
//!   symbol), and, for a report rebuilt from a ledger without candles, a
//!   price series from the recorded decision and fill prices.
//! * [`render_equity`] (`equity.png`) and [`render_price`]
//!   (`price_<SYMBOL>.png`).
//!
//! Prices and money stay [`Decimal`] until they are drawn; the pixel
//! mapping converts them to `f64` (plotting only).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::figures::Benchmark;
use crate::ledger::records::{FillStatus, LedgerBatch};
use crate::report::{FONT_FAMILY, ReportError, ensure_font, fmt_dp};
use crate::types::{Candle, Timestamp};

/// Most OHLC buckets kept per symbol for the price chart.
pub const MAX_PRICE_BUCKETS: usize = 2000;
/// Most shaded spans kept per kind (data gaps, breaker-open periods).
pub const MAX_BANDS: usize = 256;
/// Most entry markers and most exit markers kept per symbol (beyond that
/// every second one of that kind is dropped and from then on only every
/// `stride`-th fill of that kind is kept; entries and exits are thinned
/// apart so both stay visible).
pub const MAX_MARKERS: usize = 1024;
/// Most round trips per symbol whose stop-loss / take-profit levels are kept.
pub const MAX_LEVELS: usize = 1024;
/// The price chart draws candles up to this many buckets, a close line above.
pub const MAX_CANDLES_DRAWN: usize = 240;
/// A candle starting more than this many intervals after the previous one of
/// its symbol (step > 1.5 × interval) leaves a data gap.
pub const GAP_FACTOR_NUM: i64 = 3;
/// Denominator of the gap factor (3 / 2 = 1.5).
pub const GAP_FACTOR_DEN: i64 = 2;
/// Width of `price_<SYMBOL>.png`, pixels.
pub const PRICE_CHART_WIDTH: u32 = 1200;
/// Height of `price_<SYMBOL>.png`, pixels.
pub const PRICE_CHART_HEIGHT: u32 = 600;
/// Bucket width, ms, of a price series built from recorded prices (1 minute;
/// it doubles as the series fills).
const RECORDED_WIDTH_MS: i64 = 60_000;

/// Time spans `[start, end)` in ms, at most `cap` of them: overlapping or
/// touching spans merge; when more than `cap` remain, adjacent pairs merge
/// (a span then also covers the time between the two).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bands {
    spans: Vec<(i64, i64)>,
    cap: usize,
}

impl Bands {
    /// No span yet; at most `cap` (≥ 1) kept.
    pub fn new(cap: usize) -> Self {
        Self {
            spans: Vec::new(),
            cap: cap.max(1),
        }
    }

    /// Adds `[start, end)` (ms); an empty or reversed span is ignored.
    pub fn push(&mut self, start: i64, end: i64) {
        if end <= start {
            return;
        }
        match self.spans.last_mut() {
            Some(last) if start <= last.1 && end >= last.0 => {
                last.0 = last.0.min(start);
                last.1 = last.1.max(end);
            }
            _ => self.spans.push((start, end)),
        }
        if self.spans.len() > self.cap {
            self.compact();
        }
    }

    fn compact(&mut self) {
        self.normalize();
        while self.spans.len() > self.cap {
            self.spans = self
                .spans
                .chunks(2)
                .map(|c| (c[0].0, c[c.len() - 1].1))
                .collect();
        }
    }

    /// Sorted by start, overlaps merged.
    fn normalize(&mut self) {
        self.spans.sort_unstable();
        let mut out: Vec<(i64, i64)> = Vec::with_capacity(self.spans.len());
        for &(a, b) in &self.spans {
            match out.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        self.spans = out;
    }

    /// The spans, sorted by start, overlaps merged (ms).
    pub fn spans(&self) -> Vec<(i64, i64)> {
        let mut c = self.clone();
        c.normalize();
        c.spans
    }

    /// How many spans are kept (≤ the cap).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether no span was recorded.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// One OHLC bucket of a symbol's price series (quote currency).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Start of the bucket (the series' origin + k × width).
    pub start: Timestamp,
    /// First price in the bucket.
    pub open: Decimal,
    /// Highest price.
    pub high: Decimal,
    /// Lowest price.
    pub low: Decimal,
    /// Last price.
    pub close: Decimal,
    /// Time of the last price (a candle's close time).
    pub last_time: Timestamp,
}

/// A symbol's prices folded into at most [`MAX_PRICE_BUCKETS`] buckets of
/// equal width, starting at the first price's time. When a new bucket would
/// exceed the cap, the width doubles and adjacent pairs merge, so memory
/// stays bounded whatever the number of candles.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OhlcSeries {
    origin: i64,
    width_ms: i64,
    buckets: Vec<Bucket>,
}

impl OhlcSeries {
    /// Adds a price bar starting at `start` (ms) with OHLC prices, its last
    /// price at `last_time`; `width_hint_ms` is the first bucket width (the
    /// candle interval). A bar earlier than the last bucket is folded into
    /// the last bucket (prices arrive in time order per symbol).
    pub fn push(
        &mut self,
        start: Timestamp,
        width_hint_ms: i64,
        bar: [Decimal; 4],
        last_time: Timestamp,
    ) {
        let [open, high, low, close] = bar;
        if self.buckets.is_empty() {
            self.origin = start.millis();
            self.width_ms = width_hint_ms.max(1);
        }
        let key = start
            .millis()
            .saturating_sub(self.origin)
            .div_euclid(self.width_ms);
        let bstart = Timestamp(
            self.origin
                .saturating_add(key.saturating_mul(self.width_ms)),
        );
        match self.buckets.last_mut() {
            Some(b) if bstart <= b.start => {
                b.high = b.high.max(high);
                b.low = b.low.min(low);
                b.close = close;
                b.last_time = b.last_time.max(last_time);
            }
            _ => {
                self.buckets.push(Bucket {
                    start: bstart,
                    open,
                    high,
                    low,
                    close,
                    last_time,
                });
                if self.buckets.len() > MAX_PRICE_BUCKETS {
                    self.compact();
                }
            }
        }
    }

    /// Doubles the width until the buckets fit the cap, merging buckets that
    /// now share a start.
    fn compact(&mut self) {
        while self.buckets.len() > MAX_PRICE_BUCKETS {
            self.width_ms = self.width_ms.saturating_mul(2);
            let mut out: Vec<Bucket> = Vec::with_capacity(self.buckets.len() / 2 + 1);
            for b in self.buckets.drain(..) {
                let key = b.start.millis().saturating_sub(self.origin) / self.width_ms;
                let start = Timestamp(
                    self.origin
                        .saturating_add(key.saturating_mul(self.width_ms)),
                );
                match out.last_mut() {
                    Some(m) if m.start == start => {
                        m.high = m.high.max(b.high);
                        m.low = m.low.min(b.low);
                        m.close = b.close;
                        m.last_time = b.last_time;
                    }
                    _ => out.push(Bucket { start, ..b }),
                }
            }
            self.buckets = out;
        }
    }

    /// The buckets, in time order.
    pub fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    /// Current bucket width, ms (0 before the first price).
    pub fn width_ms(&self) -> i64 {
        self.width_ms
    }

    /// The last close at or before `t` (a bucket's close counts from its
    /// last price's time), or `None` before the first.
    pub fn close_at(&self, t: Timestamp) -> Option<Decimal> {
        let i = self.buckets.partition_point(|b| b.last_time <= t);
        i.checked_sub(1).map(|i| self.buckets[i].close)
    }
}

/// The market data a run traded, for the charts: per symbol a bounded
/// [`OhlcSeries`], and the data gaps (a candle starting more than 1.5 × its
/// interval after the previous candle of its symbol; the gap spans from the
/// previous candle's close to the new candle's open).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MarketSeries {
    symbols: Vec<String>,
    series: Vec<OhlcSeries>,
    last_open: Vec<Option<(i64, i64)>>,
    gaps: Option<Bands>,
}

impl MarketSeries {
    /// An empty series for `symbols` (names by symbol index).
    pub fn new(symbols: Vec<String>) -> Self {
        let n = symbols.len();
        Self {
            symbols,
            series: vec![OhlcSeries::default(); n],
            last_open: vec![None; n],
            gaps: Some(Bands::new(MAX_BANDS)),
        }
    }

    fn slot(&mut self, i: usize) -> usize {
        while self.symbols.len() <= i {
            self.symbols.push(format!("symbol-{}", self.symbols.len()));
        }
        self.series
            .resize(self.symbols.len(), OhlcSeries::default());
        self.last_open.resize(self.symbols.len(), None);
        i
    }

    /// Folds one traded candle in.
    pub fn observe(&mut self, c: &Candle) {
        let i = self.slot(c.symbol.idx());
        let open_ms = c.open_time.millis();
        if let Some((prev_open, prev_interval)) = self.last_open[i] {
            let step = open_ms.saturating_sub(prev_open);
            let usual = prev_interval.max(1);
            if step.saturating_mul(GAP_FACTOR_DEN) > usual.saturating_mul(GAP_FACTOR_NUM) {
                self.gaps
                    .get_or_insert_with(|| Bands::new(MAX_BANDS))
                    .push(prev_open.saturating_add(prev_interval), open_ms);
            }
        }
        self.last_open[i] = Some((open_ms, c.interval_ms));
        self.series[i].push(
            c.open_time,
            c.interval_ms,
            [c.open, c.high, c.low, c.close],
            c.close_time(),
        );
    }

    /// Folds one recorded price (a decision's or a fill's) of `symbol` at
    /// `time` in, as a one-price bar.
    pub fn observe_price(&mut self, symbol: &str, time: Timestamp, price: Decimal) {
        let i = match self.symbols.iter().position(|s| s == symbol) {
            Some(i) => i,
            None => {
                self.symbols.push(symbol.to_owned());
                self.series.push(OhlcSeries::default());
                self.last_open.push(None);
                self.symbols.len() - 1
            }
        };
        self.series[i].push(time, RECORDED_WIDTH_MS, [price; 4], time);
    }

    /// Whether no price was folded in.
    pub fn is_empty(&self) -> bool {
        self.series.iter().all(|s| s.buckets.is_empty())
    }

    /// `(symbol, series)` by symbol index.
    pub fn symbols(&self) -> impl Iterator<Item = (&str, &OhlcSeries)> {
        self.symbols.iter().map(String::as_str).zip(&self.series)
    }

    /// The series of `symbol`.
    pub fn get(&self, symbol: &str) -> Option<&OhlcSeries> {
        self.symbols
            .iter()
            .position(|s| s == symbol)
            .and_then(|i| self.series.get(i))
    }

    /// The data gaps, ms spans.
    pub fn gaps(&self) -> Vec<(i64, i64)> {
        self.gaps.as_ref().map(Bands::spans).unwrap_or_default()
    }
}

/// What a fill marker shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkerKind {
    /// A fill that opened or added to a position (▲ green).
    Entry,
    /// A fill that reduced or closed a position with realized P&L ≥ 0 (▼ green).
    ExitWin,
    /// A fill that reduced or closed a position at a loss (▼ red).
    ExitLoss,
}

/// A fill to mark on the price chart: its time and fill price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    /// Fill time.
    pub time: Timestamp,
    /// Fill price, quote currency.
    pub price: Decimal,
    /// Entry or exit.
    pub kind: MarkerKind,
}

/// A round trip's stop-loss and take-profit levels, drawn from entry to exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Level {
    /// Entry time.
    pub entry: Timestamp,
    /// Exit time.
    pub exit: Timestamp,
    /// Entry price × (1 − stopLossPct / 100).
    pub stop_loss: Option<Decimal>,
    /// Entry price × (1 + takeProfitPct / 100).
    pub take_profit: Option<Decimal>,
}

/// A list bounded by thinning: at `cap` every second item is dropped and
/// from then on only every `stride`-th item is kept.
#[derive(Clone, Debug)]
struct Thinned<T> {
    items: Vec<T>,
    stride: u64,
    seen: u64,
    cap: usize,
}

impl<T> Thinned<T> {
    fn new(cap: usize) -> Self {
        Self {
            items: Vec::new(),
            stride: 1,
            seen: 0,
            cap: cap.max(2),
        }
    }

    fn push(&mut self, x: T) {
        if self.seen.is_multiple_of(self.stride) {
            if self.items.len() >= self.cap {
                let mut i = 0;
                self.items.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.stride *= 2;
            }
            if self.seen.is_multiple_of(self.stride) {
                self.items.push(x);
            }
        }
        self.seen += 1;
    }
}

/// What the ledger batches add to the charts (fed by
/// [`crate::report::ReportWriter::write_batch`], so a report rebuilt from
/// the ledger has the same): fill markers, breaker-open spans, stop levels,
/// and a price series from recorded prices.
#[derive(Clone, Debug)]
pub struct ChartRecords {
    /// Per symbol: entries, exits.
    markers: BTreeMap<String, [Thinned<Marker>; 2]>,
    positions: BTreeMap<String, Decimal>,
    levels: BTreeMap<String, Thinned<Level>>,
    open_breakers: BTreeSet<String>,
    breaker_since: Option<i64>,
    breakers: Bands,
    stop_loss_pct: Option<Decimal>,
    take_profit_pct: Option<Decimal>,
    recorded: MarketSeries,
}

impl Default for ChartRecords {
    fn default() -> Self {
        Self::new()
    }
}

impl ChartRecords {
    /// Nothing recorded yet, no stop levels.
    pub fn new() -> Self {
        Self {
            markers: BTreeMap::new(),
            positions: BTreeMap::new(),
            levels: BTreeMap::new(),
            open_breakers: BTreeSet::new(),
            breaker_since: None,
            breakers: Bands::new(MAX_BANDS),
            stop_loss_pct: None,
            take_profit_pct: None,
            recorded: MarketSeries::new(Vec::new()),
        }
    }

    /// The stop-loss and take-profit distances (percent 0–100, the
    /// strategy's `stopLossPct` / `takeProfitPct` at the session's start)
    /// applied to each round trip's entry price; set before the batches.
    pub fn set_risk_levels(
        &mut self,
        stop_loss_pct: Option<Decimal>,
        take_profit_pct: Option<Decimal>,
    ) {
        self.stop_loss_pct = stop_loss_pct;
        self.take_profit_pct = take_profit_pct;
    }

    /// Folds a committed batch in.
    pub fn on_batch(&mut self, b: &LedgerBatch) {
        // Decisions and fills in time order (a stable sort: a decision
        // before the fill it caused at the same time).
        let mut prices: Vec<(Timestamp, &str, Decimal)> = b
            .decisions
            .iter()
            .map(|d| (d.time, d.symbol.as_str(), d.price))
            .chain(
                b.trades
                    .iter()
                    .filter(|t| t.status == FillStatus::Filled)
                    .map(|t| (t.time, t.symbol.as_str(), t.fill_price)),
            )
            .collect();
        prices.sort_by_key(|p| p.0);
        for (time, symbol, price) in prices {
            self.recorded.observe_price(symbol, time, price);
        }
        for t in &b.trades {
            if t.status != FillStatus::Filled {
                continue;
            }
            let before = self
                .positions
                .insert(t.symbol.clone(), t.position_after)
                .unwrap_or_default();
            let kind = if t.position_after.abs() > before.abs() {
                MarkerKind::Entry
            } else if t.realized_pnl < Decimal::ZERO {
                MarkerKind::ExitLoss
            } else {
                MarkerKind::ExitWin
            };
            let lists = self
                .markers
                .entry(t.symbol.clone())
                .or_insert_with(|| [Thinned::new(MAX_MARKERS), Thinned::new(MAX_MARKERS)]);
            lists[usize::from(kind != MarkerKind::Entry)].push(Marker {
                time: t.time,
                price: t.fill_price,
                kind,
            });
        }
        if self.stop_loss_pct.is_some() || self.take_profit_pct.is_some() {
            let hundred = Decimal::ONE_HUNDRED;
            for r in &b.round_trips {
                let at = |pct: Option<Decimal>, sign: Decimal| {
                    let f =
                        Decimal::ONE.checked_add(sign.checked_mul(pct?.checked_div(hundred)?)?)?;
                    r.entry_price.checked_mul(f)
                };
                self.levels
                    .entry(r.symbol.clone())
                    .or_insert_with(|| Thinned::new(MAX_LEVELS))
                    .push(Level {
                        entry: r.entry_time,
                        exit: r.exit_time,
                        stop_loss: at(self.stop_loss_pct, Decimal::NEGATIVE_ONE),
                        take_profit: at(self.take_profit_pct, Decimal::ONE),
                    });
            }
        }
        for e in &b.breaker_events {
            if e.to_state == "Open" {
                self.open_breakers.insert(e.breaker.clone());
                self.breaker_since.get_or_insert(e.time.millis());
            } else {
                self.open_breakers.remove(&e.breaker);
                if self.open_breakers.is_empty()
                    && let Some(since) = self.breaker_since.take()
                {
                    self.breakers.push(since, e.time.millis());
                }
            }
        }
    }

    /// Fill markers of `symbol` kept (entries and exits), in time order.
    pub fn markers(&self, symbol: &str) -> Vec<Marker> {
        let mut v: Vec<Marker> = self
            .markers
            .get(symbol)
            .map(|[e, x]| e.items.iter().chain(&x.items).copied().collect())
            .unwrap_or_default();
        v.sort_by_key(|m| m.time);
        v
    }

    /// `(kept, seen)`: how many of `symbol`'s fills have a marker.
    pub fn marker_counts(&self, symbol: &str) -> (usize, u64) {
        self.markers.get(symbol).map_or((0, 0), |[e, x]| {
            (e.items.len() + x.items.len(), e.seen + x.seen)
        })
    }

    /// Stop levels of `symbol`'s round trips.
    pub fn levels(&self, symbol: &str) -> &[Level] {
        self.levels.get(symbol).map_or(&[], |m| &m.items)
    }

    /// Breaker-open spans (ms); one still open runs to `end`.
    pub fn breaker_spans(&self, end: Timestamp) -> Vec<(i64, i64)> {
        let mut b = self.breakers.clone();
        if let Some(since) = self.breaker_since {
            b.push(since, end.millis().max(since + 1));
        }
        b.spans()
    }

    /// Prices from the recorded decisions and fills.
    pub fn recorded_prices(&self) -> &MarketSeries {
        &self.recorded
    }

    /// Symbols with a fill marker.
    pub fn marked_symbols(&self) -> impl Iterator<Item = &str> {
        self.markers.keys().map(String::as_str)
    }
}

/// The buy-and-hold benchmark's equity at each of `times`: each symbol's leg
/// holds [`crate::figures::BenchmarkLeg::quantity`] from its entry time,
/// valued at the latest close in `market` net of the exit fee (the
/// benchmark's formula in [`crate::figures::benchmark`]); before its entry
/// (or without a price) a leg is its cash share `initial / legs`. f64 (a
/// chart line).
pub fn benchmark_equity(
    times: &[Timestamp],
    market: &MarketSeries,
    benchmark: &Benchmark,
    initial: Decimal,
) -> Vec<(Timestamp, f64)> {
    let n = benchmark.legs.len();
    if n == 0 {
        return Vec::new();
    }
    let share = initial.to_f64().unwrap_or(0.0) / n as f64;
    let keep = 1.0 - benchmark.fee_rate_pct.to_f64().unwrap_or(0.0) / 100.0;
    times
        .iter()
        .map(|&t| {
            let v: f64 = benchmark
                .legs
                .iter()
                .map(|leg| {
                    let held = leg.entry_time.is_some_and(|e| e <= t);
                    let price = market.get(&leg.symbol).and_then(|s| s.close_at(t));
                    match (held, price) {
                        (true, Some(p)) => {
                            leg.quantity.to_f64().unwrap_or(0.0) * p.to_f64().unwrap_or(0.0) * keep
                        }
                        _ => share,
                    }
                })
                .sum();
            (t, v)
        })
        .collect()
}

/// A symbol as a file-name part: ASCII letters, digits, `-`, `.` and `_`
/// kept, anything else `_` (`BTC/USD` → `BTC_USD`); empty → `_`.
pub fn sanitize_symbol(symbol: &str) -> String {
    let s: String = symbol
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        "_".to_owned()
    } else {
        s
    }
}

fn dt(ms: i64) -> DateTime<Utc> {
    Timestamp(ms).to_datetime()
}

/// Decimal places for axis labels over a range of `span`: enough that six
/// steps differ (0.0901 vs 0.0905 on a BTC-quoted pair), at most 8.
pub fn label_decimals(span: f64) -> usize {
    if !(span.is_finite() && span > 0.0) {
        return 2;
    }
    let step = span / 6.0;
    let dp = (-step.log10()).ceil() + 1.0;
    dp.clamp(0.0, 8.0) as usize
}

fn time_format(span_ms: i64) -> &'static str {
    if span_ms > 3 * 86_400_000 {
        "%Y-%m-%d"
    } else {
        "%m-%d %H:%M"
    }
}

/// `[lo, hi]` widened by 5% of the span (or by 1% of the value when flat,
/// at least 1e-8) so a line never sits on the frame.
fn padded(lo: f64, hi: f64) -> (f64, f64) {
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * 0.05
    } else {
        (hi.abs() * 0.01).max(1e-8)
    };
    (lo - pad, hi + pad)
}

fn to_f(d: Decimal) -> Option<f64> {
    d.to_f64().filter(|v| v.is_finite())
}

const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
/// Colour of an entry marker and a winning exit.
pub const GREEN: RGBColor = RGBColor(0, 150, 60);
/// Colour of a losing exit.
pub const RED: RGBColor = RGBColor(214, 39, 40);
const GAP_FILL: RGBColor = RGBColor(150, 150, 150);
const BREAKER_FILL: RGBColor = RGBColor(230, 60, 60);
const LIGHT: RGBColor = RGBColor(238, 238, 238);

/// How a legend entry is drawn.
#[derive(Clone, Copy, Debug)]
enum Swatch {
    Line(RGBColor),
    Fill(RGBAColor),
    Up(RGBColor),
    Down(RGBColor),
}

/// Two title lines centred at the top of `area` — `title` and `subtitle` —
/// then the legend as one centred row (kept off the plot, so it never
/// hides data); returns the area below them.
fn titled<'a>(
    area: &DrawingArea<BitMapBackend<'a>, Shift>,
    title: &str,
    subtitle: &str,
    legend: &[(&str, Swatch)],
    path: &Path,
) -> Result<DrawingArea<BitMapBackend<'a>, Shift>, ReportError> {
    let err = |e: &dyn std::fmt::Display| ReportError::Chart {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let (w, _) = area.dim_in_pixel();
    let centre = Pos::new(HPos::Center, VPos::Top);
    let t = TextStyle::from((FONT_FAMILY, 24).into_font())
        .color(&BLACK)
        .pos(centre);
    let s = TextStyle::from((FONT_FAMILY, 17).into_font())
        .color(&RGBColor(60, 60, 60))
        .pos(centre);
    area.draw_text(title, &t, (w as i32 / 2, 8))
        .map_err(|e| err(&e))?;
    let mut top = 38;
    if !subtitle.is_empty() {
        area.draw_text(subtitle, &s, (w as i32 / 2, top))
            .map_err(|e| err(&e))?;
        top += 26;
    }
    if !legend.is_empty() {
        let l = TextStyle::from((FONT_FAMILY, 14).into_font())
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        let widths: Vec<i32> = legend
            .iter()
            .map(|(label, _)| {
                area.estimate_text_size(label, &l)
                    .map_or(8 * label.len() as i32, |(tw, _)| tw as i32)
            })
            .collect();
        let total: i32 = widths.iter().map(|tw| 28 + tw + 22).sum();
        let mut x = (w as i32 - total).max(0) / 2;
        let y = top + 10;
        for ((label, swatch), tw) in legend.iter().zip(widths) {
            match *swatch {
                Swatch::Line(c) => area.draw(&PathElement::new(
                    vec![(x, y), (x + 22, y)],
                    c.stroke_width(3),
                )),
                Swatch::Fill(c) => {
                    area.draw(&Rectangle::new([(x, y - 7), (x + 22, y + 7)], c.filled()))
                }
                Swatch::Up(c) => area.draw(&Polygon::new(
                    vec![(x + 11, y - 7), (x + 4, y + 6), (x + 18, y + 6)],
                    c.filled(),
                )),
                Swatch::Down(c) => area.draw(&Polygon::new(
                    vec![(x + 11, y + 7), (x + 4, y - 6), (x + 18, y - 6)],
                    c.filled(),
                )),
            }
            .map_err(|e| err(&e))?;
            area.draw_text(label, &l, (x + 28, y))
                .map_err(|e| err(&e))?;
            x += 28 + tw + 22;
        }
        top += 24;
    }
    Ok(area.margin(top, 0, 0, 0))
}

/// Extra lines and spans of the equity chart.
#[derive(Clone, Debug, Default)]
pub struct EquityOverlay {
    /// Second line of the title (e.g. "return 1.20 % vs buy-and-hold −3.40 %").
    pub subtitle: String,
    /// Buy-and-hold equity over time ([`benchmark_equity`]), quote currency.
    pub benchmark: Vec<(Timestamp, f64)>,
    /// Spans (ms) with a circuit breaker open.
    pub breaker_spans: Vec<(i64, i64)>,
    /// Spans (ms) with no market data (gaps).
    pub gap_spans: Vec<(i64, i64)>,
    /// Currency of the equity axis (e.g. `USD`); empty = "quote".
    pub currency: String,
}

/// Draws the equity chart as a [`crate::report::CHART_WIDTH`] ×
/// [`crate::report::CHART_HEIGHT`] PNG at `path`.
///
/// Each point is (time, equity in quote currency, drawdown from the equity
/// peak in percent 0-100). Upper panel: equity (blue) and, when given, the
/// buy-and-hold benchmark (orange) over time, with breaker-open periods
/// shaded red and data gaps grey, and a legend; lower panel: drawdown as a
/// red area below 0 %. With fewer than two points at distinct times the PNG
/// holds the title and a note instead. Values are f64 for plotting only.
///
/// # Errors
/// [`ReportError::Chart`] naming `path` when drawing or writing fails,
/// [`ReportError::Font`] when the font cannot be loaded.
pub fn render_equity(
    points: &[(Timestamp, Decimal, Decimal)],
    overlay: &EquityOverlay,
    path: &Path,
    title: &str,
) -> Result<(), ReportError> {
    use crate::report::{CHART_HEIGHT, CHART_WIDTH};
    ensure_font()?;
    let chart_err = |e: &dyn std::fmt::Display| ReportError::Chart {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let root = BitMapBackend::new(path, (CHART_WIDTH, CHART_HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| chart_err(&e))?;
    let mut legend = vec![("strategy equity", Swatch::Line(BLUE))];
    if overlay.benchmark.len() >= 2 {
        legend.push(("buy and hold", Swatch::Line(ORANGE)));
    }
    if !overlay.breaker_spans.is_empty() {
        legend.push(("circuit breaker open", Swatch::Fill(BREAKER_FILL.mix(0.35))));
    }
    if !overlay.gap_spans.is_empty() {
        legend.push(("market data gap", Swatch::Fill(GAP_FILL.mix(0.5))));
    }
    legend.push(("drawdown", Swatch::Fill(RED.mix(0.35))));
    let area = titled(&root, title, &overlay.subtitle, &legend, path)?;

    let pts: Vec<(DateTime<Utc>, f64, f64)> = points
        .iter()
        .filter_map(|(t, e, d)| Some((t.to_datetime(), to_f(*e)?, -to_f(*d)?.abs())))
        .collect();
    let (t0, t1) = match (pts.first(), pts.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => (a.0, b.0),
        _ => {
            let note = format!(
                "Not enough snapshots to draw an equity curve ({} point{}).",
                pts.len(),
                if pts.len() == 1 { "" } else { "s" }
            );
            let style = TextStyle::from((FONT_FAMILY, 22).into_font())
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Center));
            let (w, h) = area.dim_in_pixel();
            area.draw_text(&note, &style, (w as i32 / 2, h as i32 / 2))
                .map_err(|e| chart_err(&e))?;
            if let Some((t, equity, _)) = points.first() {
                let detail = format!("Equity {} at {t}", fmt_dp(*equity, 2));
                area.draw_text(&detail, &style, (w as i32 / 2, h as i32 / 2 + 36))
                    .map_err(|e| chart_err(&e))?;
            }
            return root.present().map_err(|e| chart_err(&e));
        }
    };
    let bench: Vec<(DateTime<Utc>, f64)> = overlay
        .benchmark
        .iter()
        .filter(|p| p.1.is_finite())
        .map(|p| (p.0.to_datetime(), p.1))
        .collect();
    let (emin, emax) = pts
        .iter()
        .map(|p| p.1)
        .chain(bench.iter().map(|p| p.1))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let (ey0, ey1) = padded(emin, emax);
    let y_dp = label_decimals(ey1 - ey0);
    let dmin = pts.iter().fold(0.0f64, |lo, p| lo.min(p.2));
    let dlo = if dmin < 0.0 { dmin * 1.1 } else { -1.0 };
    let fmt = time_format((t1 - t0).num_milliseconds());
    let x_fmt = |t: &DateTime<Utc>| t.format(fmt).to_string();
    let label_font = (FONT_FAMILY, 15).into_font();
    let desc_font = (FONT_FAMILY, 17).into_font();
    let y_area = (y_dp as u32 + 6) * 10 + 30;

    let (upper, lower) = area.split_vertically(area.dim_in_pixel().1 * 64 / 100);
    let mut eq = ChartBuilder::on(&upper)
        .margin_left(10)
        .margin_right(30)
        .margin_top(6)
        .x_label_area_size(30)
        .y_label_area_size(y_area)
        .build_cartesian_2d(t0..t1, ey0..ey1)
        .map_err(|e| chart_err(&e))?;
    eq.configure_mesh()
        .x_labels(8)
        .y_labels(6)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|v| format!("{v:.y_dp$}"))
        .y_desc(format!(
            "Equity ({})",
            if overlay.currency.is_empty() {
                "quote"
            } else {
                &overlay.currency
            }
        ))
        .label_style(label_font.clone())
        .axis_desc_style(desc_font.clone())
        .max_light_lines(4)
        .light_line_style(LIGHT)
        .draw()
        .map_err(|e| chart_err(&e))?;
    let clip = |(a, b): (i64, i64)| {
        let (a, b) = (dt(a).max(t0), dt(b).min(t1));
        (a < b).then_some((a, b))
    };
    let gaps: Vec<_> = overlay.gap_spans.iter().copied().filter_map(clip).collect();
    let brk: Vec<_> = overlay
        .breaker_spans
        .iter()
        .copied()
        .filter_map(clip)
        .collect();
    if !gaps.is_empty() {
        eq.draw_series(
            gaps.iter()
                .map(|&(a, b)| Rectangle::new([(a, ey0), (b, ey1)], GAP_FILL.mix(0.30).filled())),
        )
        .map_err(|e| chart_err(&e))?;
    }
    if !brk.is_empty() {
        eq.draw_series(
            brk.iter().map(|&(a, b)| {
                Rectangle::new([(a, ey0), (b, ey1)], BREAKER_FILL.mix(0.18).filled())
            }),
        )
        .map_err(|e| chart_err(&e))?;
    }
    eq.draw_series(AreaSeries::new(
        pts.iter().map(|p| (p.0, p.1)),
        ey0,
        BLUE.mix(0.10),
    ))
    .map_err(|e| chart_err(&e))?;
    eq.draw_series(LineSeries::new(
        pts.iter().map(|p| (p.0, p.1)),
        BLUE.stroke_width(2),
    ))
    .map_err(|e| chart_err(&e))?;
    if bench.len() >= 2 {
        eq.draw_series(LineSeries::new(
            bench.iter().copied(),
            ORANGE.stroke_width(2),
        ))
        .map_err(|e| chart_err(&e))?;
    }

    let mut dd = ChartBuilder::on(&lower)
        .margin_left(10)
        .margin_right(30)
        .margin_top(5)
        .margin_bottom(5)
        .x_label_area_size(45)
        .y_label_area_size(y_area)
        .build_cartesian_2d(t0..t1, dlo..0.0)
        .map_err(|e| chart_err(&e))?;
    dd.configure_mesh()
        .x_labels(8)
        .y_labels(4)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|v| format!("{v:.1}%"))
        .x_desc("Time (UTC)")
        .y_desc("Drawdown")
        .label_style(label_font)
        .axis_desc_style(desc_font)
        .max_light_lines(4)
        .light_line_style(LIGHT)
        .draw()
        .map_err(|e| chart_err(&e))?;
    dd.draw_series(
        AreaSeries::new(pts.iter().map(|p| (p.0, p.2)), 0.0, RED.mix(0.35))
            .border_style(RED.stroke_width(1)),
    )
    .map_err(|e| chart_err(&e))?;
    root.present().map_err(|e| chart_err(&e))
}

/// What one price chart shows.
#[derive(Clone, Copy, Debug)]
pub struct PriceChart<'a> {
    /// Symbol (chart title).
    pub symbol: &'a str,
    /// Second title line (session, period, where the prices come from).
    pub subtitle: &'a str,
    /// The prices.
    pub series: &'a OhlcSeries,
    /// Fill markers.
    pub markers: &'a [Marker],
    /// Round trips' stop-loss / take-profit levels.
    pub levels: &'a [Level],
    /// Spans (ms) with no market data.
    pub gap_spans: &'a [(i64, i64)],
    /// The prices are recorded decision / fill prices, not candles: drawn
    /// as a line with a dot per bucket, never as candles.
    pub recorded: bool,
}

/// The quote currency a symbol's prices are in, for the price axis: the
/// last `-` part after dropping a `PERP` suffix (`BTC-USD` → `USD`,
/// `ETH-BTC` → `BTC`, `BTC-USDT-PERP` → `USDT`); `quote` when the symbol
/// does not say (`BTC-PERP`, `BTCUSD`).
pub fn quote_currency(symbol: &str) -> &str {
    let mut parts: Vec<&str> = symbol.split('-').collect();
    if parts.last().is_some_and(|p| p.eq_ignore_ascii_case("PERP")) {
        parts.pop();
    }
    match parts.as_slice() {
        [_, .., quote] if !quote.is_empty() => quote,
        _ => "quote",
    }
}

/// Draws a [`PRICE_CHART_WIDTH`] × [`PRICE_CHART_HEIGHT`] price chart at
/// `path`: candles (green up, red down) when the series has at most
/// [`MAX_CANDLES_DRAWN`] buckets, else the close line; entries as green ▲
/// and exits as ▼ (green for a win, red for a loss) whose tips sit exactly
/// at (fill time, fill price); stop-loss (red dashes) and take-profit
/// (green dashes) levels from entry to exit; data gaps shaded grey; a
/// legend. Returns each marker's tip in pixels (same order as
/// `chart.markers`), for checking.
///
/// # Errors
/// [`ReportError::Chart`] naming `path` when drawing or writing fails,
/// [`ReportError::Font`] when the font cannot be loaded.
pub fn render_price(chart: &PriceChart<'_>, path: &Path) -> Result<Vec<(i32, i32)>, ReportError> {
    ensure_font()?;
    let chart_err = |e: &dyn std::fmt::Display| ReportError::Chart {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let root =
        BitMapBackend::new(path, (PRICE_CHART_WIDTH, PRICE_CHART_HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| chart_err(&e))?;
    let buckets = chart.series.buckets();
    let mut legend = vec![if chart.recorded {
        ("recorded price", Swatch::Line(BLUE))
    } else if buckets.len() <= MAX_CANDLES_DRAWN {
        ("candles (up / down)", Swatch::Fill(GREEN.mix(1.0)))
    } else {
        ("close", Swatch::Line(BLUE))
    }];
    let has = |k: MarkerKind| chart.markers.iter().any(|m| m.kind == k);
    for (k, label, swatch) in [
        (MarkerKind::Entry, "entry fill", Swatch::Up(GREEN)),
        (MarkerKind::ExitWin, "exit, win", Swatch::Down(GREEN)),
        (MarkerKind::ExitLoss, "exit, loss", Swatch::Down(RED)),
    ] {
        if has(k) {
            legend.push((label, swatch));
        }
    }
    if chart.levels.iter().any(|l| l.stop_loss.is_some()) {
        legend.push(("stop-loss level", Swatch::Line(RED)));
    }
    if chart.levels.iter().any(|l| l.take_profit.is_some()) {
        legend.push(("take-profit level", Swatch::Line(GREEN)));
    }
    if !chart.gap_spans.is_empty() {
        legend.push(("market data gap", Swatch::Fill(GAP_FILL.mix(0.5))));
    }
    let area = titled(&root, chart.symbol, chart.subtitle, &legend, path)?;
    let width = chart.series.width_ms().max(1);
    let f = |d: Decimal| to_f(d);

    let times = buckets
        .iter()
        .map(|b| b.start.millis())
        .chain(
            buckets
                .last()
                .map(|b| b.start.millis().saturating_add(width)),
        )
        .chain(chart.markers.iter().map(|m| m.time.millis()))
        .chain(
            chart
                .levels
                .iter()
                .flat_map(|l| [l.entry.millis(), l.exit.millis()]),
        );
    let (tmin, tmax) = times.fold((i64::MAX, i64::MIN), |(a, b), t| (a.min(t), b.max(t)));
    // The close line's range is the closes' (a one-tick wick far below,
    // which the line does not show, would otherwise squash it).
    let candles = !chart.recorded && buckets.len() <= MAX_CANDLES_DRAWN;
    let prices = buckets
        .iter()
        .flat_map(|b| {
            if candles {
                [f(b.low), f(b.high)]
            } else {
                [f(b.close), f(b.open)]
            }
        })
        .chain(chart.markers.iter().map(|m| f(m.price)))
        .chain(
            chart
                .levels
                .iter()
                .flat_map(|l| [l.stop_loss.and_then(f), l.take_profit.and_then(f)]),
        )
        .flatten();
    let (pmin, pmax) = prices.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        (a.min(p), b.max(p))
    });
    if tmin > tmax || !pmin.is_finite() {
        let style = TextStyle::from((FONT_FAMILY, 22).into_font())
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Center));
        let (w, h) = area.dim_in_pixel();
        area.draw_text(
            "No prices recorded for this symbol.",
            &style,
            (w as i32 / 2, h as i32 / 2),
        )
        .map_err(|e| chart_err(&e))?;
        root.present().map_err(|e| chart_err(&e))?;
        return Ok(Vec::new());
    }
    let (tmin, tmax) = if tmax > tmin {
        (tmin, tmax)
    } else {
        (tmin - 30_000, tmin + 30_000)
    };
    let (t0, t1) = (dt(tmin), dt(tmax));
    let (y0, y1) = padded(pmin, pmax);
    let y_dp = label_decimals(y1 - y0);
    let fmt = time_format(tmax - tmin);
    let x_fmt = |t: &DateTime<Utc>| t.format(fmt).to_string();
    let y_area = (y_dp as u32 + 7) * 10 + 30;

    let mut c = ChartBuilder::on(&area)
        .margin_left(10)
        .margin_right(30)
        .margin_top(6)
        .margin_bottom(5)
        .x_label_area_size(45)
        .y_label_area_size(y_area)
        .build_cartesian_2d(t0..t1, y0..y1)
        .map_err(|e| chart_err(&e))?;
    c.configure_mesh()
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|v| format!("{v:.y_dp$}"))
        .x_desc("Time (UTC)")
        .y_desc(format!("Price ({})", quote_currency(chart.symbol)))
        .label_style((FONT_FAMILY, 15))
        .axis_desc_style((FONT_FAMILY, 17))
        .max_light_lines(4)
        .light_line_style(LIGHT)
        .draw()
        .map_err(|e| chart_err(&e))?;

    let gaps: Vec<_> = chart
        .gap_spans
        .iter()
        .filter_map(|&(a, b)| {
            let (a, b) = (dt(a).max(t0), dt(b).min(t1));
            (a < b).then_some((a, b))
        })
        .collect();
    if !gaps.is_empty() {
        c.draw_series(
            gaps.iter()
                .map(|&(a, b)| Rectangle::new([(a, y0), (b, y1)], GAP_FILL.mix(0.30).filled())),
        )
        .map_err(|e| chart_err(&e))?;
    }

    if candles {
        let plot_w = c.plotting_area().dim_in_pixel().0 as f64;
        let span = (tmax - tmin).max(1) as f64;
        let body = ((plot_w * width as f64 / span) * 0.7).clamp(1.0, 14.0) as u32;
        let half = width / 2;
        c.draw_series(buckets.iter().filter_map(|b| {
            Some(CandleStick::new(
                dt(b.start.millis().saturating_add(half)),
                f(b.open)?,
                f(b.high)?,
                f(b.low)?,
                f(b.close)?,
                GREEN.filled(),
                RED.filled(),
                body,
            ))
        }))
        .map_err(|e| chart_err(&e))?;
    } else {
        c.draw_series(LineSeries::new(
            buckets
                .iter()
                .filter_map(|b| Some((dt(b.last_time.millis()), f(b.close)?))),
            BLUE.stroke_width(1),
        ))
        .map_err(|e| chart_err(&e))?;
        if chart.recorded {
            c.draw_series(buckets.iter().filter_map(|b| {
                Some(Circle::new(
                    (dt(b.last_time.millis()), f(b.close)?),
                    2,
                    BLUE.filled(),
                ))
            }))
            .map_err(|e| chart_err(&e))?;
        }
    }

    let level_lines = |pick: fn(&Level) -> Option<Decimal>| {
        chart
            .levels
            .iter()
            .filter_map(move |l| Some((dt(l.entry.millis()), dt(l.exit.millis()), f(pick(l)?)?)))
            .collect::<Vec<_>>()
    };
    let stops = level_lines(|l| l.stop_loss);
    let takes = level_lines(|l| l.take_profit);
    for (lines, colour) in [(stops, RED), (takes, GREEN)] {
        if lines.is_empty() {
            continue;
        }
        c.draw_series(lines.iter().map(|&(a, b, p)| {
            PathElement::new(vec![(a, p), (b.max(a), p)], colour.mix(0.8).stroke_width(2))
        }))
        .map_err(|e| chart_err(&e))?;
    }

    let tri = |up: bool, colour: RGBColor| {
        // The tip at (0, 0), the body below (▲) or above (▼).
        let h = if up { 13 } else { -13 };
        Polygon::new(vec![(0, 0), (-7, h), (7, h)], colour.filled())
    };
    let mut tips = Vec::with_capacity(chart.markers.len());
    for m in chart.markers {
        let Some(p) = f(m.price) else {
            tips.push((i32::MIN, i32::MIN));
            continue;
        };
        let at = (m.time.to_datetime(), p);
        tips.push(c.backend_coord(&at));
        let (up, colour) = match m.kind {
            MarkerKind::Entry => (true, GREEN),
            MarkerKind::ExitWin => (false, GREEN),
            MarkerKind::ExitLoss => (false, RED),
        };
        c.plotting_area()
            .draw(&(EmptyElement::at(at) + tri(up, colour)))
            .map_err(|e| chart_err(&e))?;
    }
    root.present().map_err(|e| chart_err(&e))?;
    Ok(tips)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::test_records::*;
    use crate::ledger::records::{BreakerEventRecord, FillReason};
    use crate::types::{Side, SymbolId};
    use rust_decimal_macros::dec;

    fn candle(symbol: u16, open_ms: i64, interval_ms: i64, close: Decimal) -> Candle {
        Candle {
            symbol: SymbolId(symbol),
            open_time: Timestamp(open_ms),
            interval_ms,
            open: close,
            high: close + dec!(1),
            low: close - dec!(1),
            close,
            volume: dec!(1),
        }
    }

    /// RGB of pixel (x, y) of a decoded RGB(A) PNG.
    fn decode(path: &Path) -> (u32, u32, Vec<[u8; 3]>) {
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut buf).unwrap();
        let step = match info.color_type {
            png::ColorType::Rgb => 3,
            png::ColorType::Rgba => 4,
            other => panic!("unexpected colour type {other:?}"),
        };
        let px = buf[..info.buffer_size()]
            .chunks(step)
            .map(|c| [c[0], c[1], c[2]])
            .collect();
        (info.width, info.height, px)
    }

    #[test]
    fn a_million_candles_stay_within_the_bucket_cap() {
        let mut m = MarketSeries::new(vec!["BTC-USD".into()]);
        let n: i64 = 1_000_000;
        for i in 0..n {
            // A saw-tooth price: 100 … 199.
            let p = Decimal::from(100 + i % 100);
            m.observe(&candle(0, i * 60_000, 60_000, p));
            if i % 100_000 == 0 {
                assert!(m.get("BTC-USD").unwrap().buckets().len() <= MAX_PRICE_BUCKETS);
            }
        }
        let s = m.get("BTC-USD").unwrap();
        let b = s.buckets();
        assert!(b.len() <= MAX_PRICE_BUCKETS, "{}", b.len());
        assert!(b.len() > MAX_PRICE_BUCKETS / 2, "{}", b.len());
        // Widths doubled from 1 minute: 1,000,000 / 2000 → 512 minutes.
        assert_eq!(s.width_ms(), 512 * 60_000);
        assert_eq!(b[0].start, Timestamp(0));
        assert_eq!(b[0].open, dec!(100));
        assert_eq!(b[0].low, dec!(99));
        assert_eq!(b[0].high, dec!(200));
        let last = b.last().unwrap();
        assert_eq!(last.close, Decimal::from(100 + (n - 1) % 100));
        assert_eq!(last.last_time, Timestamp(n * 60_000));
        assert!(b.windows(2).all(|w| w[0].start < w[1].start));
        assert!(m.gaps().is_empty(), "regular candles leave no gap");
    }

    #[test]
    fn gaps_are_steps_over_one_and_a_half_intervals_and_bounded() {
        let mut m = MarketSeries::new(vec!["A".into(), "B".into()]);
        let min = 60_000;
        // A: minutes 0, 1, 2, then 5 (no candle for 3 and 4: a gap from
        // the close of 2 to the open of 5), 6; B: the same times.
        for t in [0, 1, 2, 5, 6] {
            m.observe(&candle(0, t * min, min, dec!(10)));
            m.observe(&candle(1, t * min, min, dec!(20)));
        }
        assert_eq!(m.gaps(), vec![(3 * min, 5 * min)]);
        // Exactly 1.5 intervals is not a gap; more is.
        let mut m = MarketSeries::new(vec!["A".into()]);
        m.observe(&candle(0, 0, 2 * min, dec!(1)));
        m.observe(&candle(0, 3 * min, 2 * min, dec!(1)));
        assert!(m.gaps().is_empty());
        m.observe(&candle(0, 6 * min + 1, 2 * min, dec!(1)));
        assert_eq!(m.gaps(), vec![(5 * min, 6 * min + 1)]);

        // 10,000 gaps: at most MAX_BANDS spans, covering the first to the last.
        let mut m = MarketSeries::new(vec!["A".into()]);
        for i in 0..10_000 {
            m.observe(&candle(0, i * 3 * min, min, dec!(1)));
        }
        let g = m.gaps();
        assert!(g.len() <= MAX_BANDS, "{}", g.len());
        assert_eq!(g[0].0, min);
        assert_eq!(g.last().unwrap().1, 9_999 * 3 * min);
    }

    #[test]
    fn fills_become_entry_and_exit_markers_at_their_prices() {
        let mut r = ChartRecords::new();
        r.set_risk_levels(Some(dec!(2)), Some(dec!(5)));
        let mut buy = trade(1, Side::Buy, FillStatus::Filled, dec!(0), dec!(0), dec!(0));
        buy.fill_price = dec!(100.5);
        buy.position_after = dec!(1);
        let mut sell = trade(2, Side::Sell, FillStatus::Filled, dec!(0), dec!(0), dec!(0));
        sell.fill_price = dec!(99);
        sell.position_after = dec!(0);
        sell.realized_pnl = dec!(-1.5);
        let mut failed = trade(3, Side::Buy, FillStatus::Failed, dec!(0), dec!(0), dec!(0));
        failed.position_after = dec!(0);
        let mut buy2 = trade(4, Side::Buy, FillStatus::Filled, dec!(0), dec!(0), dec!(0));
        buy2.fill_price = dec!(98);
        buy2.position_after = dec!(1);
        let mut sell2 = trade(5, Side::Sell, FillStatus::Filled, dec!(0), dec!(0), dec!(0));
        sell2.fill_price = dec!(103);
        sell2.position_after = dec!(0);
        sell2.realized_pnl = dec!(5);
        let mut rt = round_trip(dec!(-1.5));
        rt.entry_price = dec!(100);
        rt.exit_reason = FillReason::StopLoss;
        r.on_batch(&LedgerBatch {
            trades: vec![
                buy.clone(),
                sell.clone(),
                failed,
                buy2.clone(),
                sell2.clone(),
            ],
            round_trips: vec![rt],
            breaker_events: vec![
                BreakerEventRecord {
                    time: Timestamp(T0),
                    breaker: "priceFeed".into(),
                    from_state: "Closed".into(),
                    to_state: "Open".into(),
                    reason: "gap".into(),
                },
                BreakerEventRecord {
                    time: Timestamp(T0 + HOUR),
                    breaker: "priceFeed".into(),
                    from_state: "Open".into(),
                    to_state: "HalfOpen".into(),
                    reason: "cooldown".into(),
                },
                BreakerEventRecord {
                    time: Timestamp(T0 + 2 * HOUR),
                    breaker: "dailyLoss".into(),
                    from_state: "Closed".into(),
                    to_state: "Open".into(),
                    reason: "loss".into(),
                },
            ],
            ..Default::default()
        });
        let m = r.markers("BTC-PERP");
        assert_eq!(
            m.iter()
                .map(|m| (m.time, m.price, m.kind))
                .collect::<Vec<_>>(),
            vec![
                (buy.time, dec!(100.5), MarkerKind::Entry),
                (sell.time, dec!(99), MarkerKind::ExitLoss),
                (buy2.time, dec!(98), MarkerKind::Entry),
                (sell2.time, dec!(103), MarkerKind::ExitWin),
            ]
        );
        let l = r.levels("BTC-PERP");
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].stop_loss, Some(dec!(98)));
        assert_eq!(l[0].take_profit, Some(dec!(105)));
        // One span closed by the half-open, one still open at the end.
        assert_eq!(
            r.breaker_spans(Timestamp(T0 + 5 * HOUR)),
            vec![(T0, T0 + HOUR), (T0 + 2 * HOUR, T0 + 5 * HOUR)]
        );
        // The recorded prices: the four fills.
        let s = r.recorded_prices().get("BTC-PERP").unwrap();
        assert_eq!(s.buckets().first().unwrap().open, dec!(100.5));
        assert_eq!(s.buckets().last().unwrap().close, dec!(103));
    }

    #[test]
    fn markers_are_bounded_and_keep_entries_and_exits() {
        // 20,000 alternating entries and exits: thinning every second marker
        // of one list would keep only entries.
        let mut r = ChartRecords::new();
        let mut trades = Vec::new();
        for i in 0..20_000u64 {
            let mut t = trade(i, Side::Buy, FillStatus::Filled, dec!(0), dec!(0), dec!(0));
            t.position_after = if i % 2 == 0 { dec!(1) } else { dec!(0) };
            // Every third exit loses.
            t.realized_pnl = if (i / 2) % 3 == 0 { dec!(-1) } else { dec!(1) };
            trades.push(t);
        }
        r.on_batch(&LedgerBatch {
            trades,
            ..Default::default()
        });
        let m = r.markers("BTC-PERP");
        let (kept, seen) = r.marker_counts("BTC-PERP");
        assert_eq!((kept, seen), (m.len(), 20_000));
        assert!(m.len() <= 2 * MAX_MARKERS, "{}", m.len());
        let count = |k: MarkerKind| m.iter().filter(|x| x.kind == k).count();
        assert!(count(MarkerKind::Entry) >= MAX_MARKERS / 2);
        assert!(count(MarkerKind::ExitWin) > 0 && count(MarkerKind::ExitLoss) > 0);
        assert!(m.windows(2).all(|w| w[0].time <= w[1].time));
    }

    #[test]
    fn price_chart_markers_sit_at_the_fill_prices_in_the_png() {
        let dir = tempfile::tempdir().unwrap();
        // A BTC-quoted pair around 0.09: 100 five-minute candles.
        let mut m = MarketSeries::new(vec!["ETH-BTC".into()]);
        let min5 = 300_000;
        for i in 0..100i64 {
            let p = dec!(0.09) + Decimal::new(i % 20, 4);
            m.observe(&Candle {
                symbol: SymbolId(0),
                open_time: Timestamp(T0 + i * min5),
                interval_ms: min5,
                open: p,
                high: p + dec!(0.0002),
                low: p - dec!(0.0002),
                close: p,
                volume: dec!(1),
            });
        }
        let markers = [
            Marker {
                time: Timestamp(T0 + 20 * min5),
                price: dec!(0.0905),
                kind: MarkerKind::Entry,
            },
            Marker {
                time: Timestamp(T0 + 50 * min5),
                price: dec!(0.0915),
                kind: MarkerKind::ExitLoss,
            },
            Marker {
                time: Timestamp(T0 + 80 * min5),
                price: dec!(0.0910),
                kind: MarkerKind::ExitWin,
            },
        ];
        let path = dir.path().join("price_ETH-BTC.png");
        let tips = render_price(
            &PriceChart {
                symbol: "ETH-BTC",
                subtitle: "test",
                series: m.get("ETH-BTC").unwrap(),
                markers: &markers,
                levels: &[],
                gap_spans: &[],
                recorded: false,
            },
            &path,
        )
        .unwrap();
        let (w, h, px) = decode(&path);
        assert_eq!((w, h), (PRICE_CHART_WIDTH, PRICE_CHART_HEIGHT));
        let at = |x: i32, y: i32| px[(y as u32 * w + x as u32) as usize];
        // Each marker's body is drawn right at its tip: ▲ below, ▼ above.
        let (g, r) = ([GREEN.0, GREEN.1, GREEN.2], [RED.0, RED.1, RED.2]);
        assert_eq!(at(tips[0].0, tips[0].1 + 6), g, "entry ▲ at {:?}", tips[0]);
        assert_eq!(
            at(tips[1].0, tips[1].1 - 6),
            r,
            "losing exit ▼ at {:?}",
            tips[1]
        );
        assert_eq!(
            at(tips[2].0, tips[2].1 - 6),
            g,
            "winning exit ▼ at {:?}",
            tips[2]
        );
        // The tips' rows are linear in the fill price (higher price, higher
        // on the chart): 0.0905 → 0.0915 is twice 0.0905 → 0.0910.
        let (y0, y1, y2) = (tips[0].1, tips[1].1, tips[2].1);
        assert!(y1 < y2 && y2 < y0, "{tips:?}");
        assert!(((y0 - y1) - 2 * (y0 - y2)).abs() <= 1, "{tips:?}");
        // And their columns in time: 20 → 50 → 80 candles, equal steps.
        assert!(((tips[1].0 - tips[0].0) - (tips[2].0 - tips[1].0)).abs() <= 1);
    }

    #[test]
    fn benchmark_line_ends_at_the_benchmark_final_equity() {
        // Two symbols, 5000 each, fee 0.1 %: A 100 → 110, B 50 → 45 (the
        // figures.rs hand-computed case: final equity 9980.02).
        let h = HOUR;
        let mut m = MarketSeries::new(vec!["A".into(), "B".into()]);
        let mut p = crate::figures::BenchmarkPrices::new(vec!["A".into(), "B".into()], dec!(0.001));
        for i in 0..48i64 {
            let a = dec!(100) + Decimal::from(i) * dec!(10) / dec!(47);
            let b = dec!(50) - Decimal::from(i) * dec!(5) / dec!(47);
            let (ca, cb) = (
                Candle {
                    open: dec!(100),
                    ..candle(0, T0 + i * h, h, a)
                },
                Candle {
                    open: dec!(50),
                    ..candle(1, T0 + i * h, h, b)
                },
            );
            if i == 0 {
                p.set_first(0, ca.open_time, ca.open);
                p.set_first(1, cb.open_time, cb.open);
            }
            p.set_last(0, ca.close_time(), ca.close);
            p.set_last(1, cb.close_time(), cb.close);
            m.observe(&ca);
            m.observe(&cb);
        }
        let b = crate::figures::benchmark(&p, dec!(10000), 2).unwrap();
        assert_eq!(b.final_equity, dec!(9980.02));
        let times = [Timestamp(T0 - h), Timestamp(T0 + h), Timestamp(T0 + 48 * h)];
        let line = benchmark_equity(&times, &m, &b, dec!(10000));
        // Before the first candle closes: the cash.
        assert_eq!(line[0].1, 10000.0);
        // At the end: the benchmark's final equity.
        assert!((line[2].1 - 9980.02).abs() < 0.01, "{line:?}");
        assert!(line[1].1 < 10000.0 && line[1].1 > 9970.0, "{line:?}");
    }

    #[test]
    fn recorded_prices_and_symbols_sanitized() {
        let mut m = MarketSeries::default();
        m.observe_price("X/Y", Timestamp(0), dec!(1));
        m.observe_price("X/Y", Timestamp(30_000), dec!(3));
        m.observe_price("X/Y", Timestamp(60_000), dec!(2));
        let b = m.get("X/Y").unwrap().buckets();
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[0].open, b[0].high, b[0].low, b[0].close),
            (dec!(1), dec!(3), dec!(1), dec!(3))
        );
        assert_eq!(
            m.get("X/Y").unwrap().close_at(Timestamp(45_000)),
            Some(dec!(3))
        );
        assert_eq!(m.get("X/Y").unwrap().close_at(Timestamp(-1)), None);
        assert_eq!(sanitize_symbol("X/Y"), "X_Y");
        assert_eq!(sanitize_symbol("BTC-USD"), "BTC-USD");
        assert_eq!(sanitize_symbol("../.."), ".._..");
        assert_eq!(sanitize_symbol(".."), "_");
        assert_eq!(sanitize_symbol(""), "_");
        // Labels keep enough places for a pair quoted in BTC.
        assert!(label_decimals(0.09 - 0.085) >= 4);
        assert_eq!(label_decimals(20_000.0), 0);
    }

    #[test]
    fn the_price_axis_names_the_quote_currency() {
        for (symbol, quote) in [
            ("BTC-USD", "USD"),
            ("ETH-BTC", "BTC"),
            ("BTC-USDT-PERP", "USDT"),
            ("BTC-PERP", "quote"),
            ("BTCUSD", "quote"),
            ("BTC-", "quote"),
        ] {
            assert_eq!(quote_currency(symbol), quote, "{symbol}");
        }
    }
}

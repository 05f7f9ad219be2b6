//! A session's candle source, validated before anything trades.

use paperbot_crds::{MarketDataSource, ReplayFormat, WarmUp};

use crate::{
    config::{SessionPlan, TimeRange},
    market::{
        csv::{CandleReader, DataError},
        merge::MergedFeed,
        simulated::{GbmParams, GbmSource},
        ticks::TradeCandles,
    },
    types::{Candle, SymbolId, Timestamp},
};

use super::{
    RunError,
    live::{LiveFeed, LiveFeedStats},
};

/// The candles of a session, in market-time order (symbols of one time
/// in symbol order), from validated candle or trade files or a seeded
/// simulation. Both are
/// deterministic, so skipping the first `n` items after a crash lands on
/// exactly the candle the crashed run would have read next.
pub struct Feed {
    inner: std::iter::Peekable<Source>,
    /// Live candles on the wall clock (then `inner` is empty).
    live: Option<LiveFeed>,
}

enum Source {
    Replay(MergedFeed<RangedReader>),
    Simulated(GbmSource),
    None,
}

impl Iterator for Source {
    type Item = Result<Candle, DataError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Source::Replay(m) => m.next(),
            Source::Simulated(g) => g.next().map(Ok),
            Source::None => None,
        }
    }
}

/// One replay file's candles: read from a candle file, or aggregated from
/// a trade file.
enum ReplayReader {
    Candles(CandleReader),
    Trades(TradeCandles),
}

impl ReplayReader {
    fn next_any(&mut self) -> Option<Result<Candle, DataError>> {
        match self {
            ReplayReader::Candles(r) => r.next(),
            ReplayReader::Trades(r) => r.next(),
        }
    }
}

/// One replay file's candles inside the session's time range, filtered
/// while streaming: candles opening before `from` are read (and checked)
/// and dropped, and the file is not read past the first candle opening at
/// or after `to` (the preflight validated those rows already).
struct RangedReader {
    inner: ReplayReader,
    range: TimeRange,
    done: bool,
}

impl Iterator for RangedReader {
    type Item = Result<Candle, DataError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            match self.inner.next_any() {
                Some(Ok(c)) if self.range.is_past(c.open_time) => {
                    self.done = true;
                    return None;
                }
                Some(Ok(c)) if !self.range.contains(c.open_time) => {}
                other => return other,
            }
        }
    }
}

impl Iterator for Feed {
    type Item = Result<Candle, DataError>;
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.live {
            Some(l) => l.next_candle().map(Ok),
            None => self.inner.next(),
        }
    }
}

impl Feed {
    /// Whether candles come from live prices on the wall clock.
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// A live feed's source counters (`None` for replay and simulation).
    pub fn live_stats(&self) -> Option<LiveFeedStats> {
        self.live.as_ref().map(LiveFeed::stats)
    }

    /// Wait up to `timeout` for a live feed's next closed candle and say
    /// whether reading the next item now would not block. Replay and
    /// simulation are always ready.
    pub fn wait_ready(&mut self, timeout: std::time::Duration) -> bool {
        match &mut self.live {
            Some(l) => l.wait_ready(timeout),
            None => true,
        }
    }
    /// Open time of the first candle, if the feed has one.
    /// A live feed's is the first whole candle interval after its start.
    pub fn first_open(&mut self) -> Option<Timestamp> {
        if let Some(l) = &self.live {
            return Some(l.first_open());
        }
        match self.inner.peek() {
            Some(Ok(c)) => Some(c.open_time),
            _ => None,
        }
    }

    /// Drop the first `n` items (the ones a resumed session already traded).
    ///
    /// # Errors
    /// A [`DataError`] met on the way (the data changed since it was
    /// validated), or [`RunError::Other`] when the feed ends first (the data
    /// is shorter than what the ledger recorded).
    ///
    /// A live feed skips nothing: it continues on the wall clock, and the
    /// time the session was down is a data gap the engine measures.
    pub fn skip_items(
        &mut self,
        n: u64,
        market: &mut crate::charts::MarketSeries,
    ) -> Result<(), RunError> {
        if self.live.is_some() {
            return Ok(());
        }
        for i in 0..n {
            match self.inner.next() {
                Some(Ok(c)) => market.observe(&c),
                Some(Err(e)) => return Err(RunError::Data(e)),
                None => {
                    return Err(RunError::Other(format!(
                        "the market data ends after {i} candles, but the ledger recorded {n}: \
                         the data files changed since the session started"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A session whose inputs were validated in full, ready to run.
pub struct PreparedSession {
    /// The session.
    pub plan: SessionPlan,
    /// Its candles.
    pub feed: Feed,
    /// Candles expected (`None` if unbounded), for the progress bar.
    pub total: Option<u64>,
    /// Configurations that can never trade as the user intends (printed
    /// before trading).
    pub warnings: Vec<String>,
    /// What the scan of each replay file found, in `plan.replay` order
    /// (empty for other sources): for checking other strategies on the
    /// same data ([`crate::preflight::warnings`]).
    pub scans: Vec<crate::market::csv::FileSummary>,
}

/// Validate every input of a session (every replay file in full, in
/// parallel threads; the simulation settings) and open its feed. Nothing is
/// written anywhere.
///
/// # Errors
/// [`RunError::Data`] naming the file and line of the first bad row;
/// [`RunError::Other`] for bad simulation settings.
pub fn prepare(plan: SessionPlan) -> Result<PreparedSession, RunError> {
    prepare_with_start(plan, None)
}

/// [`prepare`], with a simulated market that has no `simulated.start` of
/// its own starting at `simulated_start` (`bot-runtime serve` starts it at
/// the wall clock, and a resume at the start the ledger recorded) instead of
/// the default. The plan is unchanged (its configuration as recorded does
/// not hold the chosen start).
///
/// # Errors
/// As [`prepare`].
pub fn prepare_with_start(
    plan: SessionPlan,
    simulated_start: Option<Timestamp>,
) -> Result<PreparedSession, RunError> {
    let mut warnings = Vec::new();
    let mut scanned = Vec::new();
    let mut live = None;
    let (source, total) = match plan.session.market_data.source {
        MarketDataSource::Replay => {
            let scans = crate::preflight::scan_replay_files(&plan)?;
            warnings = crate::preflight::warnings(&plan, &scans)
                .iter()
                .map(ToString::to_string)
                .collect();
            scanned.clone_from(&scans);
            let range = plan.replay_range().map_err(RunError::Other)?;
            let mut readers = Vec::new();
            let mut total = 0;
            for (r, summary) in plan.replay.iter().zip(scans) {
                total += summary.rows;
                let symbol = SymbolId(r.symbol as u16);
                let inner = match r.format {
                    ReplayFormat::Candles => ReplayReader::Candles(CandleReader::open(
                        &r.path,
                        symbol,
                        summary.interval_ms,
                    )?),
                    ReplayFormat::Trades => ReplayReader::Trades(TradeCandles::open(
                        &r.path,
                        symbol,
                        summary.interval_ms,
                    )?),
                };
                readers.push(RangedReader {
                    inner,
                    range,
                    done: false,
                });
            }
            (Source::Replay(MergedFeed::new(readers)), Some(total))
        }
        MarketDataSource::Simulated => {
            let spec = plan
                .session
                .market_data
                .simulated
                .as_ref()
                .ok_or_else(|| RunError::Other("simulated source without settings".into()))?;
            let mut params = GbmParams::from_spec(spec).map_err(RunError::Other)?;
            if spec.start.is_none()
                && let Some(start) = simulated_start
            {
                params.start = start;
            }
            let total = params
                .candles
                .and_then(|c| c.checked_mul(plan.symbols.len() as u64));
            let source = GbmSource::try_new(params, plan.symbols.len()).map_err(RunError::Other)?;
            (Source::Simulated(source), total)
        }
        MarketDataSource::Live => {
            let live_plan = plan.live.as_ref().ok_or_else(|| {
                RunError::Other("live source without marketData.live settings".into())
            })?;
            if live_plan.warm_up == WarmUp::Klines
                && let Err(why) = super::warmup::klines_source(live_plan)
            {
                warnings.push(why);
            }
            let feed = LiveFeed::start(live_plan, &plan.symbols).map_err(RunError::Other)?;
            live = Some(feed);
            (Source::None, None)
        }
    };
    Ok(PreparedSession {
        plan,
        feed: Feed {
            inner: source.peekable(),
            live,
        },
        total,
        warnings,
        scans: scanned,
    })
}

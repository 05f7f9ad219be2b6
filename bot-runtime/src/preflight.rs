//! Checks of a planned session before it trades: every replay file read in
//! full ([`scan_replay_files`]) and the configurations that can never trade
//! as the user intends ([`warnings`]).
//!
//! `bot-runtime validate` and `bot-runtime run` call the same functions, so a
//! manifest that validates has passed every check a run makes before its
//! first trade (the manifest rules in [`crate::config`], the data rows here).

use std::{
    fmt,
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use paperbot_crds::{MarketDataSource, ReplayFormat, SignalsSpec};

use crate::{
    config::{ReplaySource, SessionPlan, TimeRange},
    market::{
        csv::{DataError, FileSummary, scan_candle_file_each},
        simulated::GbmParams,
        ticks::aggregate_trade_file,
    },
    signals::SignalSet,
    types::Timestamp,
};

/// Validate every replay file of `plan` in full (every row, see
/// [`scan_candle_file`](crate::market::csv::scan_candle_file) and, for trade
/// files, [`scan_trade_file`](crate::market::ticks::scan_trade_file)),
/// several files at once on up to as many threads as the machine has cores.
///
/// Returns one summary per entry of [`SessionPlan::replay`], in the same
/// order; an empty list for a simulated source. With a time range
/// ([`SessionPlan::replay_range`]) every row of every file is still
/// validated, but each summary describes only the candles in the range
/// (`rows`, `first`, `last`, `missing_intervals` between them): what the
/// session trades, counts for its progress bar and warnings.
///
/// # Errors
///
/// The [`DataError`] (`file:line: reason`) of the first file, in
/// `plan.replay` order, that has a problem; a file with no candle in the
/// range is one (`no candle of F between … and …; the file covers … to …`),
/// and so is a range that is not RFC 3339 UTC or not ordered.
pub fn scan_replay_files(plan: &SessionPlan) -> Result<Vec<FileSummary>, DataError> {
    let files = &plan.replay;
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let range = plan.replay_range().map_err(|reason| DataError {
        file: PathBuf::from(format!("BotSession {:?}", plan.name)),
        line: 0,
        reason,
    })?;
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len());
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<Result<FileSummary, DataError>>> = vec![None; files.len()];
    let collected: Vec<Vec<(usize, Result<FileSummary, DataError>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(r) = files.get(i) else { break };
                        done.push((i, scan_replay_file(r, range)));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    for (i, r) in collected.into_iter().flatten() {
        results[i] = Some(r);
    }
    files
        .iter()
        .zip(results)
        .map(|(f, r)| {
            // A file without a result belongs to a scan thread that panicked.
            r.unwrap_or_else(|| {
                Err(DataError {
                    file: f.path.clone(),
                    line: 0,
                    reason: "the scan of this file stopped unexpectedly (internal error)".into(),
                })
            })
        })
        .collect()
}

/// Scan one replay file: a candle file in full ([`scan_candle_file`](crate::market::csv::scan_candle_file)), or a
/// trade file in full with the candles it makes ([`scan_trade_file`](crate::market::ticks::scan_trade_file)).
/// With a time range, the summary describes the candles in it.
fn scan_replay_file(r: &ReplaySource, range: TimeRange) -> Result<FileSummary, DataError> {
    let mut selected = InRange::default();
    let whole = match (r.format, r.interval_ms) {
        (ReplayFormat::Candles, interval_ms) => {
            scan_candle_file_each(&r.path, interval_ms, |t| selected.push(range, t))
        }
        (ReplayFormat::Trades, Some(interval_ms)) => {
            aggregate_trade_file(&r.path, interval_ms, |c| {
                selected.push(range, c.open_time);
                Ok::<(), DataError>(())
            })
            .map(|s| s.candles)
        }
        // The manifest rules require the interval of a trade file.
        (ReplayFormat::Trades, None) => Err(DataError {
            file: r.path.clone(),
            line: 0,
            reason: "a trade file needs an interval to aggregate its trades into (expected \
                     e.g. interval: 1m)"
                .into(),
        }),
    }?;
    if range.is_full() {
        return Ok(whole);
    }
    let (Some(first), Some(last)) = (selected.first, selected.last) else {
        return Err(DataError {
            file: r.path.clone(),
            line: 0,
            reason: format!(
                "no candle of {} {range}; the file covers {} to {} (candle open times)",
                r.path.file_name().map_or_else(
                    || r.path.display().to_string(),
                    |n| n.to_string_lossy().into()
                ),
                whole.first,
                whole.last
            ),
        });
    };
    let span = u64::try_from((last.0 - first.0) / whole.interval_ms.max(1)).unwrap_or(0) + 1;
    Ok(FileSummary {
        rows: selected.rows,
        first,
        last,
        interval_ms: whole.interval_ms,
        missing_intervals: span.saturating_sub(selected.rows),
    })
}

/// The candles of one file inside a time range, counted during the scan.
#[derive(Default)]
struct InRange {
    rows: u64,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
}

impl InRange {
    fn push(&mut self, range: TimeRange, t: Timestamp) {
        if range.contains(t) {
            self.rows += 1;
            self.first.get_or_insert(t);
            self.last = Some(t);
        }
    }
}

/// Which token list keeps a symbol from trading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenList {
    /// `spec.tokens.allow` is not empty and does not name the symbol.
    NotAllowed,
    /// `spec.tokens.block` names the symbol.
    Blocked,
}

/// A configuration that is valid but can never trade as the user intends.
/// `Display` gives one line, naming the fields to change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Warning {
    /// A session symbol that the strategy's token lists exclude: it is
    /// replayed and marked but never entered.
    SymbolExcluded {
        /// The symbol.
        symbol: String,
        /// The StrategyConfig.
        strategy: String,
        /// Which list excludes it.
        list: TokenList,
    },
    /// `circuitBreakers.maxDataGap` is shorter than a symbol's candle
    /// interval: every candle is a data gap, so the `priceFeed` breaker is
    /// open all the time and no entry is ever made.
    DataGapBelowInterval {
        /// The symbol.
        symbol: String,
        /// `maxDataGap`, milliseconds.
        max_data_gap_ms: i64,
        /// The symbol's candle interval, milliseconds.
        interval_ms: i64,
    },
    /// Fewer candles of a symbol than any configured signal needs before its
    /// first reading: no signal, so no trade, for that symbol.
    TooFewCandlesForSignals {
        /// The symbol.
        symbol: String,
        /// Candles the session will see (rows, or fewer when `stopAfter`
        /// ends it earlier).
        candles: u64,
        /// Closes the quickest configured signal needs (its warm-up).
        warmup: u32,
    },
    /// `circuitBreakers.minBalance` is above the allocation: the `minBalance`
    /// breaker is open from the first candle and no entry is ever made.
    MinBalanceAboveAllocation {
        /// `minBalance`, quote currency.
        min_balance: rust_decimal::Decimal,
        /// The session's allocation, quote currency.
        allocation: rust_decimal::Decimal,
    },
}

fn human_ms(ms: i64) -> String {
    humantime::format_duration(Duration::from_millis(ms.unsigned_abs())).to_string()
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SymbolExcluded {
                symbol,
                strategy,
                list,
            } => {
                let why = match list {
                    TokenList::NotAllowed => "spec.tokens.allow does not list it",
                    TokenList::Blocked => "spec.tokens.block lists it",
                };
                write!(
                    f,
                    "symbol {symbol:?} is never traded: StrategyConfig {strategy:?} {why}"
                )
            }
            Self::DataGapBelowInterval {
                symbol,
                max_data_gap_ms,
                interval_ms,
            } => write!(
                f,
                "circuitBreakers.maxDataGap {} is shorter than the {} candle interval of {symbol:?}: \
                 every candle counts as a data gap, the priceFeed breaker stays open and no entry \
                 is ever made (set maxDataGap to at least {}, or omit it for 5 intervals)",
                human_ms(*max_data_gap_ms),
                human_ms(*interval_ms),
                human_ms(*interval_ms)
            ),
            Self::TooFewCandlesForSignals {
                symbol,
                candles,
                warmup,
            } => write!(
                f,
                "symbol {symbol:?} has {candles} candle(s) but the quickest configured signal needs \
                 {warmup} closes before its first reading: no signal and no trade for it"
            ),
            Self::MinBalanceAboveAllocation {
                min_balance,
                allocation,
            } => write!(
                f,
                "circuitBreakers.minBalance {min_balance} is above the allocation {allocation}: \
                 the minBalance breaker is open from the first candle and no entry is ever made"
            ),
        }
    }
}

/// Closes the quickest configured signal generator needs before its first
/// reading (its `warmup_bars`); `None` when no generator is set.
fn quickest_warmup(spec: &SignalsSpec) -> Option<u32> {
    let one = |s: SignalsSpec| SignalSet::new(&s).warmup_bars();
    [
        spec.sma_crossover.clone().map(|x| {
            one(SignalsSpec {
                sma_crossover: Some(x),
                ..Default::default()
            })
        }),
        spec.rsi.clone().map(|x| {
            one(SignalsSpec {
                rsi: Some(x),
                ..Default::default()
            })
        }),
        spec.momentum.clone().map(|x| {
            one(SignalsSpec {
                momentum: Some(x),
                ..Default::default()
            })
        }),
        spec.bollinger.clone().map(|x| {
            one(SignalsSpec {
                bollinger: Some(x),
                ..Default::default()
            })
        }),
    ]
    .into_iter()
    .flatten()
    .min()
}

/// Per symbol of `plan` (in `plan.symbols` order): candle interval in ms and
/// the number of candles the session will see, `None` when unbounded.
fn symbol_data(plan: &SessionPlan, scans: &[FileSummary]) -> Vec<Option<(i64, Option<u64>)>> {
    let stop_after_ms = plan.session.stop_after.map(|d| d.as_millis_i64());
    let within_stop = |interval_ms: i64, candles: Option<u64>| {
        // A run stops before the first candle opening `stopAfter` or more
        // after the first one: ⌈stopAfter / interval⌉ candles at most.
        let by_stop = stop_after_ms.filter(|_| interval_ms > 0).map(|s| {
            u64::try_from(s.div_euclid(interval_ms) + i64::from(s.rem_euclid(interval_ms) != 0))
                .unwrap_or(0)
        });
        match (candles, by_stop) {
            (Some(c), Some(s)) => Some(c.min(s)),
            (c, s) => c.or(s),
        }
    };
    let mut out = vec![None; plan.symbols.len()];
    match plan.session.market_data.source {
        MarketDataSource::Replay => {
            for (r, s) in plan.replay.iter().zip(scans) {
                if let Some(slot) = out.get_mut(r.symbol) {
                    *slot = Some((s.interval_ms, within_stop(s.interval_ms, Some(s.rows))));
                }
            }
        }
        MarketDataSource::Simulated => {
            if let Some(sim) = &plan.session.market_data.simulated {
                let iv = sim.interval.as_millis_i64();
                out.fill(Some((iv, within_stop(iv, sim.candles))));
            }
        }
        MarketDataSource::Live => {
            if let Some(live) = &plan.live {
                out.fill(Some((
                    live.interval_ms,
                    within_stop(live.interval_ms, None),
                )));
            }
        }
    }
    out
}

/// The configurations of `plan` that can never trade as intended, given the
/// data summaries `scans` from [`scan_replay_files`] (empty for a simulated
/// source). Checked, in this order:
///
/// 1. each session symbol excluded by the strategy's `tokens.allow` /
///    `tokens.block`;
/// 2. `circuitBreakers.maxDataGap` shorter than a symbol's candle interval;
/// 3. a symbol with fewer candles than the quickest signal's warm-up;
/// 4. `circuitBreakers.minBalance` above the allocation.
pub fn warnings(plan: &SessionPlan, scans: &[FileSummary]) -> Vec<Warning> {
    let mut out = Vec::new();
    let risk = &plan.params.risk;
    for symbol in &plan.symbols {
        if !risk.symbol_allowed(symbol) {
            let list = if risk.block.iter().any(|b| b == symbol) {
                TokenList::Blocked
            } else {
                TokenList::NotAllowed
            };
            out.push(Warning::SymbolExcluded {
                symbol: symbol.clone(),
                strategy: plan.strategy_name.clone(),
                list,
            });
        }
    }
    let data = symbol_data(plan, scans);
    if let Some(gap) = plan.params.breakers.max_data_gap_ms {
        for (symbol, d) in plan.symbols.iter().zip(&data) {
            if let Some((interval_ms, _)) = *d
                && gap < interval_ms
            {
                out.push(Warning::DataGapBelowInterval {
                    symbol: symbol.clone(),
                    max_data_gap_ms: gap,
                    interval_ms,
                });
            }
        }
    }
    if let Some(warmup) = quickest_warmup(&plan.strategy.signals) {
        for (symbol, d) in plan.symbols.iter().zip(&data) {
            if let Some((_, Some(candles))) = *d
                && candles < u64::from(warmup)
            {
                out.push(Warning::TooFewCandlesForSignals {
                    symbol: symbol.clone(),
                    candles,
                    warmup,
                });
            }
        }
    }
    let allocation = plan.session.allocation.get();
    if let Some(min_balance) = plan.params.breakers.min_balance
        && min_balance > allocation
    {
        out.push(Warning::MinBalanceAboveAllocation {
            min_balance,
            allocation,
        });
    }
    out
}

/// One replay file as `validate` shows it: path, rows (or, for a trade
/// file, the candles its trades make), interval and period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// The symbol it holds.
    pub symbol: String,
    /// What the file holds (candles, or trades aggregated into candles).
    pub format: ReplayFormat,
    /// What the scan found (for a trade file: the candles its trades make).
    pub summary: FileSummary,
}

impl fmt::Display for FileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.summary;
        match self.format {
            ReplayFormat::Candles => write!(
                f,
                "{} ({}): {} rows, {} candles, {} to {}",
                self.path.display(),
                self.symbol,
                s.rows,
                human_ms(s.interval_ms),
                s.first,
                s.last
            )?,
            ReplayFormat::Trades => write!(
                f,
                "{} ({}): trades making {} {} candles, {} to {}",
                self.path.display(),
                self.symbol,
                s.rows,
                human_ms(s.interval_ms),
                s.first,
                s.last
            )?,
        }
        if s.missing_intervals > 0 {
            write!(f, ", {} missing intervals", s.missing_intervals)?;
        }
        Ok(())
    }
}

/// A simulated market as `validate` shows it: seed, candles, period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimulatedReport {
    /// RNG seed.
    pub seed: u64,
    /// Symbols simulated.
    pub symbols: usize,
    /// Candle length, ms.
    pub interval_ms: i64,
    /// Candles per symbol; `None` when only `stopAfter` ends the session.
    pub candles: Option<u64>,
    /// Open time of the first candle.
    pub first: Timestamp,
}

impl fmt::Display for SimulatedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulated market (seed {}): {} symbol(s), ",
            self.seed, self.symbols
        )?;
        match self.candles {
            Some(n) => write!(f, "{n} candles of {} each", human_ms(self.interval_ms))?,
            None => write!(f, "{} candles until stopAfter", human_ms(self.interval_ms))?,
        }
        write!(f, ", from {}", self.first)?;
        if let Some(n) = self.candles.filter(|&n| n > 0) {
            let last = i64::try_from(n - 1)
                .ok()
                .and_then(|k| k.checked_mul(self.interval_ms))
                .map(|ms| self.first.plus_ms(ms));
            if let Some(last) = last {
                write!(f, " to {last}")?;
            }
        }
        Ok(())
    }
}

/// Everything checked before `plan` trades: the data files read and the
/// warnings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preflight {
    /// One report per replay file, in `plan.replay` order (empty for a
    /// simulated source).
    pub files: Vec<FileReport>,
    /// The simulated market, for a simulated source.
    pub simulated: Option<SimulatedReport>,
    /// The summaries behind `files`, in the same order (what the runner
    /// needs to open its readers).
    pub scans: Vec<FileSummary>,
    /// Configurations that can never trade as intended.
    pub warnings: Vec<Warning>,
}

/// Scan every data file of `plan` and collect its warnings.
///
/// # Errors
///
/// The first [`DataError`] of [`scan_replay_files`].
pub fn check(plan: &SessionPlan) -> Result<Preflight, DataError> {
    let scans = scan_replay_files(plan)?;
    let files = plan
        .replay
        .iter()
        .zip(&scans)
        .map(|(r, s)| FileReport {
            path: r.path.clone(),
            symbol: plan.symbols.get(r.symbol).cloned().unwrap_or_default(),
            format: r.format,
            summary: *s,
        })
        .collect();
    let warnings = warnings(plan, &scans);
    // `plan_sessions` has already checked the simulated settings
    // (`GbmParams::from_spec`), so this only describes them.
    let simulated = match (
        plan.session.market_data.source,
        &plan.session.market_data.simulated,
    ) {
        (MarketDataSource::Simulated, Some(sim)) => {
            GbmParams::from_spec(sim).ok().map(|p| SimulatedReport {
                seed: p.seed,
                symbols: plan.symbols.len(),
                interval_ms: p.interval_ms,
                candles: p.candles,
                first: p.start,
            })
        }
        _ => None,
    };
    Ok(Preflight {
        files,
        simulated,
        scans,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{parse_manifests, plan_sessions};

    /// One session on `market` (the YAML of `spec.marketData` and below,
    /// indented by 2) with `strategy_extra` added to the strategy spec.
    fn plan(dir: &Path, market: &str, strategy_extra: &str) -> SessionPlan {
        let text = format!(
            r#"apiVersion: paperbot.io/v1alpha1
kind: PaperAccount
metadata: {{name: acct}}
spec:
  initialBalance: "1000"
---
apiVersion: paperbot.io/v1alpha1
kind: StrategyConfig
metadata: {{name: strat}}
spec:
  signals:
    smaCrossover: {{fastPeriod: 5, slowPeriod: 20}}
    rsi: {{period: 14}}
{strategy_extra}
---
apiVersion: paperbot.io/v1alpha1
kind: BotSession
metadata: {{name: bot}}
spec:
  accountRef: {{name: acct}}
  strategyRef: {{name: strat}}
  allocation: "1000"
  symbols: [A, B]
{market}
"#
        );
        let mut plans = plan_sessions(&parse_manifests(&text, &dir.join("m.yaml")).unwrap())
            .unwrap_or_else(|e| panic!("{e}"));
        plans.remove(0)
    }

    fn rows(n: u32, interval_min: u32) -> String {
        let mut out = format!("{}\n", crate::market::csv::HEADER);
        for i in 0..n {
            let m = i * interval_min;
            out.push_str(&format!(
                "2022-01-01T{:02}:{:02}:00Z,10,11,9,10,1\n",
                m / 60,
                m % 60
            ));
        }
        out
    }

    const REPLAY: &str = "  marketData:\n    source: Replay\n    replay:\n      files:\n        \
                          - {symbol: A, path: a.csv}\n        - {symbol: B, path: b.csv}";

    #[test]
    fn scans_follow_plan_order_and_the_first_bad_file_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.csv"), rows(30, 5)).unwrap();
        std::fs::write(dir.path().join("b.csv"), rows(3, 1)).unwrap();
        let p = plan(dir.path(), REPLAY, "");
        let scans = scan_replay_files(&p).unwrap();
        assert_eq!(
            scans
                .iter()
                .map(|s| (s.rows, s.interval_ms))
                .collect::<Vec<_>>(),
            [(30, 300_000), (3, 60_000)]
        );
        // Both files bad: the error is the first file's.
        std::fs::write(dir.path().join("a.csv"), "nope\n").unwrap();
        std::fs::write(dir.path().join("b.csv"), "").unwrap();
        let e = scan_replay_files(&p).unwrap_err();
        assert_eq!(e.file, dir.path().join("a.csv"));
        assert_eq!(e.line, 1);
    }

    #[test]
    fn warnings_name_what_can_never_trade() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.csv"), rows(30, 5)).unwrap();
        std::fs::write(dir.path().join("b.csv"), rows(10, 1)).unwrap();
        let p = plan(
            dir.path(),
            REPLAY,
            "  tokens: {allow: [A]}\n  circuitBreakers: {maxDataGap: 2m}",
        );
        let checked = check(&p).unwrap();
        assert_eq!(
            checked.warnings,
            [
                Warning::SymbolExcluded {
                    symbol: "B".into(),
                    strategy: "strat".into(),
                    list: TokenList::NotAllowed,
                },
                Warning::DataGapBelowInterval {
                    symbol: "A".into(),
                    max_data_gap_ms: 120_000,
                    interval_ms: 300_000,
                },
                // The quickest signal is RSI 14: 15 closes.
                Warning::TooFewCandlesForSignals {
                    symbol: "B".into(),
                    candles: 10,
                    warmup: 15,
                },
            ]
        );
        assert_eq!(
            checked.warnings[0].to_string(),
            "symbol \"B\" is never traded: StrategyConfig \"strat\" spec.tokens.allow does not list it"
        );
        // A clean configuration has none.
        let p = plan(dir.path(), REPLAY, "");
        std::fs::write(dir.path().join("b.csv"), rows(15, 1)).unwrap();
        assert_eq!(check(&p).unwrap().warnings, []);
    }

    #[test]
    fn simulated_sessions_count_candles_from_candles_or_stop_after() {
        let dir = tempfile::tempdir().unwrap();
        let sim = |s: &str| format!("  marketData:\n    source: Simulated\n    simulated: {s}");
        let p = plan(dir.path(), &sim("{seed: 1, candles: 12}"), "");
        let checked = check(&p).unwrap();
        assert!(checked.files.is_empty());
        assert_eq!(checked.warnings.len(), 2, "{:?}", checked.warnings);
        assert_eq!(
            checked.simulated.unwrap().to_string(),
            "simulated market (seed 1): 2 symbol(s), 12 candles of 1m each, from \
             2024-01-01T00:00:00Z to 2024-01-01T00:11:00Z"
        );
        // stopAfter 10m of 1m candles: 10 candles, fewer than the warm-up.
        let p = plan(
            dir.path(),
            &format!("{}\n  stopAfter: 10m", sim("{seed: 1, interval: 1m}")),
            "",
        );
        let w = check(&p).unwrap().warnings;
        assert!(
            w.iter().all(|w| matches!(
                w,
                Warning::TooFewCandlesForSignals {
                    candles: 10,
                    warmup: 15,
                    ..
                }
            )),
            "{w:?}"
        );
        assert_eq!(w.len(), 2);
        // Enough candles: no warning.
        let p = plan(dir.path(), &sim("{seed: 1, candles: 15}"), "");
        assert_eq!(check(&p).unwrap().warnings, []);
    }
}

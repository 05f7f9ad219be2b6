//! The fallback chain: sources in order of preference, polled once per poll
//! interval.
//!
//! One poll, step by step:
//! 1. Ask the first source that is ready (breaker not open, no `Retry-After`
//!    wait, budget left) for every symbol in one bulk request.
//! 2. Check each price ([`TickChecker`]); the accepted ones are done.
//! 3. Symbols without an accepted price (the request failed, or the symbol
//!    was missing, non-numeric, stale or a spike) go to the next ready
//!    source, again in one request; and so on down the chain.
//! 4. Symbols whose last accepted price is older than `max_age` are reported
//!    stale.
//!
//! Hand-back needs no extra step: the preferred source is asked first on
//! every poll once its breaker lets a trial through, and serves again as soon
//! as it answers.

use std::collections::BTreeMap;
use std::time::Duration;

use rust_decimal::Decimal;

use crate::types::Timestamp;

use super::sanity::TickChecker;
use super::{BreakerState, LiveError, LiveSource, PriceTick, Quote, SourceError};

/// Settings of a chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainConfig {
    /// A price older than this (by the source's own timestamp when it has
    /// one) is stale.
    pub max_age: Duration,
    /// Largest accepted move between accepted prices of a symbol, percent
    /// (10 = 10 %).
    pub jump_band_percent: Decimal,
    /// Polls in a row beyond the band, agreeing with each other, after which
    /// the new level is accepted (0 = never).
    pub jump_confirmations: u32,
}

impl Default for ChainConfig {
    /// `max_age` 120 s, band 10 %, 3 confirmations.
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(120),
            jump_band_percent: Decimal::TEN,
            jump_confirmations: 3,
        }
    }
}

/// Counters of one source in the chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceStats {
    /// The source's name.
    pub name: String,
    /// Polls in which the chain asked this source (one bulk request each,
    /// plus retries).
    pub polls: u64,
    /// HTTP requests actually sent, retries included.
    pub http_requests: u64,
    /// Polls in which the request failed, by [`SourceError::kind`].
    pub failures: BTreeMap<&'static str, u64>,
    /// Polls in which the source was skipped without a request, by kind
    /// (`circuit_open`, `rate_limited`, `budget`).
    pub skipped: BTreeMap<&'static str, u64>,
    /// Ticks rejected, by [`RejectReason::as_str`](super::RejectReason::as_str).
    pub rejected: BTreeMap<&'static str, u64>,
    /// Ticks accepted from this source.
    pub accepted: u64,
    /// The breaker's state at the end of the last poll.
    pub breaker: Option<BreakerState>,
}

/// A snapshot of the chain's counters (plain values; the caller exports
/// them as metrics or status).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChainStats {
    /// The source that served the last poll's first accepted price (`None`
    /// before any, or when the last poll got none).
    pub active: Option<String>,
    /// Polls so far.
    pub polls: u64,
    /// Times the serving source moved down the chain.
    pub failovers: u64,
    /// Times it moved back up (hand-back to a preferred source).
    pub handbacks: u64,
    /// Polls that left at least one symbol stale.
    pub stale_polls: u64,
    /// Per source, in chain order.
    pub sources: Vec<SourceStats>,
}

/// What one poll produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollOutcome {
    /// Accepted prices, at most one per symbol.
    pub ticks: Vec<PriceTick>,
    /// Symbols with no price younger than `max_age` from any source.
    pub stale: Vec<String>,
    /// Each failed or skipped source and why, in chain order.
    pub errors: Vec<(String, SourceError)>,
}

/// Ordered live sources with sanity checks, staleness and counters.
pub struct FallbackChain {
    sources: Vec<Box<dyn LiveSource>>,
    symbols: Vec<String>,
    checker: TickChecker,
    latest: BTreeMap<String, PriceTick>,
    max_age_ms: i64,
    active: Option<usize>,
    stats: ChainStats,
}

impl std::fmt::Debug for FallbackChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackChain")
            .field("symbols", &self.symbols)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl FallbackChain {
    /// A chain over `sources` (most preferred first) for `symbols` (session
    /// symbols each source was built with).
    ///
    /// # Errors
    ///
    /// [`LiveError::Config`] for no sources, no symbols, a zero `max_age` or
    /// a negative band.
    pub fn new(
        sources: Vec<Box<dyn LiveSource>>,
        symbols: Vec<String>,
        config: &ChainConfig,
    ) -> Result<Self, LiveError> {
        if sources.is_empty() {
            return Err(LiveError::Config(
                "the fallback chain needs at least one source".into(),
            ));
        }
        if symbols.is_empty() {
            return Err(LiveError::Config(
                "the fallback chain needs at least one symbol".into(),
            ));
        }
        if config.max_age.is_zero() {
            return Err(LiveError::Config("max_age must be > 0 seconds".into()));
        }
        if config.jump_band_percent.is_sign_negative() {
            return Err(LiveError::Config(format!(
                "the jump band must be >= 0 percent, found {}",
                config.jump_band_percent
            )));
        }
        let stats = ChainStats {
            sources: sources
                .iter()
                .map(|s| SourceStats {
                    name: s.name().to_string(),
                    ..SourceStats::default()
                })
                .collect(),
            ..ChainStats::default()
        };
        Ok(Self {
            sources,
            symbols,
            checker: TickChecker::new(
                config.jump_band_percent,
                config.jump_confirmations,
                config.max_age,
            ),
            latest: BTreeMap::new(),
            max_age_ms: i64::try_from(config.max_age.as_millis()).unwrap_or(i64::MAX),
            active: None,
            stats,
        })
    }

    /// Poll at the wall clock's time; see [`poll_at`](Self::poll_at).
    pub async fn poll(&mut self) -> PollOutcome {
        self.poll_at(Timestamp::from_datetime(chrono::Utc::now()))
            .await
    }

    /// One poll at `now` (the module docs list the steps).
    pub async fn poll_at(&mut self, now: Timestamp) -> PollOutcome {
        let mut out = PollOutcome::default();
        let mut needed = self.symbols.clone();
        let mut served_by = None;
        for i in 0..self.sources.len() {
            if needed.is_empty() {
                break;
            }
            let src = &self.sources[i];
            let st = &mut self.stats.sources[i];
            if let Err(e) = src.ready() {
                *st.skipped.entry(e.kind()).or_default() += 1;
                out.errors.push((st.name.clone(), e));
                continue;
            }
            st.polls += 1;
            let quotes = match src.fetch(&needed, now).await {
                Ok(q) => q,
                Err(e) => {
                    tracing::warn!(source = %st.name, error = %e, "live price source failed");
                    *st.failures.entry(e.kind()).or_default() += 1;
                    out.errors.push((st.name.clone(), e));
                    continue;
                }
            };
            for q in quotes {
                let tick = match q {
                    Quote::Price(t) => t,
                    Quote::Rejected { reason, .. } => {
                        *st.rejected.entry(reason.as_str()).or_default() += 1;
                        continue;
                    }
                };
                match self.checker.check(&tick, now) {
                    Ok(()) => {
                        st.accepted += 1;
                        served_by.get_or_insert(i);
                        needed.retain(|s| *s != tick.symbol);
                        self.latest.insert(tick.symbol.clone(), tick.clone());
                        out.ticks.push(tick);
                    }
                    Err(reason) => {
                        tracing::debug!(source = %st.name, symbol = %tick.symbol, price = %tick.price, reason = reason.as_str(), "live tick rejected");
                        *st.rejected.entry(reason.as_str()).or_default() += 1;
                    }
                }
            }
        }
        self.finish_poll(served_by, now, &mut out);
        out
    }

    fn finish_poll(&mut self, served_by: Option<usize>, now: Timestamp, out: &mut PollOutcome) {
        self.stats.polls += 1;
        match (self.active, served_by) {
            (Some(old), Some(new)) if new > old => self.stats.failovers += 1,
            (Some(old), Some(new)) if new < old => self.stats.handbacks += 1,
            _ => {}
        }
        if served_by.is_some() {
            self.active = served_by;
        }
        self.stats.active = served_by.map(|i| self.stats.sources[i].name.clone());
        out.stale = self
            .symbols
            .iter()
            .filter(|s| self.fresh(s, now).is_none())
            .cloned()
            .collect();
        if !out.stale.is_empty() {
            self.stats.stale_polls += 1;
        }
        for (src, st) in self.sources.iter().zip(&mut self.stats.sources) {
            st.breaker = Some(src.breaker_state());
            st.http_requests = src.requests_sent();
        }
    }

    /// The last accepted price of `symbol` if it is not older than `max_age`
    /// at `now`.
    pub fn fresh(&self, symbol: &str, now: Timestamp) -> Option<&PriceTick> {
        self.latest
            .get(symbol)
            .filter(|t| now.millis().saturating_sub(t.time.millis()) <= self.max_age_ms)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ChainStats {
        self.stats.clone()
    }

    /// The symbols this chain prices.
    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    /// Price `symbols` from the next poll on (the shared feed's union of
    /// wanted symbols changes as clients come and go). Each symbol must be
    /// one the sources were built with. The last accepted prices, the jump
    /// band's references, the breakers and the counters are kept.
    ///
    /// # Errors
    ///
    /// [`LiveError::Config`] for an empty list (the chain is unchanged).
    pub fn set_symbols(&mut self, symbols: Vec<String>) -> Result<(), LiveError> {
        if symbols.is_empty() {
            return Err(LiveError::Config(
                "the fallback chain needs at least one symbol".into(),
            ));
        }
        self.symbols = symbols;
        Ok(())
    }
}

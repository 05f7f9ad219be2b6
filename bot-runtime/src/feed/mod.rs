//! `bot-runtime feed`: one market-data feed shared by every live session in
//! its scope (a namespace).
//!
//! # Why this shape
//!
//! A runtime's [`LiveSource::fetch`] is one request per poll. If each of N
//! runtimes polled the upstreams itself, a fleet of 100 bots on the same 9
//! symbols would send 100 upstream requests per interval and hit the
//! exchanges' rate limits (Freqtrade users do with 3–4 bots on one host).
//! The feed polls each upstream ONCE per poll interval, through the same
//! [`FallbackChain`] a runtime uses, for the union of the symbols its clients
//! asked for recently, and answers runtimes from its cache: N runtimes cost N
//! cheap in-cluster requests and one upstream request per interval.
//! Runtimes put the feed first in their own chain
//! ([`FeedSource`](crate::market::live::feed::FeedSource)) and keep their
//! direct sources behind it, so a feed that is down costs them their own
//! budget, never their prices.
//!
//! # Steps
//!
//! 1. A client asks `GET /v1/prices?symbols=A,B`: the symbols are marked as
//!    wanted at the current poll, and the cached prices are returned with
//!    their upstream time and the source that served them ([`FeedPrices`]).
//!    A symbol not cached yet is listed as `pending` (the next poll fetches
//!    it).
//! 2. Every poll interval, the union of symbols wanted within the last
//!    `forgetAfterPolls` polls is polled through the chain in one request per
//!    source (none when the union is empty); accepted prices replace the
//!    cached ones.
//! 3. `/metrics` counts upstream requests by source, polls, client requests,
//!    clients, symbols in the union and stale symbols.
//!
//! Routes: `GET /v1/prices`, `/healthz` (the process answers), `/readyz`
//! (200 once the last poll priced something, or nothing is wanted yet;
//! else 503), `/metrics` (Prometheus text).

mod config;
mod metrics;
mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::market::live::feed::{FeedPrice, FeedPrices};
use crate::market::live::{
    BreakerState, FallbackChain, LiveError, LiveSource, Quote, SourceError, SourceFuture,
};
use crate::types::Timestamp;

pub use config::{FeedConfig, MIN_FEED_POLL};
pub use metrics::FeedMetrics;
pub use server::{router, serve};

/// Most symbols one request may ask for.
pub const MAX_SYMBOLS_PER_REQUEST: usize = 50;

/// Why a price request was refused (HTTP 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No symbol given.
    #[error("no symbols: expected ?symbols=BTC-USD,ETH-USD")]
    NoSymbols,
    /// Too many symbols.
    #[error("{0} symbols asked for: expected at most {MAX_SYMBOLS_PER_REQUEST}")]
    TooMany(usize),
    /// A symbol the feed does not serve.
    #[error("symbol {symbol:?} is not served by this feed: expected one of {served}")]
    Unknown {
        /// The symbol asked for.
        symbol: String,
        /// The served symbols, comma-separated.
        served: String,
    },
}

/// The feed's shared state: wanted symbols, cached prices, counters.
#[derive(Debug)]
pub struct Feed {
    served: BTreeSet<String>,
    forget_after_polls: u64,
    inner: Mutex<Inner>,
    metrics: FeedMetrics,
}

#[derive(Debug, Default)]
struct Inner {
    /// symbol → poll number when a client last asked for it.
    wanted: BTreeMap<String, u64>,
    prices: BTreeMap<String, FeedPrice>,
    /// client address → poll number of its last request.
    clients: BTreeMap<SocketAddr, u64>,
    polls: u64,
    last_poll_priced: Option<bool>,
}

impl Feed {
    /// A feed serving `served` symbols, forgetting a symbol nobody asked for
    /// in `forget_after_polls` polls (at least 1).
    pub fn new(served: impl IntoIterator<Item = String>, forget_after_polls: u32) -> Self {
        Self {
            served: served.into_iter().collect(),
            forget_after_polls: u64::from(forget_after_polls.max(1)),
            inner: Mutex::new(Inner::default()),
            metrics: FeedMetrics::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The metrics.
    pub fn metrics(&self) -> &FeedMetrics {
        &self.metrics
    }

    /// Answer a client at `client` asking for `symbols` (comma-separated
    /// text): register them as wanted and return the cached prices.
    ///
    /// # Errors
    ///
    /// [`RequestError`] for no symbols, too many, or one not served.
    pub fn prices(&self, symbols: &str, client: SocketAddr) -> Result<FeedPrices, RequestError> {
        let mut list: Vec<&str> = Vec::new();
        for s in symbols.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if !list.contains(&s) {
                list.push(s);
            }
        }
        if list.is_empty() {
            return Err(RequestError::NoSymbols);
        }
        if list.len() > MAX_SYMBOLS_PER_REQUEST {
            return Err(RequestError::TooMany(list.len()));
        }
        if let Some(bad) = list.iter().find(|s| !self.served.contains(**s)) {
            return Err(RequestError::Unknown {
                symbol: (*bad).to_string(),
                served: self.served.iter().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        self.metrics.client_requests.inc();
        let mut inner = self.lock();
        let now = inner.polls;
        inner.clients.insert(client, now);
        let mut out = FeedPrices::default();
        for s in list {
            inner.wanted.insert(s.to_string(), now);
            match inner.prices.get(s) {
                Some(p) => out.prices.push(p.clone()),
                None => out.pending.push(s.to_string()),
            }
        }
        Ok(out)
    }

    /// The union to poll now, after dropping symbols and clients not seen
    /// within `forget_after_polls` polls; updates the gauges.
    fn union(&self) -> Vec<String> {
        let mut inner = self.lock();
        let polls = inner.polls;
        let keep = |last: &u64| polls.saturating_sub(*last) < self.forget_after_polls;
        inner.wanted.retain(|_, last| keep(last));
        inner.clients.retain(|_, last| keep(last));
        let Inner { wanted, prices, .. } = &mut *inner;
        prices.retain(|s, _| wanted.contains_key(s));
        self.metrics.symbols.set(gauge(inner.wanted.len()));
        self.metrics.clients.set(gauge(inner.clients.len()));
        inner.wanted.keys().cloned().collect()
    }

    /// Whether the last poll priced at least one symbol (or nothing has been
    /// polled yet because nothing is wanted).
    pub fn is_ready(&self) -> bool {
        self.lock().last_poll_priced.unwrap_or(true)
    }

    /// One poll of `chain` for the current union (no request when it is
    /// empty). `served_by` records which source returned each symbol's tick
    /// (filled by [`Attributed`] wrappers around the chain's sources).
    pub async fn poll_once(&self, chain: &mut FallbackChain, served_by: &ServedBy) {
        let union = self.union();
        if union.is_empty() || chain.set_symbols(union).is_err() {
            self.lock().polls += 1;
            return;
        }
        served_by.clear();
        let now = Timestamp::from_datetime(chrono::Utc::now());
        let outcome = chain.poll_at(now).await;
        let stats = chain.stats();
        self.metrics.polls.inc();
        self.metrics.record_sources(&stats);
        self.metrics.stale_symbols.set(gauge(outcome.stale.len()));
        let mut inner = self.lock();
        inner.polls += 1;
        inner.last_poll_priced = Some(!outcome.ticks.is_empty());
        for t in outcome.ticks {
            let source = served_by.get(&t.symbol).unwrap_or_default();
            inner.prices.insert(
                t.symbol.clone(),
                FeedPrice {
                    symbol: t.symbol,
                    price: t.price.to_string(),
                    time_ms: t.time.millis(),
                    source,
                },
            );
        }
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// symbol → name of the source that last returned a price for it in the
/// current poll. The chain asks a later source only for symbols an earlier
/// one did not get accepted, so after a poll the last writer of an accepted
/// symbol is the source that served it.
#[derive(Clone, Debug, Default)]
pub struct ServedBy(Arc<Mutex<BTreeMap<String, String>>>);

impl ServedBy {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn clear(&self) {
        self.lock().clear();
    }
    fn get(&self, symbol: &str) -> Option<String> {
        self.lock().get(symbol).cloned()
    }
}

/// A source that notes in a [`ServedBy`] which symbols it returned prices
/// for; otherwise it is the wrapped source.
pub struct Attributed {
    inner: Arc<dyn LiveSource>,
    served_by: ServedBy,
}

impl Attributed {
    /// Wrap `inner`.
    pub fn new(inner: Arc<dyn LiveSource>, served_by: ServedBy) -> Self {
        Self { inner, served_by }
    }
}

impl LiveSource for Attributed {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn fetch<'a>(
        &'a self,
        symbols: &'a [String],
        now: Timestamp,
    ) -> SourceFuture<'a, Result<Vec<Quote>, SourceError>> {
        Box::pin(async move {
            let quotes = self.inner.fetch(symbols, now).await?;
            let mut map = self.served_by.lock();
            for q in &quotes {
                if let Quote::Price(t) = q {
                    map.insert(t.symbol.clone(), self.inner.name().to_string());
                }
            }
            Ok(quotes)
        })
    }

    fn breaker_state(&self) -> BreakerState {
        self.inner.breaker_state()
    }

    fn ready(&self) -> Result<(), SourceError> {
        self.inner.ready()
    }

    fn requests_sent(&self) -> u64 {
        self.inner.requests_sent()
    }
}

/// Build the chain of `config`'s sources (keys read with `env`), wrapped so
/// that each served price names its source.
///
/// # Errors
///
/// [`LiveError`] from building a source or the chain.
pub fn build_chain(
    config: &FeedConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(FallbackChain, ServedBy), LiveError> {
    let served_by = ServedBy::default();
    let sources = config
        .build_sources(env)?
        .into_iter()
        .map(|s| Box::new(Attributed::new(s, served_by.clone())) as Box<dyn LiveSource>)
        .collect();
    let chain = FallbackChain::new(sources, config.symbols.clone(), &config.chain_config())?;
    Ok((chain, served_by))
}

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
//!    clients, symbols in the union, stale symbols and configured symbols no
//!    source can map (skipped at start, see [`FeedConfig::map_symbols`]).
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

pub use config::{FeedConfig, MIN_FEED_POLL, SymbolPlan};
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

    /// Note `unmapped` (configured symbols no source maps, not served) in
    /// the `paperbot_feed_unmapped_symbols` gauge.
    pub fn with_unmapped(self, unmapped: &[String]) -> Self {
        self.metrics.unmapped_symbols.set(gauge(unmapped.len()));
        self
    }

    /// The symbols this feed serves, sorted.
    pub fn served(&self) -> impl Iterator<Item = &str> {
        self.served.iter().map(String::as_str)
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
/// for, and is asked only for the symbols it maps (a poll that wants none of
/// them answers nothing without a request); otherwise it is the wrapped
/// source.
pub struct Attributed {
    inner: Arc<dyn LiveSource>,
    served_by: ServedBy,
    maps: BTreeSet<String>,
}

impl Attributed {
    /// Wrap `inner`, which maps the symbols `maps`.
    pub fn new(
        inner: Arc<dyn LiveSource>,
        served_by: ServedBy,
        maps: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            inner,
            served_by,
            maps: maps.into_iter().collect(),
        }
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
            let mapped: Vec<String> = symbols
                .iter()
                .filter(|s| self.maps.contains(*s))
                .cloned()
                .collect();
            if mapped.is_empty() {
                return Ok(Vec::new());
            }
            let quotes = self.inner.fetch(&mapped, now).await?;
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

/// A feed's chain as built from its configuration ([`build_chain`]).
pub struct FeedChain {
    /// The fallback chain over the configured sources (wrapped in
    /// [`Attributed`]), for the served symbols.
    pub chain: FallbackChain,
    /// Which source served each symbol of the last poll.
    pub served_by: ServedBy,
    /// The symbols served: those at least one source maps, config order.
    pub served: Vec<String>,
    /// Configured symbols no source maps (skipped, logged), sorted.
    pub unmapped: Vec<String>,
}

/// Build the chain of `config`'s sources (keys read with `env`), wrapped so
/// that each served price names its source and each source is asked only
/// for the symbols it maps. Configured symbols that no source maps are
/// skipped with a warning naming each and why ([`FeedChain::unmapped`]).
///
/// # Errors
///
/// [`LiveError::Config`] when no configured symbol can be mapped by any
/// source (the message lists why for each) or for an empty override;
/// [`LiveError`] from building a source or the chain.
pub fn build_chain(
    config: &FeedConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<FeedChain, LiveError> {
    let plan = config.map_symbols()?;
    for (symbol, why) in &plan.unmapped {
        tracing::warn!(%symbol, reason = %why, "feed skips a symbol no source can map");
    }
    if plan.served.is_empty() {
        let why: Vec<String> = plan.unmapped.values().cloned().collect();
        return Err(LiveError::Config(format!(
            "no source can map any of the symbols {:?}: {}",
            config.symbols,
            why.join("; ")
        )));
    }
    let served_by = ServedBy::default();
    let sources = config
        .build_sources(&plan, env)?
        .into_iter()
        .zip(plan.per_source.iter())
        .map(|(s, maps)| {
            Box::new(Attributed::new(s, served_by.clone(), maps.iter().cloned()))
                as Box<dyn LiveSource>
        })
        .collect();
    let chain = FallbackChain::new(sources, plan.served.clone(), &config.chain_config())?;
    Ok(FeedChain {
        chain,
        served_by,
        served: plan.served,
        unmapped: plan.unmapped.into_keys().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A feed config for `symbols` with a CoinGecko source (no overrides)
    /// and a Binance source mapping `FOO-USD` by override, both at a
    /// loopback port nothing listens on.
    fn config(symbols: &[&str]) -> FeedConfig {
        let yaml = format!(
            "pollInterval: 1s\nsymbols: [{}]\nsources:\n  \
             - {{name: gecko, kind: CoinGecko, requestsPerMinute: 600, baseUrl: \"http://127.0.0.1:1\"}}\n  \
             - {{name: bn, kind: Binance, requestsPerMinute: 600, baseUrl: \"http://127.0.0.1:1\", \
             symbols: {{FOO-USD: FOOUSDT}}}}\n",
            symbols.join(", ")
        );
        let cfg: FeedConfig = serde_yaml::from_str(&yaml).expect("feed config parses");
        cfg.check().expect("feed config is valid");
        cfg
    }

    fn client() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 40000))
    }

    #[test]
    fn symbols_no_source_maps_are_skipped_and_the_rest_served() {
        let cfg = config(&["BTC-USD", "NOPE-USD", "FOO-USD", "ZZZ-USD"]);
        let plan = cfg.map_symbols().expect("mapping");
        assert_eq!(plan.served, ["BTC-USD", "FOO-USD"]);
        assert_eq!(
            plan.per_source,
            [
                vec!["BTC-USD".to_string()],
                vec!["BTC-USD".into(), "FOO-USD".into()]
            ]
        );
        assert_eq!(
            plan.unmapped.keys().collect::<Vec<_>>(),
            ["NOPE-USD", "ZZZ-USD"]
        );
        let why = &plan.unmapped["NOPE-USD"];
        assert!(
            why.contains("source \"gecko\"") && why.contains("source \"bn\""),
            "{why}"
        );

        let built = build_chain(&cfg, |_| None).expect("the feed starts without them");
        assert_eq!(built.served, ["BTC-USD", "FOO-USD"]);
        assert_eq!(built.unmapped, ["NOPE-USD", "ZZZ-USD"]);
        assert_eq!(built.chain.symbols(), ["BTC-USD", "FOO-USD"]);

        let feed = Feed::new(built.served, 3).with_unmapped(&built.unmapped);
        assert_eq!(feed.metrics().unmapped_symbols.get(), 2);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&feed.metrics().registry.gather())
            .expect("metrics encode");
        assert!(text.contains("paperbot_feed_unmapped_symbols 2"), "{text}");
        let p = feed
            .prices("BTC-USD,FOO-USD", client())
            .expect("served symbols are answered");
        assert_eq!(p.pending, ["BTC-USD", "FOO-USD"]);
        match feed.prices("BTC-USD,NOPE-USD", client()) {
            Err(RequestError::Unknown { symbol, served }) => {
                assert_eq!(symbol, "NOPE-USD");
                assert_eq!(served, "BTC-USD, FOO-USD");
            }
            other => panic!("expected NOPE-USD refused, got {other:?}"),
        }
    }

    #[test]
    fn a_feed_with_no_mappable_symbol_refuses_to_start() {
        let cfg = config(&["NOPE-USD"]);
        let Err(e) = build_chain(&cfg, |_| None) else {
            panic!("a feed with nothing to serve started");
        };
        let msg = e.to_string();
        assert!(
            msg.contains("no source can map any of the symbols") && msg.contains("NOPE-USD"),
            "{msg}"
        );
    }

    #[test]
    fn an_empty_override_is_still_an_error() {
        let mut cfg = config(&["BTC-USD"]);
        cfg.sources[1].symbols.insert("BTC-USD".into(), " ".into());
        let err = cfg.map_symbols().expect_err("an empty override");
        assert!(matches!(err, LiveError::Config(_)), "{err:?}");
    }

    /// A source is asked only for the symbols it maps: a poll of `FOO-USD`
    /// alone sends nothing to the CoinGecko source (which cannot map it)
    /// and one request to the Binance source.
    #[tokio::test]
    async fn a_source_is_not_asked_for_symbols_it_cannot_map() {
        crate::market::live::tls::install_default_provider();
        let cfg = config(&["BTC-USD", "FOO-USD"]);
        let mut built = build_chain(&cfg, |_| None).expect("chain");
        built
            .chain
            .set_symbols(vec!["FOO-USD".into()])
            .expect("symbols");
        let out = built.chain.poll().await;
        assert!(out.ticks.is_empty(), "nothing listens: {out:?}");
        let stats = built.chain.stats();
        assert_eq!(stats.sources[0].http_requests, 0, "{stats:?}");
        assert!(stats.sources[0].failures.is_empty(), "{stats:?}");
        assert!(stats.sources[1].http_requests >= 1, "{stats:?}");
        assert!(!stats.sources[1].failures.is_empty(), "{stats:?}");
    }
}

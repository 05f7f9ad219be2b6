//! The live feed driver: polls a [`FallbackChain`] built from a
//! [`LivePlan`] every `pollInterval` on the wall clock and aggregates the
//! accepted prices into candles of `interval`.
//!
//! Aggregation (per symbol, per interval `[open, open + interval)` by the
//! wall-clock time of the poll that got the price):
//!
//! | field | value |
//! |---|---|
//! | open | first accepted price of the interval |
//! | high / low | highest / lowest accepted price |
//! | close | last accepted price |
//! | volume | 0: a polled last price carries no traded volume |
//!
//! Only closed intervals become candles (decisions are made on closed
//! candles; fills follow the execution model on the next candle). An interval
//! in which a symbol got no accepted price produces no candle for it: a data
//! gap, which the engine's guard measures and which trips the `priceFeed`
//! breaker when it is longer than the data-gap limit. The interval in which
//! the feed starts is partial (its real open was before the first poll), so
//! the first candle is the first whole interval after the start.
//!
//! The poller runs on its own thread (with a current-thread tokio runtime
//! for the HTTP requests) and hands closed candles to the engine thread
//! through a channel; it stops when the [`LiveFeed`] is dropped.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use paperbot_crds::LiveSourceKind;
use rust_decimal::Decimal;

use crate::{
    breakers::StalePrice,
    config::LivePlan,
    market::live::{
        Binance, ChainConfig, ChainStats, CoinGecko, CoinGeckoPlan, FallbackChain, HttpPolicy,
        LiveError, LiveSource, PriceTick, feed::FeedSource,
    },
    types::{Candle, SymbolId, Timestamp},
};

/// Aggregates accepted prices into candles of one interval (pure; the poller
/// feeds it).
#[derive(Debug)]
pub struct CandleAggregator {
    interval_ms: i64,
    /// Intervals opening before this are not aggregated (the partial first
    /// one).
    start_ms: i64,
    /// Session symbol → index.
    index: BTreeMap<String, u16>,
    /// Open bars: (open time ms, symbol index) → candle so far.
    open: BTreeMap<(i64, u16), Candle>,
}

impl CandleAggregator {
    /// An aggregator of `interval_ms` (> 0) for `symbols` (session order =
    /// [`SymbolId`]) whose first candle opens at the first interval boundary
    /// at or after `start` (ms since the epoch).
    ///
    /// # Errors
    /// A message when `interval_ms` is not positive.
    pub fn new(interval_ms: i64, symbols: &[String], start: Timestamp) -> Result<Self, String> {
        if interval_ms <= 0 {
            return Err(format!(
                "the live candle interval must be > 0 ms, found {interval_ms}"
            ));
        }
        Ok(Self {
            interval_ms,
            start_ms: first_boundary(start.millis(), interval_ms),
            index: symbols
                .iter()
                .enumerate()
                .map(|(i, s)| (s.clone(), i as u16))
                .collect(),
            open: BTreeMap::new(),
        })
    }

    /// Open time of the first candle this aggregator can emit.
    pub fn first_open(&self) -> Timestamp {
        Timestamp(self.start_ms)
    }

    /// Add an accepted price seen at `now` (the poll's wall-clock time).
    /// Prices of unknown symbols and of the partial first interval are
    /// ignored.
    pub fn add(&mut self, tick: &PriceTick, now: Timestamp) {
        let Some(&idx) = self.index.get(&tick.symbol) else {
            return;
        };
        let open_ms = now.millis().div_euclid(self.interval_ms) * self.interval_ms;
        if open_ms < self.start_ms {
            return;
        }
        let p = tick.price;
        self.open
            .entry((open_ms, idx))
            .and_modify(|c| {
                c.high = c.high.max(p);
                c.low = c.low.min(p);
                c.close = p;
            })
            .or_insert(Candle {
                symbol: SymbolId(idx),
                open_time: Timestamp(open_ms),
                interval_ms: self.interval_ms,
                open: p,
                high: p,
                low: p,
                close: p,
                volume: Decimal::ZERO,
            });
    }

    /// Remove and return the candles closed at `now` (close time ≤ `now`),
    /// in time order, symbols of one time in symbol order.
    pub fn take_closed(&mut self, now: Timestamp) -> Vec<Candle> {
        let mut out = Vec::new();
        while let Some(entry) = self.open.first_entry() {
            if entry.get().close_time() <= now {
                out.push(entry.remove());
            } else {
                break;
            }
        }
        out
    }
}

/// The first multiple of `interval_ms` at or after `t_ms`.
fn first_boundary(t_ms: i64, interval_ms: i64) -> i64 {
    let floor = t_ms.div_euclid(interval_ms) * interval_ms;
    if floor == t_ms {
        t_ms
    } else {
        floor.saturating_add(interval_ms)
    }
}

/// HTTP policy of a source of `plan`: the default with the source's budget,
/// a request timeout no longer than the poll interval (at least 1 s) and a
/// breaker cool-down of five polls (a source that failed three polls in a
/// row is retried after five).
pub(super) fn policy_for(plan: &LivePlan, requests_per_minute: u32) -> HttpPolicy {
    let poll = Duration::from_millis(plan.poll_interval_ms.max(1000) as u64);
    HttpPolicy {
        requests_per_minute,
        timeout: poll.min(Duration::from_secs(10)),
        max_retries: 0,
        breaker_cool_down: poll * 5,
        ..HttpPolicy::default()
    }
}

/// Environment variable naming the namespace's shared feed (`bot-runtime
/// feed`), e.g. `http://paperbot-feed-1a2b3c4d5e.trading.svc:8090`; set by
/// the operator on runtime pods of live sessions that use the shared feed.
pub const FEED_URL_ENV: &str = "PAPERBOT_FEED_URL";

/// Name of the shared feed in the chain's counters and logs (`_` is not
/// allowed in a source name, so it never collides with a configured one).
pub const FEED_SOURCE_NAME: &str = "shared_feed";

/// The shared-feed source of `plan` when it uses the shared feed
/// (`useSharedFeed` not `false`) and `url` (the value of [`FEED_URL_ENV`])
/// is set and not blank; `None` otherwise. Its budget is the largest a
/// source may have (the feed answers from its cache; it is ours, not an
/// upstream's), its timeout and breaker follow the poll interval as for the
/// direct sources, so a dead feed is skipped for five polls and then tried
/// again (hand-back).
///
/// # Errors
/// [`LiveError::Config`] when `url` is not an `http://` or `https://` URL
/// with a host (the message names [`FEED_URL_ENV`]).
pub fn shared_feed(plan: &LivePlan, url: Option<&str>) -> Result<Option<FeedSource>, LiveError> {
    let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    if !plan.use_shared_feed {
        return Ok(None);
    }
    let policy = policy_for(plan, paperbot_crds::MAX_REQUESTS_PER_MINUTE);
    match FeedSource::new(url, policy) {
        Ok(f) => Ok(Some(f.with_name(FEED_SOURCE_NAME))),
        Err(LiveError::Config(m)) => Err(LiveError::Config(format!("{FEED_URL_ENV}: {m}"))),
        Err(e) => Err(e),
    }
}

/// Build the fallback chain of `plan` for `symbols`: the shared feed first
/// when [`shared_feed`] gives one for [`FEED_URL_ENV`], then the sources in
/// order, each
/// source's API key read from the environment variable the plan names
/// (`PAPERBOT_LIVE_API_KEY_<NAME>`; an empty or unset variable = no key),
/// `baseUrl` overrides applied. A CoinGecko key is sent as a pro key when the
/// base URL is CoinGecko's pro API, else as a demo key.
///
/// # Errors
/// [`LiveError::UnknownSymbol`] for a symbol a source cannot map,
/// [`LiveError::Config`] for bad settings, [`LiveError::Client`].
pub fn build_chain(plan: &LivePlan, symbols: &[String]) -> Result<FallbackChain, LiveError> {
    let mut sources: Vec<Box<dyn LiveSource>> = Vec::new();
    if let Some(feed) = shared_feed(plan, std::env::var(FEED_URL_ENV).ok().as_deref())? {
        sources.push(Box::new(feed));
    }
    for s in &plan.sources {
        let policy = policy_for(plan, s.requests_per_minute);
        let key = s
            .api_key_env
            .as_deref()
            .and_then(|v| std::env::var(v).ok())
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty());
        let base = s.base_url.as_deref();
        match s.kind {
            LiveSourceKind::CoinGecko => {
                let cg_plan = match key {
                    None => CoinGeckoPlan::Public,
                    Some(k) if base.is_some_and(|b| b.contains("pro-api.coingecko.com")) => {
                        CoinGeckoPlan::Pro(k)
                    }
                    Some(k) => CoinGeckoPlan::Demo(k),
                };
                sources.push(Box::new(
                    CoinGecko::new(symbols, &s.symbols, cg_plan, base, policy)?
                        .with_name(s.name.clone()),
                ));
            }
            LiveSourceKind::Binance => {
                sources.push(Box::new(
                    Binance::new(symbols, &s.symbols, base, policy)?.with_name(s.name.clone()),
                ));
            }
        }
    }
    let config = ChainConfig {
        max_age: Duration::from_millis(plan.max_age_ms.max(1) as u64),
        jump_band_percent: plan.jump_band_pct,
        ..ChainConfig::default()
    };
    FallbackChain::new(sources, symbols.to_vec(), &config)
}

/// What the live feed shares with the engine thread, the status and the
/// metrics, as of the last poll.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveFeedSnapshot {
    /// The chain's counters (sources in chain order: the first is the
    /// preferred one).
    pub chain: ChainStats,
    /// A symbol whose last accepted price is older than this is stale
    /// (`maxAge`), milliseconds.
    pub max_age_ms: i64,
    /// When the feed started (wall clock): the age of a symbol that never
    /// had a price counts from here.
    pub started: Timestamp,
    /// Per session symbol (session order), when its last accepted price was
    /// valid (the source's timestamp, else its arrival); `None` before the
    /// first.
    pub last_prices: Vec<(String, Option<Timestamp>)>,
}

/// How old one symbol's last accepted price is at some wall-clock time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PriceAge {
    /// The session's symbol.
    pub symbol: String,
    /// Milliseconds since its last accepted price was valid, or since the
    /// feed started when it has had none (never negative).
    pub age_ms: i64,
    /// Whether it has had an accepted price at all.
    pub priced: bool,
    /// `age_ms > max_age_ms`.
    pub stale: bool,
}

impl LiveFeedSnapshot {
    /// The source that served the last poll, if any.
    pub fn active_source(&self) -> Option<&str> {
        self.chain.active.as_deref()
    }

    /// The first source of the chain (the one that serves while healthy).
    pub fn preferred_source(&self) -> Option<&str> {
        self.chain.sources.first().map(|s| s.name.as_str())
    }

    /// Every symbol's price age at `now` (wall clock), session order.
    pub fn ages_at(&self, now: Timestamp) -> Vec<PriceAge> {
        self.last_prices
            .iter()
            .map(|(symbol, last)| {
                let from = last.unwrap_or(self.started);
                let age_ms = now.millis().saturating_sub(from.millis()).max(0);
                PriceAge {
                    symbol: symbol.clone(),
                    age_ms,
                    priced: last.is_some(),
                    stale: age_ms > self.max_age_ms,
                }
            })
            .collect()
    }

    /// The symbols stale at `now`, as the engine's breaker takes them.
    pub fn stale_at(&self, now: Timestamp) -> Vec<StalePrice> {
        self.ages_at(now)
            .into_iter()
            .filter(|a| a.stale)
            .map(|a| StalePrice {
                symbol: a.symbol,
                age_ms: a.priced.then_some(a.age_ms),
            })
            .collect()
    }
}

/// The live feed's shared state (cheap to clone; updated by the poller
/// after every poll).
#[derive(Clone, Debug, Default)]
pub struct LiveFeedStats {
    inner: Arc<Mutex<LiveFeedSnapshot>>,
}

impl LiveFeedStats {
    /// A copy of the state after the last poll.
    pub fn snapshot(&self) -> LiveFeedSnapshot {
        self.inner.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn update(&self, f: impl FnOnce(&mut LiveFeedSnapshot)) {
        if let Ok(mut s) = self.inner.lock() {
            f(&mut s);
        }
    }
}

/// Closed live candles, produced by the poller thread.
pub struct LiveFeed {
    rx: mpsc::Receiver<Candle>,
    peeked: Option<Candle>,
    first_open: Timestamp,
    stop: Arc<AtomicBool>,
    stats: LiveFeedStats,
}

impl std::fmt::Debug for LiveFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveFeed")
            .field("first_open", &self.first_open)
            .finish_non_exhaustive()
    }
}

impl LiveFeed {
    /// Build the chain of `plan` for `symbols` and start polling it now.
    ///
    /// # Errors
    /// As [`build_chain`]; a message when the poller thread cannot start.
    pub fn start(plan: &LivePlan, symbols: &[String]) -> Result<Self, String> {
        let chain = build_chain(plan, symbols).map_err(|e| e.to_string())?;
        let now = Timestamp::from_datetime(chrono::Utc::now());
        let agg = CandleAggregator::new(plan.interval_ms, symbols, now)?;
        let first_open = agg.first_open();
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = LiveFeedStats::default();
        stats.update(|s| {
            s.chain = chain.stats();
            s.max_age_ms = plan.max_age_ms.max(1);
            s.started = now;
            s.last_prices = symbols.iter().map(|sym| (sym.clone(), None)).collect();
        });
        let poll = Duration::from_millis(plan.poll_interval_ms.max(1000) as u64);
        let (stop2, stats2) = (stop.clone(), stats.clone());
        std::thread::Builder::new()
            .name("live-feed".into())
            .spawn(move || poll_loop(chain, agg, poll, tx, stop2, stats2))
            .map_err(|e| format!("cannot start the live feed thread: {e}"))?;
        Ok(Self {
            rx,
            peeked: None,
            first_open,
            stop,
            stats,
        })
    }

    /// Open time of the first live candle.
    pub fn first_open(&self) -> Timestamp {
        self.first_open
    }

    /// The chain's counters, shared with status and metrics.
    pub fn stats(&self) -> LiveFeedStats {
        self.stats.clone()
    }

    /// Wait up to `timeout` for a closed candle; `true` when one is ready
    /// (the next call of [`next_candle`](Self::next_candle) returns it at
    /// once) or the poller has stopped.
    pub fn wait_ready(&mut self, timeout: Duration) -> bool {
        if self.peeked.is_some() {
            return true;
        }
        match self.rx.recv_timeout(timeout) {
            Ok(c) => {
                self.peeked = Some(c);
                true
            }
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            Err(mpsc::RecvTimeoutError::Disconnected) => true,
        }
    }

    /// The next closed candle (blocks until one closes); `None` when the
    /// poller has stopped.
    pub fn next_candle(&mut self) -> Option<Candle> {
        self.peeked.take().or_else(|| self.rx.recv().ok())
    }
}

impl Drop for LiveFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn poll_loop(
    mut chain: FallbackChain,
    mut agg: CandleAggregator,
    poll: Duration,
    tx: mpsc::Sender<Candle>,
    stop: Arc<AtomicBool>,
    stats: LiveFeedStats,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the live feed's runtime; no live candles");
            return;
        }
    };
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Timestamp::from_datetime(chrono::Utc::now());
        for c in agg.take_closed(now) {
            if tx.send(c).is_err() {
                return;
            }
        }
        let outcome = rt.block_on(chain.poll_at(now));
        for t in &outcome.ticks {
            agg.add(t, now);
        }
        if !outcome.stale.is_empty() {
            tracing::warn!(symbols = ?outcome.stale, "live prices are stale");
        }
        stats.update(|s| {
            s.chain = chain.stats();
            for t in &outcome.ticks {
                if let Some((_, last)) = s.last_prices.iter_mut().find(|(sym, _)| *sym == t.symbol)
                {
                    *last = Some(last.map_or(t.time, |l| l.max(t.time)));
                }
            }
        });
        next += poll;
        let now_i = Instant::now();
        if next < now_i {
            // A slow poll: keep the cadence from now instead of bursting.
            next = now_i;
        }
        // Sleep in short steps so a dropped feed stops the thread soon.
        while Instant::now() < next && !stop.load(Ordering::Relaxed) {
            std::thread::sleep((next - Instant::now()).min(Duration::from_millis(100)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn tick(sym: &str, p: Decimal) -> PriceTick {
        PriceTick {
            symbol: sym.into(),
            price: p,
            time: Timestamp(0),
        }
    }

    #[test]
    fn aggregates_open_high_low_close_and_skips_the_partial_first_interval() {
        let syms = vec!["BTC-USD".to_string(), "ETH-USD".to_string()];
        let mut a = CandleAggregator::new(2000, &syms, Timestamp(10_500)).unwrap();
        assert_eq!(a.first_open(), Timestamp(12_000));
        a.add(&tick("BTC-USD", dec!(1)), Timestamp(11_000)); // partial: ignored
        a.add(&tick("ETH-USD", dec!(20)), Timestamp(12_100));
        a.add(&tick("BTC-USD", dec!(10)), Timestamp(12_000));
        a.add(&tick("BTC-USD", dec!(12)), Timestamp(12_500));
        a.add(&tick("BTC-USD", dec!(9)), Timestamp(13_000));
        a.add(&tick("BTC-USD", dec!(11)), Timestamp(13_999));
        a.add(&tick("BTC-USD", dec!(50)), Timestamp(14_000));
        a.add(&tick("XRP-USD", dec!(50)), Timestamp(12_000)); // unknown
        assert!(a.take_closed(Timestamp(13_999)).is_empty());
        let closed = a.take_closed(Timestamp(14_000));
        assert_eq!(closed.len(), 2);
        let btc = &closed[0];
        assert_eq!(btc.symbol, SymbolId(0));
        assert_eq!(
            (btc.open_time, btc.open, btc.high, btc.low, btc.close),
            (Timestamp(12_000), dec!(10), dec!(12), dec!(9), dec!(11))
        );
        assert_eq!(btc.volume, Decimal::ZERO);
        assert_eq!(closed[1].symbol, SymbolId(1));
        assert_eq!(closed[1].close, dec!(20));
        // 14 000–16 000 had only BTC; 16 000–18 000 nothing: a gap, no candle.
        let later = a.take_closed(Timestamp(20_000));
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].open_time, Timestamp(14_000));
        assert!(a.take_closed(Timestamp(30_000)).is_empty());
    }

    fn plan(use_shared_feed: bool) -> LivePlan {
        let spec: paperbot_crds::LiveSpec = serde_yaml::from_str(&format!(
            "useSharedFeed: {use_shared_feed}\n\
             sources: [{{name: b, kind: Binance, requestsPerMinute: 60}}]"
        ))
        .unwrap();
        LivePlan::from_spec(&spec)
    }

    #[test]
    fn the_shared_feed_comes_from_the_url_unless_the_plan_opts_out() {
        let f = shared_feed(&plan(true), Some(" http://paperbot-feed-ab.ns.svc:8090 "))
            .unwrap()
            .expect("a feed source");
        assert_eq!(f.name(), FEED_SOURCE_NAME);
        assert_eq!(
            f.url(&["BTC-USD".into()]),
            "http://paperbot-feed-ab.ns.svc:8090/v1/prices?symbols=BTC-USD"
        );
        assert!(
            shared_feed(&plan(false), Some("http://f:1"))
                .unwrap()
                .is_none()
        );
        assert!(shared_feed(&plan(true), None).unwrap().is_none());
        assert!(shared_feed(&plan(true), Some("  ")).unwrap().is_none());
        let e = shared_feed(&plan(true), Some("paperbot-feed:8090"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(FEED_URL_ENV) && e.contains("paperbot-feed:8090"),
            "{e}"
        );
        // Opted out: even a bad URL is not read.
        assert!(shared_feed(&plan(false), Some("bad")).unwrap().is_none());
    }

    #[test]
    fn start_on_a_boundary_is_the_first_open_and_zero_interval_is_refused() {
        let syms = vec!["BTC-USD".to_string()];
        let a = CandleAggregator::new(1000, &syms, Timestamp(5000)).unwrap();
        assert_eq!(a.first_open(), Timestamp(5000));
        let e = CandleAggregator::new(0, &syms, Timestamp(0)).unwrap_err();
        assert!(e.contains("> 0 ms"), "{e}");
    }
}

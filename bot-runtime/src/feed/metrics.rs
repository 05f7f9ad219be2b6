//! The feed's Prometheus metrics (names with the `paperbot_feed_` prefix,
//! counters ending in `_total`, labels bounded by the configured sources).

use std::sync::Mutex;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::market::live::ChainStats;

/// The feed's metrics and their registry.
#[derive(Debug)]
pub struct FeedMetrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// `paperbot_feed_upstream_requests_total{source}`: HTTP requests sent
    /// to each upstream source, retries included.
    pub upstream_requests: IntCounterVec,
    /// `paperbot_feed_polls_total`: polls of the upstream chain (polls with
    /// an empty union send nothing and are not counted).
    pub polls: IntCounter,
    /// `paperbot_feed_client_requests_total`: price requests answered.
    pub client_requests: IntCounter,
    /// `paperbot_feed_clients`: client connections (address and port) seen
    /// within the forget window.
    pub clients: IntGauge,
    /// `paperbot_feed_symbols`: symbols in the polled union.
    pub symbols: IntGauge,
    /// `paperbot_feed_stale_symbols`: symbols of the union without a price
    /// younger than `maxAge` after the last poll.
    pub stale_symbols: IntGauge,
    /// `paperbot_feed_unmapped_symbols`: configured symbols no source can
    /// map, skipped at start (set once).
    pub unmapped_symbols: IntGauge,
    /// Requests already added to `upstream_requests`, per source.
    counted: Mutex<Vec<u64>>,
}

impl FeedMetrics {
    /// Fresh metrics in their own registry.
    ///
    /// # Panics
    ///
    /// Never in practice: the names and labels are constants that the
    /// `metrics_render` test registers.
    pub fn new() -> Self {
        let registry = Registry::new();
        let upstream_requests = IntCounterVec::new(
            Opts::new(
                "paperbot_feed_upstream_requests_total",
                "HTTP requests the feed sent to each upstream source (retries included)",
            ),
            &["source"],
        )
        .expect("constant metric definition");
        let counter = |n: &str, h: &str| IntCounter::new(n, h).expect("constant metric definition");
        let gauge = |n: &str, h: &str| IntGauge::new(n, h).expect("constant metric definition");
        let m = Self {
            upstream_requests,
            polls: counter("paperbot_feed_polls_total", "Polls of the upstream chain"),
            client_requests: counter(
                "paperbot_feed_client_requests_total",
                "Price requests answered by the feed",
            ),
            clients: gauge(
                "paperbot_feed_clients",
                "Client connections seen within the forget window",
            ),
            symbols: gauge("paperbot_feed_symbols", "Symbols in the polled union"),
            stale_symbols: gauge(
                "paperbot_feed_stale_symbols",
                "Symbols of the union without a fresh price after the last poll",
            ),
            unmapped_symbols: gauge(
                "paperbot_feed_unmapped_symbols",
                "Configured symbols no source can map, skipped at start",
            ),
            counted: Mutex::new(Vec::new()),
            registry,
        };
        for c in [
            Box::new(m.upstream_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.polls.clone()),
            Box::new(m.client_requests.clone()),
            Box::new(m.clients.clone()),
            Box::new(m.symbols.clone()),
            Box::new(m.stale_symbols.clone()),
            Box::new(m.unmapped_symbols.clone()),
        ] {
            m.registry
                .register(c)
                .expect("distinct constant metric names");
        }
        m
    }

    /// Add each source's new requests (from the chain's counters).
    pub fn record_sources(&self, stats: &ChainStats) {
        let mut counted = self.counted.lock().unwrap_or_else(|p| p.into_inner());
        counted.resize(stats.sources.len(), 0);
        for (s, seen) in stats.sources.iter().zip(counted.iter_mut()) {
            let new = s.http_requests.saturating_sub(*seen);
            self.upstream_requests
                .with_label_values(&[s.name.as_str()])
                .inc_by(new);
            *seen = s.http_requests;
        }
    }
}

impl Default for FeedMetrics {
    fn default() -> Self {
        Self::new()
    }
}

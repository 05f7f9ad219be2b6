//! [`FeedSource`]: the shared market-data feed (`bot-runtime feed`, see
//! [`crate::feed`]) as a [`LiveSource`], so a runtime puts it first in its
//! [`FallbackChain`](super::FallbackChain) and falls back to its direct
//! sources, within their own budgets, while the feed is unreachable (the
//! chain's breaker and hand-back do the rest).
//!
//! One poll = one `GET {base}/v1/prices?symbols=BTC-USD,ETH-USD` to the feed,
//! answered from its cache as [`FeedPrices`]. Each price carries the time the
//! upstream gave it (not the time the feed answered), so the chain's staleness
//! check judges a feed price exactly as it would judge the upstream's.

use std::str::FromStr;

use reqwest::header::HeaderMap;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::types::Timestamp;

use super::http::{HttpPolicy, HttpSource};
use super::sanity::RejectReason;
use super::{BreakerState, LiveError, LiveSource, PriceTick, Quote, SourceError, SourceFuture};

/// Path of the feed's price route.
pub const PRICES_PATH: &str = "/v1/prices";

/// The feed's answer to `GET /v1/prices?symbols=…` (JSON).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPrices {
    /// The latest accepted price of each requested symbol the feed has one
    /// for, in the order requested.
    pub prices: Vec<FeedPrice>,
    /// Requested symbols the feed has no price for yet (just registered: the
    /// next poll fetches them; or no source could price them).
    #[serde(default)]
    pub pending: Vec<String>,
}

/// One symbol's latest accepted price in the feed's cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPrice {
    /// The session symbol, e.g. `BTC-USD`.
    pub symbol: String,
    /// The price as exact decimal text (`"67187.3358"`), quote currency.
    pub price: String,
    /// When the upstream said the price was valid, Unix milliseconds.
    pub time_ms: i64,
    /// Name of the upstream source (from the feed's chain) that served it.
    pub source: String,
}

/// The shared feed as a live source. Named `feed` unless renamed.
#[derive(Debug)]
pub struct FeedSource {
    name: String,
    http: HttpSource,
    url_base: String,
}

impl FeedSource {
    /// A source asking the feed at `base_url` (e.g.
    /// `http://paperbot-feed:8090`), with `policy`'s timeout, retries,
    /// breaker and budget (requests per minute to the feed).
    ///
    /// # Errors
    ///
    /// [`LiveError::Config`] for a URL that is not `http://` or `https://`
    /// with a host, or a zero timeout; [`LiveError::Client`] when the HTTP
    /// client cannot be built.
    pub fn new(base_url: &str, policy: HttpPolicy) -> Result<Self, LiveError> {
        if !paperbot_crds::is_http_url(base_url) {
            return Err(LiveError::Config(format!(
                "the shared feed URL {base_url:?} is not an http:// or https:// URL with a host, \
                 e.g. \"http://paperbot-feed:8090\""
            )));
        }
        Ok(Self {
            name: "feed".into(),
            http: HttpSource::new(policy)?,
            url_base: base_url.trim_end_matches('/').to_string(),
        })
    }

    /// Rename (the name shown in the chain's counters).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The request URL for `symbols`.
    pub fn url(&self, symbols: &[String]) -> String {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("symbols", &symbols.join(","))
            .finish();
        format!("{}{PRICES_PATH}?{query}", self.url_base)
    }
}

/// Parse the feed's answer for `symbols`: one [`Quote`] per requested
/// symbol, in order; a symbol absent from `prices` is
/// [`RejectReason::Missing`], a price that is not exact decimal text
/// [`RejectReason::NonNumeric`].
///
/// # Errors
///
/// [`SourceError::Malformed`] when the body is not a [`FeedPrices`] object.
pub fn parse_feed_prices(body: &str, symbols: &[String]) -> Result<Vec<Quote>, SourceError> {
    let answer: FeedPrices = serde_json::from_str(body).map_err(|e| {
        SourceError::Malformed(format!(
            "expected the feed's {{\"prices\":[{{\"symbol\",\"price\",\"time_ms\",\"source\"}}]}}: {e}"
        ))
    })?;
    Ok(symbols
        .iter()
        .map(|s| {
            let reject = |reason| Quote::Rejected {
                symbol: s.clone(),
                reason,
            };
            let Some(p) = answer.prices.iter().find(|p| p.symbol == *s) else {
                return reject(RejectReason::Missing);
            };
            match Decimal::from_str(p.price.trim()) {
                Ok(price) => Quote::Price(PriceTick {
                    symbol: s.clone(),
                    price,
                    time: Timestamp(p.time_ms),
                }),
                Err(_) => reject(RejectReason::NonNumeric),
            }
        })
        .collect())
}

impl LiveSource for FeedSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn fetch<'a>(
        &'a self,
        symbols: &'a [String],
        _now: Timestamp,
    ) -> SourceFuture<'a, Result<Vec<Quote>, SourceError>> {
        Box::pin(async move {
            let url = self.url(symbols);
            self.http
                .get(&url, &HeaderMap::new(), |b| parse_feed_prices(b, symbols))
                .await
        })
    }

    fn breaker_state(&self) -> BreakerState {
        self.http.breaker_state()
    }

    fn ready(&self) -> Result<(), SourceError> {
        self.http.ready()
    }

    fn requests_sent(&self) -> u64 {
        self.http.requests_sent()
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn parses_prices_missing_and_non_numeric() {
        let body = r#"{"prices":[
            {"symbol":"BTC-USD","price":"67187.3358","time_ms":1711356300000,"source":"coingecko"},
            {"symbol":"ETH-USD","price":"lots","time_ms":1711356300000,"source":"binance"}],
            "pending":["SOL-USD"]}"#;
        let syms: Vec<String> = ["BTC-USD", "ETH-USD", "SOL-USD"].map(String::from).to_vec();
        let q = parse_feed_prices(body, &syms).unwrap();
        assert_eq!(
            q[0],
            Quote::Price(PriceTick {
                symbol: "BTC-USD".into(),
                price: dec!(67187.3358),
                time: Timestamp(1_711_356_300_000),
            })
        );
        assert!(matches!(
            &q[1],
            Quote::Rejected {
                reason: RejectReason::NonNumeric,
                ..
            }
        ));
        assert!(matches!(
            &q[2],
            Quote::Rejected {
                reason: RejectReason::Missing,
                ..
            }
        ));
        assert!(matches!(
            parse_feed_prices("[1,2]", &syms),
            Err(SourceError::Malformed(_))
        ));
    }

    #[test]
    fn url_encodes_the_symbol_list_and_bad_urls_are_refused() {
        let f = FeedSource::new("http://feed:8090/", HttpPolicy::default()).unwrap();
        assert_eq!(
            f.url(&["BTC-USD".into(), "ETH-USD".into()]),
            "http://feed:8090/v1/prices?symbols=BTC-USD%2CETH-USD"
        );
        assert!(matches!(
            FeedSource::new("feed:8090", HttpPolicy::default()),
            Err(LiveError::Config(_))
        ));
    }
}
